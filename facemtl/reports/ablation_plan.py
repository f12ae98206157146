"""Which configurations an ablation trains: task subsets x weighting strategies x architectures x seeds, plus sweeps.

Subsets (``--subsets``) of the tasks T1..Tn given with ``--tasks``:

- ``all``            every non-empty subset (2^n - 1 of them)
- ``singles``        each task alone, and all n together (seed 004's MTL vs single-task CNNs)
- ``main-plus-one``  every task alone, main + each other task, and all n (TCDCN's table; needs ``--main``;
                     the other tasks' single runs are there so that Delta-m covers every task)
- a list             ``A+B,A+C,A``: subsets joined by ``+``, separated by commas
- ``none``           no subset: only the sweep points (Delta-m% is then undefined)

A single-task configuration is trained once, with equal weights (every strategy reduces to a
scaled loss on one task). Each multi-task subset is trained with every strategy of
``--weighting``; strategies that take a ``main`` option get ``--main`` when the subset holds it.
With ``--architecture hps,mtan,...`` every multi-task subset and strategy is trained with each
architecture (single-task runs keep ``hps``: a task alone has nothing to share, and Delta-m%
compares against plain single-task networks). Names of ``hps`` configurations do not change.

With several caches (``--data a.h5,b.h5``) and ``--mix`` given more than once, every
configuration, single-task ones included, is trained once per mix (the mix changes what a task
alone sees too: how often its labelled samples come); Delta-m% compares each configuration with
the single-task runs of the same mix. Names then carry the mix (``landmarks+smile [ew, mix uniform]``).

Without ``--subsets``: ``singles`` with a sweep, else ``main-plus-one`` with ``--main``, else ``all``.

A sweep ``--sweep TASK=START:STOP:STEP`` (seed 003's Figure 2) adds one configuration per value w
of START, START+STEP, ... up to STOP inclusive, on all n tasks with fixed weights: TASK gets w and
each other task (1 - w) / (n - 1), so the weights sum to 1 as in seed 003 (w1 + w2 = 1). Every
configuration is trained once per seed 0..N-1.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from facemtl.errors import ConfigError
from facemtl.reports._io import safe_name

SUBSET_MODES = ("all", "singles", "main-plus-one")
MAX_CONFIGURATIONS = 512


@dataclass(frozen=True)
class Sweep:
    task: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class Configuration:
    """One row of the ablation table (trained once per seed)."""

    tasks: tuple[str, ...]
    weighting: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    sweep_task: str | None = None
    sweep_weight: float | None = None
    architecture: str = "hps"
    #: the data mix of a multi-cache ablation with several ``--mix`` (None: the recipe's)
    mix: str | None = None

    @property
    def kind(self) -> str:
        return "sweep" if self.sweep_task else ("single" if len(self.tasks) == 1 else "multi")

    @property
    def name(self) -> str:
        base = "+".join(self.tasks)
        mix = f"mix {self.mix}" if self.mix is not None else ""
        if self.kind == "single":
            return f"{base} [{mix}]" if mix else base
        arch = f", {self.architecture}" if self.architecture != "hps" else ""
        mix = f", {mix}" if mix else ""
        if self.kind == "sweep":
            return f"{base} [{self.sweep_task}={self.sweep_weight:g}{arch}{mix}]"
        return f"{base} [{self.weighting}{arch}{mix}]"

    def run_name(self, seed: int) -> str:
        """Folder name of one seed's run (file-system safe, unique within an ablation)."""
        base = "+".join(self.tasks)
        if self.kind == "sweep":
            base += f"__w_{self.sweep_task}={self.sweep_weight:g}"
        elif self.kind == "multi":
            base += f"__{self.weighting}"
        if self.architecture != "hps":
            base += f"__{self.architecture}"
        if self.mix is not None:
            base += f"__mix_{self.mix}"
        return safe_name(f"{base}__s{seed}")


@dataclass(frozen=True)
class Plan:
    tasks: tuple[str, ...]
    main: str | None
    configurations: tuple[Configuration, ...]
    seeds: int
    sweep: Sweep | None = None

    def runs(self) -> list[tuple[Configuration, int]]:
        return [(c, s) for c in self.configurations for s in range(self.seeds)]


def parse_sweep(text: str, tasks: tuple[str, ...]) -> Sweep:
    """``TASK=START:STOP:STEP`` -> :class:`Sweep`; the values run from START to STOP inclusive."""
    task, sep, rng = text.partition("=")
    task = task.strip()
    parts = rng.split(":")
    if not sep or not task or len(parts) != 3:
        raise ConfigError(f"--sweep must look like TASK=START:STOP:STEP (e.g. landmarks=0:1:0.1); got '{text}'.")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--sweep range '{rng}' must be three numbers START:STOP:STEP, e.g. 0:1:0.1.") from None
    if not all(math.isfinite(x) for x in (start, stop, step)):
        raise ConfigError(f"--sweep range '{rng}' must be finite numbers.")
    if step <= 0:
        raise ConfigError(f"--sweep step must be > 0; got {step:g} in '{text}'.")
    if stop < start:
        raise ConfigError(f"--sweep range {start:g}:{stop:g}:{step:g} is empty (STOP < START); e.g. {task}=0:1:0.1.")
    if task not in tasks:
        raise ConfigError(f"--sweep task '{task}' is not one of --tasks ({', '.join(tasks)}).")
    if len(tasks) < 2:
        raise ConfigError("--sweep needs at least two --tasks (the swept task and the others sharing 1 - w).")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    values = tuple(round(start + i * step, 10) for i in range(n))
    if any(v < 0 for v in values):
        raise ConfigError(f"--sweep weights must be >= 0; '{rng}' gives {values[0]:g}.")
    if any(v > 1 for v in values):
        raise ConfigError(f"--sweep weights must be <= 1 (the others get 1 - w); '{rng}' reaches {values[-1]:g}.")
    return Sweep(task, values)


def _subsets(mode: str, tasks: tuple[str, ...], main: str | None) -> list[tuple[str, ...]]:
    n = len(tasks)
    if mode == "all":
        if n > 9:
            raise ConfigError(f"--subsets all with {n} tasks means {2 ** n - 1} configurations; use singles, main-plus-one or a list.")
        return [c for k in range(1, n + 1) for c in itertools.combinations(tasks, k)]
    if mode == "singles":
        return [(t,) for t in tasks] + ([tasks] if n > 1 else [])
    if mode == "main-plus-one":
        if main is None:
            raise ConfigError("--subsets main-plus-one needs --main TASK.")
        others = [t for t in tasks if t != main]
        out = [(main,)] + [(t,) for t in others] + [(main, t) for t in others]
        if n > 2:
            out.append((main, *others))
        return out
    out = []
    for item in mode.split(","):
        names = tuple(x.strip() for x in item.split("+") if x.strip())
        if not names:
            continue
        bad = [x for x in names if x not in tasks]
        if bad:
            raise ConfigError(
                f"--subsets item '{item}' names {bad}, not in --tasks ({', '.join(tasks)}); "
                f"give all, singles, main-plus-one or subsets like {'+'.join(tasks[:2])},{tasks[0]}."
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"--subsets item '{item}' names a task twice.")
        out.append(tuple(t for t in tasks if t in names))  # --tasks order: one name per subset
    if not out:
        raise ConfigError("--subsets is empty; give all, singles, main-plus-one or a list like A+B,A.")
    return out


def _check_mixes(mixes: list[str] | tuple[str, ...], sources: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The mixes of ``--mix`` checked against the caches; the axis (empty for fewer than two mixes)."""
    from facemtl.data.mixing import mix_weights, source_names

    mixes = tuple(m.strip() for m in mixes if m.strip())
    if not mixes:
        return ()
    if len(sources) < 2:
        raise ConfigError(
            f"--mix {' --mix '.join(mixes)} chooses how several caches are mixed, but the ablation trains on one cache"
            f"{f' ({sources[0]})' if sources else ''}; give the caches with --data A.h5,B.h5, or drop --mix."
        )
    if len(set(mixes)) != len(mixes):
        raise ConfigError(f"--mix {' --mix '.join(mixes)} names a mix twice.")
    names = source_names(sources)
    for m in mixes:
        mix_weights(m, names, [1] * len(names))  # the spelling and the NAME=W names, before any training
    return mixes if len(mixes) > 1 else ()


def _per_mix(configs: list[Configuration], mixes: tuple[str, ...]) -> list[Configuration]:
    if not mixes:
        return configs
    return [dataclasses.replace(c, mix=m) for c in configs for m in mixes]


def plan_ablation(
    tasks: list[str] | tuple[str, ...], *, main: str | None = None, subsets: str | None = None,
    weightings: list[str] | tuple[str, ...] = ("ew",), sweep: str | None = None, seeds: int = 1,
    strategy_defaults: dict[str, dict] | None = None, architectures: list[str] | tuple[str, ...] = ("hps",),
    backbone: str | None = None, mixes: list[str] | tuple[str, ...] = (), sources: list[str] | tuple[str, ...] = (),
) -> Plan:
    """The configurations of an ablation (module docstring); every input is checked here, before training.

    ``strategy_defaults`` maps a strategy to the options a recipe gives it (``tcdcn``'s ``k``...);
    they apply wherever that strategy is trained, except ``main``, which follows ``--main``.
    ``architectures`` are checked against ``backbone`` (when given) here too. ``mixes`` (``--mix``,
    several caches ``sources`` only) are one more axis when there are two or more; one mix is
    checked here and left to the run configuration (``data.mix``)."""
    from facemtl.models import check_architecture
    from facemtl.weighting import WEIGHTINGS, build_weighting, strategy_options

    tasks = tuple(t.strip() for t in tasks if t.strip())
    if not tasks:
        raise ConfigError("--tasks is empty; give comma-separated tasks such as landmarks,pose,smile,glasses.")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"--tasks {','.join(tasks)} names a task twice.")
    if any(t == "attr:*" for t in tasks):
        raise ConfigError("--tasks attr:* is not allowed in an ablation (one subset per attribute combination); name the attributes.")
    if main is not None and main not in tasks:
        raise ConfigError(f"--main {main} is not one of --tasks ({', '.join(tasks)}).")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1; got {seeds}.")
    weightings = tuple(w.strip() for w in weightings if w.strip()) or ("ew",)
    for w in weightings:
        WEIGHTINGS.get(w)  # UnknownNameError listing the valid strategies
    if len(set(weightings)) != len(weightings):
        raise ConfigError(f"--weighting {','.join(weightings)} names a strategy twice.")
    architectures = tuple(a.strip() for a in architectures if a.strip()) or ("hps",)
    if len(set(architectures)) != len(architectures):
        raise ConfigError(f"--architecture {','.join(architectures)} names an architecture twice.")
    for a in architectures:  # UnknownNameError listing the valid ones; ConfigError for a backbone it cannot use
        check_architecture(a, backbone or "small")
    mix_axis = _check_mixes(mixes, sources)
    sw = parse_sweep(sweep, tasks) if sweep else None
    mode = subsets or ("singles" if sw else ("main-plus-one" if main else "all"))
    if mode in ("none", ""):
        chosen: list[tuple[str, ...]] = []
    else:
        chosen = _subsets(mode, tasks, main)

    configs: list[Configuration] = []
    seen: set[str] = set()
    for subset in sorted(dict.fromkeys(chosen), key=len):
        if len(subset) == 1:
            cands = [Configuration(subset, "ew")]
        else:
            cands = []
            for w in weightings:
                opts = {k: v for k, v in (strategy_defaults or {}).get(w, {}).items() if k != "main"}
                if main in subset and "main" in strategy_options(w):
                    opts["main"] = main
                build_weighting(w, list(subset), **dict(opts))  # bad option combinations fail now, not after hours
                cands += [Configuration(subset, w, opts, architecture=a) for a in architectures]
        for c in _per_mix(cands, mix_axis):
            if c.name not in seen:
                seen.add(c.name)
                configs.append(c)
    if sw is not None:
        others = [t for t in tasks if t != sw.task]
        for v in sw.values:
            weights = {sw.task: v, **{t: round((1 - v) / len(others), 10) for t in others}}
            configs += _per_mix([Configuration(tasks, "fixed", {"weights": weights}, sw.task, v, a) for a in architectures], mix_axis)
    if not configs:
        raise ConfigError("the ablation has no configuration to train; check --subsets and --sweep.")
    if len(configs) * seeds > MAX_CONFIGURATIONS:
        raise ConfigError(f"{len(configs) * seeds} runs planned (more than {MAX_CONFIGURATIONS}); narrow --subsets, --weighting or --sweep.")
    return Plan(tasks, main, tuple(configs), seeds, sw)
