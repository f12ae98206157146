"""Helpers of the architectures that cut the trunk into stages (MTAN, cross-stitch, LTB)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import Backbone, feature_info, split_stages


def stages_of(backbone: Backbone, architecture: str) -> tuple[list[nn.Sequential], nn.Sequential, list[dict[str, int]]]:
    """``(stages, tail, feature_info)`` of a backbone, or a ConfigError saying why it cannot be cut."""
    if not backbone.stages:
        raise ConfigError(
            f"architecture '{architecture}' cuts the backbone into stages, and this backbone exposes none; "
            "use small, famo9, tcdcn, vgg16, resnet18 or resnet50."
        )
    stages, tail = split_stages(backbone)
    if len(stages) < 2:
        raise ConfigError(f"architecture '{architecture}' needs a backbone with at least 2 stages.")
    return stages, tail, feature_info(backbone)


def clone(module: nn.Module) -> nn.Module:
    """An independent copy (same initial weights: tasks diverge through their own gradients)."""
    return copy.deepcopy(module)


def resampler(cin: int, cout: int, size_in: int, size_out: int, where: str) -> nn.Sequential:
    """3x3 conv + BN + ReLU from (cin, size_in) maps to (cout, size_out): MTAN's f^j, which brings the
    previous stage's attended features to the next stage's width and resolution."""
    stride = max(1, round(size_in / size_out))
    for pad in (1, 0):
        if (size_in + 2 * pad - 3) // stride + 1 == size_out:
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=pad, bias=False)
            block = nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            return block
    raise ConfigError(
        f"{where}: no strided 3x3 convolution maps {size_in}x{size_in} to {size_out}x{size_out}; "
        "choose another input size (a power of 2 such as 64 or 128 always works)."
    )


def probe(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(x)
    finally:
        module.train(was)
