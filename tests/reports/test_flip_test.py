"""``evaluate --flip-test``: each task's output on the mirrored image is mapped back to the image
as it was (``Task.unflip``) the same way the augmentation mirrors the labels, and averaged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facemtl.data.augment import AugmentConfig, BatchAugment
from facemtl.reports._data import LabelAdapter, _flip_averaged, predict
from facemtl.reports.evaluate import evaluate

S = 32


def _labels(n: int = 10) -> dict:
    g = torch.Generator().manual_seed(3)
    lm = torch.tensor([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.4, 0.7], [0.6, 0.7]]) + (torch.rand(n, 5, 2, generator=g) - 0.5) * 0.2
    return {
        "landmarks": lm,
        "bbox": torch.cat([torch.rand(n, 2, generator=g) * 0.3, torch.full((n, 2), 0.4)], 1),  # x, y, w, h
        "pose": torch.stack([torch.linspace(-70, 70, n), torch.zeros(n), torch.linspace(-20, 20, n)], 1),
        "pose_class": torch.tensor([0, 1, 2, 3, 4, 4, 3, 2, 1, 0][:n], dtype=torch.int8),
        "face": torch.ones(n, dtype=torch.int8),
        "present": {"landmarks": n},
    }


def _perfect(task, b: dict) -> torch.Tensor | None:
    """What a model that is always right would output for ``task`` on the images labelled ``b``."""
    n = len(b["landmarks"])
    if task.name == "landmarks":
        return b["landmarks"].reshape(n, 10)
    if task.name == "detection":
        return torch.cat([torch.full((n, 1), 2.0), b["bbox"]], 1)
    if task.name == "pose":
        onehot = torch.nn.functional.one_hot(b["pose_class"].long(), 5).float() * 4.0
        return torch.cat([onehot, b["pose"][:, :1] / 90.0], 1)
    return None


def test_unflip_undoes_the_augmentation_mirror(run):
    """A perfect prediction on the mirrored image, unflipped, is the perfect prediction on the
    image: the same landmark swap, box mirror, yaw sign and pose-class mirror as the labels get."""
    from facemtl.engine.checkpoint import load_model

    _, tasks, _, _ = load_model(run)
    b = _labels()
    _, flipped = BatchAugment(AugmentConfig(flip=1.0))([torch.zeros(10, 3, S, S)], dict(b), epoch=0, batch_index=0)
    checked = set()
    for t in tasks:
        want = _perfect(t, b)
        if want is None:
            continue
        back = t.unflip(_perfect(t, flipped))
        assert torch.allclose(back, want, atol=1e-5), t.name
        assert not torch.allclose(_perfect(t, flipped), want, atol=1e-3), t.name  # the mirror did change it
        checked.add(t.name)
    assert checked == {"landmarks", "detection", "pose"}
    by_name = {t.name: t for t in tasks}
    logits = torch.randn(10, 7)
    assert torch.equal(by_name["expression"].unflip(logits), logits)  # no class names a side
    assert torch.equal(by_name["attributes"].unflip(logits), logits)
    assert by_name["identity"].unflip(torch.randn(10, 16)) is None  # embeddings are not averaged


def test_flip_averaged_outputs_are_mirror_equivariant(run):
    """Flip testing a mirrored image gives the mirror of flip testing the image (for any weights)."""
    from facemtl.engine.checkpoint import load_model

    model, tasks, _, _ = load_model(run)
    model.eval()
    x = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model.forward_heads(model.forward_features(x))
        avg = _flip_averaged(model, tasks, [x], plain)
        avg_m = _flip_averaged(model, tasks, [x.flip(-1)], model.forward_heads(model.forward_features(x.flip(-1))))
    for t in tasks:
        if t.unflip(plain[t.name]) is None:
            assert torch.equal(avg[t.name], plain[t.name]), t.name
            continue
        assert not torch.allclose(avg[t.name], plain[t.name], atol=1e-6), t.name
        assert torch.allclose(t.unflip(avg_m[t.name]), avg[t.name], atol=1e-5), t.name


def test_evaluate_flip_test_reports_the_averaged_predictions(run, cache, tmp_path):
    from facemtl.data.cache import FaceCache
    from facemtl.engine.checkpoint import load_model

    result = evaluate(run, out=tmp_path / "flip", device="cpu", scenes=False, figures=False, flip_test=True)
    doc = json.loads((result.out_dir / "metrics.json").read_text())
    assert doc["flip_test"] is True
    assert "flip test" in (result.out_dir / "summary.md").read_text()
    model, tasks, _, info = load_model(run)
    c = FaceCache(cache)
    adapter = LabelAdapter.build(info.attribute_names, c)
    flip = predict(model, tasks, c, "test", torch.device("cpu"), adapter, flip_test=True)["landmarks"]
    plain = predict(model, tasks, c, "test", torch.device("cpu"), adapter)["landmarks"]
    assert not np.allclose(flip["pred"], plain["pred"])
    iod = np.linalg.norm(flip["target"][:, 0] - flip["target"][:, 1], axis=1).clip(min=1e-6)
    nme = (np.linalg.norm(flip["pred"] - flip["target"], axis=2).mean(1) / iod).mean()
    assert doc["tasks"]["landmarks"]["metrics"]["nme"] == pytest.approx(float(nme), abs=1e-6)
    plain_doc = evaluate(run, out=tmp_path / "plain", device="cpu", scenes=False, figures=False).document
    assert plain_doc["flip_test"] is False
