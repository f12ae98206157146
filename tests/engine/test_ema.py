"""The weights' moving average (``train.ema``): the update rule by hand, and in a training run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facemtl.engine.ema import ModelEMA
from facemtl.engine.trainer import train
from facemtl.errors import ConfigError
from tests.engine.test_train import StopAt, quick


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


def test_ema_follows_the_update_rule_by_hand():
    net = _net()
    ema = ModelEMA(net, decay=0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for n in range(30):
        opt.zero_grad()
        net(torch.randn(8, 3, dtype=torch.float64)).pow(2).mean().backward()  # train mode: BN statistics move too
        opt.step()
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in net.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v if v.is_floating_point() else v.clone()
        ema.update(net)
    got = ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k], v, rtol=1e-12, atol=1e-14), k
    assert int(got["1.num_batches_tracked"]) == 30  # integer buffers are copied, not averaged
    assert not any(torch.equal(got[k], net.state_dict()[k]) for k in ("0.weight", "1.running_mean"))
    assert ema.updates == 30 and ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.9


def test_ema_of_unchanged_weights_is_those_weights_and_takes_no_gradient():
    net = _net()
    ema = ModelEMA(net, decay=0.99)
    for _ in range(5):
        ema.update(net)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.state_dict().values(), net.state_dict().values()))
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(net, decay=1.0)


def test_ema_setting_is_checked(synth_cache, tmp_path):
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="--ema"):
            train(quick("quick", synth_cache, tmp_path / "bad", **{"train.ema": bad}))
    assert not (tmp_path / "bad").exists()


def test_training_with_ema_keeps_the_average_and_resumes_exactly(synth_cache, tmp_path):
    over = {"tasks.names": ["landmarks", "smile"], "model.input_size": 56, "train.epochs": 2,
            "train.max_steps_per_epoch": 4, "train.ema": 0.9}
    full, cfg, a, b = _full_and_cut(synth_cache, tmp_path, over, StopAt(epoch=1, step=2))
    assert a["ema"]["updates"] == b["ema"]["updates"] == 8
    for key in ("model", "train_model"):  # the average and the optimizer's weights both resume exactly
        assert all(torch.allclose(a[key][k].float(), b[key][k].float(), atol=1e-6) for k in a[key]), key
    # "model", what evaluate and export load, is the average, not the last step's weights
    w = next(k for k in a["model"] if k.endswith("weight"))
    assert not torch.equal(a["model"][w], a["train_model"][w])
    # the validation of the last epoch scored the average: re-score it from the checkpoint
    from facemtl.engine.checkpoint import load_model

    model, tasks, *_ = load_model(tmp_path / "full", prefer="last.pt")
    assert full.history[-1]["val_loss"] == pytest.approx(_val_loss(model, tasks, cfg), rel=1e-5)
    # without the average the same steps end elsewhere
    plain = train(quick("quick", synth_cache, tmp_path / "plain", **{**over, "train.ema": 0.0}))
    assert plain.history[-1]["val_loss"] != full.history[-1]["val_loss"]
    assert "train_model" not in torch.load(tmp_path / "plain" / "last.pt", weights_only=False)


def _full_and_cut(synth_cache, tmp_path, over: dict, stop: StopAt):
    """A run of ``over`` straight through, and the same run cut by ``stop`` and resumed: (the
    straight run's result, the cut run's config, the two runs' last checkpoints)."""
    full = train(quick("quick", synth_cache, tmp_path / "full", **over))
    cfg = quick("quick", synth_cache, tmp_path / "cut", **over)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=stop)
    train(cfg, resume=True)
    a, b = (torch.load(tmp_path / run / "last.pt", weights_only=False) for run in ("full", "cut"))
    return full, cfg, a, b


def _val_loss(model, tasks, cfg) -> float:
    """The summed validation loss of ``model`` on ``cfg``'s cache, as the trainer computes it."""
    from facemtl.engine.data import RunData
    from facemtl.engine.steps import autocast_for, evaluate_split

    data = RunData.open(cfg.data.paths())
    device = torch.device("cpu")
    loaders = data.eval_loaders(cfg, model, cfg.data.val_split, max(cfg.train.batch_size, 128))
    losses, _ = evaluate_split(model, tasks, [(ld, plan) for _, ld, plan in loaders], None, device, autocast_for(device, "off")[0], False)
    return sum(losses.values())


def test_uniform_updates_average_every_step_since_they_began():
    net = _net()
    ema = ModelEMA(net, decay=0.9)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    seen = []
    for n in range(12):
        opt.zero_grad()
        net(torch.randn(8, 3, dtype=torch.float64)).pow(2).mean().backward()
        opt.step()
        ema.update(net, uniform=n >= 5)
        if n >= 5:
            seen.append({k: v.clone() for k, v in net.state_dict().items()})
    got = ema.module.state_dict()
    for k in got:  # the plain mean of the 7 steps' weights; what the exponential phase held is gone
        if got[k].is_floating_point():
            assert torch.allclose(got[k], torch.stack([s[k] for s in seen]).mean(0), rtol=1e-12, atol=1e-14), k
    assert ema.updates == 12 and ema.uniform_updates == 7  # updates counts both phases
    again = ModelEMA(_net(), decay=0.9)
    again.load_state_dict(got, ema.state_dict())
    assert again.uniform_updates == 7 and again.updates == 12
    copy = ModelEMA(net, decay=0.0)  # decay 0 (train.swa without train.ema): the copy follows the model
    opt.step()
    copy.update(net)
    assert all(torch.equal(a, b) for a, b in zip(copy.module.state_dict().values(), net.state_dict().values()))


def test_swa_setting_is_checked(synth_cache, tmp_path):
    for bad in (-1, 2, 1.5):
        with pytest.raises(ConfigError, match=r"train.swa .*below train.epochs \(2\).*--swa 0.5.*--swa 0"):
            train(quick("quick", synth_cache, tmp_path / "bad", **{"train.swa": bad, "train.epochs": 2}))
    assert not (tmp_path / "bad").exists()


def test_training_with_swa_averages_the_later_epochs_and_resumes_exactly(synth_cache, tmp_path, monkeypatch):
    over = {"tasks.names": ["landmarks", "smile"], "model.input_size": 56, "train.epochs": 3,
            "train.max_steps_per_epoch": 3, "train.swa": 1}
    *_, a, b = _full_and_cut(synth_cache, tmp_path, over, StopAt(epoch=2, step=1))
    assert a["ema"]["uniform_updates"] == b["ema"]["uniform_updates"] == 6  # epochs 2 and 3, 3 steps each
    assert a["ema"]["updates"] == 9
    for key in ("model", "train_model"):
        assert all(torch.allclose(a[key][k].float(), b[key][k].float(), atol=1e-6) for k in a[key]), key
    # the average is the mean of the weights after the last 6 steps: rebuild it from per-step copies
    import facemtl.engine.trainer as trainer

    snaps, runs = [], []

    class Keep(trainer.Callbacks):
        def on_step(self, *, epoch, step, losses, weights):
            if epoch >= 1:
                snaps.append({k: v.detach().clone() for k, v in runs[0].model.state_dict().items()})

    def build_run(*args, **kwargs):  # keeps the run, whose training model the callback reads
        runs.append(real(*args, **kwargs))
        return runs[-1]

    real = trainer.build_run
    monkeypatch.setattr(trainer, "build_run", build_run)
    train(quick("quick", synth_cache, tmp_path / "again", **over), callbacks=Keep())
    assert len(snaps) == 6
    for k, v in a["model"].items():
        if v.is_floating_point():
            assert torch.allclose(v.float(), torch.stack([s[k].float() for s in snaps]).mean(0), atol=1e-6), k
