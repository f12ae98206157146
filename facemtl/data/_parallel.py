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


def map_blocks(
    fn: Callable[[int, int], Any], blocks: list[Block], workers: int,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(start, fn(start, stop))`` for every block, in block order.

    Worker ``w`` of ``n`` computes blocks ``w, w + n, ...`` in order and sends each result down its
    own pipe, where the writer reads them in block order (a worker waits while its pipe is full).
    No lock is shared between processes: ``multiprocessing.Pool`` shares one on its task queue, and
    a worker killed while holding it (a SIGTERM sent to the process group) left the writer's
    ``Pool.terminate()`` waiting for ever. A worker that dies is an error naming its rows; an
    exception in a worker is raised again in the writer."""
    workers = check_workers(workers)
    if workers == 1 or len(blocks) <= 1:
        for a, b in blocks:
            yield a, fn(a, b)
        return
    n = min(workers, len(blocks))
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs, conns = [], []
    try:
        for w in range(n):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_work, args=(fn, blocks[w::n], send), daemon=True)
            proc.start()
            send.close()  # the worker holds the sending end: its death ends the pipe (EOFError here)
            procs.append(proc)
            conns.append(recv)
        for k, (a, b) in enumerate(blocks):
            try:
                start, result, error = conns[k % n].recv()
            except EOFError:
                procs[k % n].join(5)
                raise RuntimeError(
                    f"a worker process ended (exit code {procs[k % n].exitcode}) before sending rows {a}-{b - 1}; "
                    "it may have run out of memory: try fewer --workers."
                ) from None
            if error is not None:
                raise error
            yield start, result
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join()
        for conn in conns:
            conn.close()


def _work(fn: Callable[[int, int], Any], blocks: list[Block], conn: Any) -> None:
    """A worker: each block's ``(start, result, None)`` in order, or ``(None, None, error)`` and stop."""
    _worker_signals()
    try:
        for a, b in blocks:
            conn.send((a, fn(a, b), None))
    except Exception as e:  # raised again in the writer
        try:
            conn.send((None, None, e))
        except Exception:  # an exception that does not pickle
            conn.send((None, None, RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        conn.close()


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
