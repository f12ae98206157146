"""``predict`` on rendered SynthFaces scenes with known boxes and landmarks (slow: trains a model).

A default-recipe model is trained for a few epochs on a small SynthFaces cache whose negatives
include windows cut from scenes (``_detcache.py``), exported to ONNX, and run by ONNX Runtime on
scenes it never saw. The faces must be found (box IoU >= 0.5) with few false detections, and the
landmarks of found faces must lie near the rendered truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from facemtl.cli.main import app
from facemtl.data.synth import SynthConfig, render_scene
from facemtl.export.backends import load_backend
from facemtl.export.exporter import export_checkpoint
from facemtl.export.faces import FinderConfig, Photo
from facemtl.export.predict import Predictor
from facemtl.metrics.detection import pairwise_iou_xywh

from ._detcache import write_detection_cache

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
SCENES = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    cache = write_detection_cache(folder / "det.h5", n=4000)
    res = CliRunner().invoke(app, ["train", "--data", str(cache), "--epochs", "12", "--out", str(folder / "run"), "--seed", "0"])
    assert (folder / "run" / "best.pt").is_file(), res.output
    return export_checkpoint(folder / "run", fmt="onnx", dynamic_batch=True)


def _scenes():
    cfg = SynthConfig(seed=4242, identities=40)
    scenes = [render_scene(i, cfg, 256) for i in range(40)]
    return [s for s in scenes if len(s["boxes"])][:SCENES]


def test_faces_found_in_scenes_with_landmarks_near_the_truth(trained):
    backend = load_backend(trained.metadata_path, threads=1)
    predictor = Predictor(backend, FinderConfig())
    finder = predictor.finder
    found = truth = false = 0
    errors, oracle = [], []
    for sc in _scenes():
        gt, gt_lm = sc["boxes"] * 256, sc["landmarks"] * 256
        faces = predictor.predict(sc["image"])
        truth += len(gt)
        if not faces:
            continue
        # the model's own landmarks on crops framed around the true boxes: what the finder can reach
        crops = finder.framed_crops(gt)
        best = finder.run_crops(Photo(sc["image"]), crops)["landmarks"].reshape(-1, 5, 2)
        best = best * crops[:, 2:3, None] + crops[:, None, :2]
        boxes = np.array([f["box"] for f in faces])
        iou = pairwise_iou_xywh(gt, boxes)  # (gt, pred)
        matched = set()
        for g in range(len(gt)):
            k = int(iou[g].argmax())
            if iou[g, k] >= 0.5 and k not in matched:
                matched.add(k)
                found += 1
                pts = np.array(list(faces[k]["landmarks"].values()))
                errors.append(np.linalg.norm(pts - gt_lm[g], axis=1).mean() / gt[g, 3])
                oracle.append(np.linalg.norm(best[g] - gt_lm[g], axis=1).mean() / gt[g, 3])
        false += len(faces) - len(matched)
    recall, fppi = found / truth, false / SCENES
    err, err_oracle = float(np.mean(errors)), float(np.mean(oracle))
    print(f"recall {recall:.2f}, false detections per image {fppi:.2f}, landmark error / box height "
          f"{err:.3f} (on crops framed around the true boxes {err_oracle:.3f})")
    assert recall >= 0.6
    assert fppi <= 1.0
    assert err < 0.16 and err <= 1.5 * err_oracle + 0.02


def test_cli_predict_on_a_scene_folder(trained, tmp_path):
    from PIL import Image

    for i, sc in enumerate(_scenes()[:3]):
        Image.fromarray(sc["image"]).save(tmp_path / f"s{i}.png")
    res = CliRunner().invoke(app, ["predict", str(trained.files[0]), str(tmp_path), "--json", "--draw", str(tmp_path / "drawn")])
    assert res.exit_code == 0, res.output
    assert res.output.count('"faces"') == 3 and len(list((tmp_path / "drawn").iterdir())) == 3
