"""Backbone machinery: the :class:`Backbone` record a builder returns, the registry, input preprocessing.

A backbone builder is a function ``(input_size: int | None = None, **options) -> Backbone``
registered with ``@BACKBONES.register(name)``. It returns the shared *trunk* (normalised images
``(B, C, S, S)`` -> flat features ``(B, D)``) and what the model needs around it: the input size
and channel count, the normalisation constants, and optionally a per-task *branch*: layers that
are not shared, placed in front of every task head (seed 004 shares only its first conv layer).

Input handling (decided here, once): the model never resizes. ``model.input_spec`` states the
size(s) it takes and the engine feeds exactly those (resizing on the device when the cache lacks
them). Inside the model, :class:`Preprocess` turns float RGB in [0, 1] into what the trunk
expects: grey (ITU-R 601 luma weights) for 1-channel backbones, then ``(x - mean) / std``. It is
written without any Python control flow, so it traces, scripts and exports to ONNX unchanged; it
also accepts a 1-channel grey image (the luma weights sum to 1, and mean/std broadcast).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from facemtl._registry import Registry
from facemtl.errors import ConfigError

BACKBONES: Registry = Registry("backbone")

#: ITU-R BT.601 luma weights (R, G, B); they sum to 1.
LUMA_601 = (0.299, 0.587, 0.114)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_MEAN = (0.5,)
GREY_STD = (0.5,)


@dataclass
class Backbone:
    """What a backbone builder hands to the model.

    trunk:        normalised images (B, in_channels, S, S) -> features (B, feature_dim)
    branch:       optional factory of per-task, unshared layers (B, feature_dim) -> (B, branch_dim);
                  the task head is then built on ``branch_dim`` and the model's head for the task
                  is ``Sequential(branch=..., out=task_head)``
    ignore_keys:  key prefixes dropped from foreign weight files (torchvision's ``fc.``)
    options:      the resolved builder options, for ``describe()`` and checkpoints
    taps:         indices into ``trunk`` (an ``nn.Sequential``) after which a feature map is exposed
                  to spatial heads (coarse to fine order is not required); ``tap_channels`` their
                  channel counts. Empty: the backbone offers no maps and every head is a vector head.
    stages:       indices into ``trunk`` after which each stage of the network ends (fine to coarse),
                  the way timm's ``features_only`` / ``feature_info`` cuts a network; ``stage_channels``
                  their channel counts. Soft-sharing architectures (MTAN, cross-stitch, LTB) cut the
                  trunk there (:func:`split_stages`); what follows the last stage is the *tail* (pooling
                  and fc layers to the feature vector). Empty: the trunk cannot be cut.
    """

    trunk: nn.Module
    feature_dim: int
    input_size: int
    in_channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    branch: Callable[[], nn.Module] | None = None
    branch_dim: int = 0
    ignore_keys: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    taps: tuple[int, ...] = ()
    tap_channels: tuple[int, ...] = ()
    stages: tuple[int, ...] = ()
    stage_channels: tuple[int, ...] = ()

    @property
    def head_in_features(self) -> int:
        return self.branch_dim if self.branch is not None else self.feature_dim


class Preprocess(nn.Module):
    """Float RGB [0, 1] (B, 3, S, S) -> normalised (B, C, S, S) with C = 1 (grey) or 3.

    Constants are non-persistent buffers: they follow ``.to(device)`` and are baked into exported
    graphs, but stay out of state dicts (they are part of the architecture, not learned)."""

    def __init__(self, channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if channels not in (1, 3) or len(mean) != channels or len(std) != channels:
            raise ValueError(f"Preprocess: channels={channels} with mean {mean} / std {std}")
        self.channels = channels
        self.register_buffer("luma", torch.tensor(LUMA_601).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3 or 1, S, S) in [0, 1]
        if self.channels == 1:  # static (set at build time): safe to trace and export
            x = (x * self.luma).sum(1, keepdim=True)  # (B, 1, S, S)
        return (x - self.mean) * self.inv_std  # (B, C, S, S)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class MixStyle(nn.Module):
    """MixStyle (Zhou et al., "Domain Generalization with MixStyle", ICLR 2021), in training only.

    With probability ``p`` per batch, each sample's feature map keeps its normalised content but
    takes a mix of its own channel statistics (mean and standard deviation over the map) and those
    of another sample of the batch: ``gamma = lam * sigma_i + (1 - lam) * sigma_j``, ``beta`` alike,
    ``lam ~ Beta(alpha, alpha)`` per sample, ``j`` a random permutation; the statistics are detached
    as in the paper. Placed after early layers, where the statistics carry the style of an image
    (its colours and texture) rather than what it shows, it mixes the style of photos into the
    rendered faces and back. In evaluation (and export) it is the identity. It draws from torch's
    global generator, like dropout, whose state the checkpoints keep.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6):
        super().__init__()
        if not 0.0 <= p <= 1.0 or alpha <= 0:
            raise ConfigError(f"MixStyle needs p in [0, 1] and alpha > 0, got p={p}, alpha={alpha}.")
        self.p, self.alpha, self.eps = float(p), float(alpha), float(eps)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.shape[0] < 2:
            return x
        if float(torch.rand(1)) >= self.p:
            return x
        b = x.shape[0]
        xf = x.float()  # statistics in float32 also under bf16 / fp16 autocast
        mu = xf.mean(dim=(2, 3), keepdim=True).detach()
        sig = (xf.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        a = torch.full((b, 1, 1, 1), self.alpha)
        g1, g2 = torch._standard_gamma(a), torch._standard_gamma(a)  # Beta(a, a) = G1 / (G1 + G2)
        lam = (g1 / (g1 + g2)).to(x.device)
        perm = torch.randperm(b).to(x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return ((xf - mu) / sig * sig_mix + mu_mix).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}"


class IBN(nn.Module):
    """Instance-batch normalisation (IBN-a; Pan et al., "Two at Once: Enhancing Learning and
    Generalization Capacities via IBN-Net", ECCV 2018): the first ``round(ratio * channels)``
    channels are instance-normalised (each image's own mean and variance over the map, learned
    affine), the others batch-normalised. Instance normalisation removes an image's contrast and
    colour cast from the features, which makes them less specific to how a set of images is drawn
    (its "appearance"); batch normalisation keeps what content needs. The paper puts it in the
    shallow layers only. (B, C, H, W) -> (B, C, H, W), in training and evaluation alike.
    """

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        if not 0.0 < ratio < 1.0:
            raise ConfigError(f"IBN needs a ratio of instance-normalised channels in (0, 1), got {ratio}.")
        self.half = max(1, min(channels - 1, round(channels * ratio)))
        self.instance = nn.InstanceNorm2d(self.half, affine=True)
        self.batch = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.split((self.half, x.shape[1] - self.half), dim=1)
        return torch.cat((self.instance(a.contiguous()), self.batch(b.contiguous())), dim=1)

    def extra_repr(self) -> str:
        return f"instance={self.half}, batch={self.batch.num_features}"


# -- small helpers shared by the builders ----------------------------------------------------------
def size_error(name: str, size: int, works: str) -> ConfigError:
    return ConfigError(f"backbone '{name}' cannot take {size}x{size} inputs; {works}.")


def resolve_size(name: str, size: int | None, default: int) -> int:
    size = default if size is None else int(size)
    if size <= 0:
        raise size_error(name, size, f"give a positive size (default {default})")
    return size


def check_options(name: str, builder: Callable[..., Any], options: dict[str, Any]) -> None:
    """Unknown or misspelt backbone options fail with the list of accepted ones."""
    params = inspect.signature(builder).parameters
    accepted = [p for p in params if p != "input_size" and params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    bad = [k for k in options if k not in accepted]
    if bad:
        raise ConfigError(
            f"backbone '{name}' has no option {', '.join(repr(b) for b in bad)}; "
            f"its options are: {', '.join(accepted) or 'none'}."
        )


def conv_bn_relu(cin: int, cout: int, stride: int = 1, batch_norm: bool = True, ibn: bool = False) -> list[nn.Module]:
    """3x3 'same' convolution (+ BN, or :class:`IBN` with ``ibn``) + ReLU."""
    norm: list[nn.Module] = [IBN(cout)] if ibn else [nn.BatchNorm2d(cout)] if batch_norm else []
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not (batch_norm or ibn)), *norm, nn.ReLU(inplace=True)]


def init_relu_net(module: nn.Module) -> None:
    """He init for ReLU convs/linears, BN at identity: trains from scratch without pretraining."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module | Sequence[nn.Parameter]) -> int:
    params = module.parameters() if isinstance(module, nn.Module) else module
    return int(sum(p.numel() for p in params))


@torch.no_grad()
def probe_shape(module: nn.Module, channels: int, size: int) -> torch.Size:
    """Output shape of ``module`` for one (1, channels, size, size) input (builders size their fc layers)."""
    was = module.training
    module.eval()
    try:
        return module(torch.zeros(1, channels, size, size)).shape
    finally:
        module.train(was)


# -- feature maps (timm's features_only / feature_info) ---------------------------------------------
def split_stages(backbone: Backbone) -> tuple[list[nn.Sequential], nn.Sequential]:
    """The trunk cut into its stages and its tail: ``(stages, tail)``, sharing the trunk's modules.

    ``Sequential(*stages, tail)`` computes exactly what the trunk computes. Raises ConfigError when the
    backbone exposes no stages."""
    if not backbone.stages or not isinstance(backbone.trunk, nn.Sequential):
        raise ConfigError("this backbone exposes no feature maps (no stages).")
    layers = list(backbone.trunk)
    bounds = [-1, *backbone.stages]
    stages = [nn.Sequential(*layers[a + 1 : b + 1]) for a, b in zip(bounds, bounds[1:])]
    return stages, nn.Sequential(*layers[bounds[-1] + 1 :])


@torch.no_grad()
def feature_info(backbone: Backbone) -> list[dict[str, int]]:
    """One record per stage, as timm's ``feature_info``: ``{"stage", "module", "num_chs", "reduction", "size"}``
    (``module`` the index into the trunk, ``reduction`` the input size over the map's, ``size`` the map's
    side at the backbone's input size)."""
    stages, _ = split_stages(backbone)
    was = backbone.trunk.training
    backbone.trunk.eval()
    try:
        x = torch.zeros(1, backbone.in_channels, backbone.input_size, backbone.input_size)
        out = []
        for i, (stage, idx, ch) in enumerate(zip(stages, backbone.stages, backbone.stage_channels)):
            x = stage(x)
            if x.shape[1] != ch:
                raise RuntimeError(f"stage {i} gives {x.shape[1]} channels, the backbone says {ch}")
            out.append({"stage": i, "module": idx, "num_chs": ch, "reduction": backbone.input_size // x.shape[-1],
                        "size": int(x.shape[-1])})
        return out
    finally:
        backbone.trunk.train(was)
