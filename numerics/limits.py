"""Numerical limits shared by the compiled flow, the SGD simulator and SME: the magnitude at
which a run is declared divergent, the memory cap on recorded rows, and the overflow error that
names the data argument to rescale. Neutral ground: imports nothing from the other numerics
modules, so the ground truth (``simulation``) need not import the derived code to use them."""

from __future__ import annotations

import numpy as np

from ..theory.errors import InputError

__all__ = ["RUNAWAY", "MAX_ROWS_BYTES", "data_scales", "data_overflow"]

RUNAWAY = 1e100         # |θ| or a loss beyond this: the run diverged
MAX_ROWS_BYTES = 2**31  # recorded rows of θ (or losses) held in memory


def data_scales(data) -> dict:
    """The scale of each numeric data argument.

    Parameters
    ----------
    data : ICLData
        Numeric data.

    Returns
    -------
    dict
        {argument: largest |entry|} of Λ, Σ_w (or the task variances c), the finite task
        matrices and σ.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData
    >>> from icldyn.numerics.limits import data_scales
    >>> data_scales(ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5]), noise=0.25))
    {'Lambda': 1.0, 'noise': 0.25}
    """
    top = lambda m: float(np.abs(np.array(m.tolist(), dtype=float)).max())  # noqa: E731
    scales = {"Lambda": top(data.Lambda), "noise": abs(float(data.noise))}
    if data.Sigma_w is not None:
        scales["Sigma_w"] = top(data.Sigma_w)
    if data.task_set is not None:
        scales["tasks"] = max(top(m) for m in data.task_set)
    return scales


def data_overflow(data, where: str) -> InputError:
    """The error for float64 overflow caused by the data's scale (losses are polynomials in
    the data, so an entry near 1e308, or its square or cube, overflows): names the argument
    with the largest entries.

    Parameters
    ----------
    data : ICLData
        The data whose scale overflowed.
    where : str
        What overflowed, for the message.

    Returns
    -------
    InputError
        To raise.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData
    >>> from icldyn.numerics.limits import data_overflow
    >>> error = data_overflow(ICLData(d=2, N=4, Lambda=np.diag([1e200, 1.0])), "the loss")
    >>> error.argument
    'Lambda'
    >>> raise error
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: Lambda: entries up to 1e+200 overflow float64 in the loss ...
    """
    name, scale = max(data_scales(data).items(), key=lambda item: item[1])
    return InputError(name, f"entries up to {scale:.3g} overflow float64 in {where} (it holds "
                      f"powers of the data); rescale {name} to entries of order 1 (the loss "
                      "scales with it)")
