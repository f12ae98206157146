"""``facemtl.reports.scenes``: window geometry of the pyramid scan, and the cascade's gated scan."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from facemtl.reports.scenes import ScanConfig, scan_scenes, window_tiles


def test_windows_cut_the_right_regions():
    scene = torch.rand(3, 120, 100)
    crops, corners = window_tiles(scene, size=20, win=40, stride=0.5)  # level = scene / 2, step 10 px there
    assert crops.shape[1:] == (3, 20, 20)
    assert corners[:, 0].max() + 40 <= 100 + 1e-6 and corners[:, 1].max() + 40 <= 120 + 1e-6
    level = F.interpolate(scene[None], size=(60, 50), mode="bilinear", antialias=True, align_corners=False)[0]
    k = 7
    x, y = (corners[k] / 2).astype(int)
    torch.testing.assert_close(crops[k], level[:, y:y + 20, x:x + 20])
    assert len(np.unique(corners[:, 0])) == (50 - 20) // 10 + 1


def test_cascade_scan_runs_gated(cache):
    from facemtl.data.cache import FaceCache
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    c = FaceCache(cache)
    tasks = build_tasks(["detection", "smile"], DataInfo.from_cache(c))
    torch.manual_seed(0)
    model = build_model("mcfa", tasks, input_size=128, width=0.0625).eval()
    res = scan_scenes(model, c, "test", torch.device("cpu"), cfg=ScanConfig(window_sizes=(56, 112)))
    assert res is not None and res["cascade"] is True
    assert res["n_images"] == 2 and res["n_gt"] >= 1 and res["n_tp"] <= res["n_gt"]
    assert res["fppi"] == res["n_fp"] / 2
