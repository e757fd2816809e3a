"""Critical sets with scalar tasks, their loss and Hessian index (docs/math.md §3.2).

Scalar tasks (d_y = 1): V = u is a number and every term of the derived loss has as many u's as
Q's (the rescaling symmetry), so L(u, Q) = F(M) with M = uQ, and F is quadratic (``ProductForm``,
shared by the product-form models: MultiHead M = Σ u_h Q_h, SeparateKQ M = Σ u_h W_K,hᵀ W_Q,h).
Merged:
* ``global minimum``: {uQ = M*} with ∂F/∂M (M*) = 0 — a linear matrix equation, solved exactly;
* ``saddle set``: {u = 0, ∂F/∂M(0) ⊥ Q}, which contains the origin (small initialisation).
MultiHead, SeparateKQ (one class per subset of whitened singular modes) and FullLSA (two
invariant sets) are in their functions below; vector tasks (d_y > 1) in ``vectorsets``.

Every set carries a representative point, its loss, the Hessian index (number of negative
eigenvalues of the full model's Hessian there) and its ``kind`` with the evidence
(``criticality``): the global minima of the product-form models are certified here (F is a
convex quadratic in M; Eckart–Young for the rank-limited SeparateKQ), every other set by its
Hessian and, at index 0, by the symmetry orbit or a higher-order escape.
"""

from __future__ import annotations

import re
from itertools import combinations

import mpmath
import sympy as sp

from .criticality import classify
from .derive import Derivation
from .errors import InputError
from .landscape import (CONVEX, DPS, FixedPointSet, certified, critical_params, critical_set,
                        entry_symbols, index_counter, require_structure, to_mp,
                        with_loss_gaps)
from .productform import merged_counterpart, product_loss
from .words import MatPoly

__all__ = ["scalar_fixed_points", "ProductForm"]

ECKART_YOUNG = ("L = F(M) = ½‖X^½ M Y^½ − C‖² + const over the matrices of rank ≤ {k} the model "
                "reaches; the set keeps C's {k} largest singular modes, the minimum over that "
                "rank (Eckart–Young): a global minimum")
ZERO_MODE = mpmath.mpf(10) ** (-DPS // 2)   # σ_i / σ_1 below this: C has no such mode (σ_i = 0)


def scalar_fixed_points(der: Derivation) -> list[FixedPointSet]:
    """Critical sets of ``der`` with scalar Gaussian or finite tasks (d_y = 1; module
    docstring), by the structure the model states: ``head_products`` (Merged, MultiHead,
    rank-limited heads) or ``signal_paths`` (FullLSA's invariant sets).

    Parameters
    ----------
    der : Derivation
        A derivation with d_y = 1 of a model with one of those structures.

    Returns
    -------
    list of FixedPointSet
        Each with its kind decided (``criticality.classify``).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.scalarsets import scalar_fixed_points
    >>> der = derive(models.MultiHead(1, heads=2), ICLData(d=1, N=4, Lambda=np.eye(1)))
    >>> [(fp.name, fp.loss, fp.kind) for fp in scalar_fixed_points(der)]
    [('global minimum', 1/6, 'minimum'), ('saddle set', 1/2, 'strict saddle')]
    """
    require_structure(der.model)
    form = ProductForm(der)
    heads = der.model.head_products()
    if heads is None:
        return _invariant_sets(der, form, der.model.signal_paths())
    if heads.rank is not None:
        return _low_rank_sets(der, form, heads)
    if len(heads.heads) == 1 and der.model.product_model() is der.model:
        return _merged_sets(der, form, heads.heads[0])
    return _multihead_sets(der, form, heads.heads)


class ProductForm:
    """L = F(M) for d_y = 1, the loss of the prediction ŷ = S_yx M x_q / N shared by Merged
    (M = uQ), MultiHead (M = Σ_h u_h Q_h) and SeparateKQ (M = Σ_h u_h W_K,hᵀ W_Q,h), derived on
    the Merged model with the same data. F is quadratic, ∂F/∂M = 𝒜(M) − B with 𝒜 linear; M*
    solves 𝒜(M*) = B exactly (SymPy).

    Parameters
    ----------
    der : Derivation
        Of a model with a product form and d_y = 1.

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.scalarsets import ProductForm
    >>> F = ProductForm(derive(models.MultiHead(1, heads=2), ICLData(d=1, N=4, Lambda=np.eye(1))))
    >>> M_star = sp.Matrix([[sp.Rational(2, 3)]])          # N / ((N + 2) λ): F'(M*) = 0
    >>> F.gradient(M_star), F.loss(M_star), F.loss(sp.zeros(1, 1))
    (Matrix([[0]]), 1/6, 1/2)
    """

    def __init__(self, der: Derivation):
        d = der.data.d
        merged = merged_counterpart(der)
        self.d = d
        self.F, self.M = product_loss(merged)
        self.G: MatPoly = self.F.diff(self.M)
        self.vals = merged.values({"V": 0, "Q": sp.zeros(d, d)})
        m = entry_symbols("m", d, d)
        grad = self.G.evaluate(dict(self.vals, M=m), (d, d))
        solution = sp.solve(list(grad), list(m), dict=True)
        if len(solution) != 1:
            raise ValueError("the stationarity equation of F(M) has no unique solution")
        self.M_star = m.subs(solution[0]).applyfunc(sp.factor)
        self.B = -self.gradient(sp.zeros(d, d))                   # −∂F/∂M at M = 0

    def loss(self, M: sp.Matrix):
        """F(M).

        Parameters
        ----------
        M : sympy.Matrix
            d × d.

        Returns
        -------
        sympy.Expr
        """
        return self.F.evaluate(dict(self.vals, M=M))

    def gradient(self, M: sp.Matrix) -> sp.Matrix:
        """∂F/∂M = 𝒜(M) − B.

        Parameters
        ----------
        M : sympy.Matrix
            d × d.

        Returns
        -------
        sympy.Matrix
        """
        return self.G.evaluate(dict(self.vals, M=M), (self.d, self.d))

    def operator_factors(self) -> tuple[mpmath.matrix, mpmath.matrix]:
        """(X, Y) with 𝒜(M) = X M Y, both symmetric positive definite, found from 𝒜 itself:
        the rearrangement R[(i,j),(l,k)] = ∂𝒜(M)_ik/∂M_jl of a two-sided product is the rank-one
        vec(X) vec(Y)ᵀ (Van Loan); an 𝒜 without that structure is an error.

        Returns
        -------
        tuple of mpmath.matrix
            (X, Y) at DPS digits.
        """
        with mpmath.workdps(DPS):
            return self._operator_factors()

    def _operator_factors(self):
        d = self.d
        R = mpmath.matrix(d * d, d * d)
        for j in range(d):
            for l in range(d):
                E = sp.zeros(d, d)
                E[j, l] = 1
                col = self.gradient(E) + self.B                    # 𝒜(E_jl)
                for i in range(d):
                    for k in range(d):
                        R[i * d + j, l * d + k] = to_mp(col[i, k])
        U, S, V = mpmath.svd_r(R)
        if len(S) > 1 and S[1] > mpmath.mpf(10) ** -20 * S[0]:
            raise InputError("data", "∂F/∂M is not a two-sided product X M Y: no reduction "
                             "to a singular-value problem")
        X = mpmath.matrix(d, d)
        Y = mpmath.matrix(d, d)
        sign = 1 if sum(U[i * d + i, 0] for i in range(d)) > 0 else -1
        for i in range(d):
            for j in range(d):
                X[i, j] = sign * mpmath.sqrt(S[0]) * U[i * d + j, 0]
                Y[i, j] = sign * mpmath.sqrt(S[0]) * V[0, i * d + j]
        return X, Y


def _balanced_factor(M: sp.Matrix) -> tuple:
    """u, Q with uQ = M and u² = ‖Q‖_F² (the balanced point of u² − ‖Q‖²)."""
    u = sp.sqrt(sp.sqrt((M.T * M).trace()))
    return u, (M / u if u != 0 else sp.zeros(*M.shape))


def _merged_classes(form: ProductForm) -> list[tuple]:
    """(name, equations, balanced point {V, Q}, loss, info) of the Merged critical sets."""
    d = form.d
    u, Q0 = _balanced_factor(form.M_star)
    Q = sp.MatrixSymbol("Q", d, d)
    return [("global minimum", [sp.Eq(sp.Symbol("u") * Q, sp.MatrixSymbol("M^*", d, d))],
             {"V": sp.Matrix([[u]]), "Q": Q0}, form.loss(form.M_star),
             {"M_star": form.M_star, "M": form.M_star}),
            ("saddle set", [sp.Eq(sp.Symbol("u"), 0),
                            sp.Eq(sp.Trace(Q.T * sp.ImmutableMatrix(form.B)), 0)],
             {"V": sp.zeros(1, 1), "Q": sp.zeros(d, d)}, form.loss(sp.zeros(d, d)),
             {"growth_direction": form.B, "M": sp.zeros(d, d)})]


def _merged_sets(der: Derivation, form: ProductForm, head: tuple) -> list[FixedPointSet]:
    """The two Merged classes at the model's letters ``head`` = (value, key-query)."""
    index = index_counter(der)
    minimum, saddle = (
        critical_set(der, index, name, eqs, dict(zip(head, (point["V"], point["Q"]))), loss,
                      info) for name, eqs, point, loss, info in _merged_classes(form))
    return classify(der, index, [certified(minimum, CONVEX), saddle])


def _multihead_sets(der: Derivation, form: ProductForm, heads: tuple) -> list[FixedPointSet]:
    """∂L/∂Q_h = u_h ∇F(M), ∂L/∂u_h = ⟨Q_h, ∇F(M)⟩: either ∇F(M) = 0 (M = M*, the minimum
    set Σ_h u_h Q_h = M*) or every u_h = 0, so M = 0 and ⟨Q_h, B⟩ = 0 for every head
    (``heads``: per head its letters (u_h, Q_h))."""
    d, H = form.d, len(heads)
    index = index_counter(der)
    u, Q0 = _balanced_factor(form.M_star / H)                 # each head carries M*/H
    share = {**{V: sp.Matrix([[u]]) for V, _ in heads}, **{Q: Q0 for _, Q in heads}}
    origin = {**{V: sp.zeros(1, 1) for V, _ in heads}, **{Q: sp.zeros(d, d) for _, Q in heads}}
    uh = [sp.Symbol(f"u_{h}") for h in range(H)]
    Qh = [sp.MatrixSymbol(f"Q_{h}", d, d) for h in range(H)]
    M_sum = sp.MatAdd(*[u_ * Q_ for u_, Q_ in zip(uh, Qh)])
    minimum = critical_set(der, index, "global minimum",
                            [sp.Eq(M_sum, sp.MatrixSymbol("M^*", d, d))],
                            share, form.loss(form.M_star),
                            {"M_star": form.M_star, "M": form.M_star})
    saddle = critical_set(
        der, index, "saddle set", [sp.Eq(u_, 0) for u_ in uh]
        + [sp.Eq(sp.Trace(Q_.T * sp.ImmutableMatrix(form.B)), 0) for Q_ in Qh],
        origin, form.loss(sp.zeros(d, d)), {"growth_direction": form.B, "M": sp.zeros(d, d)})
    return classify(der, index, [certified(minimum, CONVEX), saddle])


def _low_rank_sets(der: Derivation, form: ProductForm, heads) -> list[FixedPointSet]:
    """SeparateKQ: M = Σ_h u_h W_K,hᵀ W_Q,h has rank ≤ H r. With ∂F/∂M = X M Y − B,
    M̃ = X^½ M Y^½ turns F into ½‖M̃‖² − ⟨C, M̃⟩ + const with C = X^-½ B Y^-½ = Σ σ_i a_i b_iᵀ;
    a factorised M is critical iff M̃ = Σ_{i∈S} σ_i a_i b_iᵀ for a subset S of C's singular
    modes with σ_i > 0 and |S| ≤ k = min(rank C, H r) (the reduced-rank regression /
    linear-network landscape; a mode with σ_i = 0, e.g. from fewer tasks than dimensions,
    adds nothing to M̃). One class per
    S: for Σ_w = I the modes are Λ's eigenmodes (principal-component regression in context).
    Representatives are balanced (every conserved quantity zero): modes are dealt to the
    heads' rank slots in order, each head's share factorised through its SVD. Idle heads sit
    at zero, where the loss is cubic in them: such saddles can have Hessian index 0 (they are
    escaped at third order), so ``info['loss_gap']`` (loss above the minimum) is reported.
    ``heads``: the model's ``HeadProducts`` (letters (u_h, W_K,h, W_Q,h) per head, rank r)."""
    if not der.data.is_numeric():
        raise InputError("data", f"critical sets of {der.model!r} (rank-limited heads) need "
                         "numeric Λ, Σ_w, N and σ")
    d, H, r = form.d, len(heads.heads), heads.rank
    modes = _singular_modes(form)
    k = min(len(modes), H * r)
    index = index_counter(der)
    out = []
    for size in range(k, -1, -1):
        for S in combinations(range(len(modes)), size):
            point = {}
            for h in range(H):
                point.update(_head_point(heads.heads[h], [modes[i] for n, i in enumerate(S)
                                                          if n // r == h], d, r))
            M = _mode_sum(modes, S)
            modes_text = ", ".join(str(i + 1) for i in S)
            name = f"singular modes {{{modes_text}}} learned" if S else "origin"
            fp = critical_set(
                der, index, name,
                [sp.Eq(sp.Symbol(f"mode_{i + 1}"), 0) for i in range(len(modes)) if i not in S],
                point, form.loss(M),
                {"M": M, "learned": S, "singular_values": [m[0] for m in modes]})
            if S == tuple(range(k)):             # Eckart–Young in the whitened coordinates
                fp.name = "global minimum" + ("" if k == len(modes) else f" (rank {k})")
                certified(fp, CONVEX if k == len(modes) else ECKART_YOUNG.format(k=k))
            out.append(fp)
    return classify(der, index, with_loss_gaps(out))


def _singular_modes(form: ProductForm) -> list[tuple]:
    """(σ_i, left_i, right_i) with M̃-critical points M = Σ_{i∈S} σ_i left_i right_iᵀ:
    C = X^-½ B Y^-½ = Σ σ_i a_i b_iᵀ, left_i = X^-½ a_i, right_i = Y^-½ b_i (σ descending),
    for the modes with σ_i > 0 only (one with σ_i = 0, e.g. from fewer tasks than dimensions,
    adds nothing to M̃: it is no critical set of its own)."""
    X, Y = form.operator_factors()
    with mpmath.workdps(DPS):
        Xm, Ym = (_inverse_sqrt(Z) for Z in (X, Y))
        B = _mp_matrix(form.B)
        a, sigma, b = mpmath.svd_r(Xm * B * Ym)
        return [(sp.Float(sigma[i], DPS), _to_sympy(Xm * a[:, i]), _to_sympy(Ym * b[i, :].T))
                for i in range(form.d) if sigma[i] > ZERO_MODE * sigma[0]]


def _mode_sum(modes: list, S) -> sp.Matrix:
    d = modes[0][1].rows
    return sum((modes[i][0] * modes[i][1] * modes[i][2].T for i in S), sp.zeros(d, d))


def _head_point(head: tuple, share: list, d: int, r: int) -> dict:
    """Balanced V_h, W_K,h, W_Q,h (letter names ``head``) for the head carrying
    Σ σ_i left_i right_iᵀ over ``share``: rows √σ_i·c·left_iᵀ/‖…‖ pairs through the SVD of the
    head's share, u_h² = ‖W_K‖² = ‖W_Q‖²."""
    value, key, query = head
    if not share:
        return {value: sp.zeros(1, 1), key: sp.zeros(r, d), query: sp.zeros(r, d)}
    M_h = _mode_sum(share, range(len(share)))
    WK, WQ = sp.zeros(r, d), sp.zeros(r, d)
    with mpmath.workdps(DPS):
        U, S, V = mpmath.svd_r(_mp_matrix(M_h))
        total = sum(S[j] for j in range(len(share)))
        c = total ** (-mpmath.mpf(1) / 6)                       # c⁻⁴ = c² Σ s
        for j in range(len(share)):
            for col in range(d):
                WK[j, col] = sp.Float(c * mpmath.sqrt(S[j]) * U[col, j], DPS)
                WQ[j, col] = sp.Float(c * mpmath.sqrt(S[j]) * V[j, col], DPS)
        return {value: sp.Matrix([[sp.Float(c ** -2, DPS)]]), key: WK, query: WQ}


def _inverse_sqrt(Z: mpmath.matrix) -> mpmath.matrix:
    """Z^-½ of a symmetric positive-definite matrix (at the working precision)."""
    e, Q = mpmath.eigsy(Z)
    if min(e) <= 0:
        raise InputError("data", "the quadratic form of F(M) is not positive definite")
    return Q * mpmath.diag([1 / mpmath.sqrt(v) for v in e]) * Q.T


def _mp_matrix(m: sp.Matrix) -> mpmath.matrix:
    return mpmath.matrix([[to_mp(v) for v in row] for row in m.tolist()])


def _to_sympy(v) -> sp.Matrix:
    return sp.Matrix([sp.Float(x, DPS) for x in v])


def _invariant_sets(der: Derivation, form: ProductForm, paths: tuple) -> list[FixedPointSet]:
    """FullLSA (d_y = 1) has two invariant sets on which it is a product-form model (``paths``:
    ((P₂, Q₁), (P₁, Q₂)), the model's ``signal_paths``):

    * P₁ = 0, Q₂ = 0 (docs/math.md §2): ŷ = P₂ S_yx Q₁ x_q / N, the Merged model (u = P₂, Q = Q₁);
    * P₂ = 0, Q₁ = 0: ŷ = P₁ S_xy Q₂ x_q / N = S_yx (P₁ᵀQ₂) x_q / N, the same F at the rank-one
      M = P₁ᵀQ₂, so its critical points are the single singular modes of SeparateKQ's
      landscape. It is invariant when the task law is symmetric (W → −W; the gradients along
      P₂, Q₁ are odd in W there), which each candidate's exact gradient confirms.

    Critical sets of F on either set are critical sets of FullLSA; their Hessian index is
    counted in all of FullLSA's active entries. Points off both sets are not enumerated."""
    (P2, Q1), (P1, Q2) = paths
    d, index = form.d, index_counter(der)
    zero = sp.zeros(1, d)
    out = []
    for name, eqs, point, loss, info in _merged_classes(form):
        full = {P1: zero, P2: point["V"], Q1: point["Q"], Q2: zero}
        out.append(critical_set(der, index, f"{name} (on {P1} = 0, {Q2} = 0)",
                                 eqs + [sp.Eq(sp.Symbol(_subscripted(P1)), 0),
                                        sp.Eq(sp.Symbol(_subscripted(Q2)), 0)],
                                 full, loss, info))
    if der.data.is_numeric():
        for i, (s_i, left, right) in enumerate(_singular_modes(form)):
            scale = sp.sqrt(s_i * left.norm() * right.norm())         # balanced: ‖P₁‖ = ‖Q₂‖
            full = {P1: scale * left.T / left.norm(), P2: sp.zeros(1, 1),
                    Q1: sp.zeros(d, d), Q2: scale * right.T / right.norm()}
            grads = der.gradient_value(critical_params(der, full))
            if max(abs(g) for G in grads.values() for g in G) > 1e-20 * (1 + abs(s_i)):
                continue                                    # the set is not invariant here
            M = _mode_sum([(s_i, left, right)], [0])
            out.append(critical_set(
                der, index, f"rank-one mode {i + 1} (on {P2} = 0, {Q1} = 0)",
                [sp.Eq(sp.Symbol(_subscripted(P2)), 0), sp.Eq(sp.Symbol(_subscripted(Q1)), 0),
                 sp.Eq(sp.MatrixSymbol(_subscripted(P1), 1, d).T * sp.MatrixSymbol(_subscripted(Q2), 1, d),
                       sp.ImmutableMatrix(M))],
                full, form.loss(M), {"M": M, "singular_value": s_i}))
    return classify(der, index, with_loss_gaps(out))


def _subscripted(name: str) -> str:
    """A letter name with its trailing index as a subscript: "P1" → "P_1"."""
    return re.sub(r"(\d+)$", r"_\1", name)
