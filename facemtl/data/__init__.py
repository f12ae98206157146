"""Data: SynthFaces, the HDF5 cache schema/writer/reader, the fast loader and real-dataset readers."""
