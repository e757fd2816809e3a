"""The learned algorithm of a critical set: the in-context predictor its parameters compute.

One attention layer (docs/math.md §2) predicts, from the y-rows [P₁ P₂] of each head's W_PV and the
x-columns [Q₁; Q₂] of its W_KQ,

    ŷ = (1/N) Σ_h [ P₁(S_xx + x_q x_qᵀ)Q₁ + P₁ S_xy Q₂ + P₂ S_yx Q₁ + P₂ S_yy Q₂ ]_h x_q.

A context statistic enters when its coupling Σ_h P ⊗ Q (Kronecker product of the two blocks
that sandwich it) is not zero. When only the cross moments S_yx, S_xy enter, ŷ = Ŵ x_q with
Ŵ = (1/N) Σ_h (P₂ S_yx Q₁ + P₁ S_xy Q₂)_h, linear in the context's labels: a gradient step
from W = 0 on the context's least-squares loss ½ Σ_i ‖y_i − W x_i‖² / N (whose negative
gradient there is S_yx / N), preconditioned. With scalar tasks (d_y = 1), P₁ S_xy Q₂ =
S_yx P₁ᵀ Q₂, so ŷ = S_yx M x_q / N with M = Σ_h (P₂ Q₁ + P₁ᵀ Q₂)_h: one step of
preconditioned gradient descent (docs/math.md §3.2). S_xx or S_yy make ŷ non-linear in the
context (cubic in the inputs, or quadratic in the labels): no single gradient step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

__all__ = ["LearnedAlgorithm", "learned_algorithm"]

STATISTICS = ("S_xx", "S_xy", "S_yx", "S_yy")     # the four sandwiched context statistics
ZERO_TOL = 1e-12                                   # of the largest coupling entry


@dataclass(frozen=True)
class LearnedAlgorithm:
    """The predictor of a critical set (module docstring).

    Attributes
    ----------
    weights : tuple
        Per head the blocks (P₁, P₂, Q₁, Q₂) as float arrays (empty for symbolic data).
    statistics : tuple of str
        The context statistics that enter ŷ (of ``STATISTICS``).
    M : sympy.Matrix or None
        For scalar tasks when only cross moments enter, the preconditioner of
        ŷ = S_yx M x_q / N; None otherwise.
    description : str
        One sentence.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> fp = derive(models.FullLSA(1), ICLData(d=1, N=4, Lambda=np.eye(1))).fixed_points()[0]
    >>> fp.name, fp.algorithm.statistics
    ('global minimum (on P1 = 0, Q2 = 0)', ('S_yx',))
    >>> [np.round(w, 4) for w in fp.algorithm.weights[0]]
    [array([[0.]]), array([[0.8165]]), array([[0.8165]]), array([[0.]])]
    """

    weights: tuple
    statistics: tuple
    M: sp.Matrix | None
    description: str


def learned_algorithm(der, fp) -> LearnedAlgorithm | None:
    """The learned algorithm at ``fp``'s representative (a ``FixedPointSet`` of ``der``);
    for symbolic data, the product-form sets' ŷ = S_yx M x_q / N with their symbolic
    ``info['M']``, else None.

    Parameters
    ----------
    der : Derivation
        The derivation ``fp`` belongs to.
    fp : FixedPointSet
        A critical set (its representative ``point``).

    Returns
    -------
    LearnedAlgorithm or None

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.algorithm import learned_algorithm
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> alg = learned_algorithm(der, der.fixed_points()[0])
    >>> alg.statistics, alg.M                 # M* = A⁻¹Λ, A = (N+1)/N Λ² + tr(Λ)/N Λ
    (('S_yx',), Matrix([
    [0.615384615384615, 0.0],
    [              0.0, 1.0]]))
    >>> alg.description
    "ŷ = S_yx M x_q / N: one step of preconditioned gradient descent from w = 0 on the context's
    least-squares loss"
    """
    d, d_y = der.data.d, der.data.d_y
    numeric = all(getattr(v, "is_number", True) for m in fp.point.values()
                  for v in np.ravel(np.array(m.tolist(), dtype=object)))
    if not numeric:
        M = fp.info.get("M")
        return None if M is None else LearnedAlgorithm((), ("S_yx",), M, _step_text(d_y))
    floats = {k: np.array(v.tolist(), dtype=float) for k, v in fp.point.items()}
    heads = tuple((W_PV[d:, :d], W_PV[d:, d:], W_KQ[:d, :d], W_KQ[d:, :d])
                  for W_PV, W_KQ in der.model.attention_weights(floats)[0])
    couplings = {"S_xx": (0, 2), "S_xy": (0, 3), "S_yx": (1, 2), "S_yy": (1, 3)}
    sums = {s: sum(np.kron(h[i], h[j]) for h in heads) for s, (i, j) in couplings.items()}
    scale = max([1.0] + [np.abs(K).max() for K in sums.values()])
    used = tuple(s for s in STATISTICS if np.abs(sums[s]).max() > ZERO_TOL * scale)
    if not set(used) <= {"S_xy", "S_yx"}:
        text = ("ŷ uses " + ", ".join(used) + ": not linear in the context's labels, so not "
                "a single gradient step")
        return LearnedAlgorithm(heads, used, None, text)
    M = None
    if d_y == 1:
        M = sp.Matrix(sum(P2[0, 0] * Q1 + P1.T @ Q2 for P1, P2, Q1, Q2 in heads))
    return LearnedAlgorithm(heads, used, M, _step_text(d_y, used))


def _step_text(d_y: int, used: tuple = ("S_yx",)) -> str:
    if d_y == 1:
        return ("ŷ = S_yx M x_q / N: one step of preconditioned gradient descent from w = 0 on "
                "the context's least-squares loss")
    paths = " + ".join({"S_yx": "P₂ S_yx Q₁", "S_xy": "P₁ S_xy Q₂"}[s] for s in used)
    return (f"ŷ = Ŵ x_q, Ŵ = Σ_h ({paths})_h / N: linear in the context's cross moments, a "
            "preconditioned gradient step from W = 0 on the context's least-squares loss")
