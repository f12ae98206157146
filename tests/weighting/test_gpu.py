"""GPU checks (``pytest -m gpu``; skipped without CUDA): every strategy in both gradient modes under
bf16 autocast and channels-last, batched chunked VJPs against one task at a time, ``torch.compile``
of the trunk, and one training step of every recipe's network. Run by ``benchmarks/gpu_check.sh``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facemtl.weighting import WEIGHTINGS, StepContext, build_weighting

from ._toy import TASKS, TEST_OPTIONS, modes_for

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _face_model(backbone: str = "small", size: int = 64):
    from facemtl.data.synth import SYNTH_ATTRIBUTES
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    info = DataInfo(tuple(SYNTH_ATTRIBUTES), 100, ("attributes", "landmarks", "bbox", "face", "expression", "pose", "pose_class"))
    tasks = build_tasks(["attr:*"], info)[:6]
    return build_model(backbone, tasks, input_size=size).cuda(), tasks


def _conv_step(strategy, mode: str, chunk: int | None = None, compile_: bool = False):
    torch.manual_seed(0)
    model, tasks = _face_model()
    model.to(memory_format=torch.channels_last)
    strategy.cuda()
    strategy.grad_chunk = chunk
    x = torch.rand(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    y = {t.name: torch.randint(0, 2, (8,), device="cuda").float() for t in tasks}
    fwd = torch.compile(model.forward_features) if compile_ else model.forward_features
    with torch.autocast("cuda", dtype=torch.bfloat16):
        feats = fwd(x)
        ctx = StepContext.build(feats, model.shared_parameters(), mode=mode)
        out = model.forward_heads(ctx.head_inputs)
        losses = {t.name: F.binary_cross_entropy_with_logits(out[t.name].float().reshape(-1), y[t.name]) for t in tasks}
        info = strategy.backward(losses, ctx)
    return model, info


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_every_strategy_both_modes_bf16_channels_last(name):
    probe = build_weighting(name, TASKS, **TEST_OPTIONS.get(name, {}))
    for mode in modes_for(probe):
        model, tasks = _face_model()
        opts = {"main": tasks[0].name} if name == "tcdcn" else ({} if name != "fixed" else {"weights": {tasks[0].name: 2.0}})
        s = build_weighting(name, [t.name for t in tasks], **opts)
        model, info = _conv_step(s, mode)
        assert all(torch.isfinite(torch.tensor(v)) for v in info.values()), (name, mode, info)
        for p in model.shared_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "nash", "dbmtl", "gradnorm"])
def test_batched_chunks_equal_one_at_a_time_on_gpu(name):
    grads = []
    for chunk in (1, 3, 6):
        model, tasks = _face_model()
        s = build_weighting(name, [t.name for t in tasks])
        model, _ = _conv_step(s, "params", chunk=chunk)
        grads.append([p.grad.float().clone() for p in model.shared_parameters() if p.grad is not None])
    for other in grads[1:]:
        for a, b in zip(other, grads[0]):
            torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-5)


def test_compiled_trunk_params_mode():
    _, tasks = _face_model()
    s = build_weighting("mgda", [t.name for t in tasks])
    _model, info = _conv_step(s, "params", compile_=True)
    assert all(torch.isfinite(torch.tensor(v)) for v in info.values())


def test_budget_batches_tasks_on_gpu():
    from facemtl.weighting import _grads

    model, _tasks = _face_model()
    P = sum(p.numel() for p in model.shared_parameters())
    assert _grads.chunk_size(40, P, torch.device("cuda"), 16 * 2**30, held_rows=40, act_numel=10**6) > 1


@pytest.mark.parametrize("recipe", __import__("facemtl.engine.config", fromlist=["recipe_names"]).recipe_names())
def test_every_recipe_network_one_step(recipe, tmp_path):
    """The recipe's backbone, tasks and strategy: one bf16 channels-last training step on the GPU."""
    from facemtl.data.schema import CELEBA_ATTRIBUTES
    from facemtl.engine.config import load_recipe
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    cfg = load_recipe(recipe)
    info = DataInfo(tuple(CELEBA_ATTRIBUTES), 100, ("attributes", "landmarks", "bbox", "face", "identity", "expression", "pose", "pose_class"))
    tasks = build_tasks(list(cfg.tasks.names), info, cfg.tasks.options)
    model = build_model(cfg.model.backbone, tasks, input_size=cfg.model.input_size, **cfg.model.options).cuda()
    model.to(memory_format=torch.channels_last)
    strategy = build_weighting(cfg.weighting.name, [t.name for t in tasks], **cfg.weighting.options).cuda()
    mode = strategy.grad_mode(cfg.weighting.grad_mode)
    images = [torch.rand(4, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
              for size, _ in model.input_spec]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        feats = model.forward_features(*images)
        ctx = StepContext.build(feats, model.shared_parameters(), mode=mode)
        out = model.forward_heads(ctx.head_inputs)
        losses = {n: (o if torch.is_tensor(o) else o[-1]).float().pow(2).mean() for n, o in out.items()}
        strategy.backward(losses, ctx)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.shared_parameters())

