"""The ``facemtl`` command line: one small module per command, joined in :mod:`facemtl.cli.main`."""
