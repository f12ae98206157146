"""Multi-task architectures: how the tasks share the network (``model.architecture``).

``ARCHITECTURES.names()``: ``hps`` (hard sharing, the default), ``cross-stitch``, ``mtan``,
``mmoe``, ``cgc``, ``ple``, ``dselect-k`` and ``ltb``; one module per family. Papers, options and
the backbones each accepts: docs/architectures.md. :func:`facemtl.models.build_model` builds them.
"""

from __future__ import annotations

from typing import Any

from facemtl.errors import ConfigError
from facemtl.models._backbone import BACKBONES
from facemtl.models.architectures import cross_stitch as _cross_stitch  # noqa: F401  (registers)
from facemtl.models.architectures import experts as _experts  # noqa: F401  (registers)
from facemtl.models.architectures import hps as _hps  # noqa: F401  (registers)
from facemtl.models.architectures import ltb as _ltb  # noqa: F401  (registers)
from facemtl.models.architectures import mtan as _mtan  # noqa: F401  (registers)
from facemtl.models.architectures._base import (
    ARCHITECTURES,
    ArchitectureModel,
    TaskTower,
    check_architecture_options,
)

__all__ = ["ARCHITECTURES", "ArchitectureModel", "TaskTower", "check_architecture", "list_architectures"]

#: backbones that are a sharing scheme of their own: they take ``hps`` only
OWN_SCHEME = {
    "gender-glasses": "seed 004's network shares only its first layers and gives every task its own branch (its paper's sharing scheme)",
    "mcfa": "MCFA is a cascade of three sub-networks with heads at every stage (its paper's architecture)",
}


def list_architectures() -> list[str]:
    return ARCHITECTURES.names()


def check_architecture(name: str, backbone: str, options: dict[str, Any] | None = None) -> type:
    """The architecture's class; UnknownNameError for an unknown name, ConfigError for a backbone it cannot
    use or an unknown option (checked before any data is read or rendered)."""
    cls = ARCHITECTURES.get(name)
    backbone = BACKBONES.resolve(backbone)
    if name != "hps" and backbone in OWN_SCHEME:
        raise ConfigError(
            f"architecture '{name}' cannot be built on backbone '{backbone}': {OWN_SCHEME[backbone]}; "
            "use architecture 'hps' with it, or another backbone (small, famo9, tcdcn, vgg16, resnet18, resnet50)."
        )
    if name != "hps":
        check_architecture_options(name, cls, dict(options or {}))
    elif options:
        raise ConfigError(f"architecture 'hps' has no options; got {', '.join(sorted(options))}.")
    return cls
