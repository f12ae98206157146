"""``hps``: hard parameter sharing (Caruana 1997), facemtl's original model: one trunk, one head per task.

The class is :class:`~facemtl.models.MultiTaskModel` itself; it is registered here so that the
architecture registry lists it with the others. Its shared representation is the trunk's
feature vector (and the feature maps a spatial head reads); it accepts every backbone,
including seed 004's per-task branches and MCFA's cascade.
"""

from __future__ import annotations

from facemtl.models.architectures._base import ARCHITECTURES
from facemtl.models.multitask import MultiTaskModel

ARCHITECTURES.register("hps")(MultiTaskModel)
