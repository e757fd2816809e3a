"""Parameter dictionaries → arrays: the broadcasting rules and their checks, shared by the
models (attention weights) and the numerics (packing θ, the simulator)."""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = ["as_arrays"]


def as_arrays(shapes: dict, params: dict, argument: str = "params") -> dict:
    """{name: float array of ``shapes[name]``} from user values. A scalar for a square block
    means that multiple of the identity (of each head's block, for stacked heads).

    Parameters
    ----------
    shapes : dict
        Parameter name → shape (``Model.shapes()``).
    params : dict
        Parameter name → array, nested list, SymPy Matrix or scalar.
    argument : str
        The argument's name for error messages.

    Returns
    -------
    dict
        Parameter name → float64 array of its shape.

    Raises
    ------
    InputError
        For missing or extra names, wrong shapes or non-finite values.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.params import as_arrays
    >>> shapes = models.MultiHead(2, heads=2).shapes()
    >>> arrays = as_arrays(shapes, {"V": 0.5, "Q": [[[1, 0], [0, 1]], [[0, 1], [1, 0]]]})
    >>> arrays["V"].ravel(), arrays["Q"].shape
    (array([0.5, 0.5]), (2, 2, 2))
    >>> as_arrays(shapes, {"V": 0.5})
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: params: expected entries ['Q', 'V']; missing ['Q'], unexpected
    []
    """
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
