"""``weights=PATH``: load pretrained weights into a model's shared part (its trunk or trunks).

Accepted files (``torch.save`` of plain tensors; read with ``weights_only=True``):

- a bare trunk state dict, e.g. torchvision's ``resnet18-*.pth`` (its ``fc.`` classifier keys
  are dropped: the backbone lists such prefixes in ``ignore_keys``);
- a facemtl model's state dict (keys ``trunk.*``, or ``trunks.*`` for the cascade): only the
  shared part is taken, so heads for other tasks do not get in the way;
- either of these under a ``"model"`` or ``"state_dict"`` key (checkpoint files).

Anything else fails with :class:`CheckpointError` naming the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from facemtl.errors import CheckpointError

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile


def _list(keys: list[str], limit: int = 8) -> str:
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file '{p}' does not exist; give the path of a state dict saved with torch.save.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(
            f"cannot read weights file '{p}' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "it must be a torch.save'd state dict of tensors."
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file '{p}' holds no state dict (a mapping of parameter names to tensors).")
    return {_strip(str(k)): v for k, v in obj.items()}


def load_shared_weights(model: nn.Module, path: str | Path) -> dict[str, int]:
    """Copy the file's weights into ``model``'s shared part; return {"loaded": n_tensors}.

    ``model`` is a :class:`~facemtl.models.MultiTaskModel` (uses ``shared_prefixes`` and
    ``weight_ignore_keys``)."""
    state = read_state_dict(path)
    prefix: str = model.shared_prefixes[0]
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    if any(k.startswith(prefix) for k in state):  # a facemtl model's state dict
        given = {k: v for k, v in state.items() if k.startswith(prefix)}
    else:  # a bare trunk
        ignore = tuple(model.weight_ignore_keys)
        given = {prefix + k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(
        f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(given) if given[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_list(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (file vs model): {_list(shapes)}")
        backbone = getattr(model, "config", {}).get("backbone", "?")
        raise CheckpointError(
            f"weights file '{path}' does not match backbone '{backbone}' with these options: " + "; ".join(parts)
            + ". Use weights saved from the same backbone, input size and options."
        )
    model.load_state_dict(given, strict=False)
    return {"loaded": len(given)}
