"""Label-aware augmentation of whole batches on the training device.

The loader stays fast and simple (uint8 rows straight from the cache); after the batch reaches the
device and becomes float, :class:`BatchAugment` changes every sample with its own random draw and
carries the labels through the same change:

geometry (one 2x3 affine per sample, ``F.affine_grid`` + ``F.grid_sample``, bilinear)
    horizontal flip (landmarks mirrored and left/right points swapped, yaw and roll negated, the
    pose class mirrored, boxes mirrored; attributes, expression, identity unchanged), zoom,
    rotation (the roll label turns with the image) and translation. Landmarks go through the
    exact affine. A box's centre goes through the affine and its width and height scale with the
    zoom: it is *not* replaced by the hull of its rotated corners, which would inflate every box
    under rotation. Pixels that come from outside the image are black (zeros), like the padding
    ``facemtl predict`` uses around a photo. Landmarks that leave the frame stay regression targets
    (coordinates a little outside [0, 1]; the model's outputs are not clamped) and boxes are not
    clipped; the default ranges keep the face inside the frame. An optional smooth warp
    (``warp``, off in every preset) shifts the sampling grid by a bicubically interpolated random
    field after the affine; landmarks follow by the field's inverse and each box side by where its
    midpoint goes.
photometry (per sample)
    brightness, contrast, saturation, hue (a rotation of the YIQ chroma plane), greyscale, a mild
    blur (a 3x3 binomial kernel, too weak to make a face ``Blurry``; that label is not changed),
    low resolution (shrunk 1.5-3x and enlarged back, :data:`LOWRES_FACTORS`; the sample's ``Blurry``
    label becomes unknown, since a face shrunk that much may look blurry), texture (the fine detail
    of a non-face of the batch laid over the sample), random convolution (RandConv: a random 1x1 to
    7x7 filter, ``randconv_kernel``, mixed with the image; the sample's colour attributes become
    unknown), Gaussian noise, and optional random erasing (a rectangle of noise). ``lowres``,
    ``texture`` and ``randconv`` are off in every preset.

Every random number of a batch comes from a generator seeded with ``(seed, epoch, batch index)``,
so the same batch is augmented identically in a rerun and in a resumed run, with no state to save.
Several inputs of one sample (MCFA's 56/112/224 crops) get the same draw. Validation and test never
augment. Presets: ``none``, ``light``, ``standard``, ``strong`` (:data:`PRESETS`).

Why our own code rather than torchvision.transforms.v2 or kornia: v2 draws one set of parameters
per call, so a batch would need a Python loop over samples (tv_tensors' keypoints also know nothing
of left/right swaps, yaw or pose classes); kornia draws per sample on the device but would add a
dependency for what is here one ``affine_grid`` and a few tensor ops, and the face-specific label
rules would still be ours.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facemtl.data.schema import FLIP_LANDMARKS, FLIP_POSE_CLASS
from facemtl.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings: a ``preset`` and optional per-field overrides (None = the preset's).

    Ranges: ``scale`` s draws the zoom from [1 - s, 1 + s]; ``rotate`` degrees from [-r, r];
    ``translate`` t of the image side from [-t, t] per axis; ``stretch`` k widens the image by a
    and shortens it by 1 / a (in the face's own axes, before the rotation), a log-uniform in
    [1 / (1 + k), 1 + k]: a face that is wider or longer than SynthFaces' proportions; ``brightness`` / ``contrast`` /
    ``saturation`` b multiply by [1 - b, 1 + b]; ``hue`` h turns the chroma by [-h, h] turns;
    ``noise`` n draws the noise sd from [0, n]; ``flip``, ``grey``, ``blur``, ``lowres``,
    ``texture``, ``randconv``, ``erase`` are probabilities per sample (``lowres``: the image is shrunk by a factor
    drawn from :data:`LOWRES_FACTORS` and enlarged back, as a small face is when it is cut from a
    photo; ``texture``: :data:`TEXTURE_AMOUNT` x the fine detail of a non-face is added;
    ``randconv``: a random k x k convolution, k odd from 1 to ``randconv_kernel``, is mixed in)."""

    preset: str = "none"
    flip: float | None = None
    scale: float | None = None
    rotate: float | None = None
    translate: float | None = None
    stretch: float | None = None
    warp: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None
    grey: float | None = None
    blur: float | None = None
    noise: float | None = None
    lowres: float | None = None
    texture: float | None = None
    randconv: float | None = None
    randconv_kernel: int | None = None
    erase: float | None = None

    def __post_init__(self) -> None:
        self.resolved()  # an unknown preset or a value out of range fails when the config is read

    def resolved(self) -> dict[str, float]:
        """Every field's value: the preset's, overridden by the fields that are set."""
        if self.preset not in PRESETS:
            raise UnknownNameError("augmentation preset", self.preset, list(PRESETS))
        values = dict(PRESETS[self.preset])
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "preset" and v is not None:
                values[f.name] = float(v)
        kernel = values["randconv_kernel"]
        if kernel != int(kernel) or int(kernel) % 2 == 0 or not 1 <= kernel <= 15:
            raise ConfigError(f"augment.randconv_kernel = {kernel:g} must be an odd whole number from 1 to 15 (the largest random kernel).")
        for k, v in values.items():
            if v < 0 or (k in _PROBABILITIES and v > 1):
                raise ConfigError(f"augment.{k} = {v} is out of range ({'a probability in [0, 1]' if k in _PROBABILITIES else 'must be >= 0'}).")
        if values["warp"] > WARP_MAX:
            raise ConfigError(f"augment.warp = {values['warp']:g} is too large: the warp must stay a smooth, invertible "
                              f"change of proportions (use at most {WARP_MAX:g} of the image side).")
        if values["scale"] >= 1:
            raise ConfigError(f"augment.scale = {values['scale']}: the zoom range 1 +- scale must stay positive (use < 1).")
        return values

    @property
    def enabled(self) -> bool:
        return _changes_anything(self.resolved())


_PROBABILITIES = {"flip", "grey", "blur", "lowres", "texture", "randconv", "erase"}
#: settings that shape a change rather than switch it on
_SHAPES = {"randconv_kernel"}
_OFF = dict(flip=0.0, scale=0.0, rotate=0.0, translate=0.0, stretch=0.0, warp=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
            hue=0.0, grey=0.0, blur=0.0, noise=0.0, lowres=0.0, texture=0.0, randconv=0.0, randconv_kernel=7.0, erase=0.0)
#: ``warp`` moves the points of a ``WARP_GRID`` x ``WARP_GRID`` control grid spanning the image by up
#: to ``warp`` of the side each way and interpolates the shift bicubically in between: parts of a
#: face move against each other (eyes up, mouth down, a cheek out), which no affine does. The
#: largest setting keeps the warp invertible, so that the labels can follow it (``_unwarp``).
WARP_GRID = 4
WARP_MAX = 0.06
WARP_INVERSE_STEPS = 10
#: ``lowres`` shrinks an image by one of ``LOWRES_LEVELS`` factors spaced evenly in log over this
#: range (1.5, 1.89, 2.38, 3; few sizes keep it to a few resize calls per batch) before enlarging
#: it back: a 64 px input then carries the detail of a 21-43 px source. The face finder cuts windows
#: around faces from 20 px up and enlarges the small ones to the input size
#: (:mod:`facemtl.export.faces`), and photos of faces are often smaller than the model's input;
#: SynthFaces renders every crop sharp at the stored size.
LOWRES_FACTORS = (1.5, 3.0)
LOWRES_LEVELS = 4
#: attributes whose label a low-resolution draw makes unknown for that sample: a head shrunk 3x
#: is as small as SynthFaces' Blurry captures (14-28 px tall), so "not Blurry" may no longer hold
RESOLUTION_ATTRIBUTES = ("Blurry",)
#: ``texture`` adds another sample's fine detail times an amount drawn from this range
TEXTURE_AMOUNT = (0.25, 1.0)
#: attributes a random convolution makes unknown for that sample: it scrambles colours
COLOUR_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Pale_Skin", "Rosy_Cheeks",
                     "Heavy_Makeup", "Wearing_Lipstick")


def _changes_anything(values: dict[str, float]) -> bool:
    """Whether resolved settings change anything (a shape setting alone does not)."""
    return any(v > 0 for k, v in values.items() if k not in _SHAPES)


PRESETS: dict[str, dict[str, float]] = {
    "none": dict(_OFF),
    "light": {**_OFF, "flip": 0.5, "scale": 0.05, "rotate": 5.0, "translate": 0.03, "brightness": 0.1,
              "contrast": 0.1, "saturation": 0.1, "noise": 0.01},
    "standard": {**_OFF, "flip": 0.5, "scale": 0.1, "rotate": 12.0, "translate": 0.05, "brightness": 0.25,
                 "contrast": 0.25, "saturation": 0.3, "hue": 0.03, "grey": 0.05, "blur": 0.1, "noise": 0.02},
    "strong": {**_OFF, "flip": 0.5, "scale": 0.15, "rotate": 20.0, "translate": 0.08, "brightness": 0.4,
               "contrast": 0.4, "saturation": 0.5, "hue": 0.06, "grey": 0.1, "blur": 0.2, "noise": 0.04, "erase": 0.25},
}


def batch_generator(seed: int, epoch: int, batch_index: int) -> torch.Generator:
    """The CPU generator of one batch: a pure function of (seed, epoch, batch index)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(batch_index), 0xA0C]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


class BatchAugment:
    """Augment model inputs and labels of a batch (see the module docstring)."""

    def __init__(self, config: AugmentConfig | None = None, *, seed: int = 0,
                 attribute_names: tuple[str, ...] | list[str] = (), **overrides: float):
        config = config or AugmentConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.values = config.resolved()
        self.seed = int(seed)
        #: attribute columns a low-resolution draw makes unknown (-1): a shrunk face may look Blurry
        self.resolution_attributes = [i for i, n in enumerate(attribute_names) if n in RESOLUTION_ATTRIBUTES]
        #: attribute columns a random-convolution draw makes unknown: it scrambles colours
        self.colour_attributes = [i for i, n in enumerate(attribute_names) if n in COLOUR_ATTRIBUTES]

    @property
    def enabled(self) -> bool:
        return _changes_anything(self.values)

    def __call__(self, inputs: list[Tensor], batch: dict[str, Any], *, epoch: int, batch_index: int) -> tuple[list[Tensor], dict[str, Any]]:
        """inputs: float (B, 3, S, S) in [0, 1], one per model input; returns new inputs and a new
        batch dict whose geometric labels follow the pixels (the given ones are not modified)."""
        if not self.enabled or not inputs:
            return inputs, batch
        g = batch_generator(self.seed, epoch, batch_index)
        n = inputs[0].shape[0]
        p = self._draw(n, g)
        batch = dict(batch)
        if "texture" in p:
            p["texture_from"] = texture_sources(p["texture_pick"], batch.get("face"))
        out = []
        theta = _inverse_theta(p)  # (B, 2, 3) output -> input grid coordinates
        for k, x in enumerate(inputs):
            if p["geometric"]:
                grid = _sampling_grid(theta.to(x.device, x.dtype), p.get("warp"), list(x.shape))
                x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            x = _photometric(x, p, k)  # parameters stay on the CPU; each op moves the few it needs
            out.append(x)
        if p["geometric"]:
            _transform_labels(batch, p)
        for change, cols in (("lowres", self.resolution_attributes), ("randconv", self.colour_attributes)):
            if change in p and cols and "attributes" in batch:
                a = batch["attributes"].clone()  # the caller's batch is not modified
                a[:, cols] = a[:, cols].masked_fill(p[change].to(a.device).view(-1, 1), -1)
                batch["attributes"] = a
        return out, batch

    # -- random parameters ------------------------------------------------------------------------
    def _draw(self, n: int, g: torch.Generator) -> dict[str, Any]:
        v = self.values

        def u(lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=g)

        def coin(prob: float) -> Tensor:
            return torch.rand(n, generator=g) < prob

        p: dict[str, Any] = {
            "flip": coin(v["flip"]),
            "scale": u(1 - v["scale"], 1 + v["scale"]),
            "angle": u(-v["rotate"], v["rotate"]) * (math.pi / 180.0),
            "shift": (torch.rand(n, 2, generator=g) * 2 - 1) * v["translate"],
            "brightness": u(1 - v["brightness"], 1 + v["brightness"]),
            "contrast": u(1 - v["contrast"], 1 + v["contrast"]),
            "saturation": u(1 - v["saturation"], 1 + v["saturation"]),
            "hue": u(-v["hue"], v["hue"]) * (2 * math.pi),
            "grey": coin(v["grey"]),
            "blur": coin(v["blur"]),
            "noise": u(0.0, v["noise"]),
            "erase": coin(v["erase"]),
            "erase_box": torch.rand(n, 4, generator=g),
            "noise_seed": int(torch.randint(0, 2**31 - 1, (1,), generator=g)),
        }
        if v["lowres"] > 0:  # drawn last, so that adding lowres leaves every other draw as it was
            lo, hi = (math.log(f) for f in LOWRES_FACTORS)
            p["lowres"] = coin(v["lowres"])
            step = torch.randint(0, LOWRES_LEVELS, (n,), generator=g).float() / (LOWRES_LEVELS - 1)
            p["lowres_factor"] = torch.exp(lo + (hi - lo) * step)
        if v["texture"] > 0:  # after lowres, for the same reason
            p["texture"] = coin(v["texture"])
            p["texture_amount"] = u(*TEXTURE_AMOUNT)
            p["texture_pick"] = torch.rand(n, generator=g)  # which sample gives the detail: __call__
        if v["randconv"] > 0:  # after texture, for the same reason
            p["randconv"] = coin(v["randconv"])
            sizes = torch.arange(1, int(v["randconv_kernel"]) + 1, 2)  # 1, 3, ..., the largest kernel
            p["randconv_size"] = sizes[torch.randint(0, len(sizes), (n,), generator=g)]
            p["randconv_mix"] = torch.rand(n, generator=g)
            k = int(sizes[-1])
            p["randconv_weight"] = torch.randn(n, 3, 3, k, k, generator=g)
        if v["stretch"] > 0:  # after randconv, for the same reason
            top = math.log1p(v["stretch"])
            p["aspect"] = torch.exp(u(-top, top))
        if v["warp"] > 0:  # after the stretch, for the same reason; control-point shifts in grid units
            p["warp"] = (torch.rand(n, 2, WARP_GRID, WARP_GRID, generator=g) * 2 - 1) * (2 * v["warp"])
        p["geometric"] = any(v[k] > 0 for k in ("flip", "scale", "rotate", "translate", "stretch", "warp"))
        p["photometric"] = {k for k in ("texture", "randconv", "brightness", "contrast", "saturation", "hue", "grey", "blur", "lowres", "noise", "erase")
                            if v[k] > 0}
        return p


# -- geometry ---------------------------------------------------------------------------------------
def forward_matrix(p: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """(B, 2, 2) M and (B, 2) t of the content map g_out = M g_in + t in grid coordinates
    ([-1, 1] across the image, x right, y down): flip, then stretch, then rotate, then zoom, then shift."""
    c, s = torch.cos(p["angle"]), torch.sin(p["angle"])
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (B, 2, 2)
    f = torch.where(p["flip"], -1.0, 1.0)
    before_rot = torch.diag_embed(torch.stack([f, torch.ones_like(f)], -1))  # the flip
    if "aspect" in p:  # then the stretch
        a = p["aspect"]
        before_rot = torch.diag_embed(torch.stack([a, 1.0 / a], -1)) @ before_rot
    m = p["scale"].view(-1, 1, 1) * rot @ before_rot
    return m, p["shift"] * 2.0  # a shift of t image sides is 2t in grid units


def _inverse_theta(p: dict[str, Any]) -> Tensor:
    m, t = forward_matrix(p)
    inv = torch.linalg.inv(m)
    return torch.cat([inv, -(inv @ t.unsqueeze(-1))], dim=2)  # g_in = inv (g_out - t)


def _warp_field(ctrl: Tensor, points: Tensor) -> Tensor:
    """The warp's shift (B, ..., 2) at grid points (B, ..., 2): the control grid's shifts (B, 2, G, G),
    corners at the image's corners, interpolated bicubically. One function for pixels and labels,
    so both see the same shift whatever the input size."""
    flat = points.reshape(points.shape[0], 1, -1, 2)
    d = F.grid_sample(ctrl.to(points.device, points.dtype), flat, mode="bicubic", padding_mode="border", align_corners=True)
    return d[:, :, 0].transpose(1, 2).reshape(points.shape)


def _sampling_grid(theta: Tensor, warp: Tensor | None, shape: list[int]) -> Tensor:
    """Output pixel -> input grid point: the warp's shift first (the warp is the last change of the
    content), then the inverse affine."""
    if warp is None:
        return F.affine_grid(theta, shape, align_corners=False)
    eye = torch.eye(2, 3, dtype=theta.dtype, device=theta.device).expand(shape[0], 2, 3)
    base = F.affine_grid(eye, shape, align_corners=False)  # (B, H, W, 2) output pixel centres
    moved = base + _warp_field(warp, base)
    return torch.einsum("bij,bhwj->bhwi", theta[:, :, :2], moved) + theta[:, None, None, :, 2]


def _unwarp(points: Tensor, ctrl: Tensor) -> Tensor:
    """Where content at grid points ``points`` (B, N, 2) lands after the warp: the q with
    q + shift(q) = points, by fixed-point steps (the shift's slope stays well under 1 at
    ``WARP_MAX``, so each step shrinks the error several times). Missing (NaN) points stay missing."""
    known = torch.isfinite(points)
    target = torch.where(known, points, torch.zeros_like(points))
    ctrl = ctrl.to(points.device, points.dtype)  # once, not in each of the steps below
    q = target
    for _ in range(WARP_INVERSE_STEPS):
        q = target - _warp_field(ctrl, q)
    return torch.where(known, q, points)


def _transform_labels(batch: dict[str, Any], p: dict[str, Any]) -> None:
    m, t = forward_matrix(p)
    flip = p["flip"]
    warp = p.get("warp")
    if "landmarks" in batch:
        lm = batch["landmarks"]
        dev = lm.device
        mm, tt = m.to(dev, lm.dtype), t.to(dev, lm.dtype)
        g = lm * 2 - 1  # (B, 5, 2) grid coordinates; NaN rows stay NaN
        g = torch.einsum("bij,bkj->bki", mm, g) + tt.unsqueeze(1)
        swapped = g[:, list(FLIP_LANDMARKS)]
        g = torch.where(flip.to(dev).view(-1, 1, 1), swapped, g)
        if warp is not None:
            g = _unwarp(g, warp)
        batch["landmarks"] = (g + 1) / 2
    if "bbox" in batch:
        box = batch["bbox"]
        dev = box.device
        mm, tt = m.to(dev, box.dtype), t.to(dev, box.dtype)
        centre = (box[:, :2] + box[:, 2:] / 2) * 2 - 1
        centre = torch.einsum("bij,bj->bi", mm, centre) + tt
        wh = box[:, 2:] * p["scale"].to(dev, box.dtype).unsqueeze(1)
        if "aspect" in p:  # the box's sides follow the stretch (its rotation is left out, as above)
            a = p["aspect"].to(dev, box.dtype)
            wh = wh * torch.stack([a, 1.0 / a], 1)
        if warp is None:
            batch["bbox"] = torch.cat([(centre + 1) / 2 - wh / 2, wh], dim=1)
        else:  # the box's sides are where the warp takes the midpoints of its four sides
            half = wh  # half the side in grid units (a side of w image widths is 2w grid units)
            zero = torch.zeros_like(half[:, 0])
            offsets = torch.stack([torch.stack([-half[:, 0], zero], 1), torch.stack([half[:, 0], zero], 1),
                                   torch.stack([zero, -half[:, 1]], 1), torch.stack([zero, half[:, 1]], 1)], 1)
            mid = _unwarp(centre.unsqueeze(1) + offsets, warp)  # left, right, top, bottom
            x0, x1, y0, y1 = mid[:, 0, 0], mid[:, 1, 0], mid[:, 2, 1], mid[:, 3, 1]
            batch["bbox"] = torch.stack([(x0 + 1) / 2, (y0 + 1) / 2, (x1 - x0) / 2, (y1 - y0) / 2], 1)
    if "pose" in batch:
        pose = batch["pose"].clone()
        dev = pose.device
        fl = flip.to(dev)
        sign = torch.where(fl, -1.0, 1.0).to(pose.dtype)
        pose[:, 0] = pose[:, 0] * sign
        # roll: negated by a flip, then turned with the image. The affine's positive angle is
        # clockwise on screen (y points down) while the cache's roll is positive counter-clockwise
        # (docs/synthfaces.md), so a clockwise turn lowers the roll (tests/data/test_augment.py)
        pose[:, 2] = pose[:, 2] * sign - p["angle"].to(dev, pose.dtype) * (180.0 / math.pi)
        batch["pose"] = pose
    if "pose_class" in batch:
        pc = batch["pose_class"]
        mirrored = torch.tensor(FLIP_POSE_CLASS, device=pc.device, dtype=pc.dtype)[pc.long().clamp(min=0)]
        batch["pose_class"] = torch.where(flip.to(pc.device) & (pc >= 0), mirrored, pc)


# -- photometry -------------------------------------------------------------------------------------
_LUMA = (0.299, 0.587, 0.114)
_RGB2YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _photometric(x: Tensor, p: dict[str, Any], input_index: int) -> Tensor:
    which = p["photometric"]
    if not which:
        return x
    b = x.shape[0]
    x = x.contiguous()
    if "texture" in which:
        x = _texture(x, p["texture"], p["texture_amount"], p["texture_from"])
    if "randconv" in which:
        x = _randconv(x, p["randconv"], p["randconv_size"], p["randconv_weight"], p["randconv_mix"])
    if which & {"brightness", "contrast", "saturation", "hue", "grey"}:
        m, o = _colour_transform(x, p, which)
        x = torch.baddbmm(o.unsqueeze(2), m, x.flatten(2)).view_as(x)  # one (3x3 + offset) per sample
    if "blur" in which:
        idx = p["blur"].nonzero().flatten().to(x.device)  # found on the CPU: no device sync
        if len(idx):
            x = x.index_copy(0, idx, _binomial_blur(x.index_select(0, idx)))
    if "lowres" in which:
        x = _lowres(x, p["lowres"], p["lowres_factor"])
    if "noise" in which or "erase" in which:
        ng = torch.Generator(device=x.device)
        ng.manual_seed(p["noise_seed"] + 7919 * input_index)
        if "noise" in which:
            x = x + torch.randn(x.shape, generator=ng, device=x.device, dtype=x.dtype) * p["noise"].to(x.device, x.dtype).view(b, 1, 1, 1)
        if "erase" in which:
            x = _erase(x, p["erase"], p["erase_box"], ng)
    return x.clamp_(0.0, 1.0)


def _colour_transform(x: Tensor, p: dict[str, Any], which: set[str]) -> tuple[Tensor, Tensor]:
    """Brightness, contrast, saturation, hue and greyscale folded into one per-sample affine map of
    RGB, ``y = M x + o`` ((B, 3, 3), (B, 3)), applied in that order (all of them are linear in RGB;
    contrast pulls towards the mean grey of the image as it is at that point)."""
    b, dev, dt = x.shape[0], x.device, x.dtype
    eye = torch.eye(3, device=dev, dtype=dt).expand(b, 3, 3)
    luma = torch.tensor(_LUMA, device=dev, dtype=dt)
    to_grey = torch.ones(3, 1, device=dev, dtype=dt) * luma.view(1, 3)  # every channel := luma
    m, o = eye.clone(), torch.zeros(b, 3, device=dev, dtype=dt)

    def col(v: Tensor) -> Tensor:
        return v.to(dev, dt).view(b, 1, 1)

    if "brightness" in which:
        m = m * col(p["brightness"])
    if "contrast" in which:
        c = col(p["contrast"])
        mean_rgb = torch.einsum("bij,bj->bi", m, x.mean((2, 3))) + o  # (B, 3): the image's mean colour now
        grey = (mean_rgb * luma).sum(1).view(b, 1)
        m, o = m * c, o * c.view(b, 1) + (1 - c.view(b, 1)) * grey
    if "saturation" in which:
        sat = col(p["saturation"])
        k = sat * eye + (1 - sat) * to_grey
        m, o = k @ m, torch.einsum("bij,bj->bi", k, o)
    if "hue" in which:
        h = _hue_matrix(p["hue"].to(dev, dt))
        m, o = h @ m, torch.einsum("bij,bj->bi", h, o)
    if "grey" in which:
        k = torch.where(p["grey"].to(dev).view(b, 1, 1), to_grey.expand(b, 3, 3), eye)
        m, o = k @ m, torch.einsum("bij,bj->bi", k, o)
    return m, o


def _hue_matrix(angle: Tensor) -> Tensor:
    """(B, 3, 3) RGB -> RGB maps turning the (I, Q) chroma by ``angle`` radians; Y (luma) is kept."""
    yiq = torch.tensor(_RGB2YIQ, device=angle.device, dtype=angle.dtype)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(angle), 3, 3, device=angle.device, dtype=angle.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    return torch.linalg.inv(yiq) @ rot @ yiq


def _binomial_blur(x: Tensor) -> Tensor:
    """3x3 binomial blur ([1, 2, 1] / 4 in each direction, edges replicated), by shifted sums."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h = (p[..., :, :-2] + 2 * p[..., :, 1:-1] + p[..., :, 2:]) / 4
    return (h[..., :-2, :] + 2 * h[..., 1:-1, :] + h[..., 2:, :]) / 4


def texture_sources(pick: Tensor, face: Tensor | None) -> Tensor:
    """(B,) the sample whose detail each sample may get: a non-face of the batch (``pick`` in [0, 1)
    chooses which), so that faces wear the fine texture of photos and scenes and no non-face gets
    a ghost of a face; any sample when the batch has no non-faces."""
    n = len(pick)
    if face is None:
        return (pick * n).long().clamp(max=n - 1)
    non = face.flatten() == 0  # on face's device: no host sync
    order = torch.sort((~non).to(torch.uint8), stable=True).indices  # non-faces first, in batch order
    count = non.sum()
    size = torch.where(count > 0, count, torch.full_like(count, n))  # no non-face: any sample
    at = torch.minimum((pick.to(non.device) * size).long(), size - 1)
    return order[at]


def _texture(x: Tensor, on: Tensor, amount: Tensor, source: Tensor) -> Tensor:
    """Add ``amount`` x the fine detail (the image minus its 5x5 binomial blur) of sample
    ``source[i]`` (:func:`texture_sources`) to each chosen sample ``i``."""
    idx = on.nonzero().flatten()
    if not len(idx):
        return x
    src = x.index_select(0, source.to(x.device).index_select(0, idx.to(x.device)))
    detail = src - _binomial_blur(_binomial_blur(src))
    k = amount[idx].to(x.device, x.dtype).view(-1, 1, 1, 1)
    return x.index_add(0, idx.to(x.device), k * detail)


def _randconv(x: Tensor, on: Tensor, size: Tensor, weight: Tensor, mix: Tensor) -> Tensor:
    """Random convolution (Xu et al., ICLR 2021, "RandConv"): each chosen sample is filtered by its
    own random 3 -> 3 channel k x k kernel (weights N(0, 1 / (3 k^2)), reflect padding), the result is
    brought back to the sample's own mean and standard deviation per channel, and mixed with the
    original by ``mix`` ~ U(0, 1): shapes stay, local colour and texture are scrambled."""
    _, c, h, w = x.shape
    kmax = weight.shape[-1]
    for k in torch.unique(size[on]).tolist():  # on the CPU: no device sync
        sel = (on & (size == k)).nonzero().flatten()
        n = len(sel)
        lo = (kmax - k) // 2
        wk = weight[sel][..., lo:lo + k, lo:lo + k] / math.sqrt(c * k * k)  # (n, 3, 3, k, k)
        idx = sel.to(x.device)
        src = x.index_select(0, idx)
        pad = F.pad(src, (k // 2,) * 4, mode="reflect") if k > 1 else src
        y = F.conv2d(pad.reshape(1, n * c, *pad.shape[-2:]), wk.reshape(n * c, c, k, k).to(x.device, x.dtype), groups=n)
        y = y.view(n, c, h, w)
        mu, sd = src.mean((2, 3), keepdim=True), src.std((2, 3), keepdim=True)
        y = (y - y.mean((2, 3), keepdim=True)) / (y.std((2, 3), keepdim=True) + 1e-6) * sd + mu
        a = mix[sel].to(x.device, x.dtype).view(n, 1, 1, 1)
        x = x.index_copy(0, idx, a * src + (1 - a) * y)
    return x


def _lowres(x: Tensor, on: Tensor, factor: Tensor) -> Tensor:
    """Shrink the chosen samples to ``side / factor`` (antialiased bilinear) and enlarge them back
    (bilinear). Samples that share a shrunk side are resized together: a handful of calls per batch."""
    side = x.shape[-1]
    small = torch.clamp(torch.round(side / factor), min=4).long()
    for s in torch.unique(small[on]).tolist():  # on the CPU: no device sync
        idx = (on & (small == s)).nonzero().flatten().to(x.device)
        sub = F.interpolate(x.index_select(0, idx), size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        x = x.index_copy(0, idx, F.interpolate(sub, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return x


def _erase(x: Tensor, on: Tensor, box: Tensor, ng: torch.Generator) -> Tensor:
    """Random erasing (Zhong et al. 2020): a rectangle of 4-20 % of the image, aspect 0.5-2, noise-filled."""
    b, _, h, w = x.shape
    area = 0.04 + 0.16 * box[:, 0]
    aspect = torch.exp((box[:, 1] * 2 - 1) * math.log(2.0))
    eh = (area * aspect).sqrt().clamp(max=1.0)
    ew = (area / aspect).sqrt().clamp(max=1.0)
    y0 = box[:, 2] * (1 - eh)
    x0 = box[:, 3] * (1 - ew)
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w

    def dev(v: Tensor) -> Tensor:
        return v.to(x.device, x.dtype).view(b, 1, 1)

    inside = ((ys.view(1, h, 1) >= dev(y0)) & (ys.view(1, h, 1) < dev(y0 + eh))
              & (xs.view(1, 1, w) >= dev(x0)) & (xs.view(1, 1, w) < dev(x0 + ew)))
    inside = (inside & on.to(x.device).view(b, 1, 1)).unsqueeze(1)
    fill = torch.rand(x.shape, generator=ng, device=x.device, dtype=x.dtype)
    return torch.where(inside, fill, x)
