"""Critical sets of the Merged model, their loss and Hessian index (MATH.md §3.2–3.3).

Scalar tasks (d_y = 1): V = u is a number and every term of the derived loss has as many u's as
Q's (the rescaling symmetry), so L(u, Q) = F(M) with M = uQ, and F is quadratic. Then
* ``global minimum``: {uQ = M*} with ∂F/∂M (M*) = 0 — a linear matrix equation, solved exactly;
* ``saddle set``: {u = 0, ∂F/∂M(0) ⊥ Q}, which contains the origin (small initialisation).

The paper's vector tasks (tasks sharing Λ's eigenbasis): in the eigenbasis, V = diag(p),
Q = diag(q); for every subset S of eigenmodes there is a critical set with p_α q_α ≠ 0 exactly
for α ∈ S, found by Newton's method (mpmath) on the exact, coupled reduced equations, with the
rescaling gauge fixed by Σ (p_α² − q_α²) = 0.

Every set carries a representative point, its loss, and the Hessian index (number of negative
eigenvalues of the full model's Hessian there; 0 for minima).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import mpmath
import sympy as sp

from .derive import Derivation
from .errors import InputError
from .solutions import mode_reduction
from .words import Mat, MatPoly, TracePoly

INDEX_TOL = 1e-12


@dataclass
class FixedPointSet:
    name: str
    equations: list
    point: dict
    loss: object
    hessian_index: int | None       # None when the data are symbolic
    info: dict = field(default_factory=dict)


def _explicit_parameters(der: Derivation) -> tuple[dict, list]:
    """Letter name -> sympy Matrix of fresh entry symbols, and the flat symbol list."""
    sizes, values, flat = der.model.sizes(), {}, []
    for name, letter in der.letters.items():
        m = sp.Matrix(sizes[letter.rows], sizes[letter.cols],
                      lambda i, j: sp.Symbol(f"{name}_{i}{j}", real=True))
        values[name] = m
        flat += list(m)
    return values, flat


class HessianIndex:
    """Counts negative eigenvalues of the Hessian of the full loss (explicit in every parameter
    entry, built once) at given points (letter -> Matrix)."""

    def __init__(self, der: Derivation, data_values: dict):
        params, self.flat = _explicit_parameters(der)
        vals = dict(data_values)
        vals.update(params)
        L = sp.expand(der.loss_poly.evaluate(vals))
        self.params = params
        self.H = sp.lambdify(self.flat, sp.hessian(L, self.flat), modules="mpmath")

    def __call__(self, point: dict) -> int:
        args = [point[n][k] for n, m in self.params.items() for k in range(len(m))]
        with mpmath.workdps(30):
            H = mpmath.matrix(self.H(*[mpmath.mpf(str(sp.N(a, 30))) for a in args]))
            eigs = mpmath.eigsy(H, eigvals_only=True)
            scale = max([1] + [abs(e) for e in eigs])
            return sum(1 for e in eigs if e < -INDEX_TOL * scale)


def fixed_points(der: Derivation) -> list[FixedPointSet]:
    """Critical sets of ``der`` (Merged model with numeric data)."""
    if der.model.name != "Merged":
        raise InputError("der", "fixed points are derived for the Merged model so far")
    if der.data.tasks == "diagonal":
        if not all(v.is_number for v in der.data.Lambda):
            raise InputError("data", "eigenmode critical sets need numeric Λ")
        return _eigenmode_sets(der)
    if der.data.d_y != 1:
        raise InputError("data", "for gaussian tasks, fixed points are derived for d_y = 1")
    return _scalar_sets(der)


# --- scalar tasks ------------------------------------------------------------------------------

def _name(letter):
    return getattr(letter, "name", None)


def product_loss(der: Derivation) -> tuple[TracePoly, Mat]:
    """F(M) for d_y = 1: V = u is 1×1, so each V in a word is the scalar u and drops out of it
    (an emptied word is tr(1) = 1), and a term with k u's has k Q's, so u^k·(Q-words) = (the
    same words with each Q replaced by M = uQ)."""
    M = Mat("M")
    out = TracePoly()
    for traces, coeff in der.loss_poly.terms.items():
        k_v, rest = 0, []
        for w in traces:
            kept = tuple(Mat("M", a.T) if _name(a) == "Q" else a for a in w if _name(a) != "V")
            k_v += len(w) - len(kept)
            if kept:
                rest.append(kept)
        if sum(_name(a) == "M" for w in rest for a in w) != k_v:
            raise InputError("der", "the loss is not a function of the product uQ")
        out = out + TracePoly({tuple(rest): coeff})
    return out, M


def _scalar_sets(der: Derivation) -> list[FixedPointSet]:
    d = der.data.d
    F, M = product_loss(der)
    G: MatPoly = F.diff(M)
    vals = der.values({"V": 0, "Q": sp.zeros(d, d)})
    m = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"m_{i}{j}", real=True))
    vals["M"] = m
    grad = G.evaluate(vals, (d, d))
    solution = sp.solve(list(grad), list(m), dict=True)
    if len(solution) != 1:
        raise ValueError("the stationarity equation of F(M) has no unique solution")
    M_star = m.subs(solution[0]).applyfunc(sp.factor)
    numeric = all(v.is_number for v in M_star)
    index = HessianIndex(der, vals) if numeric else (lambda point: None)
    vals_star = dict(vals, M=M_star)
    loss_star = F.evaluate(vals_star)
    u = sp.sqrt(sp.sqrt((M_star.T * M_star).trace()))          # balanced: u² = ‖Q‖²
    point = {"V": sp.Matrix([[u]]), "Q": M_star / u}
    B = -G.evaluate(dict(vals, M=sp.zeros(d, d)), (d, d))       # −∂F/∂M at M = 0
    Q = sp.MatrixSymbol("Q", d, d)
    minimum = FixedPointSet(
        "global minimum", [sp.Eq(sp.Symbol("u") * Q, sp.MatrixSymbol("M^*", d, d))],
        point, loss_star, index(point), {"M_star": M_star})
    origin = {"V": sp.zeros(1, 1), "Q": sp.zeros(d, d)}
    saddle = FixedPointSet(
        "saddle set", [sp.Eq(sp.Symbol("u"), 0), sp.Eq(sp.Trace(Q.T * sp.ImmutableMatrix(B)), 0)],
        origin, F.evaluate(dict(vals, M=sp.zeros(d, d))), index(origin),
        {"growth_direction": B})
    return [minimum, saddle]


# --- vector tasks in the eigenbasis ----------------------------------------------------------

def _eigenmode_sets(der: Derivation) -> list[FixedPointSet]:
    red = mode_reduction(der)
    d = len(red.s)
    grads = [sp.diff(red.loss, v) for v in red.p + red.q]
    U = der.data.eigenbasis()
    vals = der.values({"V": sp.zeros(d, d), "Q": sp.zeros(d, d)})
    index = HessianIndex(der, vals)
    out = []
    for size in range(d, -1, -1):
        for S in combinations(range(d), size):
            p, q = _solve_subset(red, grads, S)
            point = {"V": U * sp.diag(*p) * U.T, "Q": U * sp.diag(*q) * U.T}
            subs = dict(zip(red.p + red.q, p + q))
            name = "origin" if not S else f"modes {tuple(k + 1 for k in S)} learned"
            if len(S) == d:
                name = "global minimum (all modes learned)"
            out.append(FixedPointSet(
                name, [sp.Eq(red.p[k] * red.q[k], 0) for k in range(d) if k not in S],
                point, red.loss.subs(subs), index(point),
                {"a": [p[k] * q[k] for k in range(d)], "learned": S}))
    return out


def _solve_subset(red, grads, S) -> tuple[list, list]:
    """p, q (Floats) at the critical point where exactly the modes in S are learned."""
    d = len(red.s)
    if not S:
        return [sp.Integer(0)] * d, [sp.Integer(0)] * d
    zero = {v: 0 for k in range(d) if k not in S for v in (red.p[k], red.q[k])}
    unknowns = [red.p[k] for k in S] + [red.q[k] for k in S]
    eqs = [g.subs(zero) for g in grads]
    eqs = [e for e in eqs if e != 0]
    eqs = eqs[:-1] + [sum(red.p[k] ** 2 - red.q[k] ** 2 for k in S)]   # gauge for the scaling
    f = sp.lambdify(unknowns, eqs, modules="mpmath")
    guess = [mpmath.sqrt(red.fixed_point(k)) for k in S] * 2
    with mpmath.workdps(30):
        root = mpmath.findroot(lambda *x: f(*x), guess)
    values = dict(zip(unknowns, (sp.Float(v, 30) for v in root)))
    p = [values.get(red.p[k], sp.Integer(0)) for k in range(d)]
    q = [values.get(red.q[k], sp.Integer(0)) for k in range(d)]
    return p, q
