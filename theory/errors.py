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
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "positive" if minimum == 1 else f"≥ {minimum}"
        raise InputError(argument, f"must be an integer {what}, got {value!r}")
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
    """

    def __init__(self, message: str, step: int, partial=None):
        self.step, self.partial = step, partial
        super().__init__(message)
