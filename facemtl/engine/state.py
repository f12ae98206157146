"""The training loop's progress, saved in every checkpoint and restored on ``--resume``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class EpochSums:
    """Running sums of an epoch's step losses and task weights (their means go into metrics.csv).
    An epoch cut short saves them, so the resumed epoch's means cover all of it."""

    sums: dict[str, float] = field(default_factory=dict)
    wsums: dict[str, float] = field(default_factory=dict)
    nsteps: int = 0

    def add(self, losses: dict[str, float], weights: dict[str, float]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        for k, v in weights.items():
            self.wsums[k] = self.wsums.get(k, 0.0) + v
        self.nsteps += 1

    def loss_means(self) -> dict[str, float]:
        return {k: v / max(self.nsteps, 1) for k, v in self.sums.items()}

    def weight_means(self) -> dict[str, float]:
        return {k: v / max(self.nsteps, 1) for k, v in self.wsums.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EpochSums:
        d = d or {}
        return cls(dict(d.get("sums", {})), dict(d.get("wsums", {})), int(d.get("nsteps", 0)))


@dataclass
class TrainState:
    """Where training stands: epochs completed, optimizer steps, batches of the current epoch
    already trained (a mid-epoch stop), the logs and the early-stopping record.

    Its fields are the checkpoint's keys of the same names (``state_dict`` / ``from_checkpoint``),
    next to the model, optimizer and strategy states."""

    epoch: int = 0
    step: int = 0
    batches_done: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    weight_log: list[dict[str, Any]] = field(default_factory=list)
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    partial_epoch: dict[str, Any] | None = None  # EpochSums of an epoch cut short

    def state_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # torch.save copies; no deep copy of the logs

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        keys = {f.name for f in fields(cls)}
        values = {k: ckpt[k] for k in keys if k in ckpt}
        values.setdefault("batches_done", 0)
        return cls(**values)

    def record_epoch(self, row: dict[str, Any], score: float) -> bool:
        """Append the epoch's row; True when its score (``train.select``'s, lower = better: the
        validation loss by default) is the best so far."""
        self.history.append(row)
        self.epoch, self.batches_done, self.partial_epoch = row["epoch"], 0, None
        if score < self.best:
            self.best, self.best_epoch, self.bad_epochs = score, row["epoch"], 0
            return True
        self.bad_epochs += 1
        return False
