"""IBN-a (Pan et al., ECCV 2018): half the channels instance-normalised, half batch-normalised."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import IBN
from facemtl.models.cnn import small

from ._helpers import assert_trunk_scripts


def _maps(b: int = 5, c: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, 7, 7, generator=g) * (torch.rand(b, c, 1, 1, generator=g) * 3 + 0.2) + 2


def test_splits_channels_as_the_paper_defines():
    x = _maps()
    m = IBN(6, ratio=0.5).train()
    with torch.no_grad():  # non-trivial affine parameters, so that both halves are checked with them
        m.instance.weight.uniform_(0.5, 2)
        m.instance.bias.uniform_(-1, 1)
        m.batch.weight.uniform_(0.5, 2)
        m.batch.bias.uniform_(-1, 1)
    got = m(x)
    a, b = x[:, :3], x[:, 3:]
    mu, var = a.mean((2, 3), keepdim=True), a.var((2, 3), unbiased=False, keepdim=True)
    want_a = (a - mu) / (var + 1e-5).sqrt() * m.instance.weight[:, None, None] + m.instance.bias[:, None, None]
    mu, var = b.mean((0, 2, 3), keepdim=True), b.var((0, 2, 3), unbiased=False, keepdim=True)
    want_b = (b - mu) / (var + 1e-5).sqrt() * m.batch.weight[:, None, None] + m.batch.bias[:, None, None]
    torch.testing.assert_close(got, torch.cat((want_a, want_b), 1), atol=1e-5, rtol=1e-5)


def test_instance_half_ignores_an_images_contrast_and_colour_cast():
    """Per image and channel, a gain and an offset on the input leave the instance-normalised half
    unchanged (in evaluation too) and change the batch-normalised half."""
    x = _maps()
    m = IBN(6).train()
    for _ in range(3):
        m(x)  # running statistics for the batch half
    m.eval()
    gain = torch.rand(5, 6, 1, 1) * 2 + 0.5
    moved = x * gain + torch.randn(5, 6, 1, 1)
    torch.testing.assert_close(m(moved)[:, :3], m(x)[:, :3], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(m(moved)[:, 3:], m(x)[:, 3:], atol=1e-2)
    # one image's output does not depend on the rest of the batch in evaluation
    torch.testing.assert_close(m(x[:1]), m(x)[:1])


def test_gradient_matches_finite_differences():
    m = IBN(4).double().train()
    x = _maps(b=3, c=4).double().requires_grad_(True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


def test_small_backbone_places_it_in_the_shallow_layers_and_scripts():
    b = small(64, ibn=True)
    ibns = [layer for layer in b.trunk if isinstance(layer, IBN)]
    assert [layer.half + layer.batch.num_features for layer in ibns] == [32, 64, 128]  # stem, stages 1-2
    assert b.options["ibn"] is True and "ibn" not in small(64).options
    assert not any(isinstance(layer, IBN) for layer in small(64).trunk)
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in b.trunk) == 4  # the rest keep BatchNorm
    assert_trunk_scripts(b.trunk)
    with pytest.raises(ConfigError, match="ratio"):
        IBN(8, ratio=1.0)
    with pytest.raises(ConfigError, match=r"model.options.ibn = 'no' must be true or false"):
        small(64, ibn="no")
