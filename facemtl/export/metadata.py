"""The metadata file written next to every exported model (``model.onnx`` -> ``model.onnx.json``).

It says everything a program needs to use the exported network without facemtl:

- ``inputs``: one entry per model input: name, shape (``"batch"`` when the batch axis is dynamic),
  dtype; images are float RGB in [0, 1], NCHW, at ``size`` x ``size``. Grey conversion (ITU-R 601
  luma) and the ``(x - mean) / std`` normalisation happen *inside* the graph (``preprocessing``
  records them for reference only); the model never resizes.
- ``tasks``: one entry per named output, in output order: ``kind`` (detection, landmarks,
  attributes, expression, pose, identity: :data:`facemtl.tasks.registry.OUTPUTS`), ``dim``,
  ``labels`` naming each column and ``layout``, a sentence saying what the columns hold.
- ``landmarks``: point order (CelebA's) and coordinate frame; ``framing``: where the face box sits
  in the crops the model was trained on (what a face finder must reproduce).
- ``cascade``: MCFA only: the three stage files and how they chain.
- provenance: ``facemtl_version``, ``backbone``, ``backbone_options``, ``recipe``,
  ``config_digest`` (:meth:`~facemtl.engine.config.RunConfig.digest` of the training run),
  ``precision``, ``opset``, and the ``parity`` check that export ran.

:func:`describe_model` builds it from a model; :func:`read_metadata` parses and validates one,
raising :class:`~facemtl.errors.DataFormatError` for a damaged file. This module needs neither
torch nor onnxruntime to *read* metadata.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facemtl import __version__
from facemtl.data.schema import LANDMARK_NAMES
from facemtl.errors import DataFormatError, MissingFileError
from facemtl.tasks.registry import output_kind

FORMAT = "facemtl-model"
VERSION = 1

#: Where the (tight head) face box sits in the crops ``predict`` cuts for a model: its centre at the
#: crop centre and its height 0.70 of the crop side. SynthFaces' training crops hold boxes from
#: about 0.6 to the whole side (the default set: centre 0.50, height 0.89 on average, clipped at
#: 1), so this loose framing lies inside what the models saw.
DEFAULT_FRAMING = {"box_centre": [0.5, 0.5], "box_height": 0.70}

LANDMARK_FRAME = (
    "10 numbers x1, y1, ..., x5, y5: points in `order`, normalised to [0, 1] of the input crop "
    "(origin at the top-left corner, x to the right, y down); pixel = crop origin + value * crop side"
)


@dataclass
class TaskOutput:
    """One named output of the exported model."""

    name: str
    kind: str
    dim: int
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        kind = output_kind(self.kind)
        return {**asdict(self), "layout": kind.layout if kind is not None else ""}


@dataclass
class ModelMetadata:
    """Parsed metadata; ``path`` is where it was read from (files are relative to its folder)."""

    model_format: str                  # onnx | torchscript | checkpoint
    files: list[str]                   # one file, or the cascade's three stage files
    input_sizes: list[int]             # per input image (cascade: S, M, L)
    tasks: list[TaskOutput]
    backbone: str = ""
    backbone_options: dict[str, Any] = field(default_factory=dict)
    architecture: str = "hps"          # how the tasks share the network (docs/architectures.md)
    architecture_options: dict[str, Any] = field(default_factory=dict)
    grey: bool = False
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    precision: str = "float32"
    dynamic_batch: bool = True
    batch_size: int | None = None      # fixed batch size when not dynamic
    opset: int | None = None
    recipe: str = ""
    config_digest: str = ""
    facemtl_version: str = __version__
    framing: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_FRAMING))
    cascade: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    created: str = ""
    path: Path | None = None

    # -- convenience -----------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, kind: str) -> TaskOutput | None:
        return next((t for t in self.tasks if t.kind == kind), None)

    @property
    def is_cascade(self) -> bool:
        return self.cascade is not None

    def image_input(self, size: int) -> dict[str, Any]:
        return {
            "name": "image", "shape": ["batch" if self.dynamic_batch else self.batch_size, 3, size, size],
            "dtype": self.precision, "layout": "NCHW", "colour": "RGB", "range": [0.0, 1.0],
        }

    def file_paths(self) -> list[Path]:
        base = self.path.parent if self.path is not None else Path(".")
        return [base / f for f in self.files]

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # one image input per file (the cascade's stages also take "prev_feature": see cascade)
        inputs = [self.image_input(s) for s in self.input_sizes]
        return {
            "format": FORMAT, "metadata_version": VERSION, "facemtl_version": self.facemtl_version,
            "created": self.created, "model_format": self.model_format, "files": self.files,
            "backbone": self.backbone, "backbone_options": self.backbone_options,
            "architecture": self.architecture, "architecture_options": self.architecture_options, "recipe": self.recipe,
            "config_digest": self.config_digest, "precision": self.precision, "opset": self.opset,
            "dynamic_batch": self.dynamic_batch, "batch_size": self.batch_size,
            "input_sizes": self.input_sizes, "inputs": inputs,
            "preprocessing": {
                "inside_model": True, "grey": self.grey, "grey_weights_rgb": [0.299, 0.587, 0.114],
                "mean": self.mean, "std": self.std,
                "note": "feed float RGB in [0, 1]; the graph converts to grey (if grey) and normalises itself",
            },
            "outputs": self.task_names + (["feature"] if self.is_cascade else []),
            "attribute_names": [n for t in self.tasks if t.kind == "attributes" for n in t.labels],
            "tasks": [t.to_dict() for t in self.tasks],
            "landmarks": {"order": list(LANDMARK_NAMES), "frame": LANDMARK_FRAME},
            "framing": self.framing, "cascade": self.cascade, "parity": self.parity,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"


def _json_default(x: Any) -> Any:
    if isinstance(x, tuple):
        return list(x)
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_metadata(path: str | Path) -> ModelMetadata:
    """Parse and validate a metadata file; :class:`DataFormatError` says what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"model metadata {p} does not exist; export the model again with `facemtl export`.")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(f"model metadata {p} is not valid JSON ({e}); it is damaged: export the model again.") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise DataFormatError(f"{p} is not a facemtl model metadata file (no \"format\": \"{FORMAT}\").")
    if int(d.get("metadata_version", 0)) > VERSION:
        raise DataFormatError(f"{p} was written by a newer facemtl (metadata version {d['metadata_version']}); upgrade facemtl.")
    try:
        tasks = [TaskOutput(t["name"], t["kind"], int(t["dim"]), list(t.get("labels", []))) for t in d["tasks"]]
        meta = ModelMetadata(
            model_format=str(d["model_format"]), files=[str(f) for f in d["files"]],
            input_sizes=[int(s) for s in d["input_sizes"]], tasks=tasks,
            backbone=str(d.get("backbone", "")), backbone_options=dict(d.get("backbone_options") or {}),
            architecture=str(d.get("architecture") or "hps"), architecture_options=dict(d.get("architecture_options") or {}),
            grey=bool(d["preprocessing"]["grey"]), mean=list(d["preprocessing"]["mean"]), std=list(d["preprocessing"]["std"]),
            precision=str(d.get("precision", "float32")), dynamic_batch=bool(d["dynamic_batch"]),
            batch_size=None if d.get("batch_size") is None else int(d["batch_size"]),
            opset=d.get("opset"), recipe=str(d.get("recipe", "")), config_digest=str(d.get("config_digest", "")),
            facemtl_version=str(d.get("facemtl_version", "")), framing=dict(d.get("framing") or DEFAULT_FRAMING),
            cascade=d.get("cascade"), parity=d.get("parity"), created=str(d.get("created", "")), path=p,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataFormatError(f"model metadata {p} lacks or garbles field {e}; export the model again.") from None
    if not meta.tasks or not meta.files or not meta.input_sizes:
        raise DataFormatError(f"model metadata {p} lists no task, file or input size; export the model again.")
    if meta.is_cascade and (len(meta.files) != 3 or len(meta.input_sizes) != 3):
        raise DataFormatError(f"model metadata {p} describes a cascade but does not list 3 stage files and sizes.")
    if meta.model_format not in ("onnx", "torchscript"):
        raise DataFormatError(f"model metadata {p}: unknown model_format '{meta.model_format}' (onnx or torchscript).")
    return meta


# -- building metadata from a model -------------------------------------------------------------
def task_output(task: Any) -> TaskOutput:
    """Describe one :class:`~facemtl.tasks.base.Task` as an exported output (its :meth:`export_output`)."""
    kind, dim, labels = task.export_output()
    return TaskOutput(task.name, kind, dim, labels)


def model_digest(model: Any) -> str:
    """Digest of a model's architecture config, for models without a training config."""
    key = {"config": model.config, "tasks": list(model.task_names)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_model(model: Any, tasks: list[Any], cfg: Any = None, **fields: Any) -> ModelMetadata:
    """Metadata of ``model`` (a :class:`~facemtl.models.MultiTaskModel`) with ``tasks``; ``cfg``
    (the run's :class:`RunConfig`) supplies the recipe name and config digest; ``fields`` set the
    export-specific ones (``model_format``, ``files``, ``precision``, ...)."""
    pre = model.preprocess
    by_name = {t.name: t for t in tasks}
    outs = [task_output(by_name[n]) for n in model.task_names]
    values: dict[str, Any] = {
        "model_format": "checkpoint", "files": [], "input_sizes": [s for s, _ in model.input_spec], "tasks": outs,
        "backbone": str(model.config.get("backbone", "")), "backbone_options": dict(model.config.get("options", {})),
        "architecture": str(model.config.get("architecture", "hps")),
        "architecture_options": dict(model.config.get("architecture_options", {})),
        "grey": pre.channels == 1, "mean": [float(v) for v in pre.mean.flatten()],
        "std": [float(1.0 / v) for v in pre.inv_std.flatten()],
        "recipe": cfg.name if cfg is not None else "", "config_digest": cfg.digest() if cfg is not None else model_digest(model),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    values.update(fields)
    return ModelMetadata(**values)


def metadata_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (for the cascade, ``model.onnx`` is the name its three
    stage files ``model.s_net.onnx`` ... derive from; the metadata lists them)."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")
