"""Frozen run configuration: data, model, tasks, weighting and training settings.

Recipes are TOML files with the same sections (``[data]``, ``[model]``, ``[tasks]``,
``[weighting]``, ``[train]``, ``[augment]``, ``[mine]``) plus top-level ``name``, ``description``, ``paper`` and
``written_for``. CLI flags override recipe values through :func:`apply_overrides` with dotted
keys (``train.epochs=3``). The resolved configuration is written into every run folder.

Rules that join settings live here, once, for the CLI and the Python API alike:

- another backbone (``model.backbone`` overridden with a name other than the recipe's) drops the
  recipe's ``model.input_size`` and ``model.options``, which were chosen for the recipe's
  backbone; overrides of those two keys in the same call apply on top
  (``--backbone small --set model.options.width=8`` keeps the width);
- other tasks (``tasks.names`` overridden) without the task that the recipe's ``train.select``
  names (``landmarks/nme``) make ``best.pt`` follow the summed validation loss (``val_loss``)
  instead; a ``train.select`` given in the same call applies on top;
- :meth:`RunConfig.validate` checks value ranges (``train.epochs >= 1``...), which
  :func:`facemtl.engine.trainer.train` runs before it writes anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from facemtl.data.augment import AugmentConfig
from facemtl.engine.mining import MineConfig
from facemtl.engine.schedules import epochs_of, is_epochs_or_share
from facemtl.errors import ConfigError, MissingFileError, UnknownNameError
from facemtl.utils.options import parse_bool, parse_bool_or_auto


@dataclass(frozen=True)
class DataConfig:
    path: str = "data/synthfaces.h5"
    #: render SynthFaces into ``path`` first when it does not exist (only for the synthetic default)
    prepare_if_missing: bool = True
    synthetic_images: int = 8000
    synthetic_identities: int = 100
    #: sizes rendered when SynthFaces is prepared on the fly; empty: the sizes the model reads
    synthetic_sizes: tuple[int, ...] = ()
    #: head height over crop side drawn from this range when SynthFaces is prepared on the fly
    #: (LO, HI); empty: SynthFaces' own (0.6, 1.4). The ``tcdcn`` recipe frames faces as a face
    #: detector's box does (1.0, 1.4)
    synthetic_face_scale: tuple[float, ...] = ()
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = 0
    in_memory: str = "auto"
    #: several caches trained together (``--data a.h5,b.h5``); empty: ``path`` alone (facemtl.data.mixing)
    sources: tuple[str, ...] = ()
    #: how batches draw from ``sources``: proportional | uniform | temperature:T | NAME=W,...
    mix: str = "proportional"
    #: batch: every batch comes from one source (measured better, docs/reports.md); sample: batches mix them
    mix_by: str = "batch"

    def paths(self) -> list[str]:
        """The caches of the run: ``sources``, or ``path`` alone."""
        return list(self.sources) or [self.path]


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "small"
    input_size: int | None = None
    weights: str | None = None
    options: dict = field(default_factory=dict)
    #: how the tasks share the network (facemtl.models.architectures; docs/architectures.md)
    architecture: str = "hps"
    architecture_options: dict = field(default_factory=dict)


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
    schedule: str = "cosine"  # cosine | step | inverse-epoch | constant
    step_size: int = 10
    gamma: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 0.0
    patience: int = 0  # early stopping on validation loss (or on `select`); 0 = off
    select: str = "val_loss"  # what best.pt and early stopping follow: val_loss (the sum) or TASK/METRIC, e.g. landmarks/nme
    ema: float = 0.0  # decay of the weights' moving average that validation, best.pt and export use; 0 = off
    #: from this many epochs on (a whole number), or from this share of train.epochs on (0 < swa < 1,
    #: :func:`epochs_of`), that average is the plain mean of the weights after every step (SWA); 0 = off
    swa: float = 0
    amp: str = "auto"  # auto (bf16 on CUDA, off elsewhere) | bf16 | fp16 | off
    channels_last: str = "auto"  # auto: on CUDA only (on CPU it slowed the small CNN several-fold)
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    max_steps_per_epoch: int = 0  # 0 = whole epoch
    val_batches: int = 0  # 0 = whole validation split
    #: {task: K}: that task's loss trains the shared layers in the first K epochs only; afterwards it
    #: trains its own head (at weight 1) and the other tasks train the shared layers (docs/training.md)
    shared_epochs: dict = field(default_factory=dict)


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
    mine: MineConfig = field(default_factory=MineConfig)

    def resolved(self) -> RunConfig:
        """This configuration with the settings given as a share of the epochs (``train.swa``,
        ``mine.start``; :func:`epochs_of`) turned into whole epochs, as the trainer reads them and
        the run folder's ``config.toml`` records them."""
        e = self.train.epochs
        return dataclasses.replace(self, train=dataclasses.replace(self.train, swa=epochs_of(self.train.swa, e)),
                                   mine=dataclasses.replace(self.mine, start=max(1, epochs_of(self.mine.start, e))))

    # -- conversions ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tasks"]["names"] = list(d["tasks"]["names"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> RunConfig:
        return _from_dict(cls, d, where)

    def digest(self) -> str:
        """Hash of what determines the network's shape (backbone, tasks, input size)."""
        key = {"model": dataclasses.asdict(self.model), "tasks": list(self.tasks.names), "task_options": self.tasks.options}
        key["model"].pop("weights", None)
        if key["model"]["architecture"] == "hps" and not key["model"]["architecture_options"]:
            del key["model"]["architecture"], key["model"]["architecture_options"]  # runs from before the setting resume
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}")

    def validate(self) -> RunConfig:
        """Raise :class:`ConfigError` for a value out of its range (the first one found); returns self."""
        from facemtl.data.synth.sampling import FACE_SCALE_RULE, valid_face_scale
        from facemtl.engine.schedules import SCHEDULE_ALIASES, SCHEDULES

        t, d = self.train, self.data
        checks = [  # (setting, value, holds, what it must be)
            ("train.epochs", t.epochs, t.epochs >= 1, "at least 1"),
            ("train.batch_size", t.batch_size, t.batch_size >= 1, "at least 1"),
            ("train.lr", t.lr, math.isfinite(t.lr) and t.lr > 0, "a positive number"),
            ("train.weight_decay", t.weight_decay, math.isfinite(t.weight_decay) and t.weight_decay >= 0, "0 or more"),
            ("train.momentum", t.momentum, 0 <= t.momentum < 1, "in [0, 1)"),
            ("train.step_size", t.step_size, t.step_size >= 1, "at least 1"),
            ("train.gamma", t.gamma, math.isfinite(t.gamma) and t.gamma > 0, "a positive number"),
            ("train.warmup_steps", t.warmup_steps, t.warmup_steps >= 0, "0 or more"),
            ("train.grad_clip", t.grad_clip, math.isfinite(t.grad_clip) and t.grad_clip >= 0, "0 (off) or more"),
            ("train.patience", t.patience, t.patience >= 0, "0 (off) or more"),
            ("train.ema", t.ema, 0 <= t.ema < 1, "0 (off) or a decay in (0, 1), e.g. 0.99"),
            ("train.swa", t.swa, t.swa == 0 or (is_epochs_or_share(t.swa) and t.swa < t.epochs),
             f"0 (off), a share of the epochs in (0, 1) or a whole number of epochs below train.epochs ({t.epochs})"),
            ("train.select", t.select, t.select == "val_loss" or bool(re.fullmatch(r"[^/\s]+/[^/\s]+", t.select)),
             "val_loss or TASK/METRIC, e.g. landmarks/nme"),
            ("train.seed", t.seed, 0 <= t.seed < 2**32 - 1024, "between 0 and 2**32 - 1024"),  # + rank, + offsets
            ("train.max_steps_per_epoch", t.max_steps_per_epoch, t.max_steps_per_epoch >= 0, "0 (whole epoch) or more"),
            ("train.val_batches", t.val_batches, t.val_batches >= 0, "0 (whole split) or more"),
            ("data.num_workers", d.num_workers, d.num_workers >= 0, "0 or more"),
            ("data.synthetic_images", d.synthetic_images, d.synthetic_images >= 1, "at least 1"),
            ("data.synthetic_identities", d.synthetic_identities, d.synthetic_identities >= 1, "at least 1"),
            ("data.synthetic_face_scale", d.synthetic_face_scale, not d.synthetic_face_scale or valid_face_scale(d.synthetic_face_scale),
             f"empty (SynthFaces' own) or {FACE_SCALE_RULE}"),
            ("model.input_size", self.model.input_size, self.model.input_size is None or self.model.input_size >= 1,
             "a positive number of pixels"),
        ]
        checks += self.mine.checks()
        if self.mine.enabled and self.mine.start >= 1:
            checks.append(("mine.start", self.mine.start, self.mine.start < t.epochs,
                           f"below train.epochs ({t.epochs}) for the mining round to come, or a share of the epochs in (0, 1)"))
        for task, k in t.shared_epochs.items():
            checks.append((f"train.shared_epochs.{task}", k, isinstance(k, int) and not isinstance(k, bool) and k >= 0,
                           "a whole number of epochs, 0 or more"))
        for key, value, ok, must in checks:
            if not ok:
                flag = _FLAGS.get(key)
                hint = _HINTS.get(key, "")
                raise ConfigError(f"{key}{f' ({flag})' if flag else ''} must be {must}, got {value!r}.{hint}")
        if t.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"Invalid optimizer '{t.optimizer}'. Only adamw and sgd are supported.")
        if t.schedule not in SCHEDULES and t.schedule not in SCHEDULE_ALIASES:
            raise UnknownNameError("schedule", t.schedule, SCHEDULES)
        if t.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"Invalid amp '{t.amp}'. Use auto, bf16, fp16 or off.")
        if d.mix_by not in ("sample", "batch"):
            raise UnknownNameError("mix-by", d.mix_by, ["sample", "batch"])
        if len(d.sources) > 1:
            from facemtl.data.mixing import mix_weights, source_names

            names = source_names(d.sources)
            mix_weights(d.mix, names, [1] * len(names))  # the spelling; the sizes are known once the caches are open
        for key, value in (("data.in_memory", d.in_memory), ("train.channels_last", t.channels_last)):
            try:
                parse_bool_or_auto(value)
            except ValueError:
                raise ConfigError(f"{key} must be auto or a yes/no value (1/true/yes/on, 0/false/no/off), got {value!r}.") from None
        return self


#: the CLI flag of a setting, named in range errors
_FLAGS = {
    "train.epochs": "--epochs", "train.batch_size": "--batch-size", "train.lr": "--lr", "train.patience": "--patience",
    "train.grad_clip": "--grad-clip", "train.ema": "--ema", "train.swa": "--swa", "train.select": "--select", "train.seed": "--seed", "train.max_steps_per_epoch": "--max-steps",
    "data.num_workers": "--workers", "model.input_size": "--input-size",
}

#: what to do, after a range error of these settings
_HINTS = {
    "train.swa": " For a shorter run of a recipe that averages weights, pass a smaller --swa, a share such as --swa 0.5, or --swa 0.",
    "mine.start": " For a shorter run, pass --set mine.start=0.5 (from half the epochs on) or --set mine.every=0 (no mining).",
}


_SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "tasks": TasksConfig, "weighting": WeightingConfig, "train": TrainConfig,
    "augment": AugmentConfig, "mine": MineConfig,
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
        if t.startswith("tuple[str"):
            return tuple(x.strip() for x in v.split(",") if x.strip()) if isinstance(v, str) else tuple(str(x) for x in v)
        if t.startswith("tuple[int"):
            return tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v))
        if t.startswith("tuple[float"):
            return tuple(float(x) for x in (v.split(",") if isinstance(v, str) else v))
        if t == "bool":
            return parse_bool(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: '{f.name}' must be {t}, got {v!r}.") from None
    return v


# -- overrides --------------------------------------------------------------------------------
def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``cfg`` with dotted-key overrides applied (``{"train.epochs": 3, "name": "x"}``); None values are skipped.

    Another backbone first drops the recipe's ``model.input_size`` and ``model.options`` (module
    docstring); the overrides then apply in order, so those given here are kept."""
    d = cfg.to_dict()
    backbone = overrides.get("model.backbone")
    if backbone is not None and backbone != cfg.model.backbone:  # the recipe's size and options suit its own backbone
        d["model"]["input_size"], d["model"]["options"] = None, {}
    names = overrides.get("tasks.names")
    if names is not None and "/" in cfg.train.select:  # the recipe's TASK/METRIC, for a task no longer trained
        kept = names.split(",") if isinstance(names, str) else list(names)
        if cfg.train.select.split("/")[0] not in [n.strip() for n in kept]:
            d["train"]["select"] = "val_loss"
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
        return load_config_file(path, "recipe file")
    if name_or_path not in recipe_names():
        raise UnknownNameError("recipe", name_or_path, recipe_names())
    where = f"recipe '{name_or_path}'"
    return RunConfig.from_dict(_recipe_dict(name_or_path, where), where)


def load_config_file(path: str | Path, what: str = "configuration") -> RunConfig:
    """A :class:`RunConfig` from a TOML file (a recipe, or a run folder's ``config.toml``), with
    errors naming the file and, for text that is not UTF-8 or not TOML, the line."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{what} {path} does not exist.")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a .toml file.")
    return RunConfig.from_dict(_file_dict(path, f"{what} {path}"), str(path))


def _file_dict(path: Path, where: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {where}: {e.strerror or e}.") from None
    return _extend(_parse_toml(data, where), where, path.parent, seen + (str(path.resolve()),))


def _recipe_dict(name: str, where: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    data = (resources.files("facemtl") / "recipes" / f"{name}.toml").read_bytes()
    return _extend(_parse_toml(data, where), where, None, seen + (name,))


def _extend(d: dict[str, Any], where: str, folder: Path | None, seen: tuple[str, ...]) -> dict[str, Any]:
    """``extends = "BASE"`` at the top of a recipe: BASE's settings (a packaged recipe's name, or a
    TOML file beside this one) with this file's on top, table by table (``[model.options]`` keeps
    BASE's keys that this file does not set; lists and values replace BASE's)."""
    base_name = d.pop("extends", None)
    if base_name is None:
        return d
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{where}: 'extends' must be a recipe name or a TOML file, got {base_name!r}.")
    base_path = (folder / base_name) if folder is not None else None
    is_file = base_path is not None and (base_name.endswith(".toml") or base_path.exists())
    if (str(base_path.resolve()) if is_file else base_name) in seen:
        raise ConfigError(f"{where}: 'extends' goes round in a circle ({' -> '.join(seen)} -> {base_name}).")
    if is_file:
        if not base_path.is_file():
            raise MissingFileError(f"{where} extends {base_path}, which does not exist.")
        base = _file_dict(base_path, f"{where} extends {base_path}", seen)
    else:
        if base_name not in recipe_names():
            raise UnknownNameError("recipe", base_name, recipe_names())
        base = _recipe_dict(base_name, f"recipe '{base_name}'", seen)
    return _merge(base, d)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_toml(data: bytes, where: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{where} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                          "save it as UTF-8 (a TOML file must be).") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}; fix that line.") from None


def to_toml(cfg: RunConfig) -> str:
    import tomli_w

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v is not None}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return tomli_w.dumps(clean(cfg.to_dict()))
