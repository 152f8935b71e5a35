"""Argument checks that name the offending argument. Ops call these before touching any kernel."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BINARY_DTYPES = (torch.bool, torch.uint8, *FLOATING)


def require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_dtype(name: str, tensor: torch.Tensor, allowed: Sequence[torch.dtype]) -> None:
    if tensor.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise TypeError(f"{name} must have dtype in ({names}), got {str(tensor.dtype).removeprefix('torch.')}")


def require_binary(name: str, tensor: torch.Tensor) -> None:
    """Values must be exactly 0 or 1 (bool always is). NaN is reported as such."""
    if tensor.dtype == torch.bool or tensor.numel() == 0:
        return
    tensor = tensor.detach()  # a check must not add nodes to the caller's autograd graph
    if tensor.is_floating_point() and bool(torch.isnan(tensor).any()):
        raise ValueError(f"{name} contains NaN; expected a binary mask of 0 and 1")
    if not bool(((tensor == 0) | (tensor == 1)).all()):
        bad = tensor[(tensor != 0) & (tensor != 1)].flatten()[0].item()
        raise ValueError(f"{name} must contain only 0 and 1, found {bad}")


def require_finite_number(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def require_optional_int(name: str, value: object, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} or None, got {value}")
    return value


def _value_range(name: str, tensor: torch.Tensor, expected: str) -> tuple[float, float]:
    """(min, max) of a non-empty tensor, after rejecting NaN. Detached: a check must not add nodes to the
    caller's autograd graph."""
    tensor = tensor.detach()
    if bool(torch.isnan(tensor).any()):
        raise ValueError(f"{name} contains NaN; expected {expected}")
    return tensor.min().item(), tensor.max().item()


def require_unit_interval(name: str, tensor: torch.Tensor) -> None:
    """Values in [0, 1]; NaN reported as such."""
    if tensor.numel() == 0:
        return
    low, high = _value_range(name, tensor, "probabilities in [0, 1]")
    if low < 0 or high > 1:
        raise ValueError(f"{name} must be in [0, 1], found values in [{low}, {high}]")


def require_open_unit_interval(name: str, tensor: torch.Tensor) -> None:
    """Values strictly inside (0, 1); NaN reported as such."""
    if tensor.numel() == 0:
        return
    low, high = _value_range(name, tensor, "values in (0, 1)")
    if low <= 0 or high >= 1:
        raise ValueError(f"{name} must be strictly inside (0, 1), found values in [{low}, {high}]")


def require_same_shape_and_device(name: str, tensor: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if tensor.shape != other.shape:
        raise ValueError(f"{name} must have the shape of {other_name} {tuple(other.shape)}, got {tuple(tensor.shape)}")
    if tensor.device != other.device:
        raise ValueError(f"{name} is on {tensor.device} but {other_name} is on {other.device}")


def require_no_nan(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() and tensor.numel() and bool(torch.isnan(tensor.detach()).any()):
        raise ValueError(f"{name} contains NaN")


def alert_not_deterministic(caller: str) -> None:
    """What torch's nondeterministic ops do under torch.use_deterministic_algorithms(True): raise, or warn
    with warn_only=True. For kernels whose sums depend on the order atomic adds arrive in."""
    if not torch.are_deterministic_algorithms_enabled():
        return
    message = (f"{caller} does not have a deterministic implementation, but you set "
               "'torch.use_deterministic_algorithms(True)'")
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        raise RuntimeError(message)
