"""Run a block-producing function over worker processes, in order, with a progress callback.

Producers (SynthFaces rendering, JPEG decoding of real datasets) are CPU-bound Python, so they
run in processes. ``fn(start, stop)`` returns a batch dict for rows ``start:stop``; results come
back in order, so the single writer process writes contiguous rows.

Signals: workers ignore SIGINT and die quietly on SIGTERM, so Ctrl-C (sent to the whole process
group) or a SIGTERM reaches only the writer, which stops the pool and keeps its finished blocks
(:func:`sigterm_as_interrupt` makes SIGTERM act like Ctrl-C there).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from facemtl.errors import ConfigError

Block = tuple[int, int]


def make_blocks(todo: Sequence[int] | range, block: int) -> list[Block]:
    """Split sorted row indices into contiguous (start, stop) runs of at most ``block`` rows."""
    blocks: list[Block] = []
    it = iter(todo)
    try:
        start = prev = next(it)
    except StopIteration:
        return blocks
    for i in it:
        if i != prev + 1 or i - start >= block:
            blocks.append((start, prev + 1))
            start = i
        prev = i
    blocks.append((start, prev + 1))
    return blocks


def check_workers(workers: int) -> int:
    if workers < 0:
        raise ConfigError(f"--workers must be 0 (all cores) or a positive number, got {workers}.")
    return workers or (os.cpu_count() or 1)


def _call(args: tuple[Callable[[int, int], Any], int, int]) -> tuple[int, Any]:
    fn, start, stop = args
    return start, fn(start, stop)


def map_blocks(
    fn: Callable[[int, int], Any], blocks: list[Block], workers: int,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(start, fn(start, stop))`` for every block, in block order."""
    workers = check_workers(workers)
    jobs = [(fn, a, b) for a, b in blocks]
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield _call(job)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_worker_signals) as pool:
        yield from pool.imap(_call, jobs, chunksize=1)


def _worker_signals() -> None:
    """Pool workers leave interrupts to the parent: no KeyboardInterrupt or BrokenPipe tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread (as Ctrl-C does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
