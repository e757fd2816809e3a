"""Parameter dictionaries ↔ arrays: one place for the broadcasting rules and their checks."""

from __future__ import annotations

import numpy as np

from ..theory.errors import InputError


def as_arrays(shapes: dict, params: dict, argument: str = "params") -> dict:
    """{name: float array of ``shapes[name]``} from user values. A scalar for a square block
    means that multiple of the identity (of each head's block, for stacked heads)."""
    if not isinstance(params, dict):
        raise InputError(argument, f"must be a dict of parameters {sorted(shapes)}, "
                         f"got {type(params).__name__}")
    missing, extra = set(shapes) - set(params), set(params) - set(shapes)
    if missing or extra:
        raise InputError(argument, f"expected entries {sorted(shapes)}; missing "
                         f"{sorted(missing)}, unexpected {sorted(extra)}")
    out = {}
    for name, shape in shapes.items():
        try:
            value = np.asarray(params[name], dtype=float)
        except (TypeError, ValueError):
            raise InputError(argument, f"{name} must be numeric, got {params[name]!r}") from None
        if value.ndim == 0 and shape[-1] == shape[-2]:
            value = value * np.broadcast_to(np.eye(shape[-1]), shape)
        if value.shape != shape:
            raise InputError(argument, f"{name} must have shape {shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise InputError(argument, f"{name} contains NaN or infinite entries")
        out[name] = value
    return out


def as_theta(value, size: int, argument: str = "theta", leading: bool = False) -> np.ndarray:
    """A flat parameter vector of length ``size`` (or a stack of them when ``leading``) as a
    finite float array."""
    try:
        theta = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(argument, f"must be a vector of {size} numbers, got "
                         f"{type(value).__name__}") from None
    if theta.ndim == 0 or theta.shape[-1] != size or (theta.ndim > 1 and not leading):
        raise InputError(argument, f"must be a vector of length {size}"
                         f"{' (or a stack of them)' if leading else ''}, got shape {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise InputError(argument, "contains NaN or infinite entries")
    return theta
