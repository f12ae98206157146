"""``export_model``: write an ONNX or TorchScript model plus its metadata, checked for parity.

Order of work, so that a failed export leaves nothing half-written and deletes nothing the user had:

1. export every file to a temporary name beside its target (``.model.onnx.XXXX.tmp``);
2. run the temporary files (ONNX Runtime / TorchScript) and the float32 PyTorch model on one seeded
   random batch and compare every output (:mod:`facemtl.export.parity`);
3. on success write the metadata and rename everything into place; on failure (or any error)
   delete the temporary files and raise :class:`~facemtl.export.parity.ParityError`.

A full disk (or an unwritable folder) at any step ends in one :class:`~facemtl.errors.WriteError`
naming the file, with the same clean-up. Written files get ``0666`` less the umask.

MCFA's cascade is exported as three files, one per sub-network (``model.s_net.onnx``,
``model.m_net.onnx``, ``model.l_net.onnx``) with one metadata file ``model.onnx.json`` whose
``cascade`` entry says how they chain (see ``docs/deploy.md``)::

    s = S_Net(image=x56)                          # {tasks..., feature (B, 256)}
    m = M_Net(image=x112, prev_feature=s.feature) # only for windows with sigmoid(s.detection[:, 0]) >= threshold
    l = L_Net(image=x224, prev_feature=m.feature) # likewise; L_Net's outputs are the final ones

All three crops show the same face window at the three sizes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemtl.errors import ConfigError, FacemtlError
from facemtl.export.metadata import ModelMetadata, describe_model, metadata_path
from facemtl.export.onnx import DEFAULT_OPSET, OnnxRunner, export_onnx
from facemtl.export.parity import DEFAULT_TOLERANCE, ParityReport, compare_outputs, random_images
from facemtl.export.torchscript import TorchScriptRunner, export_torchscript
from facemtl.tasks.registry import output_kind
from facemtl.utils.io import current_umask, write_error

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}
CASCADE_THRESHOLD = 0.5
CHAIN = (
    "Every stage sees the same face window, resized to its own input size. S_Net(image) -> outputs + feature; "
    "M_Net(image, prev_feature = S_Net's feature) -> outputs + feature; L_Net(image, prev_feature = M_Net's "
    "feature) -> final outputs. MCFA's threshold-control layer: a window goes on to the next stage only "
    "when sigmoid(detection[:, 0]) >= threshold at the current one."
)


@dataclass
class ExportResult:
    files: list[Path]
    metadata_path: Path
    parity: ParityReport
    meta: ModelMetadata
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Unit:
    """One file to write: a module taking ``image`` (and ``prev_feature``), returning named outputs."""

    name: str
    module: Any
    size: int
    prev_dim: int
    outputs: list[str]
    path: Path

    @property
    def input_names(self) -> list[str]:
        return ["image", "prev_feature"] if self.prev_dim else ["image"]


def _tuple_module(module: Any, names: list[str]) -> Any:
    """ONNX wants a tuple in output-name order; the models return dicts."""
    from torch import nn

    class TupleOutputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *x):  # type: ignore[no-untyped-def]
            out = self.inner(*x)
            return tuple(out[n] for n in names)

    return TupleOutputs().eval()


def _units(net: Any, out: Path, suffix: str) -> list[_Unit]:
    from facemtl.models import CascadeModel

    if not isinstance(net, CascadeModel):
        return [_Unit("model", net, net.input_spec[0][0], 0, list(net.task_names), out)]
    units = []
    for i, (size, _) in enumerate(net.input_spec):
        stage = net.stage(i)
        name = ("S_Net", "M_Net", "L_Net")[i]
        outs = list(net.task_names) + (["feature"] if stage.emits_feature else [])
        prev = net.feature_dims[i - 1] if i else 0
        units.append(_Unit(name, stage, size, prev, outs, out.with_name(f"{out.stem}.{name.lower()}{suffix}")))
    return units


def _reference(model: Any, units: list[_Unit], images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Float32 PyTorch outputs of every unit, chained (each stage fed the previous stage's feature)."""
    import torch

    from facemtl.models import CascadeModel

    outs: list[dict[str, np.ndarray]] = []
    with torch.no_grad():
        if not isinstance(model, CascadeModel):
            return [{k: v.float().numpy() for k, v in model(torch.from_numpy(images[0])).items()}]
        prev = None
        for i, _ in enumerate(units):
            o = model.stage(i)(torch.from_numpy(images[i]), prev)
            prev = o.get("feature")
            outs.append({k: v.float().numpy() for k, v in o.items()})
    return outs


def export_model(
    model: Any, tasks: list[Any], out: str | Path, *, fmt: str = "onnx", opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False, half: bool = False, cfg: Any = None, tolerance: float | None = None,
    batch_size: int = 1,
) -> ExportResult:
    """Export ``model`` (every task head as a named output) to ``out``; see the module docstring.

    ``batch_size`` is the fixed batch of a static export (``dynamic_batch=False``). ``tolerance``
    defaults to :data:`~facemtl.export.parity.DEFAULT_TOLERANCE` of the precision."""
    import torch

    if fmt not in FORMATS:
        raise ConfigError(f"Invalid export format '{fmt}'. Only onnx and torchscript are supported.")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}.")
    suffix = FORMATS[fmt]
    out = Path(out)
    if out.suffix != suffix:
        out = out.with_name(out.name + suffix) if out.suffix in ("", ".") else out.with_suffix(suffix)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file path such as {out / ('model' + suffix)}.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, out) from None
    precision = "float16" if half else "float32"
    tol = float(tolerance) if tolerance is not None else DEFAULT_TOLERANCE[precision]
    model.eval()
    net = copy.deepcopy(model).half().eval() if half else model
    dtype = torch.float16 if half else torch.float32
    units, ref_units = _units(net, out, suffix), _units(model, out, suffix)
    meta_file = metadata_path(out)
    meta = describe_model(
        model, tasks, cfg, model_format=fmt, files=[u.path.name for u in units], precision=precision,
        dynamic_batch=dynamic_batch, batch_size=None if dynamic_batch else batch_size,
        opset=int(opset) if fmt == "onnx" else None,
    )
    if len(units) > 1:
        meta.cascade = _cascade_entry(meta, units, tasks)
    tmps: dict[Path, Path] = {}
    writing = out  # the file being written, for a WriteError
    try:
        # 1. export to temporary files (example batch 2 when dynamic, so nothing specialises on 1)
        ex = random_images([u.size for u in units], 2 if dynamic_batch else batch_size, seed=0)
        ex_ref = _reference(model, ref_units, ex)
        for i, u in enumerate(units):
            writing = u.path
            fd, name = tempfile.mkstemp(prefix=f".{u.path.name}.", suffix=".tmp", dir=u.path.parent)
            os.close(fd)
            tmps[u.path] = Path(name)
            args = [torch.from_numpy(ex[i]).to(dtype)]
            if u.prev_dim:
                args.append(torch.from_numpy(ex_ref[i - 1]["feature"]).to(dtype))
            log.info("exporting %s to %s (%s, %s)", u.name, u.path, fmt, precision)
            if fmt == "onnx":
                export_onnx(_tuple_module(u.module, u.outputs), args, tmps[u.path], input_names=u.input_names,
                            output_names=u.outputs, opset=opset, dynamic_batch=dynamic_batch)
            else:
                export_torchscript(u.module, args, tmps[u.path], metadata_json=meta.to_json())
            if any(m.training for m in model.modules()):  # exporters restore modes: keep eval
                model.eval()
        # 2. parity on another seeded batch (batch 3 when dynamic: proves the batch axis is free)
        report = _parity(model, units, ref_units, fmt, precision, tmps, tol, 3 if dynamic_batch else batch_size)
        report.raise_if_failed(f"the exported {fmt} model")
        meta.parity = report.to_dict()
        # 3. metadata, then rename everything into place
        writing = meta_file
        fd, name = tempfile.mkstemp(prefix=f".{meta_file.name}.", suffix=".tmp", dir=meta_file.parent)
        os.close(fd)
        tmps[meta_file] = Path(name)
        tmps[meta_file].write_text(meta.to_json(), encoding="utf-8")
        mode = 0o666 & ~current_umask()  # mkstemp makes 0600 files; give them the usual permissions
        for final, tmp in tmps.items():
            writing = final
            os.chmod(tmp, mode)
            os.replace(tmp, final)
        tmps.clear()
    except OSError as e:
        if isinstance(e, FacemtlError):
            raise
        _remove(tmps)  # first, so the message counts the space they held as free
        size = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
        raise write_error(e, writing, size_hint=size) from None  # every file together
    finally:
        _remove(tmps)
    meta.path = meta_file
    return ExportResult([u.path for u in units], meta_file, report, meta)


def _remove(tmps: dict[Path, Path]) -> None:
    for tmp in tmps.values():
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    tmps.clear()


def _runner(fmt: str, path: Path, unit: _Unit, precision: str) -> Any:
    if fmt == "onnx":
        return OnnxRunner(path)
    return TorchScriptRunner(path, input_names=unit.input_names, dtype=precision)


def _parity(model: Any, units: list[_Unit], ref_units: list[_Unit], fmt: str, precision: str,
            tmps: dict[Path, Path], tol: float, batch: int) -> ParityReport:
    """Per unit against PyTorch (fed PyTorch's features); for the cascade also the chained files."""
    images = random_images([u.size for u in units], batch, seed=1)
    ref = _reference(model, ref_units, images)
    runners = [_runner(fmt, tmps[u.path], u, precision) for u in units]
    report = ParityReport(tolerance=tol, runtime="onnxruntime" if fmt == "onnx" else "torchscript")
    prev_exported: np.ndarray | None = None
    chained: dict[str, np.ndarray] = {}
    for i, (u, run) in enumerate(zip(units, runners)):
        feeds = {"image": images[i]}
        if u.prev_dim:
            feeds["prev_feature"] = ref[i - 1]["feature"]
        got = run(feeds)
        report.merge(compare_outputs(ref[i], got, tol), prefix=f"{u.name}/" if len(units) > 1 else "")
        if len(units) > 1:
            if u.prev_dim:
                feeds["prev_feature"] = prev_exported  # type: ignore[assignment]
                got = run(feeds)
            prev_exported, chained = got.get("feature"), got
    if len(units) > 1:  # the three exported files chained end to end against the whole cascade
        import torch

        with torch.no_grad():
            whole = {k: v.numpy() for k, v in model(*[torch.from_numpy(x) for x in images]).items()}
        report.merge(compare_outputs(whole, chained, tol), prefix="chain/")
    return report


def _cascade_entry(meta: ModelMetadata, units: list[_Unit], tasks: list[Any]) -> dict[str, Any]:
    stages = []
    for u in units:
        inputs = [meta.image_input(u.size)]
        if u.prev_dim:
            inputs.append({"name": "prev_feature", "shape": [inputs[0]["shape"][0], u.prev_dim], "dtype": meta.precision})
        feature_dim = None
        if "feature" in u.outputs:
            feature_dim = units[units.index(u) + 1].prev_dim
        stages.append({"name": u.name, "file": u.path.name, "size": u.size, "inputs": inputs,
                       "outputs": u.outputs, "feature_dim": feature_dim})
    gate = next((t.name for t in meta.tasks if (k := output_kind(t.kind)) is not None and k.finds_faces), None)
    return {"stages": stages, "gate_task": gate, "threshold": CASCADE_THRESHOLD, "chain": CHAIN}


def default_out(source: str | Path, fmt: str) -> Path:
    """``RUN/export/model.onnx`` for a run folder, ``<checkpoint folder>/export/model.onnx`` for a file."""
    p = Path(source)
    base = p if p.is_dir() else p.parent
    return base / "export" / f"model{FORMATS.get(fmt, '.onnx')}"


def export_checkpoint(source: str | Path, out: str | Path | None = None, *, fmt: str = "onnx", **kwargs: Any) -> ExportResult:
    """Load a run folder or checkpoint and export it (``kwargs`` as :func:`export_model`)."""
    from facemtl.engine.checkpoint import load_model

    model, tasks, cfg, _info = load_model(source)
    return export_model(model, tasks, out or default_out(source, fmt), fmt=fmt, cfg=cfg, **kwargs)
