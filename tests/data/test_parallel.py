"""``map_blocks``: results in block order from several workers, worker errors and deaths reported."""

from __future__ import annotations

import os
import signal

import pytest

from facemtl.data._parallel import make_blocks, map_blocks


def _rows(a: int, b: int) -> list[int]:
    return [i * i for i in range(a, b)]


def _fails_at_40(a: int, b: int) -> list[int]:
    if a <= 40 < b:
        raise ValueError(f"bad row 40 in {a}-{b}")
    return _rows(a, b)


def _dies_at_40(a: int, b: int) -> list[int]:
    if a <= 40 < b:
        os.kill(os.getpid(), signal.SIGKILL)
    return _rows(a, b)


def test_blocks_come_back_in_order_from_several_workers():
    blocks = make_blocks(range(103), 7)
    for workers in (1, 2, 3):
        got = list(map_blocks(_rows, blocks, workers))
        assert [s for s, _ in got] == [a for a, _ in blocks]
        assert [x for _, r in got for x in r] == _rows(0, 103)


def test_a_worker_exception_is_raised_in_the_writer():
    with pytest.raises(ValueError, match="bad row 40"):
        list(map_blocks(_fails_at_40, make_blocks(range(100), 8), 2))


def test_a_dead_worker_is_an_error_naming_its_rows():
    with pytest.raises(RuntimeError, match=r"ended \(exit code -9\) before sending rows 40-47"):
        list(map_blocks(_dies_at_40, make_blocks(range(100), 8), 2))


def test_stopping_early_ends_the_workers():
    gen = map_blocks(_rows, make_blocks(range(1000), 5), 2)
    assert next(gen)[0] == 0
    gen.close()  # what an interrupted writer does: no worker is left behind
    import multiprocessing as mp

    assert not [p for p in mp.active_children() if p.is_alive()]
