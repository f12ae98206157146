"""Small plain CNN backbones: ``gender-glasses`` (seed 004), ``tcdcn``, ``small`` and ``famo9``.

Parameter counts below are exact for the default options (``describe()`` reports them for any).
"""

from __future__ import annotations

from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import (
    BACKBONES,
    GREY_MEAN,
    GREY_STD,
    Backbone,
    MixStyle,
    conv_bn_relu,
    init_relu_net,
    probe_shape,
    resolve_size,
    size_error,
)


# -- seed 004: gender + eyeglasses CNN -------------------------------------------------------------
@BACKBONES.register("gender-glasses")
def gender_glasses_cnn(
    input_size: int | None = None, *, shared_blocks: int = 1, channels: tuple[int, ...] = (32, 64, 128), fc: int = 145,
) -> Backbone:
    """Seed 004's hard-parameter-sharing CNN: 50x50 grey input, 3x3 convs (stride 1, ReLU) each
    followed by 2x2 max pooling, then one branch per task.

    The paper gives 1,524,740 trainable parameters for the two-task network and 1,525,060 for two
    single-task networks. The difference, 320, is exactly one 3x3 conv with 32 filters on a grey
    image (32 x 9 + 32): only the first conv layer is shared, the rest is duplicated per task.
    The paper does not list the branch layers; ours are conv 64 -> pool -> conv 128 -> pool ->
    fc ``fc`` (ReLU), which with the task's linear output gives **1,521,926** parameters for two
    binary tasks (320 shared + 2 x 760,803), 0.2 % under the paper's count.

    ``shared_blocks`` (1..len(channels)) moves the split point: with 3 every conv is shared and
    each branch is just the fc layer (1,429,574 parameters for two binary tasks).
    """
    size = resolve_size("gender-glasses", input_size, 50)
    if size != 50:
        raise size_error("gender-glasses", size, "it takes 50x50 only (its fc layer is sized for it); leave input_size unset")
    if not 1 <= shared_blocks <= len(channels):
        raise ConfigError(f"backbone 'gender-glasses': shared_blocks={shared_blocks}, it must be in 1..{len(channels)}.")
    blocks: list[nn.Module] = []
    cin = 1
    for c in channels:
        blocks.append(nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)))
        cin = c
    shared = nn.Sequential(*blocks[:shared_blocks])
    mid = probe_shape(shared, 1, size)  # (1, C, s, s) at the split point
    end = probe_shape(nn.Sequential(*blocks), 1, size)
    flat_mid, flat_end = mid[1] * mid[2] * mid[3], end[1] * end[2] * end[3]
    trunk = nn.Sequential(*shared, nn.Flatten(1))
    init_relu_net(trunk)

    def branch() -> nn.Module:
        layers: list[nn.Module] = []
        if shared_blocks < len(channels):
            layers.append(nn.Unflatten(1, tuple(mid[1:])))  # (B, C*s*s) -> (B, C, s, s)
            cin = mid[1]
            for c in channels[shared_blocks:]:
                layers += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                cin = c
            layers.append(nn.Flatten(1))
        layers += [nn.Linear(flat_end, fc), nn.ReLU(inplace=True)]
        out = nn.Sequential(*layers)
        init_relu_net(out)
        return out

    return Backbone(
        trunk, flat_mid, size, 1, GREY_MEAN, GREY_STD, branch=branch, branch_dim=fc,
        options={"shared_blocks": shared_blocks, "channels": tuple(channels), "fc": fc},
    )


# -- TCDCN -----------------------------------------------------------------------------------------
class AbsTanh(nn.Module):
    """|tanh(x)|: the hyperbolic tangent followed by absolute-value rectification (TCDCN)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.tanh().abs()


@BACKBONES.register("tcdcn")
def tcdcn(
    input_size: int | None = None, *, channels: tuple[int, int, int, int] = (20, 48, 64, 80), fc: int = 100,
    activation: str = "abs_tanh",
) -> Backbone:
    """TCDCN (Zhang et al., ECCV 2014): 40x40 grey input, four conv layers with |tanh|
    activations, max pooling after the first three, and a shared fc layer of 100 units::

        40x40x1 -conv5-> 36x36x20 -pool-> 18x18x20 -conv3-> 16x16x48 -pool-> 8x8x48
        -conv3-> 6x6x64 -pool-> 3x3x64 -conv2-> 2x2x80 -fc-> 100

    The task heads are linear on the 100-d feature (10 landmark coordinates, 5 pose classes,
    gender, smile, glasses). Trunk: **89,580** parameters (the paper states no count; this is
    the count of the architecture in its Figure 2 as we read it). Only 40x40 is accepted.

    ``activation``: ``abs_tanh`` (the paper's |tanh|) or ``tanh``. With Adam, |tanh| trains far
    more slowly on SynthFaces (landmark loss 0.14 vs 0.04 after 4 epochs, the mean-face predictor
    scoring 0.176), so the ``tcdcn`` recipe selects ``tanh``; pick ``abs_tanh`` for the paper's form.
    """
    if activation not in ("abs_tanh", "tanh"):
        raise ConfigError(f"backbone 'tcdcn': Invalid activation '{activation}'. Use abs_tanh or tanh.")
    act = AbsTanh if activation == "abs_tanh" else nn.Tanh
    size = resolve_size("tcdcn", input_size, 40)
    if size != 40:
        raise size_error("tcdcn", size, "TCDCN takes 40x40 only (its fc layer is sized for it); leave input_size unset")
    c1, c2, c3, c4 = channels
    convs = nn.Sequential(
        nn.Conv2d(1, c1, 5), act(), nn.MaxPool2d(2),   # (B, c1, 18, 18)
        nn.Conv2d(c1, c2, 3), act(), nn.MaxPool2d(2),  # (B, c2, 8, 8)
        nn.Conv2d(c2, c3, 3), act(), nn.MaxPool2d(2),  # (B, c3, 3, 3)
        nn.Conv2d(c3, c4, 2), act(),                   # (B, c4, 2, 2)
    )
    flat = c4 * 2 * 2
    trunk = nn.Sequential(*convs, nn.Flatten(1), nn.Linear(flat, fc), act())
    for m in trunk.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain("tanh"))
            nn.init.zeros_(m.bias)
    # stages end at each pooling and at the last conv (18, 8, 3 and 2 px maps)
    return Backbone(trunk, fc, size, 1, GREY_MEAN, GREY_STD, options={"channels": tuple(channels), "fc": fc, "activation": activation},
                    stages=(2, 5, 8, 10), stage_channels=(c1, c2, c3, c4))


# -- small: the fast default -----------------------------------------------------------------------
@BACKBONES.register("small")
def small(input_size: int | None = None, *, width: int = 32, mixstyle: float = 0.0, ibn: bool = False) -> Backbone:
    """A fast conv-BN-ReLU net for the default recipe (RGB, 64 px by default, 112 works as well).

    stem conv s2 (w) -> [conv s2 + conv] x 3 (2w, 4w, 8w) -> average pool to 4x4 -> fc 8w (BN, ReLU).
    The 4x4 layout keeps where things are (landmarks, boxes), which global pooling would discard.
    Default ``width=32``: 256-d feature, about 2.2 M parameters, about 46 MMAC per image at 64 px.
    Any size from 32 px up works (the output stride is 16). The three stages' feature maps (strides
    4, 8, 16) are exposed to spatial heads (the landmark heatmap head, :mod:`facemtl.tasks.heatmap`).
    ``mixstyle`` p > 0 puts :class:`MixStyle` (applied to a batch with probability p, training only)
    after the stem and after the first stage, where the paper puts it. ``ibn=True`` instance-normalises
    half the channels (:class:`IBN`, IBN-Net's IBN-a) after the stem conv and after the first conv of
    the first two stages, the shallow layers where the paper puts it; the last stage keeps BatchNorm.
    """
    size = resolve_size("small", input_size, 64)
    if size < 32:
        raise size_error("small", size, "it takes 32 px and more (64 or 112 recommended)")
    if not 0.0 <= mixstyle <= 1.0:
        raise ConfigError(f"model.options.mixstyle = {mixstyle} must be a probability per batch in [0, 1] (0 = off).")
    w = int(width)
    if not isinstance(ibn, bool):
        raise ConfigError(f"model.options.ibn = {ibn!r} must be true or false (TOML booleans, unquoted).")
    layers: list[nn.Module] = conv_bn_relu(3, w, stride=2, ibn=ibn)  # (B, w, S/2, S/2)
    if mixstyle > 0:
        layers.append(MixStyle(mixstyle))
    cin = w
    taps = []
    for c in (2 * w, 4 * w, 8 * w):  # each stage halves the resolution
        layers += conv_bn_relu(cin, c, stride=2, ibn=ibn and c < 8 * w) + conv_bn_relu(c, c)
        if mixstyle > 0 and c == 2 * w:
            layers.append(MixStyle(mixstyle))
        cin = c
        taps.append(len(layers) - 1)  # after each stage's last module: strides 4, 8, 16
    # Keep a coarse layout (at most 4x4) instead of global pooling: landmarks and boxes need to know
    # *where*. The final map is ceil(S/16) wide; average it in k x k windows (ceil mode, k fixed
    # at build time) rather than with AdaptiveAvgPool2d(4), which ONNX cannot export when the map
    # is not a multiple of 4 (112 px: 7x7 -> 4x4).
    feat = 8 * w
    final = probe_shape(nn.Sequential(*layers), 3, size)[-1]
    k = -(-final // 4)
    grid = -(-final // k)
    pool: nn.Module = nn.AvgPool2d(k, k, ceil_mode=True) if k > 1 else nn.Identity()
    trunk = nn.Sequential(
        *layers, pool, nn.Flatten(1),  # (B, 8w * g * g), g <= 4
        nn.Linear(cin * grid * grid, feat), nn.BatchNorm1d(feat), nn.ReLU(inplace=True),  # (B, 8w)
    )
    init_relu_net(trunk)
    options = {"width": w, **({"mixstyle": float(mixstyle)} if mixstyle > 0 else {}), **({"ibn": True} if ibn else {})}
    return Backbone(trunk, feat, size, 3, options=options, taps=tuple(taps), tap_channels=(2 * w, 4 * w, 8 * w),
                    stages=tuple(taps), stage_channels=(2 * w, 4 * w, 8 * w))


# -- famo9: the CelebA benchmark network of FAMO / Nash-MTL --------------------------------------
@BACKBONES.register("famo9")
def famo9(input_size: int | None = None, *, width: float = 1.0, fc: int = 512) -> Backbone:
    """The 9-layer encoder used for CelebA's 40-task benchmark (FAMO, NeurIPS 2023; its public
    ``experiments/celeba/models.py``): seven 3x3 conv-BN-ReLU layers (64 | pool | 128, 128 | pool |
    256, 256 | pool | 512, 512), global average pooling, then two fc-BN-ReLU layers of 512;
    one linear head per attribute. 64x64 RGB by default (any size from 8 px works).
    **5,176,640** encoder parameters at ``width=1`` (REFERENCE.md's 5.2 M); ``width`` scales the
    conv channels for quick CPU runs.
    """
    size = resolve_size("famo9", input_size, 64)
    if size < 8:
        raise size_error("famo9", size, "it takes 8 px and more (64 is the benchmark's size)")
    c = [max(1, round(k * width)) for k in (64, 128, 256, 512)]
    layers = [
        *conv_bn_relu(3, c[0]), nn.MaxPool2d(2),
        *conv_bn_relu(c[0], c[1]), *conv_bn_relu(c[1], c[1]), nn.MaxPool2d(2),
        *conv_bn_relu(c[1], c[2]), *conv_bn_relu(c[2], c[2]), nn.MaxPool2d(2),
        *conv_bn_relu(c[2], c[3]), *conv_bn_relu(c[3], c[3]),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1),                              # (B, c3)
        nn.Linear(c[3], fc, bias=False), nn.BatchNorm1d(fc), nn.ReLU(inplace=True),
        nn.Linear(fc, fc, bias=False), nn.BatchNorm1d(fc), nn.ReLU(inplace=True),  # (B, fc)
    ]
    trunk = nn.Sequential(*layers)
    init_relu_net(trunk)
    # stages end at each max pooling and at the last conv (strides 2, 4, 8, 8)
    pools = [i for i, m in enumerate(layers) if isinstance(m, (nn.MaxPool2d, nn.AdaptiveAvgPool2d))]
    return Backbone(trunk, fc, size, 3, options={"width": width, "fc": fc}, stages=(pools[0], pools[1], pools[2], pools[3] - 1),
                    stage_channels=(c[0], c[1], c[2], c[3]))


BACKBONES.alias("seed004", "gender-glasses")  # its name before 0.2
