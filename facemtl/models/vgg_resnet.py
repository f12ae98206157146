"""Classic large backbones: ``vgg16`` (with a width multiplier, also MCFA's sub-network) and
torchvision's ``resnet18`` / ``resnet50`` (random init, classifier removed)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torchvision
from torch import nn

from facemtl.models._backbone import BACKBONES, Backbone, conv_bn_relu, init_relu_net, resolve_size, size_error

#: VGG-16's 13 conv layers ("M": 2x2 max pooling)
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg_trunk(
    name: str, size: int, *, width: float, fc: tuple[int, int], batch_norm: bool = True, dropout: float = 0.5,
) -> nn.Sequential:
    """VGG-16's 13 3x3 convs (channels x ``width``) + 2 fc layers; (B, 3, S, S) -> (B, fc[1]).

    After the five poolings the map is S // 32 wide; maps up to 7 wide are flattened as they are
    (224 -> 7x7 as in VGG-16, 112 -> 3x3, 56 -> 1x1), wider ones are average-pooled to 7x7 when
    their width is a multiple of 7 (the only pooling that exports to ONNX exactly)."""
    grid = size // 32
    if grid < 1 or (grid > 7 and grid % 7):
        raise size_error(name, size, "VGG takes 32 to 255 px, or sizes whose final map (S // 32) is a multiple of 7, e.g. 448")
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            c = max(1, round(int(v) * width))
            layers += conv_bn_relu(cin, c, batch_norm=batch_norm)
            cin = c
    if grid > 7:
        layers.append(nn.AdaptiveAvgPool2d(7))
        grid = 7
    layers += [
        nn.Flatten(1),                                                           # (B, C * g * g)
        nn.Linear(cin * grid * grid, fc[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(fc[0], fc[1]), nn.ReLU(inplace=True), nn.Dropout(dropout),     # (B, fc[1])
    ]
    trunk = nn.Sequential(*layers)
    init_relu_net(trunk)
    return trunk


@BACKBONES.register("vgg16")
def vgg16(
    input_size: int | None = None, *, width: float = 0.25, fc: int | None = None, batch_norm: bool = True,
    dropout: float = 0.5,
) -> Backbone:
    """VGG-16 (13 conv + 2 fc) at 224 px by default; 112 and 56 work too (see :func:`vgg_trunk`).

    ``width=1`` gives the real VGG-16 widths (64 ... 512, fc 4096): 134,264,768 parameters with
    batch norm (the paper's 138 M includes the 1000-way classifier). The default ``width=0.25``
    (16 ... 128 channels, fc 1024) has 8,394,992 and is bearable on a CPU. ``fc`` defaults to
    4096 x width. ``batch_norm=True`` is VGG-16-BN: from-scratch training is far more reliable.
    """
    size = resolve_size("vgg16", input_size, 224)
    fc_dim = int(fc) if fc else max(1, round(4096 * width))
    trunk = vgg_trunk("vgg16", size, width=width, fc=(fc_dim, fc_dim), batch_norm=batch_norm, dropout=dropout)
    # a stage ends at each of the five max poolings (strides 2 to 32)
    pools = tuple(i for i, m in enumerate(trunk) if isinstance(m, nn.MaxPool2d))
    chans = tuple(max(1, round(int(v) * width)) for v, nxt in zip(VGG16_CFG, VGG16_CFG[1:]) if nxt == "M")
    return Backbone(
        trunk, fc_dim, size, 3, options={"width": width, "fc": fc_dim, "batch_norm": batch_norm, "dropout": dropout},
        stages=pools, stage_channels=chans,
    )


def _resnet(name: str, ctor: Callable[..., nn.Module], dim: int, input_size: int | None) -> Backbone:
    size = resolve_size(name, input_size, 112)
    if size < 32:
        raise size_error(name, size, "ResNets take 32 px and more (112 or 224 typical)")
    net = ctor(weights=None)
    # the same modules (and state-dict keys) as torchvision's ResNet, as a Sequential so that it can be cut
    # into stages (after layer1 ... layer4, strides 4 to 32); fc removed: (B, dim) pooled features
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
    trunk = nn.Sequential(OrderedDict([(n, getattr(net, n)) for n in names] + [("flatten", nn.Flatten(1))]))
    chans = tuple([m for m in getattr(net, f"layer{i}").modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
                  for i in (1, 2, 3, 4))
    # torchvision's own weight files carry the 1000-way classifier: dropped on load
    return Backbone(trunk, dim, size, 3, ignore_keys=("fc.",), stages=(4, 5, 6, 7), stage_channels=chans)


@BACKBONES.register("resnet18")
def resnet18(input_size: int | None = None) -> Backbone:
    """torchvision ResNet-18, random init, fc removed: 512-d pooled feature, 11,176,512 parameters.
    112 px by default (any size from 32). ``weights=PATH`` takes torchvision's state dict."""
    return _resnet("resnet18", torchvision.models.resnet18, 512, input_size)


@BACKBONES.register("resnet50")
def resnet50(input_size: int | None = None) -> Backbone:
    """torchvision ResNet-50, random init, fc removed: 2048-d pooled feature, 23,508,032 parameters.
    112 px by default (any size from 32). ``weights=PATH`` takes torchvision's state dict."""
    return _resnet("resnet50", torchvision.models.resnet50, 2048, input_size)
