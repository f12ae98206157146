"""TorchScript export (``torch.jit.trace``) and its runner.

The traced module keeps the model's dict output: ``module(image)`` (or ``module(image,
prev_feature)`` for the cascade's later stages) returns ``{task: tensor}``. Tracing is exact for
these networks: they have no data-dependent control flow (grey conversion and normalisation are
fixed at build time, see :class:`facemtl.models.Preprocess`). The metadata JSON is also embedded
in the file (``extra_files["facemtl.json"]``), so a TorchScript model carries its own description.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facemtl.errors import DataFormatError

EXTRA_FILE = "facemtl.json"


def export_torchscript(module: Any, example: Sequence[Any], path: str | Path, *, metadata_json: str = "") -> None:
    """Trace ``module`` (eval mode) on ``example`` and save it to ``path``."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about dict outputs
        traced = torch.jit.trace(module, tuple(example), strict=False, check_trace=False)
        with open(path, "wb") as f:  # a Python file: a full disk raises OSError(ENOSPC), not a C++ RuntimeError
            torch.jit.save(traced, f, _extra_files={EXTRA_FILE: metadata_json})


class TorchScriptRunner:
    """``runner({"image": array, ...}) -> {output: float32 array}`` around a saved TorchScript module."""

    def __init__(self, path: str | Path, *, input_names: Sequence[str] = ("image",), dtype: str = "float32",
                 threads: int | None = None):
        import torch

        self.path = Path(path)
        if not self.path.is_file():
            raise DataFormatError(f"TorchScript model {self.path} does not exist; export it again with `facemtl export`.")
        if threads:
            torch.set_num_threads(int(threads))
        extra = {EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
        except Exception as e:  # zip, pickle and TorchScript errors alike
            msg = str(e).splitlines()[0][:200] if str(e) else ""
            raise DataFormatError(
                f"TorchScript model {self.path} cannot be loaded ({type(e).__name__}: {msg}); "
                "it is damaged or not a TorchScript file: export it again."
            ) from None
        self.module.eval()
        self.embedded_metadata = extra[EXTRA_FILE].decode() if isinstance(extra[EXTRA_FILE], bytes) else extra[EXTRA_FILE]
        self.input_names = list(input_names)
        self.dtype = torch.float16 if dtype == "float16" else torch.float32

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.dtype) for n in self.input_names if n in feeds]
        with torch.inference_mode():
            out = self.module(*args)
        return {k: v.float().numpy() for k, v in out.items()}
