"""Shared CLI plumbing: the rich console, logging set-up, option parsing and the one place where
library errors become a one-line message and a non-zero exit."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from facemtl.errors import ConfigError, FacemtlError, MissingFileError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: bool = False) -> None:
    logger = logging.getLogger("facemtl")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=err_console, show_path=False, rich_tracebacks=True))
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def handle_errors(fn: F) -> F:
    """Turn :class:`FacemtlError` into ``error: ...`` on stderr and exit code 1 (traceback with FACEMTL_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup_logging()
        try:
            return fn(*args, **kwargs)
        except FacemtlError as e:
            if os.environ.get("FACEMTL_DEBUG"):
                raise
            # escaped: messages are plain text ("pip install facemtl[real]" is not rich markup)
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers such as 56,112,224; got '{text}'.") from None
    if not values:
        raise ConfigError(f"{what} is empty; give comma-separated integers such as 56,112,224.")
    return values


def parse_float_range(text: str, what: str) -> tuple[float, float]:
    """``"1.0,1.4"`` -> (1.0, 1.4); anything but two numbers is a ConfigError naming ``what``."""
    try:
        lo, hi = (float(x) for x in text.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"{what} must be two comma-separated numbers LO,HI such as 1.0,1.4; got '{text}'.") from None
    return lo, hi


def parse_name_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [x.strip() for x in text.split(",") if x.strip()]


def data_overrides(data: str | None) -> dict[str, Any]:
    """``--data PATH`` or ``--data A,B,C`` (several caches trained together) as config overrides."""
    if data is None:
        return {}
    from facemtl.data.mixing import split_paths

    paths = split_paths(data)
    if not paths:
        raise ConfigError(f"--data {data!r} names no cache; give a .h5 file or several separated by commas.")
    if len(paths) == 1:
        return {"data.path": paths[0], "data.sources": []}
    return {"data.path": paths[0], "data.sources": paths}


def check_data_option(data: os.PathLike | str | None, recipe_path: str) -> None:
    """A missing ``--data`` is an error, unless it is the recipe's own cache (SynthFaces, rendered
    when missing): a mistyped path must not start a long render into a new file. Several caches
    (``A,B``) must all exist: only a lone cache is ever rendered."""
    if data is None:
        return
    from facemtl.data.mixing import split_paths

    paths = split_paths(str(data))
    missing = [p for p in paths if not os.path.exists(p)]
    if not missing:
        return
    if len(paths) > 1:
        raise MissingFileError(
            f"cache(s) {', '.join(missing)} of --data {data} do not exist; check the paths, or prepare each with "
            "`facemtl prepare DATASET --root ... --out PATH` (only a lone SynthFaces cache is rendered automatically)."
        )
    if os.path.abspath(paths[0]) == os.path.abspath(recipe_path):
        return
    raise MissingFileError(
        f"cache {data} (--data) does not exist; check the path. To render SynthFaces there, run "
        f"`facemtl prepare synthetic --out {data}` first (only the recipe's own cache, {recipe_path}, "
        "is prepared automatically)."
    )


def announce_synthetic_render(cfg: Any, sample: int = 24) -> None:
    """Before the trainer renders a missing SynthFaces cache (``ensure_data``), say what it will
    render and for about how long: a few images are timed here, on this machine."""
    import time

    if (os.path.exists(cfg.data.path) or not cfg.data.prepare_if_missing or len(cfg.data.paths()) > 1
            or int(os.environ.get("RANK", "0")) != 0):
        return
    from facemtl.data.synth import SynthConfig
    from facemtl.data.synthetic import render_block
    from facemtl.engine.trainer import synthetic_render_settings

    synth = SynthConfig(**synthetic_render_settings(cfg))  # what ensure_data will render
    sizes = synth.sizes
    render_block(0, 1, synth)  # warm-up: imports, photo loading
    t0 = time.perf_counter()
    render_block(1, 1 + sample, synth)
    per_image = (time.perf_counter() - t0) / sample
    seconds = per_image * cfg.data.synthetic_images / (os.cpu_count() or 1)
    err_console.print(
        f"{escape(str(cfg.data.path))} not found: rendering {cfg.data.synthetic_images:,} SynthFaces images "
        f"({', '.join(map(str, sizes))} px) into it first, about {format_duration(seconds)} on this machine "
        f"(timed on {sample} images; `facemtl prepare synthetic` renders it with a progress bar)",
        highlight=False, soft_wrap=True)


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``1 h 20 min``: a rounded duration for an estimate."""
    if seconds < 60:
        return f"{max(seconds, 1):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class SpeedColumn(ProgressColumn):
    """Items per second; blank until rich has measured a rate (a format string would crash on None)."""

    def __init__(self, unit: str = "/s") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        return Text(f"{task.speed:>7.0f}{self.unit}" if task.speed is not None else " " * (7 + len(self.unit)))


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with rate and ETA; yields ``advance(n)``."""
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        SpeedColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console, transient=False, disable=not err_console.is_terminal and os.environ.get("FACEMTL_PROGRESS") == "0") as prog:
        task = prog.add_task(description, total=total)
        yield lambda n: prog.advance(task, n)
