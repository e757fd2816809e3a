"""What a critical set is — a minimum, a strict or a degenerate saddle, or unresolved — and the
evidence for it (``classify``).

At a representative θ₀ of a critical set (∇L = 0), with Hessian H of the exact loss L (a
polynomial in every parameter entry):

* H has a negative eigenvalue (Hessian index > 0): a **strict saddle**.
* H ⪰ 0 with null space 𝒩. Every continuous symmetry of the model (``symmetry.find_symmetries``:
  linear actions on the letters that leave ŷ unchanged for all data) moves θ₀ along an orbit
  of critical points with the same loss, so its tangent vectors 𝒯 lie in 𝒩. If 𝒩 = 𝒯, H is
  positive definite on the normal space of the orbit: the orbit is a non-degenerate critical
  manifold of minima (Morse–Bott), and the set is a local **minimum**.
* Otherwise a descent at higher order is looked for in 𝒩 ⊖ 𝒯. A cubic form c(v) = ∇³L[v, v, v]/6
  that is not identically zero on 𝒩 is odd, so it takes negative values: along the line
  θ₀ + tv, L = L(θ₀) + c(v) t³ + O(t⁴). The search maximises −c on the unit sphere of 𝒩 ⊖ 𝒯 (seeded
  random starts, then the power iteration v ← −P∇c(v)/‖·‖). If c vanishes, fourth order along
  the curve θ₀ + tv + t²w/2, w = −H⁺g, g = ∇³L[v, v, ·] (g ⊥ 𝒩 when c ≡ 0 on 𝒩):
  L = L(θ₀) + (∇⁴L[v⁴]/24 − ⟨g, H⁺g⟩/8) t⁴ + O(t⁵). Either gives a **degenerate saddle** with an
  ``Escape``: the curve, the order k, the coefficient of t^k (the exact loss along the curve is a
  polynomial in t; its coefficients are computed from the polynomial at DPS digits), and the
  point of lowest loss on the curve before it rises again.
* None of these: **unresolved** (never silently a minimum).

Global minima are certified by their constructors (an argument about F(M), e.g. convexity or
Eckart–Young), which set ``kind`` and ``evidence`` before ``classify`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from .landscape import HessianIndex, critical_params
from .symmetry import find_symmetries

KINDS = ("minimum", "strict saddle", "degenerate saddle", "unresolved")

NULL_TOL = 1e-12        # Hessian eigenvalues below this fraction of the largest count as zero
DESCENT_TOL = 1e-15     # |coefficient| of t^k (unit direction) that counts as a descent
STARTS = 8              # seeded random starts of the escape search
POWER_STEPS = 20        # power iterations for the cubic form per start, until it settles:
SETTLED = 1e-3          # the coefficient changed by less than this fraction
FD_STEP = mpmath.mpf(10) ** -12     # the third derivative from gradients at DPS = 40 digits


@dataclass(frozen=True)
class Escape:
    """A certificate that a critical set is not a minimum. Along the curve
    θ(t) = θ₀ + t·``direction`` + t²·``bend``/2 (``bend`` None: a straight line),
    L(θ(t)) = L(θ₀) + ``coefficient``·t^``order`` + O(t^(order+1)) with ``coefficient`` < 0
    (``direction`` a unit vector in all parameter entries); at t = ``step`` the loss is
    ``loss`` < L(θ₀), at ``point``. ``direction``, ``bend`` and ``point`` are the model's
    parameters (as ``FixedPointSet.point``)."""

    order: int
    coefficient: sp.Float
    direction: dict
    bend: dict | None
    step: sp.Float
    point: dict
    loss: sp.Float


def classify(der, index, sets: list, seed: int = 0) -> list:
    """``sets`` with ``kind``, ``evidence`` and ``escape`` filled in where a constructor did
    not already certify them (module docstring). ``index``: the model's ``HessianIndex`` (a
    plain function for symbolic data: nothing is decided then). Returns ``sets``."""
    rng = np.random.default_rng(seed)
    for fp in sets:
        if fp.kind != "unresolved":
            continue
        if fp.hessian_index is not None and fp.hessian_index > 0:
            fp.kind = "strict saddle"
            fp.evidence = f"Hessian index {fp.hessian_index} > 0"
        elif fp.hessian_index == 0 and isinstance(index, HessianIndex):
            _local(der, index, fp, rng)
    return sets


def _local(der, index, fp, rng) -> None:
    """Hessian index 0: a minimum modulo the symmetry orbit, a degenerate saddle, or neither."""
    x0 = index.flat(fp.info["letters"])
    with mpmath.workdps(index.digits):
        eigs, vecs = mpmath.eigsy(mpmath.matrix(index.L.hessian(x0)))
        scale = max([mpmath.mpf(1)] + [abs(e) for e in eigs])
        null = [k for k in range(len(eigs)) if abs(eigs[k]) < NULL_TOL * scale]
        positive = [eigs[k] for k in range(len(eigs)) if k not in null]
        if not null:
            fp.kind = "minimum"
            fp.evidence = (f"Hessian positive definite (smallest eigenvalue "
                           f"{float(min(positive)):.3g}): a strict local minimum")
            return
        N = mpmath.matrix([[vecs[i, k] for k in null] for i in range(len(x0))])
        T = _orbit_tangents(der, index, fp.info["letters"])
        normal = _complement(N, T)
        if normal.cols == 0:
            fp.kind = "minimum"
            fp.evidence = (f"Hessian positive definite on the normal space of the symmetry "
                           f"orbit: its null space ({len(null)} dimensions) is the orbit's "
                           f"tangent space, smallest other eigenvalue "
                           f"{float(min(positive)):.3g} (Morse–Bott): a local minimum")
            return
        escape = _escape(der, index, x0, eigs, vecs, null, normal, rng)
    if escape is None:
        fp.evidence = (f"Hessian index 0 with {normal.cols} null directions beyond the "
                       f"symmetry orbit, and no descent found there at third or fourth order")
        return
    fp.kind, fp.escape = "degenerate saddle", escape
    fp.evidence = (f"Hessian index 0, but the loss falls at order {escape.order} "
                   f"(coefficient {float(escape.coefficient):.4g} along a unit direction): "
                   f"L = {float(escape.loss):.10g} < {float(fp.loss):.10g} nearby")


def _orbit_tangents(der, index, letters: dict) -> mpmath.matrix:
    """Columns: the tangents at ``letters`` of the model's symmetry generators (every mixing
    generator, and every space action with A each elementary matrix E_ij), in the flat
    coordinates of ``index``."""
    found = find_symmetries(der)
    sizes = der.model.sizes()
    value = {n: sp.Matrix(letters[n]) for n in index.params}
    moves = []                                        # each: {letter: δL (sympy Matrix)}
    for gen in found["mixing"]:
        move = {}
        for label, a in gen.items():
            L, M = label.split("<-")
            move[L] = move.get(L, sp.zeros(*value[L].shape)) + a * value[M]
        moves.append(move)
    for space, gens in found["space"].items():
        n = sizes[space]
        for gen in gens:
            for i in range(n):
                for j in range(n):
                    A = sp.zeros(n, n)
                    A[i, j] = 1
                    move = {}
                    for label, k in gen.items():
                        parts = label.split()
                        if parts[0] in ("A", "A^T"):
                            L = parts[1]
                            delta = (A if parts[0] == "A" else A.T) * value[L]
                        else:
                            L = parts[0]
                            delta = value[L] * (A if parts[1] == "A" else A.T)
                        move[L] = move.get(L, sp.zeros(*value[L].shape)) + k * delta
                    moves.append(move)
    columns = [index.flat({n: move.get(n, sp.zeros(*value[n].shape)) for n in index.params})
               for move in moves]
    return mpmath.matrix(columns).T if columns else mpmath.matrix(len(index.flat(letters)), 0)


def _complement(N: mpmath.matrix, T: mpmath.matrix) -> mpmath.matrix:
    """An orthonormal basis (columns) of the part of span(N) orthogonal to span(T)."""
    if T.cols:
        U, S, _ = mpmath.svd_r(T)
        rank = sum(1 for s in S if s > NULL_TOL * max(S))
        T = U[:, :rank] if rank else None
    else:
        T = None
    P = N if T is None else N - T * (T.T * N)
    if P.cols == 0:
        return P
    U, S, _ = mpmath.svd_r(P)
    keep = [k for k in range(len(S)) if S[k] > mpmath.mpf(10) ** -6]
    return mpmath.matrix([[U[i, k] for k in keep] for i in range(P.rows)]) if keep else \
        mpmath.matrix(P.rows, 0)


def _third(index, x0: list, v: list, mid: list) -> list:
    """g = ∇³L[v, v, ·] by the central second difference of the gradient (error O(FD_STEP²));
    ``mid``: the gradient at x0."""
    plus = index.L.gradient([a + FD_STEP * b for a, b in zip(x0, v)])
    minus = index.L.gradient([a - FD_STEP * b for a, b in zip(x0, v)])
    return [(p + m - 2 * c) / FD_STEP ** 2 for p, m, c in zip(plus, minus, mid)]


def _escape(der, index, x0, eigs, vecs, null, normal, rng) -> Escape | None:
    """The escape search of the module docstring (at the working precision): from each
    seeded start, the power iteration for the most negative cubic coefficient, until it
    settles; the first start that finds a descent gives the certificate."""
    n = normal.cols
    mid = index.L.gradient(x0)

    def unit(c):
        v = normal * mpmath.matrix(c)
        norm = mpmath.norm(v)
        return [v[i] / norm for i in range(v.rows)]

    for _ in range(STARTS):
        v, last = unit([mpmath.mpf(float(z)) for z in rng.standard_normal(n)]), None
        for _ in range(POWER_STEPS):
            g = _third(index, x0, v, mid)
            c = mpmath.fsum(a * b for a, b in zip(g, v)) / 6
            if c > 0:                                   # the cubic is odd: turn it around
                v, c, g = [-a for a in v], -c, [-a for a in g]
            if c == 0 or (last is not None and abs(c - last) <= SETTLED * abs(c)):
                break
            # shifted power step: −∇c(v) = −g/2 projected, plus |c|·v (monotone ascent of −c)
            step = normal.T * mpmath.matrix([-a / 2 + 6 * abs(c) * b for a, b in zip(g, v)])
            v, last = unit(list(step)), c
        if c < -DESCENT_TOL:
            return _certificate(der, index, x0, v, None, 3)
    return _fourth_order(der, index, x0, eigs, vecs, null, unit, n, rng, mid)


def _fourth_order(der, index, x0, eigs, vecs, null, unit, n, rng, mid) -> Escape | None:
    """Fourth order along θ₀ + tv + t²w/2, w = −H⁺g (module docstring), from seeded random v."""
    size = len(x0)
    best, best_c, best_w = None, mpmath.mpf(0), None
    for _ in range(STARTS):
        v = unit([mpmath.mpf(float(z)) for z in rng.standard_normal(n)])
        g = mpmath.matrix(_third(index, x0, v, mid))
        w = mpmath.matrix(size, 1)
        for k in range(size):
            if k not in null:
                col = vecs[:, k]
                w -= col * ((col.T * g)[0] / eigs[k])
        c4 = _taylor(index, x0, v, None, 4)[4] + (g.T * w)[0] / 8
        if c4 < best_c:
            best, best_c, best_w = v, c4, [w[i] for i in range(size)]
    if best is not None and best_c < -DESCENT_TOL:
        return _certificate(der, index, x0, best, best_w, 4)
    return None


def _taylor(index, x0: list, v: list, w: list | None, degree: int) -> list:
    """Coefficients c_0..c_degree of L(θ₀ + tv + t²w/2), a polynomial of degree ≤ ``degree``
    in t: interpolated from its values at degree + 1 Chebyshev nodes in [−1, 1] (exact up to
    the working precision)."""
    nodes = [mpmath.cos(mpmath.pi * (j + mpmath.mpf(1) / 2) / (degree + 1))
             for j in range(degree + 1)]
    values = [index.L.value(_curve(x0, v, w, t)) for t in nodes]
    V = mpmath.matrix([[t ** k for k in range(degree + 1)] for t in nodes])
    c = mpmath.lu_solve(V, mpmath.matrix(values))
    return [c[k] for k in range(degree + 1)]


def _curve(x0, v, w, t) -> list:
    if w is None:
        return [a + t * b for a, b in zip(x0, v)]
    return [a + t * b + t * t * c / 2 for a, b, c in zip(x0, v, w)]


def _certificate(der, index, x0, v, w, order) -> Escape:
    """The Escape along the curve: the exact coefficients of the loss in t, checked to vanish
    below ``order``, and the first local minimum of the loss in t > 0."""
    degree = index.L.poly.total_degree() * (1 if w is None else 2)
    c = _taylor(index, x0, v, w, degree)
    scale = max(abs(a) for a in c[1:]) + 1
    if any(abs(c[k]) > 1e-20 * scale for k in range(1, order)) or c[order] >= 0:
        raise ArithmeticError(f"the escape curve does not start at order {order}"
                              "(please report this)")
    slope = [k * c[k] for k in range(degree, 0, -1)]          # dL/dt, highest power first
    roots = sorted(r.real for r in mpmath.polyroots(slope, maxsteps=200, extraprec=60)
                   if abs(r.imag) < 1e-20 and r.real > 0)
    step = next(r for r in roots if mpmath.polyval(c[::-1], r) < c[0])
    point = _curve(x0, v, w, step)
    to_params = lambda flat: critical_params(der, index.letters(flat))
    return Escape(order, sp.Float(c[order], 30), to_params(v),
                  None if w is None else to_params(w), sp.Float(step, 30), to_params(point),
                  sp.Float(index.L.value(point), 30))
