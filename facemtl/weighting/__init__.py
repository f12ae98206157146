"""Loss-weighting strategies behind one interface (:class:`~facemtl.weighting.base.Weighting`).

``build_weighting(name, tasks, **options)`` builds one; ``WEIGHTINGS.names()`` lists them;
``parse_weighting_args`` turns the CLI option string into options. docs/weighting.md gives each
strategy's formula, reference and options.
"""

from facemtl.weighting import face_papers, gradient_based, loss_based  # noqa: F401  (register the strategies)
from facemtl.weighting._builder import build_weighting, describe, parse_weighting_args, strategy_options
from facemtl.weighting.base import WEIGHTINGS, GradMode, StepContext, Weighting

__all__ = [
    "WEIGHTINGS",
    "GradMode",
    "StepContext",
    "Weighting",
    "build_weighting",
    "describe",
    "parse_weighting_args",
    "strategy_options",
]
