"""Models: backbones, multi-task architectures (hard sharing and the others) and MCFA's cascade.

``build_model(backbone, tasks, input_size=..., weights=..., architecture=..., **options)`` is the
one entry point. Architectures (``ARCHITECTURES.names()``): see :mod:`facemtl.models.architectures`.
Backbones (``BACKBONES.names()``): ``small`` (fast default), ``gender-glasses`` (seed 004; ``seed004`` still accepted), ``tcdcn``, ``famo9``,
``vgg16``, ``resnet18``, ``resnet50`` and ``mcfa`` (the cascade, a :class:`CascadeModel`).

Every model takes float RGB in [0, 1], NCHW, at exactly the sizes of ``model.input_spec``; it
converts to grey and normalises inside (so exported graphs take the same input), and never
resizes: the engine feeds the sizes the model asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from facemtl.models import cnn as _cnn  # noqa: F401  (registers)
from facemtl.models import vgg_resnet as _vgg_resnet  # noqa: F401  (registers)
from facemtl.models._backbone import BACKBONES, Backbone, Preprocess, check_options, feature_info
from facemtl.models._weights import load_shared_weights
from facemtl.models.architectures import ARCHITECTURES, check_architecture, list_architectures
from facemtl.models.cascade import CascadeModel, CascadeResult, CascadeSpec, CascadeStage
from facemtl.models.multitask import MultiTaskModel
from facemtl.tasks.base import Task

__all__ = [
    "ARCHITECTURES", "BACKBONES", "Backbone", "CascadeModel", "CascadeResult", "CascadeStage", "MultiTaskModel",
    "Preprocess", "build_model", "feature_info", "list_architectures", "list_backbones",
]


def list_backbones() -> list[str]:
    return BACKBONES.names()


def input_sizes(backbone: str, input_size: int | None = None, **backbone_options: Any) -> list[int]:
    """The square image sizes a model of ``backbone`` reads (one per input; MCFA's cascade has three)."""
    builder = BACKBONES.get(backbone)
    check_options(backbone, builder, backbone_options)
    built = builder(input_size=input_size, **backbone_options)
    if isinstance(built, CascadeSpec):
        return [b.input_size for b in built.stages]
    return [built.input_size]


def build_model(
    backbone: str, tasks: Sequence[Task], *, input_size: int | None = None, weights: str | None = None,
    architecture: str = "hps", architecture_options: dict[str, Any] | None = None, **backbone_options: Any,
) -> MultiTaskModel:
    """Build backbone ``backbone`` (random init, or its shared part from ``weights``) with one head per task.

    ``input_size`` defaults to the backbone's own (``small`` 64, ``gender-glasses`` 50, ``tcdcn`` 40,
    ``famo9`` 64, ``vgg16`` 224, ``resnet*`` 112, ``mcfa`` 224 = L_Net's); a size the backbone
    cannot take raises :class:`~facemtl.errors.ConfigError` saying which work. Unknown backbone
    names raise :class:`~facemtl.errors.UnknownNameError`, unknown options ``ConfigError``, and
    weights that are missing or do not fit :class:`~facemtl.errors.CheckpointError`.

    ``architecture`` (default ``hps``, hard sharing) with ``architecture_options`` picks how the
    tasks share the network (:mod:`facemtl.models.architectures`); ``weights`` then initialise the
    backbone before the architecture copies or cuts it (every column of cross-stitch gets them).

    ``model.config`` holds ``{"backbone", "input_size", "options"}`` (plus ``"architecture"`` and
    ``"architecture_options"`` for an architecture other than ``hps``): pass them back here (with
    the same tasks) to rebuild the same architecture from a checkpoint.
    """
    arch_options = dict(architecture_options or {})
    cls = check_architecture(architecture, backbone, arch_options)
    builder = BACKBONES.get(backbone)
    check_options(backbone, builder, backbone_options)
    built = builder(input_size=input_size, **backbone_options)
    config: dict[str, Any] = {"backbone": backbone, "input_size": built.input_size, "options": dict(backbone_options)}
    if isinstance(built, CascadeSpec):
        model: MultiTaskModel = CascadeModel(built, list(tasks), config=config)
    elif architecture == "hps":
        model = MultiTaskModel(built, list(tasks), config=config)
    else:
        if weights:  # into the trunk first: the architecture copies or cuts it
            load_shared_weights(MultiTaskModel(built, list(tasks), config=config), weights)
            weights = None
        config.update(architecture=architecture, architecture_options=arch_options)
        model = cls(built, list(tasks), config=config, **arch_options)
    if weights:
        load_shared_weights(model, weights)
    return model
