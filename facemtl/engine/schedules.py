"""Learning-rate schedules as pure functions of (epoch, step) -> multiplier of the base rate.

- ``constant``: 1.
- ``cosine``: half-cosine from 1 to 0 over all steps, after ``warmup_steps`` of linear warm-up.
- ``step``: ``gamma ** (epoch // step_size)``.
- ``inverse-epoch`` (``seed004`` before 0.2): seed 004's L_i = L_{i-1} (1 - 1/Epoch_i), L_0 = base. Read literally with
  Epoch_1 = 1 it gives L_1 = 0, so Epoch_i is taken as the number of the epoch about to start
  (i + 1): L_i = L_{i-1} * i / (i + 1), i.e. the rate in (0-based) epoch e is base / (e + 1).
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
