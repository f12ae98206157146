"""``weights=PATH`` loading, and the in-model preprocessing (grey conversion, normalisation)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from facemtl.errors import CheckpointError
from facemtl.models import Preprocess, build_model

from ._helpers import fast_model, images, tasks


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("wrap", ["model", "trunk", "checkpoint"])
def test_weights_round_trip(tmp_path, wrap):
    torch.manual_seed(0)
    src = fast_model("small")
    obj = {
        "model": src.state_dict(), "trunk": src.trunk.state_dict(),
        "checkpoint": {"model": src.state_dict(), "epoch": 3, "config": {"backbone": "small"}},
    }[wrap]
    torch.save(obj, tmp_path / "w.pt")
    torch.manual_seed(1)
    dst = build_model("small", tasks(["smile", "landmarks"]), width=8, weights=str(tmp_path / "w.pt"))
    assert _same(src.trunk, dst.trunk)


def test_torchvision_state_dict_loads_into_resnet(tmp_path):
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")  # with the 1000-way fc
    model = build_model("resnet18", tasks(), weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.trunk.conv1.weight, ref.conv1.weight)
    assert torch.equal(model.trunk.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_cascade_weights_round_trip(tmp_path):
    src = fast_model("mcfa")
    torch.save(src.state_dict(), tmp_path / "c.pt")
    dst = fast_model("mcfa", ["detection"], weights=str(tmp_path / "c.pt"))
    assert _same(src.trunks, dst.trunks)


def test_weights_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("small", tasks(), weights=str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_model("small", tasks(), weights=str(tmp_path / "junk.pt"))
    torch.save({"lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(CheckpointError, match="no state dict"):
        build_model("small", tasks(), weights=str(tmp_path / "nostate.pt"))
    torch.save(fast_model("tcdcn").state_dict(), tmp_path / "tcdcn.pt")
    with pytest.raises(CheckpointError, match="missing keys: trunk.*unexpected keys: trunk"):
        fast_model("small", weights=str(tmp_path / "tcdcn.pt"))
    torch.save(fast_model("small", width=16).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatches .*\(16, 3, 3, 3\) vs \(8, 3, 3, 3\)"):
        fast_model("small", weights=str(tmp_path / "wide.pt"))


def test_preprocess_grey_and_normalise():
    x = torch.rand(2, 3, 8, 8)
    grey = Preprocess(1, (0.5,), (0.5,))
    luma = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    torch.testing.assert_close(grey(x), (luma - 0.5) / 0.5)
    torch.testing.assert_close(grey(luma), (luma - 0.5) / 0.5)  # a grey input passes through
    rgb = Preprocess(3, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    want = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb(x), want)
    assert not rgb.state_dict()  # constants, not weights


@pytest.mark.parametrize("name", ["small", "gender-glasses", "resnet18"])
def test_channels_last_gives_the_same_outputs(name):
    torch.manual_seed(0)
    model = fast_model(name).eval()
    (x,) = images(model)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    for t in ref:
        torch.testing.assert_close(got[t], ref[t], atol=1e-5, rtol=1e-4)
