"""MixStyle (Zhou et al., ICLR 2021) against the paper's definition."""

from __future__ import annotations

import pytest
import torch

from facemtl.errors import ConfigError
from facemtl.models._backbone import MixStyle
from facemtl.models.cnn import small

from ._helpers import assert_trunk_scripts


def _maps(b: int = 6, c: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(b, c, 1, 1, generator=g) * 3 + 0.2
    shift = torch.randn(b, c, 1, 1, generator=g) * 2
    return torch.randn(b, c, 8, 8, generator=g) * scale + shift


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean((2, 3)), (x.var((2, 3)) + 1e-6).sqrt()


def test_identity_in_evaluation_and_when_off():
    x = _maps()
    m = MixStyle(p=1.0).eval()
    assert torch.equal(m(x), x)
    assert torch.equal(MixStyle(p=0.0).train()(x), x)


def test_matches_the_papers_definition():
    """Same draws in the same order: lam ~ Beta(alpha, alpha) per sample, a random partner, the
    normalised map rescaled by the mixed standard deviation and shifted by the mixed mean."""
    x = _maps()
    m = MixStyle(p=1.0, alpha=0.1).train()
    torch.manual_seed(3)
    got = m(x)
    torch.manual_seed(3)
    torch.rand(1)  # the coin
    a = torch.full((6, 1, 1, 1), 0.1)
    g1, g2 = torch._standard_gamma(a), torch._standard_gamma(a)
    lam = g1 / (g1 + g2)
    perm = torch.randperm(6)
    mu, sig = (t[..., None, None] for t in _stats(x))
    want = (x - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]
    torch.testing.assert_close(got, want)
    # the content (each channel's normalised map) is kept; the statistics become the mixed ones
    mu_out, sig_out = _stats(got)
    torch.testing.assert_close(mu_out, (lam * mu + (1 - lam) * mu[perm])[..., 0, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sig_out, (lam * sig + (1 - lam) * sig[perm])[..., 0, 0], atol=1e-3, rtol=1e-3)
    assert (lam.flatten() < 0.05).any() or (lam.flatten() > 0.95).any()  # Beta(0.1, 0.1) sits near 0 and 1


def test_gradient_skips_the_statistics():
    """The paper detaches the statistics, so d out / d x is sigma_mix / sigma per channel: the
    ratio of the output's spread to the input's (a finite difference would see the statistics
    move too, which is what the detaching leaves out)."""
    x = _maps(b=4, c=2).double().requires_grad_(True)
    m = MixStyle(p=1.0).train()
    w = torch.randn_like(x)

    def f(inp: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(5)
        return (m(inp) * w).sum()

    f(x).backward()
    torch.manual_seed(5)
    out = m(x.detach())
    ratio = out.std((2, 3), keepdim=True) / x.detach().std((2, 3), keepdim=True)
    torch.testing.assert_close(x.grad, w * ratio.expand_as(w), atol=1e-6, rtol=1e-5)


def test_small_backbone_places_it_and_scripts():
    b = small(64, mixstyle=0.5)
    mixes = [i for i, layer in enumerate(b.trunk) if isinstance(layer, MixStyle)]
    assert len(mixes) == 2 and b.options["mixstyle"] == 0.5
    plain = small(64)
    assert not any(isinstance(layer, MixStyle) for layer in plain.trunk) and "mixstyle" not in plain.options
    assert_trunk_scripts(b.trunk)
    with pytest.raises(ConfigError, match="MixStyle"):
        MixStyle(p=1.5)
    with pytest.raises(ConfigError, match=r"model.options.mixstyle = 2"):
        small(64, mixstyle=2)


def test_bf16_input_keeps_its_dtype_and_float_statistics():
    x = _maps()
    m = MixStyle(p=1.0).train()
    torch.manual_seed(1)
    ref = m(x)
    torch.manual_seed(1)
    got = m(x.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, atol=0.1, rtol=0.05)
