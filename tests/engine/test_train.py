"""The training engine end to end on SynthFaces: recipes learn, resume is exact, bad input fails clearly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.engine.trainer import Callbacks, train
from facemtl.errors import CheckpointError, ConfigError, TrainingDiverged, UnknownNameError


def quick(recipe, cache, out, **over):
    # a few dozen steps on a tiny cache: without augmentation, which has its own tests (tests/data/test_augment.py
    # and test_augmented_training_resumes_exactly below), the losses fall reliably within them
    base = {"data.path": str(cache), "out": str(out), "train.device": "cpu", "train.batch_size": 32, "train.epochs": 2,
            "augment.preset": "none"}
    base.update(over)
    return apply_overrides(load_recipe(recipe), base)


def chance(cache_path) -> dict[str, float]:
    """What a network that ignores the image scores on the val split: the mean training face for
    landmarks (its NME), the mean training yaw (its error in degrees), the majority class for
    classification tasks."""
    from facemtl.data.cache import FaceCache
    from facemtl.metrics.landmarks import nme

    c = FaceCache(cache_path)
    tr, va = c.indices("train"), c.indices("val")
    lm = c.labels["landmarks"]
    tr_l, va_l = tr[np.isfinite(lm[tr]).all((1, 2))], va[np.isfinite(lm[va]).all((1, 2))]
    mean_face = np.broadcast_to(lm[tr_l].mean(0), lm[va_l].shape)
    out = {"landmarks_nme": float(nme(mean_face, lm[va_l]).mean())}
    for key in ("expression", "pose_class", "face"):
        y = c.labels[key][va]
        y = y[y >= 0]
        out[key] = float(np.bincount(y).max() / len(y))
    yaw_tr, yaw_va = c.labels["pose"][tr, 0], c.labels["pose"][va, 0]
    yaw_tr, yaw_va = yaw_tr[np.isfinite(yaw_tr)], yaw_va[np.isfinite(yaw_va)]
    out["yaw_mae_deg"] = float(np.abs(yaw_va - yaw_tr.mean()).mean())  # the mean training yaw for every face
    return out


def beats(m, ch, *names):
    ok = {
        "landmarks": lambda: m["landmarks"]["nme"] < 0.85 * ch["landmarks_nme"],
        "detection": lambda: m["detection"]["accuracy"] > ch["face"] + 0.03,
        "expression": lambda: m["expression"]["accuracy"] > ch["expression"] + 0.05,
        "pose": lambda: m["pose"]["accuracy"] > ch["pose_class"] + 0.05,
        # the yaw regressed beside the pose classes: a continuous error, steadier than the accuracy
        # over five classes on a small val split
        "yaw": lambda: m["pose"]["yaw_mae_deg"] < 0.85 * ch["yaw_mae_deg"],
        "identity": lambda: m["identity"]["verification_auc"] > 0.6,
    }
    return all(ok[n]() for n in names)


def mean_bacc(m, names):
    return float(np.mean([m[n]["balanced_accuracy"] for n in names]))


# Each recipe on a small SynthFaces set for a few epochs must beat chance clearly on its tasks.
RECIPE_CHECKS = {
    # IBN, MixStyle, random convolutions (slower to start than quick), a mining round of 8 scenes before epoch 4, the weight average from it
    "default": ({"model.input_size": 56, "train.epochs": 6, "mine.scenes": 8},
                lambda m, ch: beats(m, ch, "landmarks", "detection") and m["attributes"]["balanced_accuracy"] > 0.55),
    "quick": ({"model.input_size": 56, "train.epochs": 3},
              lambda m, ch: beats(m, ch, "landmarks", "detection") and m["attributes"]["balanced_accuracy"] > 0.55),
    # its auxiliaries weigh 0.1: in 6 short epochs pose is learnt, gender not yet (0.87 after 30 on its own cache)
    "tcdcn": ({"train.epochs": 6}, lambda m, ch: m["landmarks"]["nme"] < 0.9 * ch["landmarks_nme"] and beats(m, ch, "pose")),
    "gender-glasses": ({"train.epochs": 3}, lambda m, ch: mean_bacc(m, ["gender"]) > 0.6),
    # expression needs more than 3 short epochs here; identity verification is checked
    "dynamic-fr-fer": ({"model.input_size": 56, "train.epochs": 3}, lambda m, ch: beats(m, ch, "identity")),
    "celeba40": ({"model.input_size": 56, "train.epochs": 2, "train.lr": 0.002, "train.batch_size": 64},
                 lambda m, ch: mean_bacc(m, [k for k in m if k.startswith("attr:")]) > 0.55),
    # the cascade is costly on a CPU: the fast suite checks that its joint loss falls (below)
    "mcfa": ({"model.options": {"width": 0.0625}, "train.epochs": 2, "train.lr": 0.003, "train.optimizer": "adamw", "train.max_steps_per_epoch": 12},
             lambda m, ch: set(m) >= {"detection", "landmarks"}),
}


@pytest.mark.slow
def test_mcfa_beats_chance(synth_cache, tmp_path):
    over = {"model.options": {"width": 0.0625}, "train.epochs": 8, "train.lr": 0.003, "train.optimizer": "adamw"}
    res = train(quick("mcfa", synth_cache, tmp_path / "mcfa", **over))
    ch = chance(synth_cache)
    m = res.val_metrics
    assert beats(m, ch, "detection") and m["landmarks"]["nme"] < 0.95 * ch["landmarks_nme"], (m, ch)


@pytest.mark.parametrize("recipe", list(RECIPE_CHECKS))
def test_recipe_learns(recipe, synth_cache, tmp_path):
    over, check = RECIPE_CHECKS[recipe]
    res = train(quick(recipe, synth_cache, tmp_path / recipe, **over))
    hist = pd.DataFrame(res.history)
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0], "training loss must fall"
    ch = chance(synth_cache)
    assert check(res.val_metrics, ch), (res.val_metrics, ch)
    for f in ("config.toml", "metrics.csv", "weights.csv", "best.pt", "last.pt"):
        assert (tmp_path / recipe / f).exists()


class StopAt(Callbacks):
    def __init__(self, epoch, step):
        self.at = (epoch, step)

    def on_step(self, *, epoch, step, losses, weights):
        if (epoch, step) == self.at:
            raise KeyboardInterrupt


# Exact resume of every weighting strategy: tests/engine/test_strategies_e2e.py


@pytest.mark.parametrize("extra", [{}, {"augment.warp": 0.05, "model.options.mixstyle": 1.0, "model.options.ibn": True}], ids=["strong", "warp-mixstyle-ibn"])
def test_augmented_training_resumes_exactly(synth_cache, tmp_path, extra):
    """Augmentation draws from (seed, epoch, batch), MixStyle from torch's generator whose state
    the checkpoint keeps: a run cut mid-epoch ends with the same weights."""
    import torch

    over = {"tasks.names": ["landmarks", "pose", "smile"], "model.input_size": 56, "train.epochs": 2,
            "train.max_steps_per_epoch": 5, "augment.preset": "strong", **extra}
    full = train(quick("quick", synth_cache, tmp_path / "full", **over))
    cfg = quick("quick", synth_cache, tmp_path / "cut", **over)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=StopAt(epoch=1, step=2))
    resumed = train(cfg, resume=True)
    assert np.allclose([r["train_loss"] for r in full.history], [r["train_loss"] for r in resumed.history], rtol=1e-6)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    plain = train(quick("quick", synth_cache, tmp_path / "plain", **{**over, "augment.preset": "none"}))
    assert plain.history[0]["train_loss"] != full.history[0]["train_loss"]  # the augmentation did change the batches


def test_mining_resumes_exactly(synth_cache, tmp_path):
    """[mine]: the pool is in every checkpoint, and a round due at a resumed epoch's start is mined
    again from the same weights: runs cut mid-epoch and at an epoch's end match the whole run."""
    import torch

    over = {"tasks.names": ["detection", "landmarks"], "model.input_size": 56, "train.epochs": 3,
            "train.max_steps_per_epoch": 4, "augment.preset": "light", "mine.every": 1, "mine.start": 1,
            "mine.scenes": 2, "mine.per_batch": 4, "mine.min_score": 0.0, "mine.window_sizes": [112, 160]}
    full = train(quick("quick", synth_cache, tmp_path / "full", **over))
    ref = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    assert [r["epoch"] for r in ref["mined"]["rounds"]] == [1, 2] and len(ref["mined"]["pool"][56]) > 0
    for name, stop in (("mid", StopAt(epoch=2, step=2)), ("edge", StopAt(epoch=1, step=4))):
        cfg = quick("quick", synth_cache, tmp_path / name, **over)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, callbacks=stop)
        resumed = train(cfg, resume=True)
        assert np.allclose([r["train_loss"] for r in full.history], [r["train_loss"] for r in resumed.history], rtol=1e-6)
        got = torch.load(tmp_path / name / "last.pt", weights_only=False)
        assert torch.equal(got["mined"]["pool"][56], ref["mined"]["pool"][56])
        assert all(torch.allclose(ref["model"][k].float(), got["model"][k].float(), atol=1e-6) for k in ref["model"])
    plain = train(quick("quick", synth_cache, tmp_path / "plain", **{**over, "mine.every": 0}))
    assert plain.history[1]["train_loss"] != full.history[1]["train_loss"]  # the mined windows did join the batches


@pytest.mark.parametrize("over, match", [
    ({"mine.every": -1}, "mine.every"),
    ({"mine.every": 2, "mine.window_sizes": [8]}, "mine.window_sizes"),
    ({"mine.every": 2, "mine.min_score": 1.0}, "mine.min_score"),
    ({"mine.every": 2, "mine.max_landmarks": 3}, "mine.max_landmarks"),
    ({"mine.every": 1, "mine.start": 3, "train.epochs": 3}, r"mine.start .*below train.epochs \(3\).*mine.start=0.5"),
    ({"mine.every": 1, "mine.start": 1.5}, "mine.start"),
])
def test_mining_refuses_bad_settings(synth_cache, tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        train(quick("quick", synth_cache, tmp_path / "bad", **over))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("where, over, why", [
    ("toy", {"tasks.names": ["detection"], "model.input_size": 32}, "is not a SynthFaces cache"),
    ("synth", {"tasks.names": ["landmarks"], "model.input_size": 56}, "which this run does not train"),
])
def test_mining_is_skipped_where_it_cannot_apply(where, over, why, toy_cache, synth_cache, tmp_path, caplog):
    """The default recipe mines; a run of it on another cache or without detection goes on without
    mining and says why (mining needs SynthFaces' scene settings and a detection head)."""
    import torch

    cache = toy_cache if where == "toy" else synth_cache
    cfg = quick("quick", cache, tmp_path / where, **{**over, "mine.every": 1, "mine.start": 1, "train.epochs": 2,
                                                      "train.max_steps_per_epoch": 2})
    with caplog.at_level("WARNING"):
        train(cfg)
    assert any("[mine] is skipped" in r.getMessage() and why in r.getMessage() for r in caplog.records)
    assert torch.load(tmp_path / where / "last.pt", weights_only=False).get("mined") is None


def test_shares_of_the_epochs_become_whole_epochs(synth_cache, tmp_path):
    """train.swa and mine.start below 1 are shares of train.epochs (the default recipe's 0.45: epoch
    12 of 24, 5 of 8), so a shorter run of a recipe keeps its schedule's shape."""
    import torch

    from facemtl.engine.config import epochs_of

    assert [epochs_of(0.45, e) for e in (1, 2, 8, 12, 24, 48)] == [0, 1, 4, 5, 11, 22]
    assert epochs_of(11, 24) == 11 and epochs_of(0, 24) == 0
    over = {"tasks.names": ["detection", "landmarks"], "model.input_size": 56, "train.epochs": 3,
            "train.max_steps_per_epoch": 2, "train.swa": 0.5, "mine.every": 1, "mine.start": 0.5, "mine.scenes": 2,
            "mine.window_sizes": [112]}
    train(quick("quick", synth_cache, tmp_path / "r", **over))
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=False)
    assert [r["epoch"] for r in ck["mined"]["rounds"]] == [2]  # round(0.5 * 3) = 2: rounds before epochs 3 on
    written = (tmp_path / "r" / "config.toml").read_text()
    assert "swa = 2\n" in written and "start = 2\n" in written  # the run folder records the whole epochs


def test_resume_refuses_other_configuration(synth_cache, tmp_path):
    over = {"tasks.names": ["landmarks"], "model.input_size": 56, "train.epochs": 1, "train.max_steps_per_epoch": 2}
    train(quick("quick", synth_cache, tmp_path / "r", **over))
    other = quick("quick", synth_cache, tmp_path / "r", **{**over, "tasks.names": ["landmarks", "smile"], "train.epochs": 2})
    with pytest.raises(CheckpointError, match="tasks"):
        train(other, resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(quick("quick", synth_cache, tmp_path / "r", **over))


@pytest.mark.parametrize("over, err, match", [
    ({"tasks.names": ["landmarks", "wings"]}, UnknownNameError, "Valid task names"),
    ({"model.backbone": "alexnet"}, UnknownNameError, "resnet18"),
    ({"weighting.name": "magic"}, UnknownNameError, "pcgrad"),
    ({"tasks.names": ["attr:Wearing_Necktie"]}, ConfigError, "does not have"),
    ({"model.backbone": "resnet18", "model.input_size": 8}, ConfigError, "cannot take 8x8"),
    ({"train.optimizer": "lbfgs"}, ConfigError, "adamw"),
])
def test_bad_configuration(synth_cache, tmp_path, over, err, match):
    with pytest.raises(err, match=match):
        train(quick("quick", synth_cache, tmp_path / "bad", **over))


def test_cache_without_labels_for_a_task(tmp_path):
    from tests.conftest import write_toy_cache

    cache = write_toy_cache(tmp_path / "toy.h5", n=64, sizes=(56,))
    with pytest.raises(ConfigError, match="expression"):
        train(quick("quick", cache, tmp_path / "x", **{"tasks.names": ["landmarks", "expression"]}))


def test_nan_loss_stops_with_task_and_step(synth_cache, tmp_path):
    cfg = quick("quick", synth_cache, tmp_path / "nan", **{"tasks.names": ["landmarks", "smile"], "model.input_size": 56, "train.lr": 1e6,
                                                            "train.optimizer": "sgd", "train.momentum": 0.0, "train.epochs": 3})
    with pytest.raises(TrainingDiverged, match=r"task '(landmarks|smile)'.*step \d+"):
        train(cfg)


class SharedEpochsSpy(Callbacks):
    """The weights of each step and the trained weights at each epoch's end (from last.pt)."""

    def __init__(self, run_dir):
        self.run_dir, self.weights, self.models = run_dir, {}, {}

    def on_step(self, *, epoch, step, losses, weights):
        self.weights.setdefault(epoch, []).append(weights)

    def on_epoch_end(self, *, epoch, row):
        import torch

        ckpt = torch.load(self.run_dir / "last.pt", weights_only=False)
        self.models[epoch] = ckpt["train_model"]  # the trained weights (the recipe's average is in "model")


def test_shared_epochs_route_a_tasks_loss_to_its_head_only():
    """Past its shared epochs a task's gradient reaches its own head and nothing shared."""
    import torch

    from facemtl.engine.steps import add_gradients, own_gradients

    torch.manual_seed(0)
    trunk, head_a, head_b = torch.nn.Linear(4, 3), torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    x = torch.randn(8, 4)

    def losses():
        f = torch.tanh(trunk(x))
        return {"a": head_a(f).pow(2).mean(), "b": (head_b(f) - 1).pow(2).mean()}

    def grads(loss, params):
        return [g.clone() for g in torch.autograd.grad(loss, params)]

    ref = losses()
    trunk_a = grads(ref["a"], list(trunk.parameters()))
    head_b_ref = grads(losses()["b"], list(head_b.parameters()))
    own = [*head_a.parameters(), *head_b.parameters()]
    got = losses()
    pending = own_gradients({"b": got.pop("b")}, own, loss_scale=1.0, keep_graph=True)
    assert pending[:2] == [None, None]  # b does not reach a's head
    got["a"].backward()
    add_gradients(own, pending)
    assert all(torch.allclose(p.grad, g) for p, g in zip(trunk.parameters(), trunk_a))  # a's alone
    assert all(torch.allclose(p.grad, g) for p, g in zip(head_b.parameters(), head_b_ref))


def test_shared_epochs_keep_training_the_head(synth_cache, tmp_path):
    """train.shared_epochs.smile=1: smile still trains its head (weight 1, the strategy no longer weights it)."""
    import torch

    over = {"tasks.names": ["landmarks", "smile"], "model.input_size": 56, "train.epochs": 3,
            "train.max_steps_per_epoch": 4, "train.shared_epochs": {"smile": 1},
            "weighting.name": "fixed", "weighting.options": {"weights": {"landmarks": 1.0, "smile": 0.3}}}
    spy = SharedEpochsSpy(tmp_path / "se")
    res = train(quick("quick", synth_cache, tmp_path / "se", **over), callbacks=spy)
    assert {round(w["smile"], 6) for w in spy.weights[0]} == {0.3}  # epochs from 0 here
    assert {w["smile"] for e in (1, 2) for w in spy.weights[e]} == {1.0}
    second, third = (spy.models[e] for e in sorted(spy.models)[1:])
    smile = [k for k in third if k.startswith("heads.smile.")]
    assert smile and not all(torch.equal(second[k], third[k]) for k in smile)
    assert res.history[2]["train_loss/smile"] > 0


def test_shared_epochs_zero_is_a_probe(synth_cache, tmp_path):
    """shared_epochs 0: the strategy never sees the task, so its weight there changes nothing."""
    import torch

    base = {"tasks.names": ["landmarks", "smile"], "model.input_size": 56, "train.epochs": 1,
            "train.max_steps_per_epoch": 3, "weighting.name": "fixed"}
    models = {}
    for w, probe in ((0.3, True), (3.0, True), (3.0, False)):
        over = {**base, "weighting.options": {"weights": {"landmarks": 1.0, "smile": w}},
                **({"train.shared_epochs": {"smile": 0}} if probe else {})}
        out = tmp_path / f"p{w}{probe}"
        train(quick("quick", synth_cache, out, **over))
        models[w, probe] = torch.load(out / "last.pt", weights_only=False)["train_model"]
    a, b, c = models[0.3, True], models[3.0, True], models[3.0, False]
    trunk = [k for k in a if not k.startswith("heads.") and a[k].is_floating_point()]
    assert all(torch.allclose(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert not all(torch.allclose(b[k], c[k]) for k in trunk)  # the weight mattered without the option


@pytest.mark.parametrize("shared_epochs, match", [
    ({"pose": 2}, "train.shared_epochs names 'pose'.*landmarks, smile"),
    ({"smile": -1}, r"train.shared_epochs.smile must be a whole number of epochs, 0 or more"),
    ({"smile": 1.5}, r"train.shared_epochs.smile must be"),
])
def test_bad_shared_epochs(synth_cache, tmp_path, shared_epochs, match):
    cfg = quick("quick", synth_cache, tmp_path / "bad", **{"tasks.names": ["landmarks", "smile"], "train.shared_epochs": shared_epochs})
    with pytest.raises(ConfigError, match=match):
        train(cfg)
    assert not (tmp_path / "bad").exists()


def test_early_stopping(synth_cache, tmp_path):
    cfg = quick("quick", synth_cache, tmp_path / "es", **{"tasks.names": ["smile"], "model.input_size": 56, "train.epochs": 20,
                                                           "train.patience": 1, "train.lr": 0.05, "train.max_steps_per_epoch": 4,
                                                           "train.schedule": "constant"})
    res = train(cfg)
    assert res.stopped_early and len(res.history) < 20
    best = min(r["val_loss"] for r in res.history)
    assert math.isclose(res.history[res.best_epoch - 1]["val_loss"], best)


def test_select_scores_follow_the_metric_direction():
    from facemtl.engine.trainer import selection_score

    row = {"val_loss": 2.5, "val_loss/landmarks": 0.4, "val/landmarks/nme": 0.08, "val/smile/balanced_accuracy": 0.9}
    assert selection_score("val_loss", row) == 2.5
    assert selection_score("landmarks/nme", row) == 0.08  # lower is better: as it is
    assert selection_score("smile/balanced_accuracy", row) == -0.9  # higher is better: negated
    assert selection_score("landmarks/loss", row) == 0.4
    with pytest.raises(ConfigError, match=r"measured: landmarks/nme, smile/balanced_accuracy, landmarks/loss"):
        selection_score("landmarks/failure_rate", row)


def test_select_picks_best_pt_and_early_stopping_by_a_metric(synth_cache, tmp_path):
    over = {"tasks.names": ["landmarks", "smile"], "model.input_size": 56, "train.epochs": 5, "train.max_steps_per_epoch": 4,
            "train.select": "smile/balanced_accuracy", "train.schedule": "constant", "train.patience": 1}
    res = train(quick("quick", synth_cache, tmp_path / "sel", **over))
    # replay the rule on the logged metric: the first epoch of the highest balanced accuracy so far is
    # best.pt, and the run stops after the first epoch that does not raise it
    best, best_epoch, stop = -1.0, 0, len(res.history)
    for r in res.history:
        if r["val/smile/balanced_accuracy"] > best:
            best, best_epoch = r["val/smile/balanced_accuracy"], r["epoch"]
        else:
            stop = r["epoch"]
            break
    assert (res.best_epoch, len(res.history)) == (best_epoch, stop)
    assert res.stopped_early == (stop < 5)
    from facemtl.engine.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "sel" / "best.pt")["epoch"] == res.best_epoch
    with pytest.raises(ConfigError, match="no task 'pose'"):
        train(quick("quick", synth_cache, tmp_path / "bad", **{**over, "train.select": "pose/accuracy"}))
    with pytest.raises(ConfigError, match="--select"):
        train(quick("quick", synth_cache, tmp_path / "bad2", **{**over, "train.select": "nme"}))


def test_train_state_keeps_the_best_score_and_counts_bad_epochs():
    from facemtl.engine.state import TrainState
    from facemtl.engine.trainer import selection_score

    state = TrainState()
    rows = [{"epoch": e, "val_loss": loss, "val/smile/balanced_accuracy": b}
            for e, loss, b in ((1, 3.0, 0.6), (2, 2.0, 0.8), (3, 1.0, 0.7), (4, 0.5, 0.75))]
    improved = [state.record_epoch(r, selection_score("smile/balanced_accuracy", r)) for r in rows]
    assert improved == [True, True, False, False] and state.best_epoch == 2 and state.bad_epochs == 2
    by_loss = TrainState()
    assert [by_loss.record_epoch(r, selection_score("val_loss", r)) for r in rows] == [True] * 4


def test_bf16_autocast_on_cpu(synth_cache, tmp_path):
    cfg = quick("quick", synth_cache, tmp_path / "amp", **{"tasks.names": ["landmarks", "smile"], "model.input_size": 56,
                                                            "train.amp": "bf16", "train.epochs": 1, "train.max_steps_per_epoch": 6})
    res = train(cfg)
    assert math.isfinite(res.history[-1]["train_loss"])


def test_missing_synthfaces_is_rendered_at_the_models_sizes_only(tmp_path):
    from facemtl.data.cache import FaceCache

    cfg = quick("quick", tmp_path / "auto.h5", tmp_path / "run", **{
        "data.synthetic_images": 160, "data.synthetic_identities": 10, "model.input_size": 48, "tasks.names": ["landmarks"],
        "train.epochs": 1, "train.max_steps_per_epoch": 1})
    train(cfg)
    assert tuple(FaceCache(tmp_path / "auto.h5").sizes) == (48,)


def test_missing_synthfaces_is_rendered_with_the_recipes_framing(tmp_path):
    from facemtl.data.cache import FaceCache

    cfg = quick("quick", tmp_path / "auto.h5", tmp_path / "run", **{
        "data.synthetic_images": 40, "data.synthetic_identities": 4, "data.synthetic_face_scale": "1.0,1.4",
        "model.input_size": 40, "tasks.names": ["landmarks"], "train.epochs": 1, "train.max_steps_per_epoch": 1})
    assert cfg.data.synthetic_face_scale == (1.0, 1.4)
    train(cfg)
    assert tuple(FaceCache(tmp_path / "auto.h5").provenance["config"]["face_scale"]) == (1.0, 1.4)
    with pytest.raises(ConfigError, match=r"data.synthetic_face_scale must be empty .* two numbers"):
        quick("quick", tmp_path / "auto.h5", tmp_path / "run2", **{"data.synthetic_face_scale": [1.4, 1.0]}).validate()


def test_checkpoints_from_before_the_heatmap_head_still_load_and_resume(synth_cache, tmp_path):
    """0.1.0 runs hold a linear landmark head and no ``head`` option: evaluate and resume keep it."""
    import torch

    from facemtl.engine.checkpoint import build_from_checkpoint, load_checkpoint

    over = {"tasks.names": ["landmarks", "smile"], "model.input_size": 48, "train.epochs": 1, "train.max_steps_per_epoch": 2,
            "tasks.options": {"landmarks": {"head": "linear"}}}
    train(quick("quick", synth_cache, tmp_path / "old", **over))
    for name in ("last.pt", "best.pt"):  # what 0.1.0 wrote: no head option
        state = torch.load(tmp_path / "old" / name, weights_only=False)
        state["config"]["tasks"]["options"] = {}
        state["config_digest"] = apply_overrides(load_recipe("quick"), {**over, "tasks.options": {}}).digest()
        torch.save(state, tmp_path / "old" / name)
    model, *_ = build_from_checkpoint(load_checkpoint(tmp_path / "old" / "best.pt"))
    assert model.map_tasks == ()
    res = train(quick("quick", synth_cache, tmp_path / "old", **{**over, "tasks.options": {}, "train.epochs": 2}), resume=True)
    assert len(res.history) == 2
