"""Critical sets of every model with scalar tasks, their loss and Hessian index (MATH.md §3.2).

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

from dataclasses import dataclass, field
from itertools import combinations

import mpmath
import numpy as np
import sympy as sp

from .algorithm import LearnedAlgorithm
from .criticality import Escape, classify
from .derive import Derivation
from .errors import InputError
from .models import FullLSA, Merged, MultiHead, SeparateKQ
from .polyeval import PolyFunction
from .productform import merged_counterpart, product_loss
from .words import MatPoly, entry_symbol

INDEX_TOL = 1e-12
DPS = 40        # digits for the singular-mode reduction (exact gradients vanish to ~1e-35)


@dataclass
class FixedPointSet:
    """A critical set: its defining ``equations``, a representative ``point`` (the model's
    parameters: sympy Matrix, or Array for stacked heads), its ``loss`` and ``hessian_index``
    (negative Hessian eigenvalues at the point; None for symbolic data). For scalar tasks
    ``info['M']`` is the set's learned matrix: ŷ = S_yx M x_q / N there. ``info['loss_gap']``
    is the loss above the lowest set; ``info['escape']`` (SeparateKQ with eigenbasis tasks),
    where present, a point of lower loss found by the restricted descent next to the
    representative. ``kind``: "minimum", "strict saddle", "degenerate saddle" or "unresolved"
    (``criticality.KINDS``), proved by ``evidence`` (a sentence); for a degenerate saddle
    ``escape`` is the certificate (``criticality.Escape``: direction, order, coefficient, a
    point of lower loss). ``algorithm``: for a minimum, its learned algorithm
    (``algorithm.LearnedAlgorithm``: the predictor, the context statistics it uses and, for a
    gradient step, its preconditioner)."""

    name: str
    equations: list
    point: dict
    loss: object
    hessian_index: int | None
    info: dict = field(default_factory=dict)
    kind: str = "unresolved"
    evidence: str = ""
    escape: Escape | None = None
    algorithm: LearnedAlgorithm | None = None


CONVEX = ("L = F(M), F a convex quadratic in the learned matrix M (an expected squared error of "
          "a prediction linear in M); the set attains ∇F(M) = 0, F's minimum over all M: a "
          "global minimum")
ECKART_YOUNG = ("L = F(M) = ½‖X^½ M Y^½ − C‖² + const over the matrices of rank ≤ {k} the model "
                "reaches; the set keeps C's {k} largest singular modes, the minimum over that "
                "rank (Eckart–Young): a global minimum")


def _certified(fp: FixedPointSet, evidence: str) -> FixedPointSet:
    """``fp`` marked a minimum by a global argument."""
    fp.kind, fp.evidence = "minimum", evidence
    return fp


def _critical_set(der: Derivation, index, name, equations, letters: dict, loss,
                  info: dict) -> FixedPointSet:
    """A FixedPointSet from its point given per letter (block); the letters go in
    ``info['letters']``, the point in the model's parameters."""
    return FixedPointSet(name, equations, _critical_params(der, letters), loss, index(letters),
                         {**info, "letters": letters})


def _critical_params(der: Derivation, letters: dict) -> dict:
    """The model's parameters (sympy Matrix, or Array for stacked heads) from letter values;
    entries no letter covers (inert) are zero."""
    sizes, params = der.model.sizes(), {}
    for p in der.model.params:
        params[p.name] = np.zeros(p.shape(sizes), dtype=object)
        params[p.name][...] = sp.Integer(0)
    for b in der.model.blocks():
        block = params[b.param][b.index(sizes)]
        value = letters[b.letter.name]
        for i in range(value.rows):
            for j in range(value.cols):
                block[i, j] = value[i, j]
    return {n: sp.Matrix(v.tolist()) if v.ndim == 2 else sp.Array(v.tolist())
            for n, v in params.items()}


def entry_symbols(name: str, rows: int, cols: int) -> sp.Matrix:
    """A rows × cols Matrix of one ``entry_symbol`` per entry."""
    return sp.Matrix(rows, cols, lambda i, j: entry_symbol(name, i, j))


def _explicit_parameters(der: Derivation) -> tuple[dict, list]:
    """Letter name -> sympy Matrix of fresh entry symbols, and the flat symbol list."""
    sizes, values, flat = der.model.sizes(), {}, []
    for name, letter in der.letters.items():
        m = entry_symbols(name, sizes[letter.rows], sizes[letter.cols])
        values[name] = m
        flat += list(m)
    return values, flat


class HessianIndex:
    """The full loss explicit in every parameter entry (built once, as a ``PolyFunction``): at
    points (letter -> Matrix), the number of negative Hessian eigenvalues (calling it), and the
    loss and the largest gradient entry at DPS digits (``loss``, ``gradient_size``)."""

    digits = DPS

    def __init__(self, der: Derivation):
        params, flat = _explicit_parameters(der)
        vals = der.values(_zeros(der))
        vals.update(params)
        self.params = params
        self.L = PolyFunction(sp.expand(der.loss_poly.evaluate(vals)), flat, DPS)

    def _args(self, point: dict, digits: int) -> list:
        return [_mp(point[n][k], digits) for n, m in self.params.items() for k in range(len(m))]

    def flat(self, point: dict) -> list:
        """The entries of ``point`` (letter -> Matrix) in this function's variable order."""
        return self._args(point, DPS)

    def letters(self, flat: list) -> dict:
        """Letter -> sympy Matrix (DPS-digit Floats) from entries in the variable order."""
        out, k = {}, 0
        for n, m in self.params.items():
            out[n] = sp.Matrix(m.rows, m.cols, [sp.Float(v, DPS) for v in flat[k:k + len(m)]])
            k += len(m)
        return out

    def __call__(self, point: dict) -> int:
        """Negative eigenvalues below −INDEX_TOL × the largest |eigenvalue| (float64: the
        Hessian's rounding error, ~1e-16 of its norm, is far below that threshold)."""
        eigs = np.linalg.eigvalsh(self.L.floats().hessian(
            [float(v) for v in self._args(point, 17)]))
        scale = max([1.0] + [abs(e) for e in eigs])
        return int(sum(1 for e in eigs if e < -INDEX_TOL * scale))

    def loss(self, point: dict) -> sp.Float:
        with mpmath.workdps(DPS):
            return sp.Float(self.L.value(self._args(point, DPS)), DPS)

    def gradient_size(self, point: dict) -> mpmath.mpf:
        with mpmath.workdps(DPS):
            return max([abs(g) for g in self.L.gradient(self._args(point, DPS))] + [0])


def fixed_points(der: Derivation) -> list[FixedPointSet]:
    """Critical sets of ``der``: every model with scalar tasks (d_y = 1, see the module
    docstring); vector tasks in ``vectorsets`` (every model with Gaussian task rows or the
    paper's eigenbasis tasks, with the exceptions listed there)."""
    if type(der.model) not in (Merged, MultiHead, SeparateKQ, FullLSA):
        raise InputError("model", f"critical sets are enumerated for the one-layer models "
                         f"Merged, MultiHead, SeparateKQ, FullLSA, not {der.model!r} (for a "
                         "stack of Merged layers see theory.gdsteps)")
    if der.data.d_y != 1 or der.data.tasks == "diagonal":
        from .vectorsets import vector_fixed_points
        return vector_fixed_points(der)
    form = ProductForm(der)
    if der.model.name == "Merged":
        return _merged_sets(der, form)
    if der.model.name == "MultiHead":
        return _multihead_sets(der, form)
    if der.model.name == "SeparateKQ":
        return _low_rank_sets(der, form)
    return _invariant_sets(der, form)


# --- scalar tasks ------------------------------------------------------------------------------

class ProductForm:
    """L = F(M) for d_y = 1, the loss of the prediction ŷ = S_yx M x_q / N shared by Merged
    (M = uQ), MultiHead (M = Σ_h u_h Q_h) and SeparateKQ (M = Σ_h u_h W_K,hᵀ W_Q,h), derived on
    the Merged model with the same data. F is quadratic, ∂F/∂M = 𝒜(M) − B with 𝒜 linear; M*
    solves 𝒜(M*) = B exactly (SymPy)."""

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
        return self.F.evaluate(dict(self.vals, M=M))

    def gradient(self, M: sp.Matrix) -> sp.Matrix:
        return self.G.evaluate(dict(self.vals, M=M), (self.d, self.d))

    def operator_factors(self) -> tuple[mpmath.matrix, mpmath.matrix]:
        """(X, Y) with 𝒜(M) = X M Y, both symmetric positive definite, found from 𝒜 itself:
        the rearrangement R[(i,j),(l,k)] = ∂𝒜(M)_ik/∂M_jl of a two-sided product is the rank-one
        vec(X) vec(Y)ᵀ (Van Loan); an 𝒜 without that structure is an error."""
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
                        R[i * d + j, l * d + k] = _mp(col[i, k])
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


def _index(der: Derivation):
    """The Hessian-index counter of ``der`` (None for every point when the data are symbolic)."""
    return HessianIndex(der) if der.data.is_numeric() else (lambda point: None)


def _zeros(der: Derivation) -> dict:
    """The model's parameters, all zero."""
    shapes = der.model.shapes()
    return {name: sp.zeros(*shape) if len(shape) == 2 else sp.Array.zeros(*shape)
            for name, shape in shapes.items()}


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


def _merged_sets(der: Derivation, form: ProductForm) -> list[FixedPointSet]:
    index = _index(der)
    minimum, saddle = (_critical_set(der, index, *cls) for cls in _merged_classes(form))
    return classify(der, index, [_certified(minimum, CONVEX), saddle])


def _multihead_sets(der: Derivation, form: ProductForm) -> list[FixedPointSet]:
    """∂L/∂Q_h = u_h ∇F(M), ∂L/∂u_h = ⟨Q_h, ∇F(M)⟩: either ∇F(M) = 0 (M = M*, the minimum
    set Σ_h u_h Q_h = M*) or every u_h = 0, so M = 0 and ⟨Q_h, B⟩ = 0 for every head."""
    d, H = form.d, der.model.heads
    index = _index(der)
    u, Q0 = _balanced_factor(form.M_star / H)                 # each head carries M*/H
    share = {**{f"V{h}": sp.Matrix([[u]]) for h in range(H)},
             **{f"Q{h}": Q0 for h in range(H)}}
    origin = {**{f"V{h}": sp.zeros(1, 1) for h in range(H)},
              **{f"Q{h}": sp.zeros(d, d) for h in range(H)}}
    uh = [sp.Symbol(f"u_{h}") for h in range(H)]
    Qh = [sp.MatrixSymbol(f"Q_{h}", d, d) for h in range(H)]
    M_sum = sp.MatAdd(*[u_ * Q_ for u_, Q_ in zip(uh, Qh)])
    minimum = _critical_set(der, index, "global minimum",
                            [sp.Eq(M_sum, sp.MatrixSymbol("M^*", d, d))],
                            share, form.loss(form.M_star),
                            {"M_star": form.M_star, "M": form.M_star})
    saddle = _critical_set(
        der, index, "saddle set", [sp.Eq(u_, 0) for u_ in uh]
        + [sp.Eq(sp.Trace(Q_.T * sp.ImmutableMatrix(form.B)), 0) for Q_ in Qh],
        origin, form.loss(sp.zeros(d, d)), {"growth_direction": form.B, "M": sp.zeros(d, d)})
    return classify(der, index, [_certified(minimum, CONVEX), saddle])


def _low_rank_sets(der: Derivation, form: ProductForm) -> list[FixedPointSet]:
    """SeparateKQ: M = Σ_h u_h W_K,hᵀ W_Q,h has rank ≤ k = min(d, H r). With ∂F/∂M = X M Y − B,
    M̃ = X^½ M Y^½ turns F into ½‖M̃‖² − ⟨C, M̃⟩ + const with C = X^-½ B Y^-½ = Σ σ_i a_i b_iᵀ;
    a factorised M is critical iff M̃ = Σ_{i∈S} σ_i a_i b_iᵀ for a subset S of C's singular
    modes with |S| ≤ k (the reduced-rank regression / linear-network landscape). One class per
    S: for Σ_w = I the modes are Λ's eigenmodes (principal-component regression in context).
    Representatives are balanced (every conserved quantity zero): modes are dealt to the
    heads' rank slots in order, each head's share factorised through its SVD. Idle heads sit
    at zero, where the loss is cubic in them: such saddles can have Hessian index 0 (they are
    escaped at third order), so ``info['loss_gap']`` (loss above the minimum) is reported."""
    if not der.data.is_numeric():
        raise InputError("data", "SeparateKQ critical sets need numeric Λ, Σ_w, N and σ")
    d, H, r = form.d, der.model.heads, der.model.rank
    modes = _singular_modes(form)
    k = min(d, H * r)
    index = _index(der)
    out = []
    for size in range(k, -1, -1):
        for S in combinations(range(d), size):
            point = {}
            for h in range(H):
                point.update(_head_point(h, [modes[i] for n, i in enumerate(S) if n // r == h],
                                         d, r))
            M = _mode_sum(modes, S)
            modes_text = ", ".join(str(i + 1) for i in S)
            name = f"singular modes {{{modes_text}}} learned" if S else "origin"
            fp = _critical_set(
                der, index, name,
                [sp.Eq(sp.Symbol(f"mode_{i + 1}"), 0) for i in range(d) if i not in S],
                point, form.loss(M),
                {"M": M, "learned": S, "singular_values": [m[0] for m in modes]})
            if S == tuple(range(k)):             # Eckart–Young in the whitened coordinates
                fp.name = "global minimum" + ("" if k == d else f" (rank {k})")
                _certified(fp, CONVEX if k == d else ECKART_YOUNG.format(k=k))
            out.append(fp)
    return classify(der, index, _with_loss_gaps(out))


def _with_loss_gaps(sets: list) -> list:
    """Sorted by loss, each with ``info['loss_gap']`` above the lowest (symbolic losses
    cannot be ordered: ``sets`` unchanged)."""
    if not all(sp.sympify(fp.loss).is_number for fp in sets):
        return sets
    best = min(fp.loss for fp in sets)
    for fp in sets:
        fp.info["loss_gap"] = fp.loss - best
    return sorted(sets, key=lambda fp: fp.loss)


def _singular_modes(form: ProductForm) -> list[tuple]:
    """(σ_i, left_i, right_i) with M̃-critical points M = Σ_{i∈S} σ_i left_i right_iᵀ:
    C = X^-½ B Y^-½ = Σ σ_i a_i b_iᵀ, left_i = X^-½ a_i, right_i = Y^-½ b_i (σ descending)."""
    X, Y = form.operator_factors()
    with mpmath.workdps(DPS):
        Xm, Ym = (_inverse_sqrt(Z) for Z in (X, Y))
        B = _mp_matrix(form.B)
        a, sigma, b = mpmath.svd_r(Xm * B * Ym)
        return [(sp.Float(sigma[i], DPS), _to_sympy(Xm * a[:, i]), _to_sympy(Ym * b[i, :].T))
                for i in range(form.d)]


def _mode_sum(modes: list, S) -> sp.Matrix:
    d = modes[0][1].rows
    return sum((modes[i][0] * modes[i][1] * modes[i][2].T for i in S), sp.zeros(d, d))


def _head_point(h: int, share: list, d: int, r: int) -> dict:
    """Balanced V_h, W_K,h, W_Q,h for the head carrying Σ σ_i left_i right_iᵀ over ``share``:
    rows √σ_i·c·left_iᵀ/‖…‖ pairs through the SVD of the head's share, u_h² = ‖W_K‖² = ‖W_Q‖²."""
    if not share:
        return {f"V{h}": sp.zeros(1, 1), f"WK{h}": sp.zeros(r, d), f"WQ{h}": sp.zeros(r, d)}
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
        return {f"V{h}": sp.Matrix([[sp.Float(c ** -2, DPS)]]), f"WK{h}": WK, f"WQ{h}": WQ}


def _inverse_sqrt(Z: mpmath.matrix) -> mpmath.matrix:
    """Z^-½ of a symmetric positive-definite matrix (at the working precision)."""
    e, Q = mpmath.eigsy(Z)
    if min(e) <= 0:
        raise InputError("data", "the quadratic form of F(M) is not positive definite")
    return Q * mpmath.diag([1 / mpmath.sqrt(v) for v in e]) * Q.T


def _mp(value, digits: int = DPS) -> mpmath.mpf:
    """A SymPy number as an mpmath number with ``digits`` significant digits."""
    return mpmath.mpf(str(sp.N(value, digits)))


def _mp_matrix(m: sp.Matrix) -> mpmath.matrix:
    return mpmath.matrix([[_mp(v) for v in row] for row in m.tolist()])


def _to_sympy(v) -> sp.Matrix:
    return sp.Matrix([sp.Float(x, DPS) for x in v])


def _invariant_sets(der: Derivation, form: ProductForm) -> list[FixedPointSet]:
    """FullLSA (d_y = 1) has two invariant sets on which it is a product-form model:

    * P₁ = 0, Q₂ = 0 (MATH.md §2): ŷ = P₂ S_yx Q₁ x_q / N, the Merged model (u = P₂, Q = Q₁);
    * P₂ = 0, Q₁ = 0: ŷ = P₁ S_xy Q₂ x_q / N = S_yx (P₁ᵀQ₂) x_q / N, the same F at the rank-one
      M = P₁ᵀQ₂, so its critical points are the single singular modes of SeparateKQ's
      landscape. It is invariant when the task law is symmetric (W → −W; the gradients along
      P₂, Q₁ are odd in W there), which each candidate's exact gradient confirms.

    Critical sets of F on either set are critical sets of FullLSA; their Hessian index is
    counted in all of FullLSA's active entries. Points off both sets are not enumerated."""
    d, index = form.d, _index(der)
    zero = sp.zeros(1, d)
    out = []
    for name, eqs, point, loss, info in _merged_classes(form):
        full = {"P1": zero, "P2": point["V"], "Q1": point["Q"], "Q2": zero}
        out.append(_critical_set(der, index, f"{name} (on P1 = 0, Q2 = 0)",
                                 eqs + [sp.Eq(sp.Symbol("P_1"), 0), sp.Eq(sp.Symbol("Q_2"), 0)],
                                 full, loss, info))
    if der.data.is_numeric():
        for i, (s_i, left, right) in enumerate(_singular_modes(form)):
            scale = sp.sqrt(s_i * left.norm() * right.norm())         # balanced: ‖P₁‖ = ‖Q₂‖
            full = {"P1": scale * left.T / left.norm(), "P2": sp.zeros(1, 1),
                    "Q1": sp.zeros(d, d), "Q2": scale * right.T / right.norm()}
            grads = der.gradient_value(_critical_params(der, full))
            if max(abs(g) for G in grads.values() for g in G) > 1e-20 * (1 + abs(s_i)):
                continue                                    # the set is not invariant here
            M = _mode_sum([(s_i, left, right)], [0])
            out.append(_critical_set(
                der, index, f"rank-one mode {i + 1} (on P2 = 0, Q1 = 0)",
                [sp.Eq(sp.Symbol("P_2"), 0), sp.Eq(sp.Symbol("Q_1"), 0),
                 sp.Eq(sp.MatrixSymbol("P_1", 1, d).T * sp.MatrixSymbol("Q_2", 1, d),
                       sp.ImmutableMatrix(M))],
                full, form.loss(M), {"M": M, "singular_value": s_i}))
    return classify(der, index, _with_loss_gaps(out))
