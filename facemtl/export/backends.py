"""Inference backends behind one interface: an exported ONNX model (ONNX Runtime), an exported
TorchScript model, or a training checkpoint (the PyTorch model itself).

``backend.run_stage(i, images, prev)`` runs stage ``i`` (always 0 for a plain model; 0, 1, 2 =
S_Net, M_Net, L_Net for MCFA's cascade) on float32 RGB images in [0, 1], (N, 3, S, S) at
``backend.meta.input_sizes[i]``, and returns ``{output name: float32 (N, dim)}``. It splits the
batch into chunks (padding the last one for a fixed-batch export). :func:`load_backend` picks the
backend from what the path is; the ONNX path imports neither torch nor the model code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facemtl.errors import DataFormatError, MissingFileError
from facemtl.export.metadata import ModelMetadata, metadata_path, read_metadata
from facemtl.tasks.registry import output_kind

log = logging.getLogger(__name__)

#: windows per call for dynamic-batch models (bounded memory on big photos)
CHUNK = 128
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class Backend:
    """Runs the model's stage(s) on numpy batches; subclasses provide ``_call(i, feeds)``."""

    kind = "base"

    def __init__(self, meta: ModelMetadata):
        self.meta = meta

    @property
    def num_stages(self) -> int:
        return len(self.meta.input_sizes)

    def _call(self, i: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run_stage(self, i: int, images: np.ndarray, prev: np.ndarray | None = None) -> dict[str, np.ndarray]:
        n = len(images)
        fixed = None if self.meta.dynamic_batch else (self.meta.batch_size or 1)
        chunk = fixed or CHUNK
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, n, chunk):
            feeds = {"image": images[start:start + chunk]}
            if prev is not None:
                feeds["prev_feature"] = prev[start:start + chunk]
            m = len(feeds["image"])
            if fixed and m < fixed:  # a fixed-batch graph: pad with zeros, drop the padding after
                feeds = {k: np.concatenate([v, np.zeros((fixed - m, *v.shape[1:]), v.dtype)]) for k, v in feeds.items()}
            out = self._call(i, feeds)
            parts.append({k: v[:m] for k, v in out.items()})
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def run(self, images: list[np.ndarray], flip_test: bool = False) -> dict[str, np.ndarray]:
        """Every stage chained on one crop per image size (no gating): the final stage's outputs.

        ``flip_test``: the crops also run mirrored left to right, and each output with a mirror
        rule (:attr:`~facemtl.tasks.registry.OutputKind.unflip`) is averaged with its mirrored pass
        mapped back, as ``facemtl evaluate --flip-test`` does; the others keep the plain pass."""
        out = self._chain(images)
        if not flip_test:
            return out
        mirrored = self._chain([np.ascontiguousarray(x[..., ::-1]) for x in images])
        averaged = dict(out)
        for t in self.meta.tasks:
            kind = output_kind(t.kind)
            if kind is not None and kind.unflip is not None and t.name in out:
                averaged[t.name] = (out[t.name] + kind.unflip(mirrored[t.name])) / 2
        return averaged

    def _chain(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        prev = None
        out: dict[str, np.ndarray] = {}
        for i, x in enumerate(images):
            out = self.run_stage(i, x, prev)
            prev = out.get("feature")
        return out


class ExportedBackend(Backend):
    """An exported model: one runner per file, checked against its metadata when loaded."""

    def __init__(self, meta: ModelMetadata, threads: int | None = None):
        super().__init__(meta)
        self.kind = meta.model_format
        self.runners: list[Runner] = []
        for i, path in enumerate(meta.file_paths()):
            if not path.is_file():
                raise MissingFileError(f"model file {path} named in {meta.path} does not exist; export the model again.")
            self.runners.append(self._open(i, path, threads))

    def _open(self, i: int, path: Path, threads: int | None) -> Runner:
        size = self.meta.input_sizes[i]
        names = self.meta.task_names
        if self.meta.model_format == "onnx":
            from facemtl.export.onnx import OnnxRunner

            r = OnnxRunner(path, threads=threads)
            shape = r.input_shape("image") if "image" in r.inputs else None
            if shape is None or list(shape[2:]) != [size, size] or shape[1] != 3:
                raise DataFormatError(
                    f"model {path} takes input {shape} but its metadata {self.meta.path} says (batch, 3, {size}, {size}); "
                    "the two do not belong together: export the model again."
                )
            missing = [n for n in names if n not in r.output_names]
            if missing:
                raise DataFormatError(f"model {path} lacks output(s) {missing} that its metadata {self.meta.path} lists; export it again.")
            return r
        from facemtl.export.torchscript import TorchScriptRunner

        inputs = ["image", "prev_feature"] if i else ["image"]
        r = TorchScriptRunner(path, input_names=inputs, dtype=self.meta.precision, threads=threads)
        self._check_embedded(r, path)
        return r

    def _check_embedded(self, r: Any, path: Path) -> None:
        """TorchScript files carry a copy of their metadata: it must agree on inputs and tasks."""
        if not r.embedded_metadata:
            return
        try:
            emb = json.loads(r.embedded_metadata)
        except json.JSONDecodeError:
            return
        if emb.get("input_sizes") != self.meta.input_sizes or [t["name"] for t in emb.get("tasks", [])] != self.meta.task_names:
            raise DataFormatError(
                f"model {path} was exported for inputs {emb.get('input_sizes')} and tasks {[t['name'] for t in emb.get('tasks', [])]}, "
                f"but its metadata {self.meta.path} says {self.meta.input_sizes} and {self.meta.task_names}; export the model again."
            )

    def _call(self, i: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runners[i](feeds)


class TorchBackend(Backend):
    """A :class:`~facemtl.models.MultiTaskModel` in memory (from a checkpoint, or built in a test)."""

    kind = "checkpoint"

    def __init__(self, model: Any, tasks: list[Any], cfg: Any = None, device: str = "cpu"):
        from facemtl.export.metadata import describe_model

        super().__init__(describe_model(model, tasks, cfg, dynamic_batch=True))
        self.model = model.eval().to(device)
        self.device = device
        self._stages = [model.stage(i) for i in range(3)] if len(self.meta.input_sizes) > 1 else [model]

    def _call(self, i: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds["image"], dtype=np.float32)).to(self.device)]
        if "prev_feature" in feeds:
            args.append(torch.from_numpy(np.ascontiguousarray(feeds["prev_feature"], dtype=np.float32)).to(self.device))
        with torch.inference_mode():
            out = self._stages[i](*args)
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def resolve_model_path(path: str | Path) -> tuple[str, Path]:
    """("exported", metadata file) or ("checkpoint", run folder or .pt) for what the user named."""
    p = Path(path)
    if p.suffix == ".json":
        return "exported", p
    if metadata_path(p).is_file():
        return "exported", metadata_path(p)
    if p.is_dir():
        return "checkpoint", p
    if p.suffix in (".onnx", ".torchscript"):
        what = "file" if p.exists() else "model"
        raise MissingFileError(
            f"{what} {p} has no metadata file {metadata_path(p)} beside it; it holds the task names and input size "
            "predict needs: export the model again with `facemtl export`."
        )
    if not p.exists():
        raise MissingFileError(f"model {p} does not exist; give an exported model (.onnx / .torchscript), a run folder or a checkpoint.")
    return "checkpoint", p


def load_backend(path: str | Path, *, threads: int | None = None, device: str = "cpu") -> Backend:
    """The backend for an exported model (or its metadata file), a run folder or a checkpoint."""
    kind, p = resolve_model_path(path)
    if kind == "exported":
        return ExportedBackend(read_metadata(p), threads=threads)
    from facemtl.engine.checkpoint import load_model

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    model, tasks, cfg, _ = load_model(p)
    return TorchBackend(model, tasks, cfg, device=device)
