"""Learning-rate schedules as pure functions of (epoch, step) -> multiplier of the base rate.

- ``constant``: 1.
- ``cosine``: half-cosine from 1 to 0 over all steps, after ``warmup_steps`` of linear warm-up.
- ``step``: ``gamma ** (epoch // step_size)``.
- ``inverse-epoch`` (``seed004`` before 0.2): seed 004's L_i = L_{i-1} (1 - 1/Epoch_i), L_0 = base. Read literally with
  Epoch_1 = 1 it gives L_1 = 0, so Epoch_i is taken as the number of the epoch about to start
  (i + 1): L_i = L_{i-1} * i / (i + 1), i.e. the rate in (0-based) epoch e is base / (e + 1).

Settings that a schedule's length should carry (``train.swa``, ``mine.start``) are read here too:
a whole number of epochs, or a share of the run's epochs (:func:`epochs_of`).
"""

from __future__ import annotations

import math

from facemtl.errors import UnknownNameError

SCHEDULES = ("constant", "cosine", "step", "inverse-epoch")
#: former names, still accepted
SCHEDULE_ALIASES = {"seed004": "inverse-epoch"}


def lr_multiplier(
    schedule: str, *, epoch: int, step: int, total_steps: int, warmup_steps: int = 0, step_size: int = 10, gamma: float = 0.1,
) -> float:
    schedule = SCHEDULE_ALIASES.get(schedule, schedule)
    if schedule not in SCHEDULES:
        raise UnknownNameError("schedule", schedule, SCHEDULES)
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return warm
    if schedule == "cosine":
        t = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
        return warm * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "step":
        return warm * gamma ** (epoch // max(step_size, 1))
    # inverse-epoch: product over i = 1..epoch of i / (i + 1) = 1 / (epoch + 1)
    return warm / (epoch + 1)


# -- settings counted in epochs -------------------------------------------------------------------
def is_epochs_or_share(value: float) -> bool:
    """A valid setting counted in epochs (``train.swa``, ``mine.start``): a whole number, at least
    1, or a share of the run's epochs in (0, 1) (:func:`epochs_of`)."""
    return 0 < value < 1 or (value == int(value) and value >= 1)


def epochs_of(value: float, epochs: int) -> int:
    """A setting counted in epochs, given as a whole number (``11``) or as a share of the run's
    ``epochs`` (``0 < value < 1``, as scikit-learn reads a float ``max_features``): the share is
    rounded to whole epochs and kept within 1 .. epochs - 1, so that ``swa = 0.45`` begins the
    average at epoch 12 of 24 and at epoch 5 of 8. A run of one epoch has no room for it: 0."""
    if 0 < value < 1:
        return min(epochs - 1, max(1, round(value * epochs)))
    return int(value)
