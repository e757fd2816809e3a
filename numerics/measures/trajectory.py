"""The linear theory through the macroscopic measures: spectral rank, subspace stability and
curvature along an exact trajectory, where their behaviour can be read against known stages."""

from __future__ import annotations

import numpy as np

from .matrices import (effective_rank, numerical_rank, stable_rank, subspace_overlap,
                       top_hessian_eigenvalue)

__all__ = ["first_time", "settle_time", "trajectory_measures"]


def first_time(t: np.ndarray, mask: np.ndarray) -> float:
    """First time at which ``mask`` holds.

    Parameters
    ----------
    t : numpy.ndarray, shape (T,)
        Times.
    mask : numpy.ndarray of bool, shape (T,)
        The condition at each time.

    Returns
    -------
    float
        ``t`` at the first True, NaN if never.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures.trajectory import first_time
    >>> t = np.array([0.0, 1.0, 2.0, 3.0])
    >>> first_time(t, np.array([False, True, False, True]))
    1.0
    >>> first_time(t, t > 5)                                  # never
    nan
    """
    hits = np.nonzero(mask)[0]
    return float(t[hits[0]]) if len(hits) else float("nan")


def settle_time(t: np.ndarray, mask: np.ndarray) -> float:
    """First time from which ``mask`` holds to the end.

    Parameters
    ----------
    t : numpy.ndarray, shape (T,)
        Times.
    mask : numpy.ndarray of bool, shape (T,)
        The condition at each time.

    Returns
    -------
    float
        ``t`` after the last False (``t[0]`` if never False), NaN if it fails at the end.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures.trajectory import settle_time
    >>> t = np.array([0.0, 1.0, 2.0, 3.0])
    >>> settle_time(t, np.array([False, True, False, True]))   # holds for good from t = 3
    3.0
    >>> settle_time(t, np.array([True, True, True, False]))    # fails at the end
    nan
    """
    misses = np.nonzero(~mask)[0]
    if len(misses) == 0:
        return float(t[0])
    return float(t[misses[-1] + 1]) if misses[-1] + 1 < len(t) else float("nan")


def trajectory_measures(flow, t: np.ndarray, theta: np.ndarray,
                        names=None, rank_rtol: float = 0.5, lock: float = 0.9) -> dict:
    """Measures of each parameter matrix along (t, θ) and the loss curvature (``flow``: a
    ``CompiledFlow``, or anything with its ``unpack``, ``hvp`` and ``size``).

    Numerical rank counts singular values above ``rank_rtol`` × the smallest non-zero
    singular value of the final matrix, so it steps up as each direction is learned;
    ``lock_times[k]`` is when the top-(k+1) subspace comes to overlap the final one by at least
    ``lock`` for good. (The alignment distance of ``measures`` is left out: for the invertible
    matrices of a small full-rank start it is identically zero.)

    Parameters
    ----------
    flow : CompiledFlow
        Unpacks θ into parameter arrays and gives Hessian-vector products.
    t : numpy.ndarray, shape (T,)
        Times of the rows of ``theta``.
    theta : numpy.ndarray, shape (T, P)
        The trajectory (e.g. ``Trajectory.theta`` of ``integrate``).
    names : list of str, optional
        Parameter matrices to measure (stacked parameters per head as ``"name[h]"``); all by
        default.
    rank_rtol : float
        Numerical-rank threshold relative to the final matrix's smallest non-zero singular
        value.
    lock : float
        Overlap with the final subspace counted as locked in.

    Returns
    -------
    dict
        ``"t"``, ``"top_hessian"`` (T,) and, per matrix name, a dict of ``effective_rank``,
        ``stable_rank``, ``numerical_rank`` (T,), ``rank_tol``, ``overlap_with_final`` (T, k),
        ``rank_step_times`` and ``lock_times`` (one per k, NaN when never reached).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, integrate
    >>> from icldyn.numerics.measures import trajectory_measures
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.1])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> traj = integrate(flow, {"V": 0.01, "Q": 0.01}, t_end=400.0, n_points=41)
    >>> m = trajectory_measures(flow, traj.t, traj.theta, names=["Q"])
    >>> m["Q"]["rank_step_times"]         # Q learns the two modes of Λ one after the other
    [10.0, 30.0]
    >>> round(float(m["top_hessian"][-1]), 4)
    4.1683
    """
    matrices = {}
    for name, value in flow.unpack(theta).items():       # one entry per head of stacked params
        if value.ndim == 3:
            matrices[name] = value
        else:
            matrices.update({f"{name}[{h}]": value[:, h] for h in range(value.shape[1])})
    out = {"t": t, "top_hessian": np.array([
        top_hessian_eigenvalue(lambda v, th=th: flow.hvp(th, v), flow.size) for th in theta])}
    for name in names or list(matrices):
        M = matrices[name]
        final = M[-1]
        s_final = np.linalg.svd(final, compute_uv=False)
        tol = rank_rtol * s_final[s_final > 1e-12 * s_final[0]].min()
        kmax = min(final.shape)
        overlap = np.stack([subspace_overlap(M, final, k) for k in range(1, kmax + 1)], axis=1)
        ranks = numerical_rank(M, tol=tol)
        out[name] = {
            "effective_rank": effective_rank(M), "stable_rank": stable_rank(M),
            "numerical_rank": ranks, "rank_tol": tol,
            "overlap_with_final": overlap,
            "rank_step_times": [first_time(t, ranks >= r) for r in range(1, kmax + 1)],
            "lock_times": [settle_time(t, overlap[:, k] >= lock) for k in range(kmax)],
        }
    return out
