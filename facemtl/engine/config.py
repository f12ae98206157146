"""Frozen run configuration: data, model, tasks, weighting and training settings.

Recipes are TOML files with the same sections (``[data]``, ``[model]``, ``[tasks]``,
``[weighting]``, ``[train]``, ``[augment]``) plus top-level ``name``, ``description``, ``paper`` and
``written_for``. CLI flags override recipe values through :func:`apply_overrides` with dotted
keys (``train.epochs=3``). The resolved configuration is written into every run folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from facemtl.data.augment import AugmentConfig
from facemtl.errors import ConfigError, MissingFileError, UnknownNameError


@dataclass(frozen=True)
class DataConfig:
    path: str = "data/synthfaces.h5"
    #: render SynthFaces into ``path`` first when it does not exist (only for the synthetic default)
    prepare_if_missing: bool = True
    synthetic_images: int = 8000
    synthetic_identities: int = 100
    #: sizes rendered when SynthFaces is prepared on the fly; empty: the sizes the model reads
    synthetic_sizes: tuple[int, ...] = ()
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = 0
    in_memory: str = "auto"


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small"
    input_size: int | None = None
    weights: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TasksConfig:
    names: tuple[str, ...] = ("detection", "landmarks", "attributes", "expression", "pose")
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class WeightingConfig:
    name: str = "ew"
    options: dict = field(default_factory=dict)
    grad_mode: str | None = None  # None: the strategy's default ("rep" for gradient methods)
    #: budget of the per-task gradients on the shared parameters (grad mode "params"), e.g. 4GiB
    grad_memory: str = "4GiB"

    def __post_init__(self) -> None:
        from facemtl.weighting._grads import parse_memory

        parse_memory(self.grad_memory, where="weighting.grad_memory (--grad-memory)")  # refuse early


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"  # cosine | step | seed004 | constant
    step_size: int = 10
    gamma: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 0.0
    patience: int = 0  # early stopping on validation loss; 0 = off
    amp: str = "auto"  # auto (bf16 on CUDA, off elsewhere) | bf16 | fp16 | off
    channels_last: str = "auto"  # auto: on CUDA only (on CPU it slowed the small CNN several-fold)
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    max_steps_per_epoch: int = 0  # 0 = whole epoch
    val_batches: int = 0  # 0 = whole validation split


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    description: str = "Default multi-task face model on SynthFaces."
    paper: str = ""
    written_for: str = "synthetic"
    out: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    # -- conversions ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tasks"]["names"] = list(d["tasks"]["names"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> "RunConfig":
        return _from_dict(cls, d, where)

    def digest(self) -> str:
        """Hash of what determines the network's shape (backbone, tasks, input size)."""
        key = {"model": dataclasses.asdict(self.model), "tasks": list(self.tasks.names), "task_options": self.tasks.options}
        key["model"].pop("weights", None)
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}")


_SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "tasks": TasksConfig, "weighting": WeightingConfig, "train": TrainConfig,
    "augment": AugmentConfig,
}


def _from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    valid = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}.")
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        if cls is RunConfig and k in _SECTIONS:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: [{k}] must be a table.")
            kwargs[k] = _from_dict(_SECTIONS[k], v, f"{where} [{k}]")
        elif k == "names" and cls is TasksConfig:
            kwargs[k] = tuple(v.split(",")) if isinstance(v, str) else tuple(v)
        else:
            kwargs[k] = _coerce(valid[k], v, where)
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, v: Any, where: str) -> Any:
    t = str(f.type)
    try:
        if v is None:
            return None
        if t.startswith("int"):
            return int(v)
        if t.startswith("float"):
            return float(v)
        if t.startswith("tuple[int"):
            return tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v))
        if t == "bool":
            if isinstance(v, str):
                if v.lower() in ("1", "true", "yes", "on"):
                    return True
                if v.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(v)
            return bool(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: '{f.name}' must be {t}, got {v!r}.") from None
    return v


# -- overrides --------------------------------------------------------------------------------
def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``cfg`` with dotted-key overrides applied (``{"train.epochs": 3, "name": "x"}``); None values are skipped."""
    d = cfg.to_dict()
    for key, value in overrides.items():
        if value is None:
            continue
        node = d
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            if p not in node and "options" in parts[:i]:  # free-form option tables: tasks.options.landmarks.loss
                node[p] = {}
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown setting '{key}'.")
            node = node[p]
        if parts[-1] not in node and not (len(parts) > 2):
            raise ConfigError(f"unknown setting '{key}'.")
        node[parts[-1]] = value
    return RunConfig.from_dict(d, "overrides")


# -- recipes ----------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    root = resources.files("facemtl") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str) -> RunConfig:
    """A packaged recipe by name (``tcdcn``) or a TOML file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise MissingFileError(f"recipe file {path} does not exist.")
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        if name_or_path not in recipe_names():
            raise UnknownNameError("recipe", name_or_path, recipe_names())
        text = (resources.files("facemtl") / "recipes" / f"{name_or_path}.toml").read_text(encoding="utf-8")
        where = f"recipe '{name_or_path}'"
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}.") from None
    return RunConfig.from_dict(d, where)


def to_toml(cfg: RunConfig) -> str:
    import tomli_w

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v is not None}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return tomli_w.dumps(clean(cfg.to_dict()))
