"""Critical sets for vector tasks (d_y > 1): Gaussian task rows and the paper's eigenbasis tasks.

**Gaussian tasks** (rows of W i.i.d. N(0, Σ_w), noise σ²I). With every value block a multiple of
the identity, V_h = u_h I, output k sees only row k of W and its own noise, so each output is
the scalar problem (d_y = 1) and L = d_y · L_scalar; the gradient along a traceless direction
of V_h is odd in an independent row of W, so it vanishes. Every scalar critical set therefore
*lifts*: V_h = (u_h / α^m) I and the head's m other factors times α = d_y^{1/(2m+2)}, which keeps
the product and the balance (every conserved quantity zero). Each lift's exact gradient is
checked. For Merged and MultiHead nothing is missing: ŷ is linear in
T = Σ_h vec(V_h) vec(Q_h)ᵀ, and L = F(T) = ½ tr(T G Tᵀ) − vec(I)ᵀ T vec(B) + const with the
scalar problem's Gram form G, so after whitening (T̃ = T G^½) the critical points of
the factorised F are those of a two-layer linear network fitting the rank-one
C = vec(I) (G^-½ vec B)ᵀ (Baldi–Hornik): T̃ ∈ {C, 0}. T̃ = C is the lifted minimum,
Σ_h V_h ⊗ Q_h = I ⊗ M*; at T = 0 the gradient vanishes iff ⟨Q_h, B⟩ = 0 and tr V_h = 0 for
every head, a saddle set larger than the lifted one (it holds V ≠ 0 at Q = 0, and heads that
cancel).

**Eigenbasis tasks** (W = U diag(δ) Uᵀ: the paper's Gaussian δ, or a finite set of P such
tasks). The sign flips of Λ's eigenbasis leave the data law unchanged, so matrices diagonal in
the eigenbasis form an invariant set (a critical point of the restricted loss is critical). On
it the Merged loss is the exact coupled mode loss (the derived loss at V = U diag(p) Uᵀ,
Q = U diag(q) Uᵀ), whose critical points are found per subset S of learned modes by Newton's
method (mpmath) from the single-mode solutions (each sign pattern of q tried: a mode's
p_α q_α can turn negative beside others), the rescaling gauge fixed by
Σ_{α∈S} (p_α² − q_α²) = 0; a subset whose Newton roots all leave some mode of S unlearned is
not listed (its roots are smaller sets' points). With H heads, modes can be dealt to different heads: for a partition of S into at most H groups, head h
carries the Merged solution on its group, and heads with disjoint groups do not interact (each
cross-head term has a mode of each head's group, where the other head is zero). So one set
per (S, partition): with H ≥ d heads the modes decouple and the minimum learns each mode in its
own head, below the Merged minimum (the cross-mode coupling is avoided). The list is the
sets of this form, not a proof that there are no others; each set's exact gradient is
checked and its Hessian index counted in the full model. With 1 < H < d the minimum is not of
this form: heads share modes (d = 3, H = 2, s = (2, 1, ½), N = 8: the best disjoint grouping,
(1) + (2, 3), has L = 0.40108 and Hessian index 1), so every enumerated saddle is descended
along its negative curvature on the diagonal set (``_descents``): all three end on one
continuous family at L = 0.400637898, where random starts of the flow end too.
SeparateKQ(H, r) takes the same sets with at most r modes per head (Q_h = W_K,hᵀ W_Q,h
factorised mode by mode), and descends from them with each head's support grown to r modes
(two rank-2 heads for three modes reach MultiHead's shared minimum; rank-1 heads gain nothing
from sharing a mode). A new mode in a head is a new rank slot, reached only at third or fourth
order (V_h, W_K, W_Q all start at zero on it), so Hessian indices are 0 at such saddles; where
the restricted loss curves down with a grown support, ``info['escape']`` holds a point of lower
loss next to the representative (a certificate that it is not a minimum; its absence proves
nothing), and ``info['loss_gap']`` the loss above the minimum. Two rank-1 heads can also end with both heads on
the top mode (a spurious attracting set at that set's loss; d = 2, s = (2, 1), N = 4: 1 of 52
random starts at scale 0.3). FullLSA: every mode can be learned through two paths
(``_two_path_sets``); assigning modes to different paths gives spurious local minima.

Refused with a clear error (not enumerated): finite sets of vector tasks that are not diagonal
in Λ's eigenbasis (no invariant set to search), and FullLSA with a finite set that is not
symmetric (W and −W equally likely): odd moments of W couple the two paths, and flows end at
several local minima off the diagonal set (d = 2, N = 3, tasks diag(1, 2), diag(−½, 1):
0.63552, 0.69452, 0.71803, 0.75944). With the negated tasks added the two-path sets are critical
again and flows end at them.
"""

from __future__ import annotations

from itertools import combinations, product

import mpmath
import sympy as sp
from sympy.utilities.iterables import multiset_partitions

from . import models
from .criticality import classify
from .derive import Derivation, derive
from .errors import InputError
from .landscape import (CONVEX, DPS, FixedPointSet, HessianIndex, certified, critical_params,
                        critical_set, index_counter, require_structure, to_mp, with_loss_gaps,
                        zero_params)
from .polyeval import PolyFunction
from .productform import merged_counterpart
from .scalarsets import scalar_fixed_points
from .words import Mat

__all__ = ["vector_fixed_points"]

ESCAPE_STEP = 1e-4          # in (p, q): lower loss by ~1e-9, W_K and W_Q moved by ~1e-2
ZERO_PRODUCT = 1e-20        # |x y| of a learned mode at a Newton root (unlearned: ≲ 1e-40)
GRADIENT_TOL = 1e-10        # a set that is not critical has gradients O(1); float data
                            # (e.g. Λ's eigenvalues read from doubles) leave ~1e-16


def vector_fixed_points(der: Derivation) -> list[FixedPointSet]:
    """Critical sets for d_y > 1 (see the module docstring).

    Parameters
    ----------
    der : Derivation
        With d_y > 1 (numeric data for eigenbasis or finite tasks).

    Returns
    -------
    list of FixedPointSet

    Raises
    ------
    InputError
        For eigenbasis or finite vector tasks with symbolic data, a finite task set not
        diagonal in Λ's eigenbasis, or (a model with two signal paths) a task law that is not
        symmetric under W → −W.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.vectorsets import vector_fixed_points
    >>> data = ICLData(d=2, N=4, d_y=2, tasks="diagonal", Lambda=np.diag([1.0, 0.5]))
    >>> sets = vector_fixed_points(derive(models.Merged(2, d_y=2), data))
    >>> [(fp.name, fp.hessian_index) for fp in sets]      # staged learning: saddles between stages
    [('global minimum (all modes learned)', 0), ('modes {1} learned', 1), ('modes {2} learned', 1),
    ('origin', 2)]
    """
    data = der.data
    require_structure(der.model)
    if data.tasks == "gaussian":
        return _lifted_sets(der)
    if not data.is_numeric():
        raise InputError("data", "critical sets with eigenbasis or finite vector tasks need "
                         "numeric Λ, Σ_w, σ and N")
    if not data.tasks_in_eigenbasis():
        raise InputError("data", "for a finite set of vector tasks, critical sets are derived "
                         "when every task is diagonal in Λ's eigenbasis (the paper's setting)")
    paths = der.model.signal_paths()
    if paths is not None:
        if not data.symmetric_tasks():      # the two paths couple; minima off the diagonal set
            raise InputError("data", f"critical sets of {der.model!r} are enumerated for "
                             "symmetric task laws (W and −W equally likely; add the negated "
                             "tasks to the set)")
        return _two_path_sets(der, paths)
    index = index_counter(der)              # the costliest step: built once
    sets = _eigenmode_sets(der, index)
    heads = der.model.head_products()
    if heads.rank is not None or 1 < len(heads.heads) < data.d:
        sets = with_loss_gaps(sets + _descents(der, sets, index))
    return classify(der, index, sets)


def _head_letters(der: Derivation) -> dict:
    """Head (None for single-head models) -> the letters of that head."""
    heads: dict = {}
    for b in der.model.blocks():
        heads.setdefault(b.head, []).append(b.letter)
    return heads


def _is_value(letter: Mat) -> bool:
    return letter.rows == "y" and letter.cols == "y"


def _check_critical(index, fp: FixedPointSet) -> FixedPointSet:
    """``fp`` unchanged if the exact gradient vanishes at its point (``index``: the model's
    HessianIndex; nothing to check for symbolic data)."""
    if not isinstance(index, HessianIndex):
        return fp
    size = index.gradient_size(fp.letters)
    if size > GRADIENT_TOL:
        raise ArithmeticError(f"{fp.name}: the exact gradient is {float(size):.3g}, not zero "
                              "(the set is not critical; please report this)")
    return fp


# --- gaussian tasks: lifts of the scalar sets ----------------------------------------------

def _lifted_sets(der: Derivation) -> list[FixedPointSet]:
    d_y = der.data.d_y
    scalar = derive(der.model.with_outputs(1), der.data.with_outputs(1))
    index = index_counter(der)
    out = []
    for fp in scalar_fixed_points(scalar):
        lifted = _lift(der, fp.letters, d_y)
        if lifted is None:           # a set that uses the y-rows of W_KQ or x-columns of W_PV
            continue
        letters, scales = lifted
        equations = [sp.Eq(sp.MatrixSymbol(name, d_y, d_y), u * sp.Identity(d_y))
                     for name, u in scales.items()] + fp.equations
        if "growth_direction" in fp.info and _full_rank_heads(der):   # the set u = 0
            equations = _zero_set_equations(der, fp)
        info = {**fp.info, "M": fp.M, "loss_gap": fp.loss_gap, "scalar_loss": fp.loss}
        lifted = _check_critical(index, critical_set(
            der, index, fp.name, equations, letters, der.loss_value(critical_params(der, letters)),
            info))
        out.append(certified(lifted, LIFTED_CONVEX) if fp.evidence == CONVEX else lifted)
    return classify(der, index, out)


def _full_rank_heads(der: Derivation) -> bool:
    """Whether ``der``'s model is a sum of heads V_h S_yx K_h with free K_h (MultiHead)."""
    heads = der.model.head_products()
    return heads is not None and heads.rank is None


LIFTED_CONVEX = ("ŷ is linear in T = Σ_h vec(V_h) vec(Q_h)ᵀ and L = F(T) is a convex quadratic "
                 "whose minimiser over all T is the lift of the scalar M* (module docstring); "
                 "the set attains it: a global minimum")


def _lift(der: Derivation, letters: dict, d_y: int) -> tuple[dict, dict] | None:
    """Vector-task letters from a scalar set's balanced letters, and the scale u_h of each
    value block (V_h = u_h I); None when a non-value y-row letter is used."""
    out, scales = {}, {}
    for head, group in _head_letters(der).items():
        factors = [a for a in group if not _is_value(a) and any(letters[a.name])]
        if any(a.rows == "y" for a in factors):
            return None
        alpha = sp.Integer(d_y) ** sp.Rational(1, 2 * len(factors) + 2)
        for a in group:
            if _is_value(a):
                u = letters[a.name][0, 0] / alpha ** len(factors)
                out[a.name] = u * sp.eye(d_y)
                scales[a.name] = sp.Symbol("u" if head is None else f"u_{head}")
            elif a in factors:
                out[a.name] = alpha * letters[a.name]
            else:
                out[a.name] = sp.zeros(d_y if a.rows == "y" else letters[a.name].rows,
                                       letters[a.name].cols)
    return out, scales


def _zero_set_equations(der: Derivation, fp: FixedPointSet) -> list:
    """{Σ_h V_h ⊗ Q_h = 0, tr V_h = 0, ⟨Q_h, B⟩ = 0 for every h} (module docstring)."""
    d, d_y = der.data.d, der.data.d_y
    pairs = [(sp.MatrixSymbol(V.name, d_y, d_y), sp.MatrixSymbol(Q.name, d, d))
             for V, Q in _head_letters(der).values()]
    T = sp.MatAdd(*[sp.KroneckerProduct(V, Q) for V, Q in pairs])
    kept = [eq for eq in fp.equations if not isinstance(eq.lhs, sp.Symbol)]   # ⟨Q_h, B⟩ = 0
    return ([sp.Eq(T, sp.ZeroMatrix(d * d_y, d * d_y))]
            + [sp.Eq(sp.Trace(V), 0) for V, _ in pairs] + kept)


# --- eigenbasis tasks ---------------------------------------------------------------------------

def _restricted_loss(der: Derivation, diag: dict) -> sp.Expr:
    """``der``'s exact loss with each letter in ``diag`` set to U diag(its symbols) Uᵀ (Λ's
    eigenbasis U) and every other letter zero."""
    U = der.data.eigenbasis()
    vals = der.values(zero_params(der))
    vals.update({n: U * sp.diag(*v) * U.T for n, v in diag.items()})
    return sp.expand(der.loss_poly.evaluate(vals))


def _mode_guess(loss: sp.Expr, x: sp.Symbol, y: sp.Symbol) -> mpmath.mpf:
    """The balanced single-mode critical value t (x = y = t, every other variable zero) of
    lowest loss: a starting point for Newton's method."""
    t = sp.Symbol("t", positive=True)
    single = loss.subs({v: 0 for v in loss.free_symbols - {x, y}}).subs({x: t, y: t})
    roots = [r for r in sp.Poly(sp.diff(single, t), t).nroots(n=DPS)
             if r.is_real and r > 0]
    if not roots:
        raise ArithmeticError(f"mode ({x}, {y}) has no single-mode critical point")
    return to_mp(min(roots, key=lambda r: single.subs(t, r)))


def _eigenmode_sets(der: Derivation, index: HessianIndex) -> list[FixedPointSet]:
    d = der.data.d
    p = sp.symbols(f"p_1:{d + 1}", real=True)
    q = sp.symbols(f"q_1:{d + 1}", real=True)
    loss = _restricted_loss(merged_counterpart(der), {"V": p, "Q": q})
    grads = {v: sp.diff(loss, v) for v in p + q}
    guess = [_mode_guess(loss, p[k], q[k]) for k in range(d)]
    U = der.data.eigenbasis()
    heads = list(_head_letters(der).values())
    rank = der.model.head_products().rank or d
    solved: dict = {}
    for group in {g for S in _subsets(d) for part in _partitions(S, len(heads), rank)
                  for g in part} | {()}:
        root = _group_root(grads, [(p[k], q[k]) for k in group], [guess[k] for k in group])
        solved[group] = None if root is None else (
            [root.get(p[k], sp.Integer(0)) for k in range(d)],
            [root.get(q[k], sp.Integer(0)) for k in range(d)])
    out = []
    for S in _subsets(d):
        for groups in _partitions(S, len(heads), rank):
            if not all(solved[g] for g in groups):
                continue                     # some group has no critical point of its own
            letters = {}
            for h, head in enumerate(heads):
                group = groups[h] if h < len(groups) else ()
                letters.update(_head_point(head, *solved[group], U, rank))
            a = [sum(solved[g][0][k] * solved[g][1][k] for g in groups) for k in range(d)]
            out.append(_check_critical(index, critical_set(
                der, index, _mode_name(groups, d, len(heads)),
                [sp.Eq(p[k] * q[k], 0) for k in range(d) if k not in S],
                letters, index.loss(letters),
                {"a": a, "learned": S, "groups": groups})))
    return with_loss_gaps(out)


def _descents(der: Derivation, sets: list, index: HessianIndex) -> list[FixedPointSet]:
    """MultiHead with 1 < H < d, and SeparateKQ: the sets where heads share modes, reached by
    descending the restricted (diagonal) loss from every enumerated set (and every set found
    so) along its most negative curvature direction — gradient descent with backtracking to
    |∇| < 1e-6, then Newton steps with the Hessian's pseudo-inverse (the critical sets are
    continuous families) to |∇| < 1e-30. New losses only (one set per loss value). A set of
    Hessian index 0 with such a direction gets ``info['escape']`` (``_escape``).

    SeparateKQ's loss is MultiHead's at Q_h = W_K,hᵀ W_Q,h; on the diagonal set Q_h has at most
    r non-zero modes, its *support*, so the descent runs with the support fixed: every way to
    grow each head's learned modes to min(r, d) modes (MultiHead: all d). A critical point of
    the restricted loss with the support fixed is critical for SeparateKQ: at a diagonal point
    ∇_{Q_h} L is diagonal, so ∇_{W_K,h} L = W_Q,h (∇_{Q_h} L)ᵀ has row i on its own mode only,
    proportional to the derivative in that mode's q — zero."""
    d, U = der.data.d, der.data.eigenbasis()
    shared = _multihead_counterpart(der)
    heads = list(_head_letters(shared).values())
    own_heads = list(_head_letters(der).values())
    rank = min(der.model.head_products().rank or d, d)
    diag = {}
    for h, (V, Q) in enumerate(heads):
        diag[V.name] = sp.symbols(f"p{h}_1:{d + 1}", real=True)
        diag[Q.name] = sp.symbols(f"q{h}_1:{d + 1}", real=True)
    xs = [v for vs in diag.values() for v in vs]
    loss = PolyFunction(_restricted_loss(shared, diag), xs, DPS)
    compiled = loss.compiled()

    def realise(values: dict) -> tuple[dict, dict]:
        """The balanced values and the model's letters at diagonal ``values``."""
        if _full_rank_heads(der):
            values = _balanced(values, [(diag[V.name], diag[Q.name]) for V, Q in heads])
        letters = {}
        for own, (V, Q) in zip(own_heads, heads):
            letters.update(_head_point(own, [values[v] for v in diag[V.name]],
                                       [values[v] for v in diag[Q.name]], U, rank))
        return values, letters

    known = [fp.loss for fp in sets]
    queue, out = list(sets), []
    while queue:
        fp = queue.pop(0)
        start = [to_mp(v) for head, (V, Q) in zip(own_heads, heads)
                 for v in _head_diagonals(head, fp.letters, U)]
        with mpmath.workdps(DPS):
            curvature = mpmath.matrix(loss.hessian(start))
        for support in _supports(fp.info["groups"], len(heads), d, rank):
            off = {diag[Q.name][k] for (V, Q), S in zip(heads, support)
                   for k in range(d) if k not in S}
            free = [i for i, v in enumerate(xs) if v not in off]
            with mpmath.workdps(DPS):
                curv, vecs = mpmath.eigsy(_sub(curvature, free))
            if curv[0] > -1e-12:
                continue                        # no descent direction with this support
            if fp.hessian_index == 0 and "escape" not in fp.info:
                fp.info["escape"] = _escape(der, index, realise, xs,
                                            _step(start, free, vecs, ESCAPE_STEP))
            x = [float(v) for v in _step(start, free, vecs, 1e-3)]
            x = _pinv_newton(loss, _descend(compiled, x, free), free)
            values, letters = realise(dict(zip(xs, x)))
            found = index.loss(letters)
            if any(abs(found - v) < 1e-20 * (1 + abs(v)) for v in known):
                continue
            known.append(found)
            groups = tuple(tuple(k for k in range(d) if abs(values[diag[V.name][k]]
                                                            * values[diag[Q.name][k]]) > 1e-20)
                           for V, Q in heads)
            new = _check_critical(index, critical_set(
                der, index, _mode_name(groups, d, len(heads), shared=True), [], letters,
                found, {"groups": groups, "descended_from": fp.name,
                        "learned": tuple(sorted(set().union(*groups)))}))
            out.append(new)
            queue.append(new)
    return out


def _step(start: list, free: list, vecs: mpmath.matrix, size) -> list:
    """``start`` moved by ``size`` along the curvature eigenvector ``vecs[:, 0]`` in the
    coordinates ``free``; every other coordinate (modes off the support) exactly zero."""
    x = [mpmath.mpf(0)] * len(start)
    with mpmath.workdps(DPS):
        for n, i in enumerate(free):
            x[i] = start[i] + size * vecs[n, 0]
    return x


def _escape(der: Derivation, index: HessianIndex, realise, xs: list, x: list) -> dict:
    """A point near a set of Hessian index 0 with lower loss: the set is not a minimum. ``x``
    is a step of ESCAPE_STEP along negative curvature of the restricted loss in (p, q); for
    SeparateKQ a new mode of a head is a new rank slot, reached at order √ESCAPE_STEP in W_K,
    W_Q — a descent at third or fourth order that the Hessian cannot see.
    {"point": the model's parameters, "loss": at DPS digits, "step": in (p, q)}."""
    _, letters = realise(dict(zip(xs, (sp.Float(v, DPS) for v in x))))
    return {"point": critical_params(der, letters), "loss": index.loss(letters),
            "step": ESCAPE_STEP}


def _multihead_counterpart(der: Derivation) -> Derivation:
    """MultiHead with ``der``'s heads on its data (``der`` itself if its heads are free)."""
    if _full_rank_heads(der):
        return der
    model = models.MultiHead(der.data.d, heads=len(der.model.head_products().heads),
                             d_y=der.data.d_y)
    return derive(model, der.data, der.structural)


def _head_diagonals(head: list, letters: dict, U: sp.Matrix) -> list:
    """The diagonals (in Λ's eigenbasis U) of one head's V_h and Q_h (= W_K,hᵀ W_Q,h)."""
    V, *factors = head
    Q = letters[factors[0].name] if len(factors) == 1 else \
        letters[factors[0].name].T * letters[factors[1].name]
    return [*(U.T * letters[V.name] * U).diagonal(), *(U.T * Q * U).diagonal()]


def _supports(groups: tuple, heads: int, d: int, size: int) -> list[tuple]:
    """Every way to grow each head's group of modes to ``size`` modes (one support per head)."""
    options = []
    for h in range(heads):
        group = groups[h] if h < len(groups) else ()
        rest = [k for k in range(d) if k not in group]
        options.append([tuple(sorted(group + extra))
                        for extra in combinations(rest, max(size - len(group), 0))])
    return list(product(*options))


def _sub(matrix: mpmath.matrix, rows: list) -> mpmath.matrix:
    return mpmath.matrix([[matrix[i, j] for j in rows] for i in rows])


def _balanced(values: dict, heads: list) -> dict:
    """The point moved along MultiHead's head-mixing symmetry (V_h → Σ_k T_hk V_k,
    Q_h → Σ_k (T⁻ᵀ)_hk Q_k, which keeps Σ_h V_h ⊗ Q_h) until the Gram matrices of the heads'
    V's and Q's agree (every conserved ⟨V_h, V_k⟩ − ⟨Q_h, Q_k⟩ zero): with G_V = R Rᵀ and
    Rᵀ G_Q R = W Σ² Wᵀ, T = Σ^½ Wᵀ R⁻¹ gives T G_V Tᵀ = T⁻ᵀ G_Q T⁻¹ = Σ (balanced
    realisation). ``heads``: per head, the symbols of its V and Q diagonals; idle heads (V or
    Q zero) are left out."""
    heads = [(p, q) for p, q in heads
             if max(abs(values[v]) for v in p) > 1e-20 and max(abs(values[v]) for v in q) > 1e-20]
    if not heads:
        return values
    with mpmath.workdps(DPS):
        Pv = mpmath.matrix([[to_mp(values[v]) for v in p] for p, _ in heads])
        Qv = mpmath.matrix([[to_mp(values[v]) for v in q] for _, q in heads])
        R = mpmath.cholesky(Pv * Pv.T)
        E, W = mpmath.eigsy(R.T * (Qv * Qv.T) * R)
        T = mpmath.diag([mpmath.sqrt(mpmath.sqrt(e)) for e in E]) * W.T * mpmath.inverse(R)
        Pv, Qv = T * Pv, mpmath.inverse(T).T * Qv
        out = dict(values)
        for h, (p, q) in enumerate(heads):
            out.update({v: sp.Float(Pv[h, k], DPS) for k, v in enumerate(p)})
            out.update({v: sp.Float(Qv[h, k], DPS) for k, v in enumerate(q)})
        return out


def _descend(compiled: tuple, x: list, free: list, tol: float = 1e-6,
             steps: int = 100_000) -> list:
    """Gradient descent with backtracking (floats; ``compiled``: the loss and its gradient as
    float functions) in the coordinates ``free`` (indices; the others stay put) from x until
    the largest |∂L| < tol."""
    loss, grad = compiled
    keep = set(free)
    rate = 0.1
    for _ in range(steps):
        full = grad(*x)
        g = [full[i] if i in keep else 0.0 for i in range(len(x))]
        size = sum(v * v for v in g)
        if max(map(abs, g)) < tol:
            return x
        value = loss(*x)
        while loss(*[a - rate * b for a, b in zip(x, g)]) > value - 0.5 * rate * size:
            rate *= 0.5
        x = [a - rate * b for a, b in zip(x, g)]
        rate *= 1.5
    raise ArithmeticError(f"descent did not converge in {steps} steps")


def _pinv_newton(loss: PolyFunction, x: list, free: list, iterations: int = 40) -> list:
    """Newton's method in the coordinates ``free`` with the Hessian's pseudo-inverse (singular
    values below 1e-20 of the largest dropped), so it converges onto a continuous family of
    critical points."""
    with mpmath.workdps(DPS):
        x = [mpmath.mpf(v) for v in x]
        for _ in range(iterations):
            full = loss.gradient(x)
            g = mpmath.matrix([full[i] for i in free])
            if max(abs(v) for v in g) < mpmath.mpf(10) ** -30:
                return [sp.Float(v, DPS) for v in x]
            U, S, Vt = mpmath.svd_r(_sub(mpmath.matrix(loss.hessian(x)), free))
            coeffs = [(U[:, i].T * g)[0] / S[i] if S[i] > S[0] * mpmath.mpf(10) ** -20 else 0
                      for i in range(len(S))]
            step = Vt.T * mpmath.matrix(coeffs)
            for n, i in enumerate(free):
                x[i] -= step[n]
    raise ArithmeticError("Newton's method did not reach a critical point")


def _head_point(head: list, p: list, q: list, U: sp.Matrix, rank: int) -> dict:
    """One head's letters carrying the Merged solution V = U diag(p) Uᵀ, Q = U diag(q) Uᵀ
    (balanced; p = q = 0 for an idle head). SeparateKQ factorises Q = W_Kᵀ W_Q with a row
    c√|q_α| (U e_α)ᵀ per mode (sign(q_α) in W_Q, so W_K W_Kᵀ = W_Q W_Qᵀ) and V = U diag(p) Uᵀ/c²,
    c⁶ = Σ p_α²/Σ |q_α| (‖V‖² = ‖W_K‖² = ‖W_Q‖²)."""
    if len(head) == 2:
        V, Q = head
        return {V.name: U * sp.diag(*p) * U.T, Q.name: U * sp.diag(*q) * U.T}
    V, K, Q = head
    d = len(p)
    WK, WQ = sp.zeros(rank, d), sp.zeros(rank, d)
    modes = [k for k in range(d) if q[k] != 0]
    c = (sum(v ** 2 for v in p) / sum(abs(q[k]) for k in modes)) ** sp.Rational(1, 6) if modes \
        else 1
    for row, k in enumerate(modes):
        WK[row, :] = c * sp.sqrt(abs(q[k])) * U[:, k].T
        WQ[row, :] = sp.sign(q[k]) * WK[row, :]
    return {V.name: U * sp.diag(*p) * U.T / c ** 2, K.name: WK, Q.name: WQ}


def _subsets(d: int) -> list[tuple]:
    """The subsets of the d modes, largest first."""
    return [S for size in range(d, -1, -1) for S in combinations(range(d), size)]


def _partitions(S: tuple, heads: int, size: int) -> list[tuple]:
    """The ways to deal the modes S to at most ``heads`` heads, at most ``size`` modes each
    (groups as sorted tuples)."""
    if not S:
        return [()]
    return [tuple(tuple(g) for g in p) for k in range(1, min(heads, len(S)) + 1)
            for p in multiset_partitions(list(S), k) if max(map(len, p)) <= size]


def _mode_name(groups: tuple, d: int, heads: int, shared: bool = False) -> str:
    """"modes {1, 2} learned" (one head), "modes {1} + {2} learned (a group per head)",
    "... (heads share modes)"."""
    if not groups:
        return "origin"
    if heads == 1 and len(groups[0]) == d:
        return "global minimum (all modes learned)"
    text = " + ".join("{" + ", ".join(str(k + 1) for k in g) + "}" for g in groups)
    suffix = " (heads share modes)" if shared else " (a group per head)" if heads > 1 else ""
    return f"modes {text} learned{suffix}"


def _newton(grads: dict, pairs: list, guess: list, signs: tuple | None = None) -> dict:
    """Variable -> Float at a critical point of a reduced loss (``grads``: variable -> its
    derivative) on which the variables of ``pairs`` (value side x, key side y) are free and
    every other one is zero, by Newton's method from x = ``guess``, y = ``signs`` × ``guess``
    (one value per pair; all signs + by default). The rescaling symmetry's orbits are fixed by
    the balance Σ (x² − y²) = 0 with a Lagrange multiplier (zero at a critical point: the
    orbit direction is orthogonal to ∇L). Raises ValueError where Newton's method fails."""
    if not pairs:
        return {}
    active = [x for x, _ in pairs] + [y for _, y in pairs]
    zero = {v: 0 for v in grads if v not in active}
    mult = sp.Dummy("lambda")
    gauge = sum(x ** 2 - y ** 2 for x, y in pairs)
    eqs = [grads[v].subs(zero) + mult * sp.diff(gauge, v) for v in active] + [gauge]
    f = sp.lambdify(active + [mult], eqs, modules="mpmath")
    signs = signs or (1,) * len(pairs)
    with mpmath.workdps(DPS):
        root = mpmath.findroot(lambda *v: f(*v), list(guess)
                               + [s * g for s, g in zip(signs, guess)] + [0])
    return dict(zip(active, (sp.Float(v, DPS) for v in root)))


def _group_root(grads: dict, pairs: list, guess: list) -> dict | None:
    """A critical point of the reduced loss on which every pair of ``pairs`` is learned
    (x y ≠ 0) and every other variable is zero, or None where Newton's method finds none.
    A mode's product x y can turn negative once other modes are learned beside it (their
    coupling), so each sign pattern of the starting y = ±guess is tried, all + first; a
    root at which some pair has x y = 0 belongs to a smaller set and is not taken."""
    for signs in product((1, -1), repeat=len(pairs)):
        try:
            root = _newton(grads, pairs, guess, signs)
        except ValueError:
            continue
        if all(abs(root[x] * root[y]) > ZERO_PRODUCT for x, y in pairs):
            return root
    return None


# --- FullLSA with eigenbasis tasks: two paths per mode -----------------------------------------

def _two_path_sets(der: Derivation, paths: tuple) -> list[FixedPointSet]:
    """FullLSA with eigenbasis tasks. All four blocks diagonal in Λ's eigenbasis is an invariant
    set (the sign flips of the eigenbasis); on it a mode α carries signal through two paths,
    P₂S_yxQ₁ (Merged's, variables p_α, q_α) and P₁S_xyQ₂ (a_α, b_α; W is symmetric, so the
    path alone has Merged's loss), while P₁(S_xx + x_qx_qᵀ)Q₁ and P₂S_yyQ₂ only add variance.
    One set per assignment of each mode to: unlearned, path 1 or path 2 (3^d sets), solved by
    Newton's method on the exact reduced loss; modes using both paths at once are not
    enumerated. Mixed assignments are the spurious local minima that random starts reach.
    ``paths``: the model's ``signal_paths``, ((P₂, Q₁), (P₁, Q₂))."""
    d = der.data.d
    U = der.data.eigenbasis()
    coded = dict(enumerate(paths, start=1))     # assignment code → (value, key-query letter)
    diag = {n: sp.symbols(f"{n.lower()}_1:{d + 1}", real=True)
            for n in sorted({n for path in paths for n in path})}
    loss = _restricted_loss(der, diag)
    grads = {v: sp.diff(loss, v) for vs in diag.values() for v in vs}
    single = {(P, Q, k): _mode_guess(loss, diag[P][k], diag[Q][k])
              for P, Q in coded.values() for k in range(d)}
    index = index_counter(der)
    out = []
    for assignment in product((0, 1, 2), repeat=d):
        learned = [k for k in range(d) if assignment[k]]
        pairs = [(diag[P][k], diag[Q][k]) for P, Q in coded.values() for k in range(d)]
        guess = [single[P, Q, k] if coded.get(assignment[k]) == (P, Q) else 0
                 for P, Q in coded.values() for k in range(d)]
        root = _newton(grads, pairs if learned else [], guess)
        letters = {n: U * sp.diag(*[root.get(v, sp.Integer(0)) for v in vs]) * U.T
                   for n, vs in diag.items()}
        out.append(_check_critical(index, critical_set(
            der, index, _path_name(assignment, paths),
            [sp.Eq(sp.Symbol(f"{n.lower()}_{k + 1}"), 0) for n in diag for k in range(d)
             if n not in coded.get(assignment[k], ())],
            letters, index.loss(letters), {"learned": tuple(learned), "paths": assignment})))
    return classify(der, index, with_loss_gaps(out))


def _path_name(assignment: tuple, paths: tuple) -> str:
    """"modes {1} via P2 Q1 + {2} via P1 Q2"."""
    parts = []
    for path, (P, Q) in enumerate(paths, start=1):
        modes = [str(k + 1) for k, c in enumerate(assignment) if c == path]
        if modes:
            parts.append("{" + ", ".join(modes) + f"}} via {P} {Q}")
    return "modes " + " + ".join(parts) if parts else "origin"
