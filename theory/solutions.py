"""Eigenmode reduction and learning-stage timescales of the Merged model (MATH.md §3.3).

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

from .data import N_SYM
from .derive import Derivation
from .errors import InputError


@dataclass
class ModeReduction:
    """Per-mode loss on the eigenbasis-diagonal set: ``loss`` in symbols ``p``, ``q``
    (exact), ``decoupled`` (cross-mode terms dropped), eigenvalues ``s`` (numbers or symbols)."""

    p: tuple
    q: tuple
    s: tuple
    loss: sp.Expr
    decoupled: sp.Expr

    def mode_loss(self, alpha: int) -> sp.Expr:
        """L_α(p_α, q_α): the decoupled terms that involve mode α (constant dropped)."""
        own = {self.p[alpha], self.q[alpha]}
        return sp.Add(*[t for t in sp.Add.make_args(self.decoupled) if t.free_symbols & own])

    def balanced_rate(self, alpha: int) -> tuple[sp.Symbol, sp.Expr]:
        """(a, f(a)) with ȧ = f(a) for a = p_α q_α on p_α = q_α = √a."""
        a = sp.Symbol("a", positive=True)
        p, q = self.p[alpha], self.q[alpha]
        L = self.mode_loss(alpha)
        adot = p * (-sp.diff(L, q)) + q * (-sp.diff(L, p))
        return a, sp.factor(sp.expand(adot.subs({p: sp.sqrt(a), q: sp.sqrt(a)})))

    def fixed_point(self, alpha: int) -> sp.Expr:
        """The non-zero root a*_α of the balanced decoupled rate."""
        a, f = self.balanced_rate(alpha)
        roots = [r for r in sp.solve(sp.cancel(f / a), a) if r != 0]
        if len(roots) != 1:
            raise ValueError(f"mode {alpha}: expected one non-zero fixed point, got {roots}")
        return roots[0]

    def half_time(self, alpha: int, a0) -> sp.Expr:
        """t_α = ∫_{a0}^{a*/2} da / f(a): time for mode α to reach half its fixed point.

        1/f is split into partial fractions Σ c_j/(a − r_j); each integrates to
        c_j log((a*/2 − r_j)/(a0 − r_j)), real because a0 and a*/2 lie on the same side of
        every root of f (0 < a0 < a*/2 < a*)."""
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
        (only the sum over modes, ‖V‖² − ‖Q‖², is conserved)."""
        L = self.loss if exact else self.decoupled
        p, q = self.p[alpha], self.q[alpha]
        return sp.expand(-2 * p * sp.diff(L, p) + 2 * q * sp.diff(L, q))

    def exact_fixed_point(self, N=None) -> list:
        """The all-modes-learned critical point of the exact reduced loss (numbers; ``N``
        substitutes a symbolic context length), as a_α = p_α q_α, found by Newton from the
        decoupled balanced fixed point."""
        subs = {} if N is None else {N_SYM: N}
        loss = self.loss.subs(subs)
        variables = list(self.p) + list(self.q)
        start = [sp.sqrt(self.fixed_point(k).subs(subs)) for k in range(len(self.p))]
        grad = [sp.diff(loss, v) for v in variables]
        root = sp.nsolve(grad, variables, [float(x) for x in start * 2], tol=1e-20, prec=30)
        d = len(self.p)
        return [root[k] * root[d + k] for k in range(d)]

    def saddle_growth_rates(self) -> list:
        """Growth rates at the origin: minus the negative eigenvalues of the Hessian of L."""
        variables = list(self.p) + list(self.q)
        H = sp.hessian(self.loss, variables).subs({v: 0 for v in variables})
        return sorted((-ev for ev, m in H.eigenvals().items() for _ in range(m)
                       if ev.is_negative), key=lambda v: -v if v.is_number else 0)


def mode_reduction(der: Derivation, symbolic_s: bool = False) -> ModeReduction:
    """Restrict a derivation with eigenbasis tasks to the diagonal set in Λ's eigenbasis.

    The restriction evaluates the derived trace polynomial with U = I and Λ = diag(s) (a
    rotation of parameters and data together leaves L unchanged)."""
    data = der.data
    if data.tasks != "diagonal" or der.model.name != "Merged":
        raise InputError("der", "the eigenmode reduction needs the Merged model with "
                         "tasks='diagonal'")
    d = data.d
    if symbolic_s:
        s = sp.symbols(f"s_1:{d + 1}", positive=True)
    else:
        U = data.eigenbasis()
        s = tuple(sp.nsimplify((U.T * data.Lambda * U)[k, k]) for k in range(d))
    p = sp.symbols(f"p_1:{d + 1}", real=True)
    q = sp.symbols(f"q_1:{d + 1}", real=True)
    values = {"Lambda": sp.diag(*s), "U": sp.eye(d), "c": data.Sigma_w,
              "V": sp.diag(*p), "Q": sp.diag(*q), "_scalars": data.scalars()}
    loss = sp.expand(der.loss_poly.evaluate(values))
    modes = [{p[k], q[k]} for k in range(d)]
    decoupled = sp.Add(*[t for t in sp.Add.make_args(loss)
                         if sum(1 for m in modes if t.free_symbols & m) <= 1])
    return ModeReduction(p, q, s, loss, decoupled)
