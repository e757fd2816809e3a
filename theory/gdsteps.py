"""L steps of preconditioned gradient descent in context, exactly (Ahn, Cheng, Daneshmand,
Sra, NeurIPS 2023): a ``Stack`` of L Merged layers (d_y = 1) on the set

    Q_l = q_l I,   V_l = u_l        (l = 1 … L),

where ŷ depends on the parameters through the step sizes a_l = u_l q_l only (each layer's
rescaling symmetry). With Ahn et al.'s conventions (``query_in_keys=False``,
``negate_readout=True``) layer l updates every label by y_i ← y_i + (a_l/N) Σ_j y_j x_jᵀ x_i, i.e.
the stack runs L steps of gradient descent on the in-context least-squares loss; without
them the query takes part in the sums and the sign of the readout flips.

For Λ = I, Σ_w = I and σ = 0 the exact loss on the set is a polynomial in a_1 … a_L whose
coefficients are rational functions of N and d (they hold the Wishart moments E tr S^k, k ≤ 2L,
of S = Σ_i x_i x_iᵀ). It is obtained from the stack's derived loss by setting every letter to a
multiple of the identity, where a trace of identities is the dimension: nothing is typed in.
On the set the gradient with respect to Q_l is a multiple of I (the loss is invariant under
Q_l → O Q_l Oᵀ for all l at once, and the point is fixed by that action), so a critical point of
the polynomial is a critical point of the whole stack.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import mpmath
import sympy as sp

from .data import N_SYM, SIGMA
from .derive import Derivation
from .errors import InputError
from .models import Merged, Stack
from .words import dim_symbol

__all__ = ["StepSizeLoss", "GDSet", "step_size_loss", "minimal_steps", "gd_parameters"]

DPS = 40
D_SYM = sp.Symbol("d", positive=True, integer=True)


@dataclass
class StepSizeLoss:
    """The loss on the set Q_l = q_l I, V_l = u_l as a polynomial in the step sizes.

    Attributes
    ----------
    expr : sympy.Expr
        In ``steps``, N and d (symbols).
    steps : tuple of sympy.Symbol
        The step sizes a_1 … a_L (a_l = u_l q_l).
    value : sympy.Expr
        ``expr`` at the derivation's N and d.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.gdsteps import step_size_loss
    >>> stack = models.Stack([models.Merged(1)], query_in_keys=False, negate_readout=True)
    >>> loss = step_size_loss(derive(stack, ICLData(d=1, N=4, Lambda=np.eye(1))))
    >>> loss.expr
    a1**2*(d/2 + d**2/(2*N) + d/(2*N)) + a1*d + d/2
    >>> loss.at(d=3, N=8).value
    9*a1**2/4 + 3*a1 + 3/2
    """

    expr: sp.Expr
    steps: tuple
    value: sp.Expr

    def at(self, d: int, N: int) -> "StepSizeLoss":
        """The same polynomial with ``value`` at another (d, N) (``expr`` is exact in both).

        Parameters
        ----------
        d, N : int
            Input dimension and context length.

        Returns
        -------
        StepSizeLoss
        """
        return StepSizeLoss(self.expr, self.steps, sp.expand(self.expr.subs(
            {D_SYM: d, N_SYM: N})))


@dataclass
class GDSet:
    """A critical point of the step-size loss.

    Attributes
    ----------
    steps : tuple of sympy.Float
        The step sizes a_l (DPS digits).
    loss : sympy.Float
        The loss there.
    params : dict
        A balanced point of the stack: u_l = sign(a_l)√|a_l|, Q_l = √|a_l| I.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.gdsteps import minimal_steps, step_size_loss
    >>> stack = models.Stack([models.Merged(1)], query_in_keys=False, negate_readout=True)
    >>> best = minimal_steps(step_size_loss(derive(stack, ICLData(d=1, N=4, Lambda=np.eye(1)))))[0]
    >>> round(float(best.steps[0]), 6), round(float(best.loss), 6)   # a = -N/(N + d + 1), L = 1/6
    (-0.666667, 0.166667)
    >>> sorted(best.params)
    ['0.Q', '0.V']
    """

    steps: tuple
    loss: sp.Float
    params: dict


def step_size_loss(der: Derivation) -> StepSizeLoss:
    """The exact loss of a stack of Merged layers on the preconditioned-GD set.

    Parameters
    ----------
    der : Derivation
        Of a ``Stack`` of ``Merged`` layers with d_y = 1, on data with Λ = I, gaussian tasks
        with Σ_w = I and σ = 0.

    Returns
    -------
    StepSizeLoss

    Raises
    ------
    InputError
        When ``der`` is not of such a stack with d_y = 1 and gaussian tasks, or its data are not
        isotropic (Λ = I, Σ_w = I, σ = 0).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.gdsteps import step_size_loss
    >>> layers = [models.Merged(1), models.Merged(1)]          # Ahn et al.'s two-layer GD stack
    >>> stack = models.Stack(layers, query_in_keys=False, negate_readout=True)
    >>> loss = step_size_loss(derive(stack, ICLData(d=1, N=4, Lambda=np.eye(1))))
    >>> loss.steps
    (a1, a2)
    >>> loss.value
    15*a1**2*a2**2/4 + 3*a1**2*a2 + 3*a1**2/4 + 3*a1*a2**2 + 3*a1*a2 + a1 + 3*a2**2/4 + a2 + 1/2
    """
    model, data = der.model, der.data
    if not isinstance(model, Stack) or not all(type(m) is Merged for m in model.layers):
        raise InputError("der", f"needs a Stack of Merged layers, got {model!r}")
    if data.d_y != 1 or data.tasks != "gaussian":
        raise InputError("der", "needs d_y = 1 and gaussian tasks")
    vals = data.values()
    if vals["Lambda"] != sp.eye(data.d) or vals["Sigma_w"] != sp.eye(data.d) or data.noise != 0:
        raise InputError("der", "needs Λ = I, Σ_w = I and σ = 0 (isotropic data)")
    steps = sp.symbols(f"a1:{len(model.layers) + 1}", real=True)
    poly = der.loss_poly
    for l, a in enumerate(steps):
        poly = poly.scalar_letter(f"V__{l + 1}", a).scalar_letter(f"Q__{l + 1}", 1)
    poly = poly.scalar_letter("Lambda", 1).scalar_letter("Sigma_w", 1)
    expr = sp.expand(poly.to_sympy().subs({SIGMA: 0, dim_symbol("y"): 1,
                                           dim_symbol("x"): D_SYM}))
    return StepSizeLoss(sp.collect(expr, steps), steps, None).at(data.d, data.N)


def minimal_steps(loss: StepSizeLoss, starts: int = 32, seed: int = 0) -> list[GDSet]:
    """Local minima of ``loss.value`` in the step sizes: from ``starts`` seeded random starts in
    [−2, 2]^L (the one-step optimum is N/(N + d + 1) < 1), gradient descent with backtracking
    (it only goes down, so it ends at minima, not saddles), then Newton's method at DPS digits;
    a point is kept when its L × L Hessian is positive definite. Distinct minima, lowest first.
    The first is the global minimum of the polynomial only if no start missed it.

    Parameters
    ----------
    loss : StepSizeLoss
        From ``step_size_loss``.
    starts : int
        Random starts.
    seed : int
        Seed of the starts.

    Returns
    -------
    list of GDSet
        Distinct local minima, lowest loss first.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.gdsteps import minimal_steps, step_size_loss
    >>> layers = [models.Merged(1), models.Merged(1)]
    >>> stack = models.Stack(layers, query_in_keys=False, negate_readout=True)
    >>> loss = step_size_loss(derive(stack, ICLData(d=1, N=4, Lambda=np.eye(1))))
    >>> best = minimal_steps(loss, starts=8)[0]
    >>> [round(float(a), 4) for a in best.steps], round(float(best.loss), 4)
    ([-1.0, -0.3333], 0.0833)
    """
    a = loss.steps
    grad = sp.Matrix([sp.diff(loss.value, s) for s in a])
    hess = grad.jacobian(a)
    f_num, g_num = (sp.lambdify(a, e, "math") for e in (loss.value, list(grad)))
    f_mp, g_mp, h_mp = (sp.lambdify(a, e, "mpmath") for e in (loss.value, list(grad), hess))
    rng = random.Random(seed)
    found: list[tuple] = []
    for _ in range(starts):
        x = _descend(f_num, g_num, [rng.uniform(-2, 2) for _ in a])
        if x is None:
            continue
        with mpmath.workdps(DPS):
            try:
                root = mpmath.findroot(lambda *v: g_mp(*v), [mpmath.mpf(v) for v in x])
            except (ValueError, ZeroDivisionError):
                continue
            root = tuple(root[i] for i in range(len(a))) if isinstance(root, mpmath.matrix) \
                else (root,)
            if min(mpmath.eigsy(mpmath.matrix(h_mp(*root)), eigvals_only=True)) <= 0:
                continue
            if all(max(abs(r - s) for r, s in zip(root, p)) > mpmath.mpf(10) ** -20
                   for p, _ in found):
                found.append((root, f_mp(*root)))
    found.sort(key=lambda rl: rl[1])
    return [GDSet(tuple(sp.Float(r, DPS) for r in root), sp.Float(value, DPS),
                  gd_parameters(len(a), root)) for root, value in found]


def _descend(f, g, x: list, iterations: int = 5000, tol: float = 1e-9) -> list | None:
    """Gradient descent with Armijo backtracking from x; None if it runs away."""
    step = 1.0
    fx = f(*x)
    for _ in range(iterations):
        gx = g(*x)
        norm2 = sum(v * v for v in gx)
        if norm2 < tol**2:
            return x
        while True:
            trial = [xi - step * gi for xi, gi in zip(x, gx)]
            ft = f(*trial)
            if ft <= fx - 0.5 * step * norm2:
                break
            step /= 2
            if step < 1e-16:
                return x
        x, fx, step = trial, ft, min(2 * step, 1.0)
        if abs(fx) > 1e12:
            return None
    return x


def gd_parameters(layers: int, steps) -> dict:
    """Balanced parameters of the set: u_l = sign(a_l)√|a_l|, Q_l = √|a_l| (times I).

    Parameters
    ----------
    layers : int
        Number of layers L.
    steps : sequence
        The step sizes a_1 … a_L.

    Returns
    -------
    dict
        {"l.V": 1 × 1 Matrix, "l.Q": scalar} per layer (the Stack's parameter names).

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.gdsteps import gd_parameters
    >>> params = gd_parameters(2, [sp.Rational(1, 4), -1])
    >>> sorted(params), params["1.V"], float(params["1.Q"])
    (['0.Q', '0.V', '1.Q', '1.V'], Matrix([[-1.0]]), 1.0)
    """
    out = {}
    for l in range(layers):
        a = sp.Float(steps[l], DPS)
        r = sp.sqrt(abs(a))
        out[f"{l}.V"] = sp.Matrix([[r if a >= 0 else -r]])
        out[f"{l}.Q"] = r
    return out
