"""The :class:`Task` unit: target spec in the cache, head, masked loss, quick metrics.

A task knows which label of the cache it reads (``label_key``), how to build its head on top
of the shared features, how to compute a loss that ignores samples without a label (returning
``None`` when the batch has no labelled sample at all, so the task contributes nothing), and how
to turn accumulated outputs into validation metrics. Models never compute losses.

A task also describes itself to export and the reports (:mod:`facemtl.tasks.registry`): its
``report_section`` (which evaluation report it gets, hence its headline metric and direction),
:meth:`Task.export_output` (kind, width and column names of its exported output) and
:meth:`Task.output_names` (short names of its head's rows, for ``correlate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import Tensor, nn

from facemtl.tasks.registry import output_kind


@dataclass(frozen=True)
class DataInfo:
    """What tasks need to know about the data; saved in checkpoints so models rebuild without it."""

    attribute_names: tuple[str, ...] = ()
    num_identities: int = 0
    labels: tuple[str, ...] = ()  # label keys with at least one known value

    @classmethod
    def from_cache(cls, cache) -> DataInfo:
        ids = cache.labels.get("identity")
        n_ids = int(ids.max()) + 1 if ids is not None and ids.size and ids.max() >= 0 else 0
        present = tuple(k for k in cache.labels if cache.has_label(k).any())
        return cls(tuple(cache.attribute_names), n_ids, present)

    def to_dict(self) -> dict[str, Any]:
        return {"attribute_names": list(self.attribute_names), "num_identities": self.num_identities, "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataInfo:
        return cls(tuple(d["attribute_names"]), int(d["num_identities"]), tuple(d["labels"]))


def linear_head(in_features: int, out_dim: int, hidden: int = 0) -> nn.Module:
    if hidden:
        return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
    return nn.Linear(in_features, out_dim)


@dataclass
class Task:
    """Base class. Subclasses fill the fields and override :meth:`loss` and :meth:`metrics`."""

    name: str
    label_key: str
    out_dim: int
    hidden: int = 0  # 0: linear head; >0: one hidden layer of this width
    options: dict[str, Any] = field(default_factory=dict)

    #: the report this task gets in ``evaluate`` and ``ablate`` (a :data:`~facemtl.tasks.registry.SECTIONS` name)
    report_section: ClassVar[str] = ""

    # -- model side ----------------------------------------------------------------------------
    def build_head(self, in_features: int) -> nn.Module:
        return linear_head(in_features, self.out_dim, self.hidden)

    def build_map_head(self, channels: tuple[int, ...]) -> nn.Module | None:
        """A head on the backbone's feature maps (``channels`` per map, fine to coarse), or None for
        a vector head. The module sets ``reads_maps = True`` and takes the list of maps."""
        return None

    def build_criterion(self) -> nn.Module | None:
        """Learnable parts of the loss that are not part of the deployed network (centre-loss centres)."""
        return None

    # -- loss ----------------------------------------------------------------------------------
    def mask(self, batch: dict[str, Tensor]) -> Tensor:
        """Boolean (B,) of samples labelled for this task."""
        raise NotImplementedError

    def loss(self, output: Tensor, batch: dict[str, Tensor], criterion: nn.Module | None = None) -> Tensor:
        """Mean loss over the labelled samples (0 when none: the engine skips a task whose
        ``batch["present"][label_key]`` count, computed on the CPU by the loader, is 0)."""
        raise NotImplementedError

    # -- evaluation ----------------------------------------------------------------------------
    def collect(self, output: Tensor, batch: dict[str, Tensor]) -> dict[str, np.ndarray]:
        """Per-sample arrays kept for metrics (predictions and targets of labelled samples)."""
        raise NotImplementedError

    def metrics(self, collected: dict[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    def unflip(self, output: Tensor) -> Tensor | None:
        """The head's ``output`` on a horizontally flipped image, mapped back to the image as it
        was (flip testing averages the two); None when the task has no such mapping (the
        flipped pass is then not used for it). By default the mirror rule of the task's exported
        output kind (:attr:`facemtl.tasks.registry.OutputKind.unflip`), which ``facemtl predict
        --flip-test`` applies too, so evaluation and prediction mirror alike."""
        kind = output_kind(self.export_output()[0])
        return kind.unflip(output) if kind is not None and kind.unflip is not None else None

    # -- self-description (facemtl.tasks.registry) --------------------------------------------
    def export_output(self) -> tuple[str, int, list[str]]:
        """(kind, width, column names) of the exported output; ``kind`` is an
        :data:`~facemtl.tasks.registry.OUTPUTS` name (how ``predict`` reads it)."""
        return self.label_key, self.out_dim, []

    def output_names(self) -> list[str]:
        """Short name of each row of the head's last linear layer; [] when the rows are not
        outputs of their own (an embedding)."""
        return []

    def unlabelled_reason(self, labels: np.ndarray) -> str | None:
        """Why this task cannot be measured on ``labels`` (the rows of its ``label_key`` in the
        model's layout, at least one of them known), or None when it can."""
        return None

    def describe(self) -> str:
        return f"{self.name} ({type(self).__name__}, {self.out_dim} outputs)"


def masked_mean(per: Tensor, known: Tensor) -> Tensor:
    """Mean of ``per`` over entries where ``known``; 0 (with a graph) when nothing is known. No host sync."""
    known = known.to(per.dtype)
    return (per * known).sum() / known.sum().clamp(min=1.0)
