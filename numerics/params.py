"""Flat parameter vectors θ: their checks (dictionaries → arrays: ``theory.params``)."""

from __future__ import annotations

import numpy as np

from ..theory.errors import InputError

__all__ = ["as_theta"]


def as_theta(value, size: int, argument: str = "theta", leading: bool = False) -> np.ndarray:
    """A flat parameter vector of length ``size`` (or a stack of them when ``leading``) as a
    finite float array.

    Parameters
    ----------
    value : array_like
        The vector (or stack).
    size : int
        Its required length P.
    argument : str
        The argument's name for the error message.
    leading : bool
        Allow leading axes (a stack of vectors).

    Returns
    -------
    numpy.ndarray (P,) or (…, P)

    Raises
    ------
    InputError
        If ``value`` is not numeric, has the wrong shape, or has NaN or infinite entries.

    Examples
    --------
    >>> from icldyn.numerics.params import as_theta
    >>> as_theta([1, 2, 3], size=3)
    array([1., 2., 3.])
    >>> as_theta([[1, 2, 3], [4, 5, 6]], size=3, leading=True).shape      # a stack of two
    (2, 3)
    >>> as_theta([1, 2], size=3)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: theta: must be a vector of length 3, got shape (2,)
    """
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
