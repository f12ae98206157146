"""MCFA's cascade (Zhuang et al. 2018): three VGG-16-style sub-networks trained jointly.

S_Net sees the face at 56x56, M_Net at 112x112, L_Net at 224x224 (for ``input_size=224``; the
three sizes are always L/4, L/2, L). Features flow down the cascade::

    f_S = S(x56)                      # (B, 256)
    f_M = cat(M(x112), f_S)           # (B, 1024 + 256 = 1280)
    f_L = cat(L(x224), f_M)           # (B, 1024 + 1280 = 2304)

Every sub-network has its own head for every task. Training sums each task's loss over the three
stages (``forward_heads`` returns ``[out_S, out_M, out_L]`` per task). At test time a
threshold-control layer passes on only the samples the current stage calls faces
(:meth:`CascadeModel.cascade_infer`); ``forward`` (what export traces) computes every stage and
returns L_Net's outputs. ``stage(i)`` returns a module running one sub-network alone, for
exporting the three stages separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from facemtl.errors import ConfigError
from facemtl.models._backbone import BACKBONES, Backbone, resolve_size, size_error
from facemtl.models.multitask import MultiTaskModel
from facemtl.models.vgg_resnet import vgg_trunk
from facemtl.tasks.base import Task

STAGE_NAMES = ("S_Net", "M_Net", "L_Net")


@dataclass
class CascadeSpec:
    """What the ``mcfa`` builder returns: one :class:`Backbone` per stage (S, M, L)."""

    stages: list[Backbone]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return self.stages[-1].input_size


@BACKBONES.register("mcfa")
def mcfa(
    input_size: int | None = None, *, width: float = 0.25, feature_dims: tuple[int, int, int] = (256, 1024, 1024),
    batch_norm: bool = True, dropout: float = 0.5,
) -> CascadeSpec:
    """MCFA's three VGG-16-style sub-networks (13 conv + 2 fc each, conv channels x ``width``;
    both fc layers of a stage are ``feature_dims[i]`` wide). ``input_size`` is L_Net's (default
    224: stages at 56/112/224). With ``width=0.25``: 12,567,760 trunk parameters in all."""
    size = resolve_size("mcfa", input_size, 224)
    if size % 4 or size < 128:
        raise size_error(
            "mcfa", size, "its input size is L_Net's, a multiple of 4 from 128 (S_Net and M_Net get 1/4 and 1/2 of it); default 224"
        )
    if len(feature_dims) != 3:
        raise ConfigError(f"mcfa: feature_dims must hold 3 widths (S, M, L), got {feature_dims}.")
    stages = []
    for name, s, d in zip(STAGE_NAMES, (size // 4, size // 2, size), feature_dims):
        trunk = vgg_trunk(f"mcfa {name}", s, width=width, fc=(d, d), batch_norm=batch_norm, dropout=dropout)
        stages.append(Backbone(trunk, d, s, 3))
    opts = {"width": width, "feature_dims": tuple(feature_dims), "batch_norm": batch_norm, "dropout": dropout}
    return CascadeSpec(stages, opts)


class CascadeStage(nn.Module):
    """One sub-network with its heads, sharing the cascade's modules (export it on its own).

    Stage 0 (S_Net): ``forward(x56)``; stages 1 and 2: ``forward(x, prev_feature)``, where
    ``prev_feature`` is the previous stage's ``"feature"`` output. Returns ``{task: (B, out_dim)}``
    plus ``"feature"`` (the concatenated feature to feed the next stage) for S_Net and M_Net.
    """

    def __init__(self, index: int, preprocess: nn.Module, trunk: nn.Module, heads: dict[str, nn.Module], last: bool):
        super().__init__()
        self.index = index
        self.emits_feature = not last
        self.preprocess = preprocess
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)
        # the stage is created in the cascade's mode: exporters restore "the module's mode"
        # afterwards, recursively, and must not flip the shared modules into training mode
        self.training = trunk.training

    def forward(self, x: Tensor, prev: Tensor | None = None) -> dict[str, Tensor]:
        h = self.trunk(self.preprocess(x))  # (B, D_i)
        if self.index > 0:
            if prev is None:
                raise ValueError("stages 1 and 2 need the previous stage's feature")
            h = torch.cat([h, prev], 1)  # (B, D_i + D_prev)
        out = {name: head(h) for name, head in self.heads.items()}
        if self.emits_feature:
            out["feature"] = h
        return out


@dataclass
class CascadeResult:
    """Output of :meth:`CascadeModel.cascade_infer`.

    outputs:      {task: (B, out_dim)} from the deepest stage each sample reached
    reached:      (B,) index of that stage (0 S_Net, 1 M_Net, 2 L_Net)
    rejected_at:  (B,) stage whose face probability fell below the threshold; -1 = face throughout
    face_prob:    (B,) face probability at the deepest stage reached
    """

    outputs: dict[str, Tensor]
    reached: Tensor
    rejected_at: Tensor
    face_prob: Tensor


class CascadeModel(MultiTaskModel):
    """MCFA's cascade with the :class:`MultiTaskModel` interface.

    ``input_spec`` is [(L/4, 3), (L/2, 3), (L, 3)]; ``feature_dims`` [256, 1280, 2304] by default;
    ``heads[task]`` is a ``ModuleList`` of the three stage heads; ``forward_heads`` returns a list
    of three outputs per task; ``forward`` returns L_Net's.
    """

    shared_prefixes: tuple[str, ...] = ("trunks.",)

    def __init__(self, spec: CascadeSpec, tasks: Sequence[Task], *, config: dict[str, Any]):
        nn.Module.__init__(self)  # no single trunk: the cascade builds its own parts
        self._init_common(tasks, config, spec.stages[0])
        self.backbone_options: dict[str, Any] = dict(spec.options)
        self.input_spec = [(b.input_size, 3) for b in spec.stages]
        dims, total = [], 0
        for b in spec.stages:
            total += b.feature_dim
            dims.append(total)
        self.feature_dims = dims
        self.trunks = nn.ModuleList(b.trunk for b in spec.stages)
        self.heads = nn.ModuleDict({t.name: nn.ModuleList(t.build_head(d) for d in dims) for t in tasks})

    def forward_features(self, *images: Tensor) -> list[Tensor]:
        """(x_S, x_M, x_L) float RGB [0, 1] at ``input_spec`` sizes -> [f_S, f_M, f_L] (concatenated)."""
        if len(images) != len(self.trunks):
            raise ConfigError(f"the cascade takes 3 image batches {self.input_spec}, got {len(images)}.")
        feats: list[Tensor] = []
        for x, trunk in zip(images, self.trunks):
            h = trunk(self.preprocess(x))  # (B, D_i)
            feats.append(torch.cat([h, feats[-1]], 1) if feats else h)
        return feats

    def forward_heads(self, feats: Sequence[Tensor]) -> dict[str, Tensor | list[Tensor]]:
        """{task: [out_S, out_M, out_L]}: the engine sums the three stage losses."""
        return {name: [h(f) for h, f in zip(heads, feats)] for name, heads in self.heads.items()}

    def forward(self, *images: Tensor) -> dict[str, Tensor]:
        """Inference without gating: {task: L_Net output (B, out_dim)}."""
        f_l = self.forward_features(*images)[-1]
        return {name: heads[-1](f_l) for name, heads in self.heads.items()}

    def stage(self, i: int) -> CascadeStage:
        """Sub-network ``i`` (0 S_Net, 1 M_Net, 2 L_Net) as a module sharing this model's weights."""
        if not 0 <= i < len(self.trunks):
            raise ConfigError(f"the cascade has stages 0..{len(self.trunks) - 1}, not {i}.")
        heads = {name: hs[i] for name, hs in self.heads.items()}
        return CascadeStage(i, self.preprocess, self.trunks[i], heads, last=i == len(self.trunks) - 1)

    @torch.no_grad()
    def cascade_infer(
        self, x_s: Tensor, x_m: Tensor, x_l: Tensor, threshold: float = 0.5, detection_task: str = "detection",
    ) -> CascadeResult:
        """Test-time cascade with MCFA's threshold-control layer.

        Every sample goes through S_Net; only those whose face probability (sigmoid of the
        detection head's first output) is at least ``threshold`` go on to M_Net, and likewise to
        L_Net. Later stages are not computed for rejected samples. Put the model in eval mode first.
        """
        if detection_task not in self.heads:
            raise ConfigError(
                f"cascade_infer gates on task '{detection_task}', which this model lacks; "
                f"its tasks: {', '.join(self.task_names)}."
            )
        n, device = x_s.shape[0], x_s.device
        alive = torch.arange(n, device=device)
        reached = torch.zeros(n, dtype=torch.long, device=device)
        rejected = torch.full((n,), -1, dtype=torch.long, device=device)
        face_prob = torch.zeros(n, device=device)
        outputs: dict[str, Tensor] = {}
        prev: Tensor | None = None
        for i, x in enumerate((x_s, x_m, x_l)):
            if alive.numel() == 0:
                break
            out = self.stage(i)(x[alive], prev)
            for name in self.task_names:
                y = out[name]
                if name not in outputs:
                    outputs[name] = y.new_full((n, *y.shape[1:]), float("nan"))
                outputs[name][alive] = y
            reached[alive] = i
            p = torch.sigmoid(out[detection_task][:, 0].float())
            face_prob[alive] = p
            keep = p >= threshold
            rejected[alive[~keep]] = i
            prev = out["feature"][keep] if "feature" in out else None
            alive = alive[keep]
        return CascadeResult(outputs, reached, rejected, face_prob)
