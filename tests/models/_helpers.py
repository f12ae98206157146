"""Shared builders for the model tests: tiny, fast configurations of every backbone."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from facemtl.models import BACKBONES, MultiTaskModel, build_model
from facemtl.tasks import DataInfo, Task, build_tasks

INFO = DataInfo(
    attribute_names=("Male", "Smiling", "Eyeglasses"), num_identities=5,
    labels=("attributes", "landmarks", "expression", "identity", "face"),
)
TASKS = ["landmarks", "smile", "expression"]

#: options that make each backbone quick on a CPU (every registered backbone must appear here)
FAST: dict[str, dict[str, Any]] = {
    "small": {"width": 8},
    "gender-glasses": {},
    "tcdcn": {},
    "famo9": {"width": 0.125},
    "vgg16": {"width": 0.125, "input_size": 64},
    "resnet18": {"input_size": 32},
    "resnet50": {"input_size": 32},
    "mcfa": {"width": 0.0625, "input_size": 128},
}


def tasks(names: list[str] | None = None) -> list[Task]:
    return build_tasks(names or TASKS, INFO)


def fast_model(name: str, task_names: list[str] | None = None, **over: Any) -> MultiTaskModel:
    opts = {**FAST[name], **over}
    return build_model(name, tasks(task_names), **opts)


def images(model: MultiTaskModel, batch: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(batch, c, s, s, generator=g) for s, c in model.input_spec)


def trace(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, inputs, strict=False)


def onnx_run(module: torch.nn.Module, inputs: tuple[Tensor, ...], run_inputs: tuple[Tensor, ...], out_names: list[str]) -> list[np.ndarray]:
    """Export with the TorchScript-based exporter (opset 17, dynamic batch) and run with onnxruntime."""
    import onnxruntime as ort

    in_names = [f"x{i}" for i in range(len(inputs))]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, inputs, buf, dynamo=False, opset_version=17, input_names=in_names, output_names=out_names,
            dynamic_axes={n: {0: "batch"} for n in in_names + out_names},
        )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    return sess.run(out_names, {n: x.numpy() for n, x in zip(in_names, run_inputs)})


def all_names() -> list[str]:
    return BACKBONES.names()


def assert_trunk_scripts(trunk: torch.nn.Module, size: int = 64) -> None:
    """TorchScript compiles the trunk in evaluation mode, and the script computes what it does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(trunk.eval())
    x = torch.rand(2, 3, size, size)
    torch.testing.assert_close(scripted(x), trunk(x))
