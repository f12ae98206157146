"""Two gloo processes on CPU: every strategy makes the same decisions on every rank."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facemtl.weighting import WEIGHTINGS, build_weighting

from ._toy import TASKS, TEST_OPTIONS, Toy, make_data, modes_for, train_step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, ys = make_data(seed=10 + rank)  # different data on each rank
        results = {}
        for name in WEIGHTINGS.names():
            opts = TEST_OPTIONS.get(name, {})
            strategy_modes = modes_for(build_weighting(name, TASKS, **opts))
            for mode in strategy_modes if WEIGHTINGS.get(name).needs != "losses" else strategy_modes[:1]:
                model, s = Toy(), build_weighting(name, TASKS, **opts)
                ddp = torch.nn.parallel.DistributedDataParallel(model)
                opt = torch.optim.SGD([*ddp.parameters(), *s.extra_parameters()], lr=0.05)
                infos = []
                for step in range(2):
                    _, info = train_step(model, s, opt, x, ys, mode, step=step, epoch=step, features_fn=ddp)
                    s.on_epoch_end(step, {t: 1.0 + rank for t in TASKS}, {t: 2.0 for t in TASKS})
                    infos.append(info)
                state = {k: v.clone() for k, v in s.state_dict().items() if torch.is_tensor(v)}
                results[(name, mode)] = (infos, [p.detach().clone() for p in model.parameters()], state)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_weights_and_state_identical_across_ranks(tmp_path):
    # fork: the workers skip re-importing torch (seconds on a busy 2-core machine); but not once this
    # process has used CUDA (autograd's device threads and a CUDA context cannot be forked: seen on a GPU machine)
    method = "fork" if "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized() else "spawn"
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method=method)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0.keys() == r1.keys() and len(r0) >= len(WEIGHTINGS.names())
    for key in r0:
        infos0, params0, state0 = r0[key]
        infos1, params1, state1 = r1[key]
        assert infos0 == infos1, key
        for a, b in zip(params0, params1):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=lambda m, key=key: f"{key}: {m}")
        for k in state0:
            torch.testing.assert_close(state0[k], state1[k], rtol=1e-6, atol=1e-7, equal_nan=True,
                                       msg=lambda m, key=key, k=k: f"{key} {k}: {m}")
