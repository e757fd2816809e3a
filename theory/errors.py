"""The package's own error type: bad input is reported with the argument it concerns."""

import math
import numbers

__all__ = ["InputError", "check_int", "check_real", "DivergenceError"]


class InputError(ValueError):
    """Invalid input, reported in one line as "argument: how to fix it".

    Parameters
    ----------
    argument : str
        The offending argument (kept as ``.argument``).
    message : str
        What is wrong and how to fix it.

    Examples
    --------
    >>> from icldyn.theory import ICLData
    >>> from icldyn.theory.errors import InputError
    >>> try:
    ...     ICLData(d=0, N=4)
    ... except InputError as err:
    ...     print(err.argument, "|", err)
    d | d: must be a positive integer, got 0
    """

    def __init__(self, argument: str, message: str):
        self.argument = argument
        super().__init__(f"{argument}: {message}")


def check_int(argument: str, value, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer ≥ ``minimum`` (numpy and SymPy integers
    included, bools not), else an InputError naming ``argument``.

    Parameters
    ----------
    argument : str
        The argument's name, for the message.
    value : object
        The value to check.
    minimum : int
        The smallest value allowed.

    Returns
    -------
    int

    Raises
    ------
    InputError
        If ``value`` is not an integer ≥ ``minimum``.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory.errors import check_int
    >>> check_int("N", np.int64(8)), check_int("heads", 2, minimum=1)
    (8, 2)
    >>> check_int("N", 2.5)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: N: must be a positive integer, got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise InputError(argument, f"must be {what}, got {value!r}")
    return int(value)


def check_real(argument: str, value, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite real number > 0 (≥ 0 with ``allow_zero``), else
    an InputError naming ``argument``.

    Parameters
    ----------
    argument : str
        The argument's name, for the message.
    value : object
        The value to check.
    allow_zero : bool
        Accept 0.

    Returns
    -------
    float

    Raises
    ------
    InputError
        If ``value`` is not a finite real number in range.

    Examples
    --------
    >>> from icldyn.theory.errors import check_real
    >>> check_real("lr", 0.05), check_real("noise", 0, allow_zero=True)
    (0.05, 0.0)
    >>> check_real("lr", float("nan"))
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: lr: must be a positive finite number, got nan
    """
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value) and (value >= 0 if allow_zero else value > 0))
    if not ok:
        raise InputError(argument, f"must be a {'non-negative' if allow_zero else 'positive'} "
                         f"finite number, got {value!r}")
    return float(value)


class DivergenceError(RuntimeError):
    """A run blew up.

    Parameters
    ----------
    message : str
        What diverged and what to change (e.g. a lower learning rate).
    step : int
        The first step with a non-finite or runaway value (kept as ``.step``).
    partial : Trajectory, optional
        Everything computed before it (kept as ``.partial``).

    Examples
    --------
    >>> from icldyn.theory.errors import DivergenceError
    >>> err = DivergenceError("the loss blew up at lr = 5; lower the learning rate", step=12)
    >>> err.step, err.partial, isinstance(err, RuntimeError)     # partial: no trajectory kept
    (12, None, True)
    """

    def __init__(self, message: str, step: int, partial=None):
        self.step, self.partial = step, partial
        super().__init__(message)
