"""Checkpoints: written atomically (temporary file, fsync, rename), read back with a clear error, and
`load(path)`: a ready model for inference in any codebase.

Checkpoints are shared (a model zoo, a colleague's run), so they are read with `torch.load(weights_only=
True)`: tensors, numbers, strings and containers only, never code. Files written before retina stored the
NumPy random state as a tensor also hold a NumPy array, whose four reconstruction globals alone are
allowed for them."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..image_files import write_bytes_atomic

FORMAT = "retina-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Writes `state` (tensors, numbers, strings, nested dicts) so that a crash at any moment leaves the
    previous file at `path` intact."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def _numpy_array_globals() -> list:
    """What unpickling a plain NumPy array needs (the random state of older retina checkpoints)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    found = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles the dtype's class
    return found + ([dtypes.UInt32DType] if dtypes is not None else [])


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, carrying code, ...
        message = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if found:
            reason = (f"it holds {found.group(1)}, not only tensors and plain data; retina does not unpickle "
                      "that, since it could run code")
        elif "Weights only load failed" in message:
            reason = "not a torch checkpoint file (or a damaged one)"
        else:
            reason = next((line.strip() for line in message.splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a retina checkpoint (written by retina.train)")
    return state


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of a retina checkpoint, ready for inference: built from its recorded config
    (`retina.models.create(**config)`), with its inference weights (the EMA of the weights when the run
    kept one), on `device`, in eval mode. `model.config` is its config; `model.checkpoint_info` says
    what it was trained on (input channels, patch size, step, retina version), and for published weights
    imported by `retina.models.import_published`, which file they came from."""
    from ..models import create

    state = read_checkpoint(path, map_location=device)
    model = create(**state["model_config"])
    model.load_state_dict(state["inference_weights"])
    model.checkpoint_info = {key: state[key] for key in ("step", "epoch", "retina_version", "training", "published")
                             if key in state}
    return model.to(device).eval()


def load_ensemble(paths, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The `retina.models.Ensemble` of the checkpoints `paths` (each read by `load`): one model whose
    prediction is their mean probability, e.g. the k runs of a cross-validation; one path gives that
    checkpoint's model itself."""
    from ..models import Ensemble

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    models = [load(path, device) for path in paths]
    if len(models) == 1:
        return models[0]
    try:
        return Ensemble(models).eval()
    except ValueError as exc:
        raise ValueError(f"checkpoints {', '.join(map(str, paths))}: {exc}") from None
