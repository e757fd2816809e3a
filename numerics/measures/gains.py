"""The learned in-context map's gain on each eigenmode of Λ, for any model, read off its
attention weights (``Model.attention_weights``).

With infinitely many context tokens z = (x; W x), x ~ N(0, Λ), every layer sees the
deterministic A = E[z zᵀ] (the query's own term is O(1/N)), so each token moves linearly,
z ↦ T z with T = I + Σ_h W_PV,h A W_KQ,h, and the next layer sees T A Tᵀ. The network's
prediction is then ŷ = ±[T_L ⋯ T_1 (x_q; 0)]_y (− when the readout is negated). The gain of
mode α is a_α = e_αᵀ ŷ / s_α for the task W = e_α u_αᵀ and the query x_q = u_α (u_α, s_α:
Λ's eigenpairs; e_α = u_α when d_y = d, else the first output). For Merged,
ŷ = V W Λ Q x_q gives a_α = (UᵀVU)_αα (UᵀQU)_αα.
"""

from __future__ import annotations

import numpy as np

from ...theory.errors import InputError


def mode_gains(model, params: dict, Lambda: np.ndarray, U: np.ndarray) -> np.ndarray:
    """a_α (see the module doc) at ``params`` ({name: (R, *shape)}, R rows) → (R, d).

    Parameters
    ----------
    model : Model
        Any parameterization or stack.
    params : dict
        Each parameter with a leading axis of R rows.
    Lambda : ndarray (d, d)
        The input covariance Λ.
    U : ndarray (d, d)
        Λ's orthonormal eigenvectors as columns, in the order of the modes wanted.

    Returns
    -------
    ndarray (R, d)

    Raises
    ------
    InputError
        Unless d_y = 1 or d_y = d.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import models
    >>> from icldyn.numerics.measures.gains import mode_gains
    >>> params = {"V": np.ones((1, 1, 1)), "Q": np.diag([2.0, 3.0])[None]}   # one row
    >>> mode_gains(models.Merged(2), params, Lambda=np.diag([1.0, 0.5]), U=np.eye(2))
    array([[2., 3.]])
    >>> params = {"V": np.ones((1, 1, 1)), "Q": np.diag([1.0, 2.0])[None]}   # Q = Λ⁻¹: ŷ = W x_q
    >>> mode_gains(models.Merged(2), params, Lambda=np.diag([1.0, 0.5]), U=np.eye(2)) * [1.0, 0.5]
    array([[1., 1.]])
    """
    d, d_y = model.d, model.d_y
    if d_y not in (1, d):
        raise InputError("model", f"mode gains need d_y = 1 or d_y = d = {d}, got {d_y}")
    Lambda = np.asarray(Lambda, dtype=float)
    s = np.einsum("ia,ij,ja->a", U, Lambda, U)
    e = U.T if d_y == d else np.ones((d, 1))                          # e_α as rows
    D = d + d_y
    lift = np.zeros((d, D, d))                                         # z = lift_α x
    lift[:, :d] = np.eye(d)
    lift[:, d:] = e[:, :, None] * U.T[:, None, :]                      # W_α = e_α u_αᵀ
    A0 = lift @ Lambda @ lift.swapaxes(1, 2)                           # (d, D, D)
    zq = np.zeros((d, D))
    zq[:, :d] = U.T                                                    # (u_α; 0)
    sign = -1.0 if model.negate_readout else 1.0
    rows = len(next(iter(params.values())))
    out = np.empty((rows, d))
    for r in range(rows):
        A, z = A0, zq
        for layer in model.attention_weights({k: v[r] for k, v in params.items()}):
            T = np.eye(D) + sum(W_PV @ A @ W_KQ for W_PV, W_KQ in layer)
            A, z = T @ A @ T.swapaxes(1, 2), np.einsum("aij,aj->ai", T, z)
        out[r] = sign * np.sum(e * z[:, d:], axis=1) / s
    return out
