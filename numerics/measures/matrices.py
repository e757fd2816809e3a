"""Macroscopic measures of weight matrices over training (docs/math.md §5), on plain arrays.

Every function takes one matrix (m, n) or a stack of checkpoints (..., m, n) and works in
float64 (products of float32 weights give wrong small singular values).

* ``singular_values``: σ₁ ≥ σ₂ ≥ … ≥ 0.
* ``effective_rank`` (Roy & Vetterli 2007): exp(−Σ p_i log p_i), p_i = σ_i / Σ_j σ_j, over the
  singular values left after dropping the ``drop_top`` largest; 1 ≤ erank ≤ rank.
* ``stable_rank``: ‖M‖_F² / ‖M‖₂² = Σ σ_i² / σ₁².
* ``numerical_rank``: #{σ_i > tol}; by default tol = max(m, n) · ε_machine · σ₁ (NumPy's rule),
  or ``rtol`` · σ₁, or an absolute ``tol``.
* ``principal_angles(A, B, k)``: angles between the top-k left (or right) singular subspaces,
  ascending, in [0, π/2].
* ``subspace_overlap(A, B, k)``: ‖U_kᵀ U'_k‖_F² / k = mean cos² of the principal angles ∈ [0, 1].
* ``alignment_distance(M, M_ref)``: min_A ‖A M − M_ref‖_F / ‖M_ref‖_F (least squares in A):
  0 when M's row space contains M_ref's, 1 when orthogonal.
* ``top_hessian_eigenvalue(hvp, n)``: largest eigenvalue of a symmetric operator given by its
  products v ↦ H v (Lanczos via ARPACK), or with ``method="power"`` the dominant one (largest
  |λ|, as PyHessian's power iteration).
"""

from __future__ import annotations

import numpy as np

from ...theory.errors import InputError, check_int, check_real

__all__ = ["singular_values", "effective_rank", "stable_rank", "numerical_rank",
           "principal_angles", "subspace_overlap", "alignment_distance", "top_hessian_eigenvalue"]


def _matrices(M, name: str = "M") -> np.ndarray:
    try:
        M = np.asarray(M, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(name, f"needs a numeric matrix, got {type(M).__name__}") from None
    if M.ndim < 2 or 0 in M.shape:
        raise InputError(name, f"needs a non-empty matrix or stack of matrices, got shape "
                         f"{M.shape}")
    if not np.all(np.isfinite(M)):
        raise InputError(name, "contains NaN or infinite entries")
    return M


def _scaled_singular_values(M) -> tuple:
    """(singular values of each matrix divided by its largest |entry|, that entry): the SVD
    never sees entries near the float range's ends, so scale-free measures cannot overflow."""
    M = _matrices(M)
    top = np.abs(M).max(axis=(-2, -1))
    return np.linalg.svd(_unit_scale(M), compute_uv=False), top


def singular_values(M) -> np.ndarray:
    """Singular values σ₁ ≥ σ₂ ≥ … ≥ 0 of each matrix.

    Parameters
    ----------
    M : array_like, shape (m, n) or (..., m, n)
        One matrix or a stack of checkpoints; finite, non-empty (read as float64).

    Returns
    -------
    numpy.ndarray, shape (..., min(m, n))
        Descending; inf where one exceeds the float range.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import singular_values
    >>> singular_values([[3.0, 0.0], [0.0, 4.0]])                   # descending
    array([4., 3.])
    >>> singular_values(np.stack([np.eye(2), 2 * np.eye(2)]))     # a stack of checkpoints
    array([[1., 1.],
           [2., 2.]])
    """
    s, top = _scaled_singular_values(M)
    with np.errstate(over="ignore"):
        return s * top[..., None]


def effective_rank(M, drop_top: int = 0) -> np.ndarray:
    """Roy–Vetterli effective rank exp(−Σ p_i log p_i), p_i = σ_i / Σ_j σ_j.

    Parameters
    ----------
    M : array_like, shape (m, n) or (..., m, n)
        One matrix or a stack of checkpoints; finite, non-empty (read as float64).
    drop_top : int
        How many of the largest singular values to remove first, in [0, min(m, n) − 1].

    Returns
    -------
    numpy.ndarray, shape (...)
        In [1, rank] for a non-zero matrix (scale-free); 0 for a zero matrix.

    Raises
    ------
    InputError
        For ``drop_top`` outside [0, number of singular values − 1].

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import effective_rank
    >>> round(float(effective_rank(np.eye(3))), 6)                  # three equal directions
    3.0
    >>> round(float(effective_rank(np.diag([1.0, 1e-9, 0.0]))), 6)  # one direction dominates
    1.0
    >>> round(float(effective_rank(np.diag([5.0, 1.0, 1.0]), drop_top=1)), 6)   # the bulk
    2.0
    """
    s, _ = _scaled_singular_values(M)
    if not (isinstance(drop_top, (int, np.integer)) and 0 <= drop_top < s.shape[-1]):
        raise InputError("drop_top", f"must be in [0, {s.shape[-1] - 1}], got {drop_top!r}")
    s = s[..., drop_top:]
    total = s.sum(axis=-1, keepdims=True)
    p = np.divide(s, total, out=np.zeros_like(s), where=total > 0)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return np.where(total[..., 0] > 0, np.exp(entropy), 0.0)


def stable_rank(M) -> np.ndarray:
    """Stable rank ‖M‖_F² / ‖M‖₂² = Σ σ_i² / σ₁².

    Parameters
    ----------
    M : array_like, shape (m, n) or (..., m, n)
        One matrix or a stack of checkpoints; finite, non-empty (read as float64).

    Returns
    -------
    numpy.ndarray, shape (...)
        In [1, rank] for a non-zero matrix (scale-free); 0 for a zero matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import stable_rank
    >>> float(stable_rank(np.diag([2.0, 1.0])))                      # (4 + 1) / 4
    1.25
    >>> float(stable_rank(100 * np.diag([2.0, 1.0])))                # scale-free
    1.25
    """
    s, _ = _scaled_singular_values(M)
    top = s[..., :1]
    ratio = np.divide(s, top, out=np.zeros_like(s), where=top > 0)     # no under/overflow
    return (ratio**2).sum(axis=-1)


def numerical_rank(M, tol: float | None = None, rtol: float | None = None) -> np.ndarray:
    """Number of singular values above a threshold: #{σ_i > tol}.

    Parameters
    ----------
    M : array_like, shape (m, n) or (..., m, n)
        One matrix or a stack of checkpoints; finite, non-empty (read as float64).
    tol : float, optional
        Absolute threshold (≥ 0).
    rtol : float, optional
        Relative threshold, ``rtol`` · σ₁ (≥ 0). Give at most one of ``tol`` and ``rtol``;
        with neither, NumPy's rule max(m, n) · ε_machine · σ₁.

    Returns
    -------
    numpy.ndarray of int, shape (...)

    Raises
    ------
    InputError
        When both ``tol`` and ``rtol`` are given.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import numerical_rank
    >>> M = np.diag([1.0, 1e-3, 1e-20])
    >>> int(numerical_rank(M))                  # NumPy's rule: 1e-20 is rounding noise
    2
    >>> int(numerical_rank(M, rtol=1e-2))       # only directions above 1 % of the largest
    1
    >>> numerical_rank(np.stack([M, np.eye(3)]), tol=0.5)
    array([1, 3])
    """
    M = _matrices(M)
    s, top = _scaled_singular_values(M)      # s·top are the singular values
    if tol is not None and rtol is not None:
        raise InputError("tol", "give either an absolute tol or a relative rtol, not both")
    if tol is None:
        factor = check_real("rtol", rtol, allow_zero=True) if rtol is not None else \
            max(M.shape[-2:]) * np.finfo(np.float64).eps
        threshold = factor * s[..., :1]
    else:
        tol = check_real("tol", tol, allow_zero=True)
        with np.errstate(over="ignore", divide="ignore"):
            threshold = np.where(top > 0, tol / np.where(top > 0, top, 1.0), np.inf)[..., None]
    return np.sum(s > threshold, axis=-1)


def _top_subspace(M, k: int, side: str) -> np.ndarray:
    if side not in ("left", "right"):
        raise InputError("side", f"must be 'left' or 'right', got {side!r}")
    U, _, Vh = np.linalg.svd(_unit_scale(_matrices(M)), full_matrices=False)
    if check_int("k", k) > U.shape[-1]:
        raise InputError("k", f"must be in [1, {U.shape[-1]}], got {k!r}")
    return U[..., :, :k] if side == "left" else Vh[..., :k, :].swapaxes(-1, -2)


def _subspace_pair(A, B, k: int, side: str) -> tuple:
    Ua, Ub = _top_subspace(A, k, side), _top_subspace(B, k, side)
    if Ua.shape[-2] != Ub.shape[-2]:
        raise InputError("B", f"the {side} singular vectors of A and B live in spaces of "
                         f"different dimension ({Ua.shape[-2]} and {Ub.shape[-2]})")
    return Ua, Ub


def principal_angles(A, B, k: int, side: str = "left") -> np.ndarray:
    """Principal angles between the top-k singular subspaces of A and B.

    Parameters
    ----------
    A, B : array_like, shape (m, n) or (..., m, n)
        Matrices (or stacks broadcasting against each other) whose subspaces are compared;
        their ``side`` singular vectors must have the same dimension.
    k : int
        Dimension of the top singular subspaces, 1 ≤ k ≤ min(m, n).
    side : {"left", "right"}
        Left (column space) or right (row space) singular vectors.

    Returns
    -------
    numpy.ndarray, shape (..., k)
        Angles in radians, ascending, in [0, π/2].

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import principal_angles
    >>> A = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])    # columns span e1, e2
    >>> B = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])    # columns span e1, e3
    >>> principal_angles(A, B, k=2)                           # e1 shared, e2 ⟂ e3
    array([0.        , 1.57079633])
    """
    Ua, Ub = _subspace_pair(A, B, k, side)
    cos = np.linalg.svd(Ua.swapaxes(-1, -2) @ Ub, compute_uv=False)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def subspace_overlap(A, B, k: int, side: str = "left") -> np.ndarray:
    """Overlap ‖U_kᵀ U'_k‖_F² / k of the top-k singular subspaces U_k of A and U'_k of B: the
    mean cos² of their principal angles.

    Parameters
    ----------
    A, B : array_like, shape (m, n) or (..., m, n)
        Matrices (or stacks broadcasting against each other) whose subspaces are compared;
        their ``side`` singular vectors must have the same dimension.
    k : int
        Dimension of the top singular subspaces, 1 ≤ k ≤ min(m, n).
    side : {"left", "right"}
        Left (column space) or right (row space) singular vectors.

    Returns
    -------
    numpy.ndarray, shape (...)
        In [0, 1]: 1 for the same subspace, 0 for orthogonal ones.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import subspace_overlap
    >>> A = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])    # columns span e1, e2
    >>> B = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])    # columns span e1, e3
    >>> float(subspace_overlap(A, B, k=2))                    # mean cos² of angles 0 and π/2
    0.5
    >>> float(subspace_overlap(A, B, k=1))                    # the top directions agree
    1.0
    """
    Ua, Ub = _subspace_pair(A, B, k, side)
    return np.sum((Ua.swapaxes(-1, -2) @ Ub) ** 2, axis=(-2, -1)) / k


def alignment_distance(M, M_ref) -> np.ndarray:
    """Relative alignment distance min_A ‖A M − M_ref‖_F / ‖M_ref‖_F, A unconstrained (least
    squares, by the pseudo-inverse).

    Parameters
    ----------
    M : array_like, shape (m, n) or (..., m, n)
        The matrix (or checkpoints) to align; finite.
    M_ref : array_like, shape (p, n) or (..., p, n)
        The reference, with as many columns as M; not zero.

    Returns
    -------
    numpy.ndarray, shape (...)
        In [0, 1]: 0 when M's row space contains M_ref's, 1 when they are orthogonal;
        invariant to the scales of M and M_ref.

    Raises
    ------
    InputError
        When ``M_ref`` has another number of columns than ``M``, or is zero.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import alignment_distance
    >>> M = np.array([[1.0, 1.0, 0.0]])
    >>> round(float(alignment_distance(M, 3 * M)), 12)        # same row space
    0.0
    >>> float(alignment_distance(M, [[0.0, 0.0, 1.0]]))      # orthogonal
    1.0
    >>> round(float(alignment_distance(M, [[1.0, 0.0, 0.0]])), 6)   # 45° apart: sin 45°
    0.707107
    """
    M, R = _matrices(M), _matrices(M_ref, "M_ref")
    if M.shape[-1] != R.shape[-1]:
        raise InputError("M_ref", f"needs {M.shape[-1]} columns like M, got {R.shape[-1]}")
    if np.any(np.abs(R).max(axis=(-2, -1)) == 0):
        raise InputError("M_ref", "is zero: the relative alignment distance is undefined")
    M, R = _unit_scale(M), _unit_scale(R)       # the distance is invariant to both scales
    norm = np.linalg.norm(R, axis=(-2, -1))
    fitted = R @ np.linalg.pinv(M) @ M
    return np.linalg.norm(fitted - R, axis=(-2, -1)) / norm


def _unit_scale(M: np.ndarray) -> np.ndarray:
    """Each matrix divided by its largest |entry| (zero matrices left as they are)."""
    top = np.abs(M).max(axis=(-2, -1), keepdims=True)
    return np.divide(M, top, out=np.zeros_like(M), where=top > 0)


def top_hessian_eigenvalue(hvp, n: int, method: str = "lanczos", tol: float = 1e-10,
                           maxiter: int = 1000, seed: int = 0) -> float:
    """Largest eigenvalue of the symmetric n×n operator v ↦ hvp(v) (e.g. the loss Hessian
    from Hessian-vector products: the curvature that bounds stable learning rates, η < 2/λ).

    Parameters
    ----------
    hvp : callable
        v (float64 vector of length n) ↦ H v; H must be symmetric.
    n : int
        Dimension of the operator.
    method : {"lanczos", "power"}
        "lanczos": the largest algebraic eigenvalue (ARPACK); "power": power iteration, the
        dominant eigenvalue (largest |λ|, as PyHessian).
    tol : float
        Convergence tolerance (ARPACK's; for "power", relative change between iterations).
    maxiter : int
        Iteration cap.
    seed : int
        Seed of the random start vector.

    Returns
    -------
    float
        The eigenvalue (for "power" after ``maxiter`` iterations, the last estimate).

    Raises
    ------
    InputError
        For a method other than 'lanczos' or 'power'.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.measures import top_hessian_eigenvalue
    >>> H = np.diag([3.0, 1.0, -5.0])
    >>> round(top_hessian_eigenvalue(lambda v: H @ v, 3), 6)                    # largest λ
    3.0
    >>> round(top_hessian_eigenvalue(lambda v: H @ v, 3, method="power"), 6)   # largest |λ|
    -5.0
    """
    if method == "lanczos":
        from scipy.sparse.linalg import LinearOperator, eigsh   # 0.4 s to import: on use only
        op = LinearOperator((n, n), matvec=lambda v: np.asarray(hvp(v), dtype=np.float64))
        v0 = np.random.default_rng(seed).standard_normal(n)
        if n == 1:
            return float(op.matvec(np.ones(1))[0])
        return float(eigsh(op, k=1, which="LA", v0=v0, tol=tol, maxiter=maxiter,
                           return_eigenvectors=False)[0])
    if method == "power":
        v = np.random.default_rng(seed).standard_normal(n)
        v /= np.linalg.norm(v)
        value = 0.0
        for _ in range(maxiter):
            w = np.asarray(hvp(v), dtype=np.float64)
            new = float(v @ w)
            norm = np.linalg.norm(w)
            if norm == 0:
                return 0.0
            v = w / norm
            if abs(new - value) <= tol * max(1.0, abs(new)):
                return new
            value = new
        return value
    raise InputError("method", f"must be 'lanczos' or 'power', got {method!r}")
