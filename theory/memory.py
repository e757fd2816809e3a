"""A memory budget for long exact computations: one that would exhaust the machine's memory
stops with a one-line error naming its budget, instead of being killed by the operating
system's out-of-memory killer (which ends the whole process, results and all).

The budget is ``ICLDYN_MEMORY_GB`` (GiB of resident memory) when set; otherwise what the
process holds when the guard is made plus 90 % of the memory the system reports available
then, and at most 85 % of the address-space limit (``ulimit -v``) when there is one.
"""

from __future__ import annotations

import math
import os

try:
    import resource                      # POSIX only, like /proc
except ImportError:                      # e.g. Windows: no ulimit -v to respect
    resource = None

from .errors import InputError

__all__ = ["ENV", "MemoryGuard", "budget", "resident"]

ENV = "ICLDYN_MEMORY_GB"
GIB = 2**30


def resident() -> int | None:
    """The process's resident memory in bytes (Linux: /proc/self/statm), else None.

    Returns
    -------
    int or None

    Examples
    --------
    >>> from icldyn.theory.memory import resident
    >>> held = resident()
    >>> held is None or 2**20 < held < 2**40               # between a MiB and a TiB
    True
    """
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _available() -> int | None:
    """The memory the system reports available (Linux: MemAvailable), in bytes."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def budget() -> int | None:
    """The resident memory, in bytes, a guarded computation may reach (module docstring).

    Returns
    -------
    int or None
        None where it cannot be measured (no /proc): then nothing is checked.

    Raises
    ------
    InputError
        When ``ICLDYN_MEMORY_GB`` is set but not a positive number.

    Examples
    --------
    >>> import os
    >>> from icldyn.theory.memory import budget
    >>> os.environ["ICLDYN_MEMORY_GB"] = "1.5"
    >>> budget() / 2**30
    1.5
    >>> os.environ["ICLDYN_MEMORY_GB"] = "lots"
    >>> budget()
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: ICLDYN_MEMORY_GB: must be a positive number of GiB, got 'lots'
    >>> os.environ["ICLDYN_MEMORY_GB"] = "inf"
    >>> budget()
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: ICLDYN_MEMORY_GB: must be a positive number of GiB, got 'inf'
    >>> del os.environ["ICLDYN_MEMORY_GB"]
    """
    setting = os.environ.get(ENV)
    if setting is not None:
        try:
            limit = float(setting)
        except ValueError:
            limit = float("nan")
        if not (limit > 0 and math.isfinite(limit)):
            raise InputError(ENV, f"must be a positive number of GiB, got {setting!r}")
        return int(limit * GIB)
    held, available = resident(), _available()
    if held is None or available is None:
        return None
    limit = held + int(0.9 * available)
    if resource is not None:
        address_space = resource.getrlimit(resource.RLIMIT_AS)[0]
        if address_space != resource.RLIM_INFINITY:
            limit = min(limit, int(0.85 * address_space))
    return limit


class MemoryGuard:
    """Checks, every ``every`` calls of ``tick``, that the process's resident memory is
    within ``budget()`` (fixed when the guard is made); past it, an InputError naming
    ``argument`` with ``advice``.

    Parameters
    ----------
    argument : str
        What the error names (e.g. "model").
    what : str
        The computation, for the message (e.g. "the gradient covariance of …").
    advice : str
        How to get the result another way.
    every : int
        Calls of ``tick`` between two measurements (one costs a few microseconds).

    Examples
    --------
    >>> import os
    >>> from icldyn.theory.memory import MemoryGuard
    >>> os.environ["ICLDYN_MEMORY_GB"] = "0.001"            # 1 MiB: any process is past it
    >>> guard = MemoryGuard("model", "the example", "use a smaller one", every=2)
    >>> del os.environ["ICLDYN_MEMORY_GB"]
    >>> guard.tick()                                     # not measured yet
    >>> guard.tick()
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: model: the example passed its memory budget (... GiB resident, budget 0.001 GiB: ICLDYN_MEMORY_GB); use a smaller one
    """

    def __init__(self, argument: str, what: str, advice: str, every: int = 1024):
        self.argument, self.what, self.advice = argument, what, advice
        self.every, self.calls, self.limit = every, 0, budget()

    def tick(self) -> None:
        """Count a call; measure every ``every`` calls.

        Raises
        ------
        InputError
            Past the budget.
        """
        self.calls += 1
        if self.limit is None or self.calls % self.every:
            return
        held = resident()
        if held is not None and held > self.limit:
            raise InputError(self.argument, f"{self.what} passed its memory budget "
                             f"({held / GIB:.3g} GiB resident, budget {self.limit / GIB:.3g} "
                             f"GiB: {ENV}); {self.advice}")
