"""Eigenmode reduction and learning-stage timescales of the Merged model (docs/math.md §3.3).

On the set V = U diag(p) Uᵀ, Q = U diag(q) Uᵀ (Λ = U diag(s) Uᵀ; kept invariant by the flow for
tasks that share Λ's eigenbasis) the derived loss becomes a polynomial L(p, q). Two reductions:

* exact: L(p, q) itself, whose cross-mode terms couple the modes at order 1/N;
* decoupled: cross-mode terms dropped, L = Σ_α L_α(p_α, q_α).

For a decoupled mode on the balanced set p_α = q_α (a_α = p_α q_α) the flow reduces to one
autonomous equation ȧ_α = f_α(a_α), derived here, and the time to reach half of its fixed point
from a_α(0) = a₀ is t_α = ∫_{a₀}^{a*_α/2} da / f_α(a) (SymPy integrates it in closed form).
At the origin, the Hessian's negative eigenvalues −g_α give the saddle's growth rates g_α.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .data import N_SYM, exact_scalar
from .derive import Derivation
from .errors import InputError
from .words import dim_symbol

__all__ = ["ModeReduction", "mode_reduction", "IsotropicReduction", "isotropic_reduction",
           "single_head"]


@dataclass
class ModeReduction:
    """Per-mode loss on the eigenbasis-diagonal set V = U diag(p) Uᵀ, Q = U diag(q) Uᵀ (the
    package's loss ½E‖ŷ − y_q‖², ŷ with 1/N).

    Attributes
    ----------
    p, q : tuple of sympy.Symbol
        The modes of V and Q.
    s : tuple
        The eigenvalues of Λ (numbers or symbols).
    loss : sympy.Expr
        The exact loss on the set.
    decoupled : sympy.Expr
        ``loss`` without its cross-mode terms (the paper's large-N reduction).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.solutions import mode_reduction
    >>> data = ICLData(d=2, N=8, d_y=2, tasks="diagonal", Lambda=np.diag([1.0, 0.5]))
    >>> red = mode_reduction(derive(models.Merged(2, d_y=2), data))
    >>> red.saddle_growth_rates()               # s_α², the modes' escape rates from the origin
    [1, 1/4]
    >>> [red.fixed_point(k) for k in range(2)]          # decoupled: N / ((N + 2) s_α)
    [4/5, 8/5]
    >>> [round(float(a), 6) for a in red.exact_fixed_point()]           # with the 1/N coupling
    [0.750941, 1.387602]
    >>> red.balance_rate(0, exact=False)                # p_α² − q_α² is conserved without it
    0
    """

    p: tuple
    q: tuple
    s: tuple
    loss: sp.Expr
    decoupled: sp.Expr

    def mode_loss(self, alpha: int) -> sp.Expr:
        """L_α(p_α, q_α): the decoupled terms that involve mode α (constant dropped).

        Parameters
        ----------
        alpha : int
            The mode index (0-based, modes by decreasing eigenvalue of Λ).

        Returns
        -------
        sympy.Expr
        """
        own = {self.p[alpha], self.q[alpha]}
        return sp.Add(*[t for t in sp.Add.make_args(self.decoupled) if t.free_symbols & own])

    def balanced_rate(self, alpha: int) -> tuple[sp.Symbol, sp.Expr]:
        """(a, f(a)) with ȧ = f(a) for a = p_α q_α on p_α = q_α = √a.

        Parameters
        ----------
        alpha : int
            The mode index (0-based, modes by decreasing eigenvalue of Λ).

        Returns
        -------
        tuple
            (the symbol a, f(a) factored).
        """
        a = sp.Symbol("a", positive=True)
        p, q = self.p[alpha], self.q[alpha]
        L = self.mode_loss(alpha)
        adot = p * (-sp.diff(L, q)) + q * (-sp.diff(L, p))
        return a, sp.factor(sp.expand(adot.subs({p: sp.sqrt(a), q: sp.sqrt(a)})))

    def fixed_point(self, alpha: int) -> sp.Expr:
        """The non-zero root a*_α of the balanced decoupled rate.

        Parameters
        ----------
        alpha : int
            The mode index (0-based, modes by decreasing eigenvalue of Λ).

        Returns
        -------
        sympy.Expr
        """
        a, f = self.balanced_rate(alpha)
        roots = [r for r in sp.solve(sp.cancel(f / a), a) if r != 0]
        if len(roots) != 1:
            raise ValueError(f"mode {alpha}: expected one non-zero fixed point, got {roots}")
        return roots[0]

    def half_time(self, alpha: int, a0) -> sp.Expr:
        """t_α = ∫_{a0}^{a*/2} da / f(a): time for mode α to reach half its fixed point.

        1/f is split into partial fractions Σ c_j/(a − r_j); each integrates to
        c_j log((a*/2 − r_j)/(a0 − r_j)), real because a0 and a*/2 lie on the same side of
        every root of f (0 < a0 < a*/2 < a*).

        Parameters
        ----------
        alpha : int
            The mode index (0-based, modes by decreasing eigenvalue of Λ).
        a0 : number or sympy.Expr
            The start a_α(0) = p_α q_α, 0 < a0 < a*/2.

        Returns
        -------
        sympy.Expr
            t_α in flow time (t = η × steps).
        """
        a, f = self.balanced_rate(alpha)
        end = self.fixed_point(alpha) / 2
        pieces = []
        for term in sp.Add.make_args(sp.apart(sp.cancel(1 / f), a)):
            num, den = term.as_numer_denom()
            if sp.degree(den, a) != 1 or a in num.free_symbols:
                raise ValueError(f"mode {alpha}: 1/f has a non-simple pole ({term})")
            slope = sp.diff(den, a)
            root = sp.cancel(-den.subs(a, 0) / slope)
            pieces.append((sp.cancel(num / slope), sp.cancel((end - root) / (a0 - root))))
        c0 = pieces[0][0]
        if all(sp.cancel(c / c0) in (1, -1) for c, _ in pieces):   # one logarithm
            ratio = sp.Mul(*[r if sp.cancel(c / c0) == 1 else 1 / r for c, r in pieces])
            return c0 * sp.log(sp.factor(sp.cancel(ratio)))
        return sp.Add(*[c * sp.log(r) for c, r in pieces])

    @property
    def coupling(self) -> sp.Expr:
        """L_exact − L_decoupled: the cross-mode terms the paper's large-N reduction drops."""
        return sp.expand(self.loss - self.decoupled)

    def balance_rate(self, alpha: int, exact: bool = True) -> sp.Expr:
        """d/dt (p_α² − q_α²) along the reduced flow ṗ = −∂L/∂p, q̇ = −∂L/∂q. It vanishes
        identically for the decoupled loss (a per-mode rescaling symmetry); for the exact loss
        it is what the cross-mode terms leave: the exact breaking of per-mode conservation
        (only the sum over modes, ‖V‖² − ‖Q‖², is conserved).

        Parameters
        ----------
        alpha : int
            The mode index (0-based, modes by decreasing eigenvalue of Λ).
        exact : bool
            Use the exact loss (else the decoupled one).

        Returns
        -------
        sympy.Expr
        """
        L = self.loss if exact else self.decoupled
        p, q = self.p[alpha], self.q[alpha]
        return sp.expand(-2 * p * sp.diff(L, p) + 2 * q * sp.diff(L, q))

    def exact_fixed_point(self, N=None) -> list:
        """The all-modes-learned critical point of the exact reduced loss (numbers; ``N``
        substitutes a symbolic context length), as a_α = p_α q_α, found by Newton from the
        decoupled balanced fixed point.

        Parameters
        ----------
        N : number, optional
            Value of a symbolic context length.

        Returns
        -------
        list
            a_α per mode (30-digit mpmath floats).
        """
        subs = {} if N is None else {N_SYM: N}
        loss = self.loss.subs(subs)
        start = [float(sp.sqrt(self.fixed_point(k).subs(subs))) for k in range(len(self.p))]
        p, q = list(self.p), list(self.q)
        try:
            root = _newton(loss, p + q, start * 2)
        except (ValueError, ZeroDivisionError):
            # the critical points form curves (the rescaling p → αp, q → q/α of every mode
            # together), where Newton's Jacobian is singular: solve again on the slice
            # q_0 = p_0, which every curve crosses
            root = _newton(loss.subs(q[0], p[0]), p + q[1:], start + start[1:])
            root = root[:len(p)] + [root[0]] + root[len(p):]
        p, q = root[:len(p)], root[len(p):]
        return [a * b for a, b in zip(p, q)]

    def saddle_growth_rates(self) -> list:
        """Growth rates at the origin: minus the negative eigenvalues of the Hessian of L.

        Returns
        -------
        list
            Positive rates with multiplicity, largest first when numeric.
        """
        variables = list(self.p) + list(self.q)
        H = sp.hessian(self.loss, variables).subs({v: 0 for v in variables})
        return sorted((-ev for ev, m in H.eigenvals().items() for _ in range(m)
                       if ev.is_negative), key=lambda v: -v if v.is_number else 0)


def mode_reduction(der: Derivation, symbolic_s: bool = False) -> ModeReduction:
    """Restrict a derivation with eigenbasis tasks to the diagonal set in Λ's eigenbasis.

    The restriction evaluates the derived trace polynomial with U = I and Λ = diag(s) (a
    rotation of parameters and data together leaves L unchanged).

    Parameters
    ----------
    der : Derivation
        Of the Merged model with ``tasks="diagonal"``.
    symbolic_s : bool
        Keep Λ's eigenvalues as symbols s_1 … s_d.

    Returns
    -------
    ModeReduction

    Raises
    ------
    InputError
        Unless the model is one merged head (Merged, MultiHead with one head) with
        ``tasks="diagonal"``.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.data import N_SYM
    >>> from icldyn.theory.solutions import mode_reduction
    >>> data = ICLData(d=2, N=N_SYM, d_y=2, tasks="diagonal", Lambda="diag")
    >>> red = mode_reduction(derive(models.Merged(2, d_y=2), data), symbolic_s=True)
    >>> red.fixed_point(0)                  # a* = p q of mode 1 under the decoupled flow
    N/(s_1*(N + 2))
    >>> sp.factor(red.coupling)             # the O(1/N) cross-mode terms it drops
    s_1*s_2*(p_1**2*q_2**2*s_2 + p_2**2*q_1**2*s_1)/(2*N)
    """
    data = der.data
    head = single_head(der.model)
    if data.tasks != "diagonal" or head is None:
        raise InputError("der", "the eigenmode reduction needs the Merged model with "
                         "tasks='diagonal'")
    V, Q = head
    d = data.d
    if symbolic_s:
        s = sp.symbols(f"s_1:{d + 1}", positive=True)
    else:
        U = data.eigenbasis()
        s = tuple(sp.nsimplify((U.T * data.Lambda * U)[k, k]) for k in range(d))
    p = sp.symbols(f"p_1:{d + 1}", real=True)
    q = sp.symbols(f"q_1:{d + 1}", real=True)
    values = {"Lambda": sp.diag(*s), "U": sp.eye(d), "c": data.Sigma_w,
              V: sp.diag(*p), Q: sp.diag(*q), "_scalars": data.scalars()}
    loss = sp.expand(der.loss_poly.evaluate(values))
    modes = [{p[k], q[k]} for k in range(d)]
    decoupled = sp.Add(*[t for t in sp.Add.make_args(loss)
                         if sum(1 for m in modes if t.free_symbols & m) <= 1])
    return ModeReduction(p, q, s, loss, decoupled)


@dataclass
class IsotropicReduction:
    """Merged model, scalar Gaussian tasks with Σ_w = I and Λ = λI (docs/math.md §3.2): on the set
    Q = qI the derived gradient of Q is a multiple of I (so the set is invariant; checked when
    the reduction is built), and the flow is u̇ = ``u_dot``, q̇ = ``q_dot`` (d, N, σ, λ symbols).

    With Δ = u² − d q² (conserved) and a = uq, u² and d q² are the two roots
    (±Δ + √(Δ² + 4 d a²))/2, so ȧ = R(a; Δ) is derived by substitution. Balanced starts (Δ = 0)
    give a Riccati (logistic) equation that ``dsolve`` solves; unbalanced ones give t(a) by
    integrating 1/R after a = |Δ| sinh θ / (2√d).

    Attributes
    ----------
    u, q : sympy.Symbol
        The scalar parameters (V = u, Q = qI).
    u_dot, q_dot : sympy.Expr
        Their derived flow, −∂L/∂u and −∂L/∂q on the set.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.solutions import isotropic_reduction
    >>> red = isotropic_reduction(derive(models.Merged(2), ICLData(d=2, N=4, Lambda="iso")))
    >>> red.u, red.q
    (u, q)
    >>> red.q_dot
    -lambda**3*q*u**2 + lambda**2*u - d*lambda**3*q*u**2/N - lambda**3*q*u**2/N -
    lambda**2*q*sigma**2*u**2/N
    >>> red.conservation_rate()             # d/dt (u² − d q²)
    0
    """

    u: sp.Symbol
    q: sp.Symbol
    u_dot: sp.Expr
    q_dot: sp.Expr

    a = sp.Symbol("a", positive=True)
    a0 = sp.Symbol("a_0", positive=True)
    t = sp.Symbol("t", nonnegative=True)
    delta = sp.Symbol("Delta", real=True)

    @property
    def d(self) -> sp.Symbol:
        return dim_symbol("x")

    def conservation_rate(self) -> sp.Expr:
        """d/dt (u² − d q²) along the reduced flow (identically 0).

        Returns
        -------
        sympy.Expr
        """
        return sp.expand(2 * self.u * self.u_dot - 2 * self.d * self.q * self.q_dot)

    def rate(self, delta=None) -> sp.Expr:
        """R(a) with ȧ = R(a) on the level set u² − d q² = Δ (u, q > 0).

        Parameters
        ----------
        delta : number or sympy.Expr, optional
            Δ; None keeps it symbolic.

        Returns
        -------
        sympy.Expr
            R in the symbol ``a``.
        """
        delta = self.delta if delta is None else exact_scalar("delta", delta)
        q2 = sp.Symbol("q2", positive=True)
        adot = sp.expand((self.u_dot * self.q + self.u * self.q_dot).subs(self.u, self.a / self.q))
        adot = sp.expand(adot.subs(self.q, sp.sqrt(q2)))        # even in q: a function of q²
        if self.q in adot.free_symbols or any(e.has(sp.sqrt(q2)) for e in sp.Add.make_args(adot)):
            raise ValueError("ȧ is not a function of a and q²")
        root = sp.sqrt(delta**2 + 4 * self.d * self.a**2)
        return sp.factor(sp.radsimp(sp.factor(adot.subs(q2, (root - delta) / (2 * self.d)))))

    def fixed_point(self) -> sp.Expr:
        """The non-zero root a* of R (the same for every Δ).

        Returns
        -------
        sympy.Expr
        """
        roots = [r for r in sp.solve(sp.cancel(self.rate(0) / self.a), self.a) if r != 0]
        if len(roots) != 1:
            raise ValueError(f"expected one non-zero fixed point, got {roots}")
        return roots[0]

    def balanced_solution(self) -> sp.Expr:
        """a(t) from a(0) = a₀ on the balanced set Δ = 0, by ``dsolve``.

        Returns
        -------
        sympy.Expr
            In the symbols ``t`` and ``a0``.
        """
        A = sp.Function("a")
        rate = self.rate(0).subs(self.a, A(self.t))
        sol = sp.dsolve(sp.Eq(A(self.t).diff(self.t), rate), A(self.t),
                        ics={A(0): self.a0}).rhs
        return sp.simplify(sp.powsimp(sp.expand_log(sp.expand(sol), force=True), force=True))

    def unbalanced_time(self) -> sp.Expr:
        """t(a): the time to go from a₀ to a on the level set Δ ≠ 0 (both below a*), as the
        definite integral ∫_{a₀}^{a} da'/R(a') in closed form (``delta`` stands for |Δ|).

        Returns
        -------
        sympy.Expr
            In the symbols ``a``, ``a0`` and ``delta``.
        """
        theta = sp.Symbol("theta", positive=True)
        size = sp.Symbol("Delta", positive=True)
        x = sp.Symbol("x", positive=True)
        sub = size * sp.sinh(theta) / (2 * sp.sqrt(self.d))
        integrand = sp.simplify((1 / self.rate(size).subs(self.a, x)).subs(x, sub)
                                * sp.diff(sub, theta))
        # integrand = c / (α sinh θ − β): integrated once with generic positive α, β
        num, den = integrand.as_numer_denom()
        den = sp.expand(den)
        alpha_v = den.coeff(sp.sinh(theta))
        beta_v = -sp.expand(den - alpha_v * sp.sinh(theta))
        if theta in (num * alpha_v * beta_v).free_symbols:
            raise ValueError(f"unexpected integrand {integrand}")
        alpha, beta = sp.symbols("alpha beta", positive=True)
        generic = sp.integrate(1 / (alpha * sp.sinh(theta) - beta), theta)
        antiderivative = (num * generic).subs({alpha: alpha_v, beta: beta_v}).replace(
            sp.log, lambda arg: sp.log(sp.Abs(arg)))    # real on each side of a*
        at = [antiderivative.subs(theta, sp.asinh(2 * sp.sqrt(self.d) * v / size))
              for v in (self.a, self.a0)]
        return (at[0] - at[1]).subs(size, sp.Abs(self.delta))


def isotropic_reduction(der: Derivation) -> IsotropicReduction:
    """The reduced flow of the Merged model on Q = qI for Λ = λI (``Lambda="iso"``: λ
    symbolic, or a numeric multiple of I) and Σ_w = I, from the derived gradient (dimensions,
    N and σ symbolic; d_y = 1).

    Parameters
    ----------
    der : Derivation
        Of the Merged model with ``ICLData(..., Lambda="iso")`` (or a multiple of I).

    Returns
    -------
    IsotropicReduction

    Raises
    ------
    InputError
        Unless the model is a single merged head with scalar Gaussian tasks (d_y = 1,
        Σ_w = I) and Λ = λI.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.solutions import isotropic_reduction
    >>> red = isotropic_reduction(derive(models.Merged(2), ICLData(d=2, N=4, Lambda="iso")))
    >>> red.fixed_point()                   # a* = u q, N/(λ(N + d + 1)) at σ = 0
    N/(N*lambda + d*lambda + lambda + sigma**2)
    """
    data = der.data
    head = single_head(der.model)
    if head is None or data.d_y != 1 or not data.isotropic_tasks:
        raise InputError("der", "the isotropic reduction needs the Merged model with scalar "
                         "Gaussian tasks, Σ_w = I")
    lam = data.Lambda[0, 0]
    if data.Lambda != lam * sp.eye(data.d):
        raise InputError("der", "the isotropic reduction needs Λ = λI (Lambda='iso'); for "
                         "other Λ use mode_reduction (eigenbasis tasks) or integrate the flow")
    u, q = sp.Symbol("u", positive=True), sp.Symbol("q", positive=True)
    flows = {}
    for name, g in der.gradient_poly.items():
        reduced = g.scalar_letter("Lambda", lam).scalar_letter(head[1], q) \
            .scalar_letter(head[0], u)
        if any(word for _, word in reduced.terms):
            raise ValueError(f"∂L/∂{name} is not a multiple of I on Q = qI")
        flows[name] = -sp.Add(*reduced.terms.values()).subs(dim_symbol("y"), 1)
    return IsotropicReduction(u, q, flows[head[0]], flows[head[1]])


def single_head(model) -> tuple | None:
    """(value letter, key-query letter) when ``model``'s ŷ is one merged head V S_yx Q x_q / N
    with a free Q (``Model.head_products``: Merged, MultiHead with one head); else None.

    Parameters
    ----------
    model : Model

    Returns
    -------
    tuple or None

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.solutions import single_head
    >>> single_head(models.Merged(2)), single_head(models.MultiHead(2, heads=1))
    (('V', 'Q'), ('V0', 'Q0'))
    >>> print(single_head(models.MultiHead(2, heads=2)))          # two heads: no single V, Q
    None
    """
    heads = model.head_products()
    if heads is None or heads.rank is not None or len(heads.heads) != 1:
        return None
    return heads.heads[0]


def _newton(loss: sp.Expr, variables: list, start: list) -> list:
    """A zero of ∇loss near ``start`` by mpmath's Newton (30 digits, tolerance 1e-20)."""
    grad = [sp.diff(loss, v) for v in variables]
    return list(sp.nsolve(grad, variables, start, tol=1e-20, prec=30))
