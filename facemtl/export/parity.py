"""Parity between an exported model and PyTorch: the largest difference per output.

Export runs the PyTorch model (float32, eval mode) and the exported file (through ONNX Runtime or
TorchScript) on one seeded batch of random images and compares every output. An output passes when

    max |exported - pytorch|  <=  tolerance * max(1, max |pytorch|)

so the bound is absolute for outputs of order 1 (logits, normalised coordinates) and relative for
larger ones (embeddings of random networks). Default tolerances: ``1e-4`` for float32 exports (the
two runtimes differ by rounding only, typically 1e-6) and ``2e-2`` for ``--half`` exports, which are
compared against the *float32* PyTorch model, so the bound covers float16 rounding through the
whole network (about 1e-3 for the small nets, up to 1e-2 for MCFA's 13-conv VGG stages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facemtl.errors import FacemtlError

DEFAULT_TOLERANCE = {"float32": 1e-4, "float16": 2e-2}


class ParityError(FacemtlError):
    """The exported model disagrees with PyTorch by more than the tolerance."""


@dataclass
class ParityReport:
    """Largest absolute difference per output (``max_abs_diff``) and the bound each had to meet."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-4
    batch: int = 0
    runtime: str = ""

    @property
    def ok(self) -> bool:
        return all(self.max_abs_diff[k] <= self.bound[k] for k in self.max_abs_diff)

    def failures(self) -> list[str]:
        return [k for k in self.max_abs_diff if not self.max_abs_diff[k] <= self.bound[k]]

    def merge(self, other: ParityReport, prefix: str = "") -> None:
        for k, v in other.max_abs_diff.items():
            self.max_abs_diff[prefix + k] = v
            self.bound[prefix + k] = other.bound[k]
        self.batch = max(self.batch, other.batch)

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.2e}" + ("" if v <= self.bound[k] else f" (> {self.bound[k]:.1e})") for k, v in self.max_abs_diff.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime, "batch": self.batch, "tolerance": self.tolerance,
            "rule": "max|exported - pytorch| <= tolerance * max(1, max|pytorch|)",
            "max_abs_diff": {k: float(v) for k, v in self.max_abs_diff.items()}, "passed": self.ok,
        }

    def raise_if_failed(self, what: str) -> None:
        if not self.ok:
            raise ParityError(
                f"{what} disagrees with PyTorch beyond tolerance {self.tolerance:g} on output(s) "
                f"{', '.join(self.failures())}: {self.summary()}. Nothing was written; try another --opset, "
                "export without --half, or raise --tolerance if the difference is acceptable."
            )


def compare_outputs(
    reference: dict[str, np.ndarray], exported: dict[str, np.ndarray], tolerance: float, runtime: str = "",
) -> ParityReport:
    """Compare every output of ``reference`` with ``exported`` (missing or misshapen: infinite difference)."""
    report = ParityReport(tolerance=float(tolerance), runtime=runtime)
    for name, ref in reference.items():
        ref = np.asarray(ref, dtype=np.float64)
        report.batch = max(report.batch, int(ref.shape[0]) if ref.ndim else 0)
        got = exported.get(name)
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        report.bound[name] = float(tolerance) * max(1.0, scale)
        if got is None or np.shape(got) != ref.shape:
            report.max_abs_diff[name] = float("inf")
            continue
        diff = np.abs(np.asarray(got, dtype=np.float64) - ref)
        report.max_abs_diff[name] = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
    return report


def random_images(sizes: list[int], batch: int, seed: int = 0) -> list[np.ndarray]:
    """One seeded batch of float32 RGB images in [0, 1] per size: (batch, 3, S, S)."""
    rng = np.random.default_rng(seed)
    return [rng.random((batch, 3, s, s), dtype=np.float32) for s in sizes]
