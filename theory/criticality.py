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
  random starts, then the power iteration v ← −P∇c(v)/‖·‖; in float64, on the loss's terms
  vectorised, since only the certificate needs the working precision: the direction found
  is then projected exactly onto 𝒩 ⊖ 𝒯). If c vanishes, fourth order along
  the curve θ₀ + tv + t²w/2, w = −H⁺g, g = ∇³L[v, v, ·] (g ⊥ 𝒩 when c ≡ 0 on 𝒩):
  L = L(θ₀) + (∇⁴L[v⁴]/24 − ⟨g, H⁺g⟩/8) t⁴ + O(t⁵), that coefficient c₄(v) minimised on the
  same sphere by projected gradient steps from seeded starts (its gradient in closed form,
  ``_Search._quartic``). Either gives a **degenerate saddle** with an
  ``Escape``: the curve, the order k, the coefficient of t^k (the exact loss along the curve is a
  polynomial in t; its coefficients are computed from the polynomial at DPS digits), and the
  point of lowest loss on the curve before it rises again.
* None of these: **unresolved** (never silently a minimum), with the reason in ``evidence``;
  for symbolic data every set that no global argument certifies stays unresolved (the
  Hessian's signature would need the sign of expressions in the symbols). ``classify``
  refuses a kind other than "unresolved" without evidence.

Global minima are certified by their constructors (an argument about F(M), e.g. convexity or
Eckart–Young), which set ``kind`` and ``evidence`` before ``classify`` runs. Every minimum then
gets its learned algorithm (``algorithm.learned_algorithm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from .algorithm import learned_algorithm
from .landscape import HessianIndex, critical_params
from .symmetry import find_symmetries

__all__ = ["Escape", "classify", "Spectrum"]

KINDS = ("minimum", "strict saddle", "degenerate saddle", "unresolved")

NULL_TOL = 1e-12        # Hessian eigenvalues below this fraction of the largest count as zero
SEARCH_TOL = 1e-12      # a float coefficient of t^k below −this × max(1, |L|): a candidate
STARTS = 8              # seeded random starts of the escape search
POWER_STEPS = 20        # power iterations for the cubic form per start, until it settles:
SETTLED = 1e-3          # the coefficient changed by less than this fraction
FD_STEP = mpmath.mpf(10) ** -12     # the exact bend's third derivative at DPS = 40 digits


@dataclass(frozen=True)
class Escape:
    """A certificate that a critical set is not a minimum. Along the curve
    θ(t) = θ₀ + t·``direction`` + t²·``bend``/2 (``bend`` None: a straight line),
    L(θ(t)) = L(θ₀) + ``coefficient``·t^``order`` + O(t^(order+1)) with ``coefficient`` < 0
    (``direction`` a unit vector in all parameter entries); at t = ``step`` the loss is
    ``loss`` < L(θ₀), at ``point``. ``direction``, ``bend`` and ``point`` are the model's
    parameters (as ``FixedPointSet.point``).

    Attributes
    ----------
    order : int
        The order of the first negative term (2, 3 or 4).
    coefficient : sympy.Float
        Its coefficient (< 0).
    direction : dict
        The unit tangent, per parameter.
    bend : dict or None
        The curve's second-order term, per parameter.
    step : sympy.Float
        The t at which the lower loss is reached.
    point : dict
        θ(step), per parameter.
    loss : sympy.Float
        L(θ(step)).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> der = derive(models.SeparateKQ(1, rank=1), ICLData(d=1, N=4, Lambda=np.eye(1)))
    >>> origin = der.fixed_points()[1]
    >>> origin.name, origin.kind, origin.hessian_index
    ('origin', 'degenerate saddle', 0)
    >>> escape = origin.escape              # L falls as -t³/(3√3) along (1, -1, -1)/√3
    >>> escape.order, round(float(escape.coefficient), 5), float(escape.loss) < origin.loss
    (3, -0.19244, True)
    """

    order: int
    coefficient: sp.Float
    direction: dict
    bend: dict | None
    step: sp.Float
    point: dict
    loss: sp.Float


def classify(der, index, sets: list, seed: int = 0) -> list:
    """``sets`` with ``kind``, ``evidence`` and ``escape`` filled in where a constructor did
    not already certify them (module docstring), and every minimum with its learned algorithm
    (``algorithm.learned_algorithm``). ``index``: the model's ``HessianIndex`` (a plain
    function for symbolic data: nothing is decided then).

    Parameters
    ----------
    der : Derivation
        The derivation the sets belong to.
    index : HessianIndex or callable
        ``landscape.index_counter(der)``.
    sets : list of FixedPointSet
        Changed in place.
    seed : int
        Seed of the random directions of the escape search.

    Returns
    -------
    list of FixedPointSet
        ``sets``.

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.criticality import classify
    >>> from icldyn.theory.landscape import critical_set, index_counter
    >>> der = derive(models.SeparateKQ(1, rank=1), ICLData(d=1, N=4, Lambda=np.eye(1)))
    >>> index = index_counter(der)
    >>> zero = {n: sp.zeros(1, 1) for n in ("V0", "WK0", "WQ0")}
    >>> origin = critical_set(der, index, "origin", [], zero, sp.Rational(1, 2), {})
    >>> origin.kind, origin.hessian_index              # the Hessian alone cannot tell
    ('unresolved', 0)
    >>> [(fp.kind, fp.escape.order) for fp in classify(der, index, [origin])]
    [('degenerate saddle', 3)]
    """
    rng = np.random.default_rng(seed)
    for fp in sets:
        if fp.kind != "unresolved":
            continue
        if fp.hessian_index is not None and fp.hessian_index > 0:
            fp.kind = "strict saddle"
            fp.evidence = f"Hessian index {fp.hessian_index} > 0"
        elif fp.hessian_index == 0 and isinstance(index, HessianIndex):
            _local(der, index, fp, rng)
        elif not isinstance(index, HessianIndex):
            fp.evidence = SYMBOLIC
    for fp in sets:
        if fp.kind not in KINDS or (fp.kind != "unresolved" and not fp.evidence):
            raise ArithmeticError(f"{fp.name}: kind {fp.kind!r} without evidence (please "
                                  "report this)")
        if fp.kind == "minimum":
            fp.algorithm = learned_algorithm(der, fp)
    return sets


SYMBOLIC = ("symbolic data (Λ, Σ_w, N or σ not all numbers): the Hessian's signature here is "
            "not decided, so the kind is left unresolved (numeric data decide it)")


def _local(der, index, fp, rng) -> None:
    """Hessian index 0: a minimum modulo the symmetry orbit, a degenerate saddle, or neither.
    The Hessian's eigenvectors are computed once at the working precision (``index.digits``);
    the searches run in float64 on them, and only the certificate is recomputed exactly."""
    x0 = index.flat(fp.info["letters"])
    with mpmath.workdps(index.digits):
        eigs, vecs = mpmath.eigsy(mpmath.matrix(index.L.hessian(x0)))
    spectrum = Spectrum(eigs, vecs)
    if not spectrum.null:
        fp.kind = "minimum"
        fp.evidence = (f"Hessian positive definite (smallest eigenvalue "
                       f"{spectrum.smallest:.3g}): a strict local minimum")
        return
    tangents = _orbit_tangents(der, index, fp.info["letters"])
    normal = _complement(spectrum.floats[:, spectrum.null], tangents)
    if normal.shape[1] == 0:
        fp.kind = "minimum"
        fp.evidence = (f"Hessian positive definite on the normal space of the symmetry "
                       f"orbit: its null space ({len(spectrum.null)} dimensions) is the orbit's "
                       f"tangent space, smallest other eigenvalue "
                       f"{spectrum.smallest:.3g} (Morse–Bott): a local minimum")
        return
    search = _Search(index, x0, spectrum, normal, rng)
    found = search.third_order() or search.fourth_order()
    if found is None:
        fp.evidence = (f"Hessian index 0 with {normal.shape[1]} null directions beyond the "
                       f"symmetry orbit, and no descent found there at third or fourth order")
        return
    v, order = found
    v, w = search.exact_curve(v, order, tangents)
    with mpmath.workdps(index.digits):
        escape = _certificate(der, index, x0, v, w, order)
    fp.kind, fp.escape = "degenerate saddle", escape
    fp.evidence = (f"Hessian index 0, but the loss falls at order {escape.order} "
                   f"(coefficient {float(escape.coefficient):.4g} along a unit direction): "
                   f"L = {float(escape.loss):.10g} < {float(fp.loss):.10g} nearby")


class Spectrum:
    """The Hessian's eigen-decomposition at the working precision (``eigs``, ``vecs``), its
    float64 copy (``floats``: eigenvectors as columns), the ``null`` eigenvalues (indices) and
    the ``smallest`` other one.

    Parameters
    ----------
    eigs : sequence of mpmath.mpf
        Eigenvalues.
    vecs : mpmath.matrix
        Eigenvectors as columns.

    Examples
    --------
    >>> import mpmath
    >>> from icldyn.theory.criticality import Spectrum
    >>> H = mpmath.matrix([[2, 0], [0, 0]])
    >>> spec = Spectrum(*mpmath.eigsy(H))
    >>> spec.null, spec.smallest, spec.pseudo_inverse_apply([4.0, 1.0])
    ([0], 2.0, array([2., 0.]))
    """

    def __init__(self, eigs, vecs):
        self.eigs, self.vecs = eigs, vecs
        scale = max([mpmath.mpf(1)] + [abs(e) for e in eigs])
        self.null = [k for k in range(len(eigs)) if abs(eigs[k]) < NULL_TOL * scale]
        self.smallest = float(min([e for k, e in enumerate(eigs) if k not in self.null],
                                  default=0))
        self.floats = np.array(vecs.tolist(), dtype=float)
        self.values = np.array([float(e) for e in eigs])

    def pseudo_inverse_apply(self, g, exact: bool = False):
        """H⁺g (the null eigenvalues dropped): floats, or at the working precision.

        Parameters
        ----------
        g : array_like or mpmath.matrix
            The vector.
        exact : bool
            Work at the working precision (mpmath) instead of float64.

        Returns
        -------
        numpy.ndarray or mpmath.matrix
        """
        keep = [k for k in range(len(self.eigs)) if k not in self.null]
        if not exact:
            V = self.floats[:, keep]
            return V @ ((V.T @ g) / self.values[keep])
        out = mpmath.matrix(len(g), 1)
        for k in keep:
            col = self.vecs[:, k]
            out += col * ((col.T * mpmath.matrix(g))[0] / self.eigs[k])
        return [out[i] for i in range(len(g))]


def _orbit_tangents(der, index, letters: dict) -> list:
    """The tangents at ``letters`` of the model's symmetry generators (every mixing generator,
    and every space action with A each elementary matrix E_ij), in the flat coordinates of
    ``index`` (lists of exact entries)."""
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
    return [index.flat({n: move.get(n, sp.zeros(*value[n].shape)) for n in index.params})
            for move in moves]


def _tangent_basis(tangents: list) -> np.ndarray:
    """An orthonormal basis (columns, float64) of the span of the tangents."""
    if not tangents:
        return np.zeros((0, 0))
    T = np.array([[float(a) for a in t] for t in tangents]).T
    U, S, _ = np.linalg.svd(T, full_matrices=False)
    return U[:, S > NULL_TOL * max(S.max(), 1e-300)]


def _complement(N: np.ndarray, tangents: list) -> np.ndarray:
    """An orthonormal basis (columns) of the part of span(N) orthogonal to the tangents."""
    T = _tangent_basis(tangents)
    P = N if T.size == 0 else N - T @ (T.T @ N)
    if P.shape[1] == 0:
        return P
    U, S, _ = np.linalg.svd(P, full_matrices=False)
    return U[:, S > 1e-6]


def _third(index, x0: list, v: list, mid: list) -> list:
    """g = ∇³L[v, v, ·] by the central second difference of the gradient at the working
    precision (error O(FD_STEP²)); ``mid``: the gradient at x0."""
    plus = index.L.gradient([a + FD_STEP * b for a, b in zip(x0, v)])
    minus = index.L.gradient([a - FD_STEP * b for a, b in zip(x0, v)])
    return [(p + m - 2 * c) / FD_STEP ** 2 for p, m, c in zip(plus, minus, mid)]


class _Search:
    """The escape search of the module docstring in float64 (the loss's ``floats``) over the
    ``normal`` directions (columns): the power iteration for the most negative cubic
    coefficient from seeded starts, then the fourth-order coefficient along
    θ₀ + tv − t²H⁺g/2 from seeded directions. Directions found are made exact by
    ``exact_curve``."""

    def __init__(self, index, x0, spectrum, normal, rng):
        self.index, self.x0, self.spectrum, self.normal, self.rng = index, x0, spectrum, normal, rng
        self.f = index.L.floats()
        self.xf = np.array([float(a) for a in x0])
        self.degree = index.L.poly.total_degree()
        self.scale = max(1.0, abs(self.f.value(self.xf)))

    def _line(self, v, degree: int, fn):
        """Taylor coefficients (rows) in t of fn(x₀ + tv), a polynomial of ``degree`` in t,
        interpolated at Chebyshev nodes in [−1, 1]."""
        t = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
        values = np.array([fn(self.xf + s * v) for s in t])
        return np.linalg.solve(np.vander(t, degree + 1, increasing=True), values)

    def g(self, v):
        """∇³L[v, v, ·] = 2 × the t² coefficient of ∇L(x₀ + tv)."""
        return 2 * self._line(v, self.degree - 1, self.f.gradient)[2]

    def _start(self):
        v = self.normal @ self.rng.standard_normal(self.normal.shape[1])
        return v / np.linalg.norm(v)

    def third_order(self):
        for _ in range(STARTS):
            v, last, c = self._start(), None, 0.0
            for _ in range(POWER_STEPS):
                g = self.g(v)
                c = g @ v / 6
                if c > 0:                               # the cubic is odd: turn it around
                    v, c, g = -v, -c, -g
                if c == 0 or (last is not None and abs(c - last) <= SETTLED * abs(c)):
                    break
                # shifted power step: −∇c(v) = −g/2 projected, plus |c|·v (ascent of −c)
                step = self.normal @ (self.normal.T @ (-g / 2 + 6 * abs(c) * v))
                v, last = step / np.linalg.norm(step), c
            if c < -SEARCH_TOL * self.scale:
                return v, 3
        return None

    def _quartic(self, v) -> tuple:
        """c₄(v) = ∇⁴L[v⁴]/24 − ⟨g, H⁺g⟩/8 (g = ∇³L[v, v, ·]) and its gradient in v,
        ∇⁴L[v³, ·]/6 − ∇³L[v, H⁺g, ·]/2 (the t³ coefficient of ∇L along v, and polarisation
        of g: 4∇³L[v, u, ·] = g(v + u) − g(v − u))."""
        grads = self._line(v, self.degree - 1, self.f.gradient)
        g = 2 * grads[2]
        u = self.spectrum.pseudo_inverse_apply(g)
        c4 = self._line(v, self.degree, self.f.value)[4] - g @ u / 8
        return c4, grads[3] - (self.g(v + u) - self.g(v - u)) / 8

    def fourth_order(self):
        """Descent of c₄ on the unit sphere of the normal directions from seeded starts
        (projected gradient steps with backtracking) until a step changes c₄ by less than
        ``SETTLED`` of it (or ``POWER_STEPS`` steps): the first start that ends negative. The
        descent is not cut short when c₄ first goes below zero: that iterate's c₄ can be
        arbitrarily close to 0 (SeparateKQ(3, heads=2, rank=2): −9·10⁻⁶ there, −5·10⁻⁴ when
        settled), a valid certificate whose escape is too slow and too shallow to confirm."""
        for _ in range(STARTS):
            v = self._start()
            c, grad = self._quartic(v)
            rate = 1.0
            for _ in range(POWER_STEPS):
                step = self.normal @ (self.normal.T @ grad)
                step -= (step @ v) * v
                while rate > 1e-6:
                    trial = v - rate * step
                    trial /= np.linalg.norm(trial)
                    c_new, grad_new = self._quartic(trial)
                    if c_new < c:
                        break
                    rate /= 4
                else:
                    break
                settled = abs(c_new - c) <= SETTLED * abs(c)
                v, c, grad, rate = trial, c_new, grad_new, rate * 2
                if settled:
                    break
            if c < -SEARCH_TOL * self.scale:
                return v, 4
        return None

    def exact_curve(self, v, order: int, tangents: list) -> tuple:
        """The float direction ``v`` at the working precision: projected on the Hessian's null
        space and off the orbit's tangents there (so the terms below ``order`` vanish to that
        precision), unit length; for order 4 the bend w = −H⁺∇³L[v, v, ·] exactly."""
        with mpmath.workdps(self.index.digits):
            null = [self.spectrum.vecs[:, k] for k in self.spectrum.null]
            v = mpmath.matrix([mpmath.mpf(float(a)) for a in v])
            v = sum((col * (col.T * v)[0] for col in null), mpmath.matrix(len(v), 1))
            basis = []                                  # the tangents, orthonormalised
            for t in tangents:
                t = mpmath.matrix(t)
                for _ in range(2):
                    for b in basis:
                        t -= b * (b.T * t)[0]
                norm = mpmath.norm(t)
                if norm > NULL_TOL * (1 + max(abs(a) for a in self.x0)):
                    basis.append(t / norm)
            for _ in range(2):
                for b in basis:
                    v -= b * (b.T * v)[0]
            v = [a / mpmath.norm(v) for a in v]
            if order == 3:
                return v, None
            g = _third(self.index, self.x0, v, self.index.L.gradient(self.x0))
            return v, [-a for a in self.spectrum.pseudo_inverse_apply(g, exact=True)]


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
