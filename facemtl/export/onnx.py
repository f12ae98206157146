"""ONNX export (``torch.onnx.export``, TorchScript-based exporter) and the ONNX Runtime runner.

The TorchScript-based exporter (``dynamo=False``) is used on purpose: these are plain CNNs, and it
is the simpler, long-stable path (default opset 17). Inputs are named ``image`` (and
``prev_feature`` for the cascade's M_Net and L_Net), outputs by task. ``dynamic_batch`` marks axis
0 of every input and output as ``batch``; otherwise the graph has the fixed batch of the example.

Importing this module needs neither torch nor onnxruntime; each is imported where it is used, so
prediction from an exported model runs with ONNX Runtime alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facemtl.errors import ConfigError, DataFormatError

DEFAULT_OPSET = 17


def export_onnx(
    module: Any, example: Sequence[Any], path: str | Path, *, input_names: Sequence[str], output_names: Sequence[str],
    opset: int = DEFAULT_OPSET, dynamic_batch: bool = False,
) -> None:
    """Export ``module`` (in eval mode, returning a tuple in ``output_names`` order) to ``path``."""
    import torch

    if not 7 <= int(opset) <= 23:
        raise ConfigError(f"--opset {opset} is out of range; ONNX opsets 7 to 23 are supported (default {DEFAULT_OPSET}).")
    axes = {n: {0: "batch"} for n in [*input_names, *output_names]} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(
                module, tuple(example), str(path), dynamo=False, opset_version=int(opset), do_constant_folding=True,
                input_names=list(input_names), output_names=list(output_names), dynamic_axes=axes,
            )
        except torch.onnx.errors.UnsupportedOperatorError as e:
            raise ConfigError(f"the network uses an operator opset {opset} lacks ({e}); try a higher --opset.") from None


def session_options(threads: int | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3  # errors only: ORT warns about unused initialisers otherwise
    return so


class OnnxRunner:
    """One ONNX Runtime session: ``runner({name: array}) -> {output name: float32 array}``.

    A file that ONNX Runtime cannot load raises :class:`DataFormatError` naming it."""

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: Sequence[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("onnxruntime is not installed; `pip install onnxruntime` (or facemtl[export]).") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise DataFormatError(f"ONNX model {self.path} does not exist; export it again with `facemtl export`.")
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(threads), providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as e:  # ORT raises its own Fail / InvalidProtobuf / InvalidGraph kinds
            msg = str(e).splitlines()[0][:200]
            raise DataFormatError(
                f"ONNX model {self.path} cannot be loaded by ONNX Runtime ({type(e).__name__}: {msg}); "
                "it is damaged or not an ONNX model: export it again."
            ) from None
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.dtype = np.float16 if "float16" in next(iter(self.inputs.values())).type else np.float32

    def input_shape(self, name: str) -> list[Any]:
        """Shape of an input as stored in the graph (``batch`` or an int on axis 0)."""
        return list(self.inputs[name].shape)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in feeds.items()}
        outs = self.session.run(self.output_names, cast)
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs)}
