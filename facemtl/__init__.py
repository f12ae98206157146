"""facemtl: multi-task learning on faces.

The package is laid out by concern:

- ``facemtl.data``      SynthFaces, the HDF5 cache (schema, writer, reader) and real-dataset readers
- ``facemtl.tasks``     one module per task: target spec, head, masked loss, metrics
- ``facemtl.models``    backbones, the hard-parameter-sharing model and MCFA's cascade
- ``facemtl.weighting`` loss-weighting strategies behind one interface
- ``facemtl.engine``    configs, recipes, the training loop, checkpoints, DDP
- ``facemtl.metrics``   metric functions (checked against scikit-learn)
- ``facemtl.reports``   evaluate / ablate / correlate reports and plots
- ``facemtl.export``    TorchScript / ONNX export and prediction
- ``facemtl.cli``       the typer command line, one module per command
"""

__version__ = "0.1.0"
