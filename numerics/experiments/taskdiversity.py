"""Task diversity: pretrain on a finite set of P tasks, test on the task family.

The Merged model with scalar tasks (d_y = 1) has L(u, Q) = F(uQ) with F quadratic in M = uQ
(docs/math.md §3.2). For a finite task set T = {w_1..w_P} the package derives F_T exactly (the average
over T of the loss conditional on the task, ``ICLData(..., tasks=T)``); its minimiser M*(T) is
what a layer trained to convergence on infinitely many prompts of those tasks computes. Here:

* ``quadratic_minimum``: M* from the derivation's compiled gradient. At u = 1, ∂L/∂Q = ∇F(M) is
  affine in M, ∇F(M) = 𝒜(M) − B with 𝒜 the Hessian of F (symmetric, positive definite); M*
  solves 𝒜(M) = B, by conjugate gradients with 𝒜(M) = ∇F(M) − ∇F(0) (exact, F is quadratic);
  no formula for M* is typed in.
* ``TaskDiversity.fit``: M*(T), its exact loss on T (in-distribution, memorisation) and its exact
  loss on fresh tasks of the family (the derived Gaussian-task loss at M*(T): in-context
  learning), both exact conditional on the draw of T. The loss on T enters through the set's
  second moment only (``SecondMomentLoss``: two Gaussian-row kernels, no loop over the tasks;
  a fit at d = 200 takes seconds).
* ``SetTraining``: every other parameterization (MultiHead, SeparateKQ, FullLSA; Merged with
  vector tasks), and the eigenbasis family: the exact loss on T minimised numerically from
  seeded starts, its end point critical to rounding, classified by the package's critical-set
  tools (``certify``: a certified global minimum, or a local minimum modulo the symmetry
  orbit), and its exact loss on fresh family tasks; ``set_count_sweep`` over draws of T.
* ``baseline_risks``: Monte Carlo risks on the same two task laws of OLS, ridge (Bayes-optimal
  for the Gaussian family), the finite set's Bayes-optimal predictor (dMMSE: the posterior over
  the P tasks) and the learned algorithm ŷ = S_yx M* x_q / N itself.
* ``task_count_sweep``: all of it over draws of T (seeded), mean and standard error over draws.
* ``lu_sweep``: the same in the conventions of Lu, Letey, Zavatone-Veth, Maiti, Pehlevan
  (arXiv:2405.11751), next to their asymptotic formula (``asymptotic.py``, comparison only).

Risks here are the package's ½E(ŷ − y_q)² (noise included) unless a name says ``e_``: Lu et al.'s
e = E(ŷ − y_q)² = 2 × ours.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

from ...theory import ICLData, derive, models
from ...theory.errors import InputError, check_int, check_real
from ..compiled.codegen import CompiledFlow, compile_flow
from ..simulation.sgd import PromptSampler
from .asymptotic import icl_error
from .risks import ols_weights, ridge_weights, set_posterior_weights

__all__ = ["draw_task_set", "second_moment_set", "quadratic_minimum", "SecondMomentLoss",
           "TaskDiversity", "draw_family_tasks", "SetTraining", "lowest_minimum", "baseline_risks",
           "task_count_sweep", "set_count_sweep", "parameterization_sweep", "lu_setting",
           "lu_sweep", "write_task_diversity"]


def draw_task_set(P: int, d: int, seed) -> np.ndarray:
    """P tasks w ~ N(0, I_d) of the Gaussian family.

    Parameters
    ----------
    P, d : int
        Number of tasks and input dimension.
    seed : int or sequence of int
        Anything ``numpy.random.default_rng`` takes.

    Returns
    -------
    numpy.ndarray (P, 1, d)

    Examples
    --------
    >>> from icldyn.numerics.experiments.taskdiversity import draw_task_set
    >>> tasks = draw_task_set(P=3, d=2, seed=0)
    >>> tasks.shape                                           # P scalar tasks w ~ N(0, I)
    (3, 1, 2)
    >>> bool((draw_task_set(3, 2, seed=0) == tasks).all())    # the seed fixes the set
    True
    """
    P, d = check_int("P", P), check_int("d", d)
    return np.random.default_rng(seed).standard_normal((P, 1, d))


def second_moment_set(tasks) -> np.ndarray:
    """A set of r = rank(Σ̂) ≤ d scalar tasks with the same second moment Σ̂ = (1/P) Σ_k w_k w_kᵀ
    as ``tasks`` ((P, 1, d)): w'_j = √(r λ_j) v_j from Σ̂'s eigenpairs (λ_j > 1e-12 λ_max).
    With d_y = 1 the loss is quadratic in w, so a task set enters only through Σ̂
    (tests/test_finite_tasks.py checks it): the derived loss on this set is the loss on
    ``tasks``, with min(P, d) tasks in the compiled loop over the set instead of P.

    Parameters
    ----------
    tasks : numpy.ndarray (P, 1, d)
        A scalar task set.

    Returns
    -------
    numpy.ndarray (r, 1, d)

    Raises
    ------
    InputError
        When the tasks are not a (P, 1, d) array of scalar tasks.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.taskdiversity import draw_task_set, second_moment_set
    >>> tasks = draw_task_set(P=50, d=3, seed=0)
    >>> small = second_moment_set(tasks)
    >>> small.shape                                           # d tasks stand for 50
    (3, 1, 3)
    >>> moment = lambda T: T[:, 0].T @ T[:, 0] / len(T)
    >>> bool(np.allclose(moment(small), moment(tasks)))
    True
    >>> second_moment_set(tasks[:2]).shape                    # rank 2: two tasks
    (2, 1, 3)
    """
    W = np.asarray(tasks, dtype=float)
    if W.ndim != 3 or W.shape[1] != 1:
        raise InputError("tasks", f"must be a (P, 1, d) array of scalar tasks, got {W.shape}")
    lam, V = np.linalg.eigh(W[:, 0, :].T @ W[:, 0, :] / len(W))
    keep = lam > 1e-12 * lam.max()
    r = int(keep.sum())
    return (np.sqrt(r * lam[keep]) * V[:, keep]).T[:, None, :]


def quadratic_minimum(flow: CompiledFlow, rtol: float = 1e-7, maxiter: int = 300) -> np.ndarray:
    """M* = argmin F(M) for a compiled Merged flow with d_y = 1 (L(u, Q) = F(uQ)).

    Solves the stationarity system ∇F(M) = 0 by conjugate gradients on the compiled gradient
    (see the module docstring); ``rtol`` bounds ‖∇F(M*)‖ / ‖∇F(0)‖ (rounding in the gradient
    puts a floor under it, ~1e-9 at d = 100 with Λ = I/d and growing with d; the loss at M* is
    exact to ~1e-14 even at rtol = 1e-7, its error being quadratic in M − M*), reached in
    ``maxiter`` iterations or an error.

    Parameters
    ----------
    flow : CompiledFlow
        Of the Merged model with d_y = 1.
    rtol : float
        Relative gradient tolerance.
    maxiter : int
        Conjugate-gradient iteration cap.

    Returns
    -------
    M* as a (d, d) array.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.experiments.taskdiversity import quadratic_minimum
    >>> flow = compile_flow(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2))),
    ...                     backend="numpy")
    >>> M = quadratic_minimum(flow)
    >>> np.round(M, 6)                       # Λ = I: M* = N/(N + 1 + d) I = 4/7 I
    array([[0.571429, 0.      ],
           [0.      , 0.571429]])
    >>> theta = flow.pack({"V": 1.0, "Q": M})
    >>> bool(np.abs(flow.grad(theta)).max() < 1e-9), round(flow.loss(theta), 6)
    (True, 0.428571)
    """
    _check_merged_scalar(flow, "flow")
    return _stationary_point(lambda theta: flow.grad(theta), flow, rtol, maxiter)


def _check_merged_scalar(flow, arg: str) -> None:
    if not isinstance(flow, CompiledFlow) or not isinstance(flow.model, models.Merged) \
            or flow.data.d_y != 1:
        raise InputError(arg, "needs a compiled flow of models.Merged(d) with d_y = 1 "
                         "(the loss is then quadratic in M = uQ)")


def _stationary_point(grad, flow: CompiledFlow, rtol: float, maxiter: int) -> np.ndarray:
    """M with ∇F(M) = 0 by conjugate gradients, ``grad`` a gradient in θ = (u, vec Q) of a loss
    F(uQ) quadratic in M = uQ (``flow`` packs θ)."""
    from scipy.sparse.linalg import LinearOperator, cg

    d = flow.data.d
    u = flow.pack({"V": 1.0, "Q": 0.0})[:1]

    def gradient(M):
        return grad(np.concatenate([u, np.ravel(M)]))[1:]

    B = -gradient(np.zeros(d * d))
    hessian = LinearOperator((d * d, d * d), matvec=lambda M: gradient(M) + B, dtype=float)
    M, info = cg(hessian, B, rtol=rtol, atol=0.0, maxiter=maxiter)
    residual = np.linalg.norm(gradient(M)) / max(np.linalg.norm(B), 1e-300)
    if info != 0 or residual > 100 * rtol:
        raise InputError("flow", f"the stationarity system did not converge (relative "
                         f"gradient {residual:.1e}): is the loss convex in M?")
    return M.reshape(d, d)


class SecondMomentLoss:
    """The exact loss on a scalar task set T (d_y = 1) without a loop over its tasks.

    The loss is quadratic in the task w, so its average over a task law is affine in the law's
    second moment: L_T = L[Σ̂] with Σ̂ = (1/P) Σ_k w_k w_kᵀ = O diag(λ) Oᵀ, and L[Σ] = L[0] + ℓ(Σ)
    with ℓ linear. Σ̂ may be singular (P < d) while the Gaussian-row law needs Σ_w positive
    definite, so with Σ̂ = 2·(Σ̂ + I)/2 − I

        L_T(u, Q) = 2 L_gauss[Oᵀ Λ O, (diag(λ) + I)/2](u, Oᵀ Q O) − L_gauss[Λ, I](u, Q),

    two derived losses: Gaussian rows with Σ_w = (diag(λ) + I)/2 in Σ̂'s eigenbasis (x → Oᵀx,
    w → Oᵀw leave ŷ − y_q unchanged when Q → OᵀQO), and the family's (Σ_w = I). The Gaussian
    kernel takes Σ_w as data, so T costs one evaluation of a d × d law, not P; rotating makes
    Σ_w diagonal (and Λ too when Λ ∝ I), which keeps ICLData's exact positive-definiteness
    check cheap at d = 200 (tests/test_taskdiversity.py checks L_T against the finite-set
    derivation). ``loss``, ``grad`` and ``pack`` as on a CompiledFlow.

    Parameters
    ----------
    tasks : numpy.ndarray (P, 1, d)
        A scalar task set.
    family : CompiledFlow
        The family's compiled flow (Merged, d_y = 1, Σ_w = I).
    backend : str
        Backend of the rotated flow ("numba" or "numpy").

    Raises
    ------
    InputError
        When the tasks are not a (P, 1, d) array of scalar tasks.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.experiments.taskdiversity import SecondMomentLoss, draw_task_set
    >>> family = ICLData(d=2, N=4, Lambda=np.eye(2))
    >>> flow = compile_flow(derive(models.Merged(2), family), backend="numpy")
    >>> tasks = draw_task_set(5, 2, seed=0)
    >>> on_set = SecondMomentLoss(tasks, flow, backend="numpy")
    >>> looped = compile_flow(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2),
    ...                                                          tasks=tasks)), backend="numpy")
    >>> theta = flow.pack({"V": 0.7, "Q": [[0.5, 0.1], [0.0, 0.3]]})
    >>> bool(np.isclose(on_set.loss(theta), looped.loss(theta)))     # the same exact loss
    True
    >>> bool(np.allclose(on_set.grad(theta), looped.grad(theta)))
    True
    """

    def __init__(self, tasks, family: CompiledFlow, backend: str = "numba"):
        W = np.asarray(tasks, dtype=float)
        data = family.data
        if W.ndim != 3 or W.shape[1] != 1 or W.shape[2] != data.d:
            raise InputError("tasks", f"must be a (P, 1, {data.d}) array of scalar "
                             f"tasks, got {W.shape}")
        lam, self.O = np.linalg.eigh(W[:, 0, :].T @ W[:, 0, :] / len(W))
        Lambda = data.Lambda
        if Lambda != Lambda[0, 0] * sp.eye(data.d):
            Lambda = self.O.T @ np.array(Lambda.tolist(), dtype=float) @ self.O
        rotated = ICLData(d=data.d, N=data.N, Lambda=Lambda, tasks="gaussian",
                          Sigma_w=np.diag((np.maximum(lam, 0.0) + 1.0) / 2), noise=data.noise)
        self.rotated = compile_flow(derive(family.model, rotated), backend)
        self.family = family
        self.model, self.data, self.pack = family.model, family.data, family.pack

    def _rotate(self, theta, left, right) -> np.ndarray:
        u, Q = theta[:1], theta[1:].reshape(self.data.d, self.data.d)
        return np.concatenate([u, (left @ Q @ right).ravel()])

    def loss(self, theta) -> float:
        """L_T(θ) = ½E(ŷ − y_q)² averaged over T.

        Parameters
        ----------
        theta : array_like (1 + d²,)
            (u, vec Q) as the family flow packs it.

        Returns
        -------
        float
        """
        theta = np.asarray(theta, dtype=float)
        return (2 * self.rotated.loss(self._rotate(theta, self.O.T, self.O))
                - self.family.loss(theta))

    def grad(self, theta) -> np.ndarray:
        """∇L_T(θ).

        Parameters
        ----------
        theta : array_like (1 + d²,)
            (u, vec Q) as the family flow packs it.

        Returns
        -------
        numpy.ndarray (1 + d²,)
        """
        theta = np.asarray(theta, dtype=float)
        g = self.rotated.grad(self._rotate(theta, self.O.T, self.O))
        return 2 * self._rotate(g, self.O, self.O.T) - self.family.grad(theta)


class TaskDiversity:
    """The Merged model (d_y = 1) pretrained on finite task sets, tested on the Gaussian family.

    ``TaskDiversity(d, N, Lambda, noise)``: inputs x ~ N(0, Λ), family w ~ N(0, I_d), labels
    y = wᵀx + ε, ε ~ N(0, σ²). ``fit(tasks)`` trains on a (P, 1, d) task set.

    Parameters
    ----------
    d, N : int
        Input dimension and context length.
    Lambda : array_like or sympy.Matrix
        Input covariance Λ (numeric).
    noise : float
        Label noise standard deviation σ.
    backend : str
        "numba" or "numpy".

    Raises
    ------
    InputError
        When Λ, N or the noise are symbolic.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.taskdiversity import TaskDiversity, draw_task_set
    >>> setting = TaskDiversity(d=2, N=4, Lambda=np.eye(2), noise=0.5, backend="numpy")
    >>> for P in (1, 2, 16):                      # more pretraining tasks: less memorisation
    ...     fit = setting.fit(draw_task_set(P, 2, seed=0))
    ...     print(P, f"train {fit['train']:.3f}, test {fit['test']:.3f}")
    1 train 0.137, test 0.908
    2 train 0.178, test 0.772
    16 train 0.416, test 0.596
    >>> round(setting.family_minimum()[1], 3)     # P → ∞
    0.573
    """

    def __init__(self, d: int, N: int, Lambda, noise: float = 0.0, backend: str = "numba"):
        self.family = ICLData(d=d, N=N, Lambda=Lambda, tasks="gaussian", noise=noise)
        if not self.family.is_numeric():
            raise InputError("Lambda", "task diversity needs numeric Λ, N and noise")
        self.d, self.N, self.backend = d, int(N), backend
        self.noise = float(self.family.noise)
        self.Lambda = np.array(self.family.Lambda.tolist(), dtype=float)
        self.model = models.Merged(d)
        self.family_flow = compile_flow(derive(self.model, self.family), backend)
        self._family_minimum = None

    def set_flow(self, tasks) -> CompiledFlow:
        """The compiled flow of the exact loss on the task set ``tasks`` ((P, 1, d)), given to
        the derivation as its ``second_moment_set`` (the same loss, at most d tasks).

        Parameters
        ----------
        tasks : numpy.ndarray (P, 1, d)
            A scalar task set.

        Returns
        -------
        CompiledFlow
        """
        data = ICLData(d=self.d, N=self.N, Lambda=self.family.Lambda,
                       tasks=second_moment_set(tasks),
                       noise=self.family.noise)
        return compile_flow(derive(self.model, data), self.backend)

    def theta(self, M: np.ndarray) -> np.ndarray:
        """θ with u = 1, Q = M (any point with uQ = M has the same loss).

        Parameters
        ----------
        M : numpy.ndarray (d, d)

        Returns
        -------
        numpy.ndarray (1 + d²,)
        """
        return self.family_flow.pack({"V": 1.0, "Q": M})

    def family_minimum(self) -> tuple[np.ndarray, float]:
        """(M*, loss) of the Gaussian family itself (P → ∞), from the same solver.

        Returns
        -------
        tuple
            (M* (d, d), its loss ½E(ŷ − y_q)²); computed once.
        """
        if self._family_minimum is None:
            M = quadratic_minimum(self.family_flow)
            self._family_minimum = (M, self.family_flow.loss(self.theta(M)))
        return self._family_minimum

    def set_loss(self, tasks) -> SecondMomentLoss:
        """The exact loss on ``tasks`` as ``SecondMomentLoss`` (no loop over T).

        Parameters
        ----------
        tasks : numpy.ndarray (P, 1, d)
            A scalar task set.

        Returns
        -------
        SecondMomentLoss
        """
        return SecondMomentLoss(tasks, self.family_flow, self.backend)

    def fit(self, tasks, rtol: float = 1e-7) -> dict:
        """M*(T) and its exact losses: ``train`` on T, ``test`` on fresh family tasks,
        ``gap`` = test − train (losses ½E(ŷ − y_q)², noise included).

        Parameters
        ----------
        tasks : numpy.ndarray (P, 1, d)
            A scalar task set.
        rtol : float
            As in ``quadratic_minimum``.

        Returns
        -------
        dict
            ``M``, ``train``, ``test``, ``gap`` and ``loss`` (the set's ``SecondMomentLoss``).
        """
        loss = self.set_loss(tasks)
        M = _stationary_point(loss.grad, self.family_flow, rtol, 300)
        train, test = loss.loss(self.theta(M)), self.family_flow.loss(self.theta(M))
        return {"M": M, "train": train, "test": test, "gap": test - train, "loss": loss}


def draw_family_tasks(family: ICLData, P: int, seed) -> np.ndarray:
    """P tasks drawn from ``family``'s task law (Gaussian rows, or eigenbasis tasks
    U diag(δ) Uᵀ), by the simulator's own sampler.

    Parameters
    ----------
    family : ICLData
        Numeric data with tasks "gaussian" or "diagonal".
    P : int
        Number of tasks.
    seed : int or sequence of int
        Anything ``numpy.random.default_rng`` takes.

    Returns
    -------
    numpy.ndarray (P, d_y, d)

    Raises
    ------
    InputError
        When the family's tasks are not 'gaussian' or 'diagonal'.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData
    >>> from icldyn.numerics.experiments.taskdiversity import draw_family_tasks
    >>> family = ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5]), d_y=2, tasks="diagonal")
    >>> W = draw_family_tasks(family, P=3, seed=0)
    >>> W.shape                                  # eigenbasis tasks U diag(δ) Uᵀ: diagonal here
    (3, 2, 2)
    >>> bool(np.allclose(W[:, 0, 1], 0.0))
    True
    """
    P = check_int("P", P)
    if family.tasks not in ("gaussian", "diagonal"):
        raise InputError("family", f"must have a task law to draw from ('gaussian' or "
                         f"'diagonal'), got tasks = {family.tasks!r}")
    return PromptSampler(family).tasks(np.random.default_rng(seed), (P,))


class SetTraining:
    """Any parameterization trained to a minimum of its exact loss on a finite task set T,
    tested exactly on the task family T was drawn from.

    ``SetTraining(model, family)``: ``family`` an ``ICLData`` with a task law ('gaussian' rows,
    any d_y; or 'diagonal', the paper's eigenbasis tasks) and numeric Λ, N, σ. ``fit(tasks)``
    minimises the derived loss on T (``ICLData(..., tasks=T)``) numerically — BFGS from
    ``starts`` seeded random starts, then Newton steps with the exact Hessian (complex-step
    products of the compiled gradient; least squares, so the symmetry orbits' null directions
    are harmless) — and reads the lowest end point's exact loss on the family. ``certify``
    classifies that point with the package's critical-set tools. The loss on T is a polynomial
    of degree 4 or more in θ (not convex): a numerical minimum is the lowest of the starts,
    proven global only where ``certify`` finds a certified global minimum set at its loss.

    Parameters
    ----------
    model : Model
        Any parameterization.
    family : ICLData
        Numeric data with a task law ("gaussian" or "diagonal").
    backend : str
        "numba" or "numpy".

    Raises
    ------
    InputError
        When the test family has symbolic Λ, N or σ, or no task law to draw from
        (tasks other than 'gaussian' or 'diagonal').

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics.experiments.taskdiversity import SetTraining, draw_family_tasks
    >>> family = ICLData(d=1, N=4, Lambda=np.eye(1), noise=0.5)
    >>> training = SetTraining(models.Merged(1), family, backend="numpy")
    >>> fit = training.fit(draw_family_tasks(family, P=2, seed=0), starts=2)
    >>> print(f"train {fit['train']:.4f}, test {fit['test']:.4f}, critical: {fit['grad'] < 1e-10}")
    train 0.1317, test 0.4631, critical: True
    >>> print(f"{training.family_minimum(starts=2)['loss']:.4f}")    # trained on the family
    0.3050
    >>> training.certify(fit).kind
    'minimum'
    """

    def __init__(self, model, family: ICLData, backend: str = "numba"):
        if not family.is_numeric() or family.tasks not in ("gaussian", "diagonal"):
            raise InputError("family", "needs numeric Λ, N, σ and a task law ('gaussian' or "
                             "'diagonal') to test on")
        self.model, self.family, self.backend = model, family, backend
        self.family_flow = compile_flow(derive(model, family), backend)

    def set_data(self, tasks) -> ICLData:
        """The data law with the family's inputs and noise and tasks uniform over ``tasks``.

        Parameters
        ----------
        tasks : numpy.ndarray (P, d_y, d)

        Returns
        -------
        ICLData
        """
        f = self.family
        return ICLData(d=f.d, N=f.N, Lambda=f.Lambda, d_y=f.d_y, tasks=tasks, noise=f.noise)

    def fit(self, tasks, starts: int = 4, seed: int = 0, scale: float = 0.5) -> dict:
        """The lowest of ``starts`` numerical minima of the exact loss on ``tasks``.

        Parameters
        ----------
        tasks : numpy.ndarray (P, d_y, d)
            The task set T.
        starts : int
            Random starts.
        seed : int
            Base seed (start k uses (seed, k)).
        scale : float
            Standard deviation of the starts' entries.

        Returns
        -------
        dict
            ``theta`` (the end point, as ``flow.pack``), ``train`` (its loss on T), ``test``
            (on fresh family tasks), ``gap`` = test − train, ``grad`` (‖∇L_T‖_∞ there: the
            criticality certificate, ~1e-13 when converged), ``losses`` (every start's end
            loss, sorted), ``flow`` (the compiled flow on T).
        """
        flow = compile_flow(derive(self.model, self.set_data(tasks)), self.backend)
        theta, losses = lowest_minimum(flow, starts, seed, scale)
        train, test = flow.loss(theta), self.family_flow.loss(theta)
        return {"theta": theta, "train": train, "test": test, "gap": test - train,
                "grad": float(np.abs(flow.grad(theta)).max()), "losses": losses,
                "flow": flow}

    def family_minimum(self, starts: int = 4, seed: int = 0, scale: float = 0.5) -> dict:
        """The same minimiser on the family's own loss (P → ∞).

        Parameters
        ----------
        starts : int
            Random starts.
        seed : int
            Base seed (start k uses (seed, k)).
        scale : float
            Standard deviation of the starts' entries.

        Returns
        -------
        dict
            ``theta``, ``loss``, ``grad``, ``losses``.
        """
        theta, losses = lowest_minimum(self.family_flow, starts, seed, scale)
        return {"theta": theta, "loss": self.family_flow.loss(theta), "losses": losses,
                "grad": float(np.abs(self.family_flow.grad(theta)).max())}

    def certify(self, fit: dict, seed: int = 0):
        """The kind of ``fit``'s end point as a ``FixedPointSet`` (``kind``, ``evidence``):
        the Hessian of the exact loss on T at 40 digits, on the normal space of the symmetry
        orbit (``theory.criticality.classify``: a local minimum, or a saddle with its escape).
        Where the package enumerates the critical sets on T, the evidence also says whether a
        set certified as the global minimum (convexity, Eckart–Young) has the same loss (to
        1e-9: ``info['global']`` True, and ``kind`` "minimum" even where the local test is
        unresolved because the minimum set is larger than a symmetry orbit, e.g. MultiHead) or
        a lower one (False); None where nothing is certified.

        Parameters
        ----------
        fit : dict
            A result of ``fit``.
        seed : int
            Seed of ``classify``'s escape search.

        Returns
        -------
        FixedPointSet
        """
        from ...theory.criticality import classify
        from ...theory.fixedpoints import FixedPointSet, HessianIndex

        flow, der = fit["flow"], fit["flow"].der
        params = flow.unpack(fit["theta"])
        sizes = self.model.sizes()
        letters = {b.letter.name: sp.Matrix(params[b.param][b.index(sizes)])
                   for b in self.model.blocks()}
        point = {n: sp.Matrix(v) if v.ndim == 2 else sp.Array(v.tolist())
                 for n, v in params.items()}
        index = HessianIndex(der)
        fp = FixedPointSet("numerical minimum", [], point, index.loss(letters), index(letters),
                           {"letters": letters, "gradient": float(index.gradient_size(letters))})
        classify(der, index, [fp], seed)
        fp.info["global"] = None
        try:
            sets = der.fixed_points()
        except (InputError, ArithmeticError, ValueError) as exc:  # not enumerated, or failed
            fp.evidence += f"; critical sets on T not enumerated ({exc})"
            return fp
        certified = [c for c in sets if c.kind == "minimum" and "global" in c.evidence]
        if certified:
            best = min(certified, key=lambda c: float(c.loss))
            gap = float(fp.loss) - float(best.loss)
            fp.info.update(certified_loss=float(best.loss),
                           **{"global": abs(gap) < 1e-9 * max(1.0, abs(float(best.loss)))})
            fp.evidence += (f"; the certified global minimum set ({best.evidence.split(':')[0]}) "
                            f"has loss {float(best.loss):.12g}, difference {gap:.1e}")
            if fp.info["global"]:
                fp.kind = "minimum"
                fp.evidence += ": the point attains the global minimum"
        return fp


def lowest_minimum(flow: CompiledFlow, starts: int = 4, seed: int = 0,
                   scale: float = 0.5) -> tuple[np.ndarray, list]:
    """The lowest end point of BFGS from ``starts`` random starts θ₀ ~ N(0, ``scale``² I)
    (seeds (seed, k)), each polished by ``_newton_polish``.

    Parameters
    ----------
    flow : CompiledFlow
        The loss to minimise.
    starts : int
        Random starts.
    seed : int
        Base seed (start k uses (seed, k)).
    scale : float
        Standard deviation of the starts' entries.

    Returns
    -------
    tuple
        (θ, sorted end losses).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.experiments.taskdiversity import lowest_minimum
    >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
    ...                     backend="numpy")
    >>> theta, losses = lowest_minimum(flow, starts=3)
    >>> [round(loss, 6) for loss in losses]        # every start: the global minimum
    [0.166667, 0.166667, 0.166667]
    >>> round(float(np.prod(theta)), 6)             # u q = N/(N + 1 + d) = 2/3
    0.666667
    """
    from scipy.optimize import minimize

    starts = check_int("starts", starts)
    scale = check_real("scale", scale)
    ends = []
    for k in range(starts):
        theta = scale * np.random.default_rng((seed, k)).standard_normal(flow.size)
        theta = minimize(flow.loss, theta, jac=flow.grad, method="BFGS",
                         options={"gtol": 1e-10, "maxiter": 20_000}).x
        ends.append(_newton_polish(flow, theta))
    losses = [flow.loss(th) for th in ends]
    return ends[int(np.argmin(losses))], sorted(losses)


def _newton_polish(flow: CompiledFlow, theta, steps: int = 6) -> np.ndarray:
    """Newton steps θ ← θ − H⁺∇L (least squares: the symmetry orbits make H singular) with the
    exact Hessian (``flow.hvp`` on the unit vectors), kept while ‖∇L‖ falls."""
    eye = np.eye(flow.size)
    g = flow.grad(theta)
    for _ in range(steps):
        H = np.array([flow.hvp(theta, e) for e in eye])
        step = np.linalg.lstsq((H + H.T) / 2, g, rcond=1e-10)[0]
        g_new = flow.grad(theta - step)
        if not np.linalg.norm(g_new) < np.linalg.norm(g):
            break
        theta, g = theta - step, g_new
    return theta


BASELINES = ("learned", "ols", "ridge", "dmmse")


def baseline_risks(setting: TaskDiversity, tasks: np.ndarray, M: np.ndarray, prompts: int,
                   seed, chunk_floats: int = 4_000_000) -> dict:
    """Monte-Carlo risks ½E(ŷ − y_q)² (mean, SE) of the learned algorithm ŷ = S_yx M x_q / N,
    OLS, ridge (Bayes-optimal for the Gaussian family) and dMMSE (Bayes-optimal for ``tasks``),
    on ``prompts`` prompts with fresh family tasks (keys ``<name>_test``) and with tasks drawn
    from the set (``<name>_train``).

    Parameters
    ----------
    setting : TaskDiversity
        The Merged model (d_y = 1) on the Gaussian family.
    tasks : numpy.ndarray (P, 1, d)
        A scalar task set.
    M : numpy.ndarray (d, d)
        The learned matrix.
    prompts : int
        Prompts per law (≥ 2).
    seed : int or sequence of int
        Anything ``numpy.random.default_rng`` takes.
    chunk_floats : int
        Prompts are drawn in chunks of about this many floats.

    Returns
    -------
    dict
        {"<name>_<test|train>": (mean, standard error)} for learned, ols, ridge, dmmse.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.taskdiversity import (TaskDiversity, baseline_risks,
    ...                                                         draw_task_set)
    >>> setting = TaskDiversity(d=2, N=4, Lambda=np.eye(2), noise=0.5, backend="numpy")
    >>> tasks = draw_task_set(2, 2, seed=0)
    >>> fit = setting.fit(tasks)
    >>> risks = baseline_risks(setting, tasks, fit["M"], prompts=4000, seed=0)
    >>> mean, se = risks["learned_test"]
    >>> print(f"{mean:.3f} ± {se:.3f} (Monte Carlo), {fit['test']:.3f} (exact)")
    0.809 ± 0.029 (Monte Carlo), 0.772 (exact)
    >>> {k: round(v[0], 2) for k, v in risks.items() if k.endswith("_train")}   # dMMSE knows T
    {'learned_train': 0.18, 'ols_train': 0.39, 'ridge_train': 0.23, 'dmmse_train': 0.14}
    """
    prompts = check_int("prompts", prompts, minimum=2)
    rng = np.random.default_rng(seed)
    W = np.asarray(tasks, dtype=float)[:, 0, :]
    chunk = max(1, chunk_floats // ((setting.N + 1) * setting.d))
    out = {}
    for where, data in (("test", setting.family), ("train", None)):
        if data is None:
            data = ICLData(d=setting.d, N=setting.N, Lambda=setting.family.Lambda, tasks=tasks,
                           noise=setting.family.noise)
        sampler = PromptSampler(data)
        losses = {name: [] for name in BASELINES}
        for start in range(0, prompts, chunk):
            X, Y, xq, yq = sampler.prompts(rng, (min(chunk, prompts - start),))
            y, target = Y[..., 0], yq[..., 0]
            weights = {"learned": np.einsum("pn,pni,ij->pj", y, X, M) / setting.N,
                       "ols": ols_weights(X, y),
                       "ridge": ridge_weights(X, y, np.eye(setting.d), setting.noise),
                       "dmmse": set_posterior_weights(X, y, W, setting.noise)}
            for name, w in weights.items():
                losses[name].append(0.5 * (np.einsum("pi,pi->p", w, xq) - target) ** 2)
        for name, parts in losses.items():
            values = np.concatenate(parts)
            out[f"{name}_{where}"] = (float(values.mean()),
                                      float(values.std(ddof=1) / math.sqrt(len(values))))
    return out


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def task_count_sweep(setting: TaskDiversity, Ps, draws: int, seed: int = 0,
                     prompts: int = 0) -> list[dict]:
    """For each task count P: ``draws`` task sets drawn with seeds (seed, P, r), each fitted
    exactly; per row the mean and SE over draws (keys ``<name>``, ``<name>_se``) of the exact
    ``train``, ``test`` and ``gap``, and with ``prompts`` > 0 of the Monte-Carlo baselines
    (their SE over draws includes the Monte-Carlo error). ``family_min`` is the loss of the
    Gaussian-family minimum (P → ∞).

    Parameters
    ----------
    setting : TaskDiversity
        The Merged model (d_y = 1) on the Gaussian family.
    Ps : iterable of int
        Task counts.
    draws : int
        Task sets per P (≥ 2).
    seed : int
        Base seed.
    prompts : int
        Monte-Carlo prompts for ``baseline_risks`` (0: none).

    Returns
    -------
    list of dict
        One row per P (with ``P`` and ``draws``).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.taskdiversity import TaskDiversity, task_count_sweep
    >>> setting = TaskDiversity(d=2, N=4, Lambda=np.eye(2), noise=0.5, backend="numpy")
    >>> for row in task_count_sweep(setting, Ps=[1, 4, 16], draws=3):
    ...     print(row["P"], f"gap {row['gap']:.3f} ± {row['gap_se']:.3f}")
    1 gap 0.575 ± 0.040
    4 gap 0.231 ± 0.043
    16 gap 0.059 ± 0.054
    """
    draws = check_int("draws", draws, minimum=2)
    rows = []
    for P in Ps:
        per_draw = []
        for r in range(draws):
            tasks = draw_task_set(P, setting.d, (seed, P, r))
            fit = setting.fit(tasks)
            values = {k: fit[k] for k in ("train", "test", "gap")}
            if prompts:
                mc = baseline_risks(setting, tasks, fit["M"], prompts, (seed, P, r, 1))
                values.update({k: v[0] for k, v in mc.items()})
            per_draw.append(values)
        row = {"P": int(P), "draws": draws, "family_min": setting.family_minimum()[1]}
        for key in per_draw[0]:
            row[key], row[f"{key}_se"] = _mean_se([v[key] for v in per_draw])
        rows.append(row)
    return rows


def set_count_sweep(training: SetTraining, Ps, draws: int, seed: int = 0, starts: int = 4,
                    certify: bool = False) -> list[dict]:
    """``task_count_sweep`` for any parameterization and family (``SetTraining``): per task count
    P, ``draws`` sets drawn from the family with seeds (seed, P, r), each fitted from ``starts``
    starts; mean and SE over draws of ``train``, ``test``, ``gap``, the largest end gradient
    ``grad_max``, ``family_min`` (the minimiser on the family's loss), and with ``certify``
    the count of draws whose end point is certified a minimum (``minima``) and a global one
    (``global_minima``; certification costs seconds per draw).

    Parameters
    ----------
    training : SetTraining
        The parameterization and family.
    Ps : iterable of int
        Task counts.
    draws : int
        Task sets per P (≥ 2).
    seed : int
        Base seed.
    starts : int
        Random starts per fit.
    certify : bool
        Certify each end point (``SetTraining.certify``).

    Returns
    -------
    list of dict
        One row per P.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics.experiments.taskdiversity import SetTraining, set_count_sweep
    >>> family = ICLData(d=1, N=4, Lambda=np.eye(1), noise=0.5)
    >>> training = SetTraining(models.Merged(1), family, backend="numpy")
    >>> for row in set_count_sweep(training, Ps=[1, 8], draws=2, starts=2):
    ...     print(row["P"], f"train {row['train']:.3f}, test {row['test']:.3f}",
    ...           f"(family {row['family_min']:.3f})")
    1 train 0.234, test 0.405 (family 0.305)
    8 train 0.314, test 0.306 (family 0.305)
    """
    draws = check_int("draws", draws, minimum=2)
    family = training.family_minimum(starts, seed)
    rows = []
    for P in Ps:
        fits = [training.fit(draw_family_tasks(training.family, P, (seed, P, r)), starts, seed)
                for r in range(draws)]
        row = {"model": repr(training.model), "family": training.family.tasks, "P": int(P),
               "draws": draws, "family_min": family["loss"],
               "grad_max": max(f["grad"] for f in fits)}
        for key in ("train", "test", "gap"):
            row[key], row[f"{key}_se"] = _mean_se([f[key] for f in fits])
        if certify:
            kinds = [training.certify(f, seed) for f in fits]
            row["minima"] = sum(fp.kind == "minimum" for fp in kinds)
            row["global_minima"] = sum(fp.info["global"] is True for fp in kinds)
        rows.append(row)
    return rows


PARAMETERIZATION_GRID = {"d": 3, "N": 6, "Lambda": (1.0, 0.6, 0.3), "noise": 0.3,
                         "P": (1, 3, 10, 30), "draws": 4, "starts": 3}


def parameterization_sweep(seed: int = 0, progress=None, backend: str = "numba") -> list[dict]:
    """``set_count_sweep`` of every parameterization on ``PARAMETERIZATION_GRID`` (small d: the
    finite-set derivations loop over the tasks): Merged, MultiHead(2), SeparateKQ(1, rank 2)
    and FullLSA with scalar Gaussian tasks, Merged with Gaussian vector tasks (d_y = 2) and
    with eigenbasis tasks (d_y = d).

    Parameters
    ----------
    seed : int
        Base seed.
    progress : callable, optional
        Called as ``progress("parameterizations", done, total)`` before the first model and
        after each one.
    backend : str
        "numba" or "numpy".

    Returns
    -------
    list of dict
        The ``set_count_sweep`` rows of every case in turn (losses ½E(ŷ − y_q)²).

    Examples
    --------
    >>> from unittest import mock
    >>> from icldyn.numerics.experiments.taskdiversity import (PARAMETERIZATION_GRID,
    ...                                                         parameterization_sweep)
    >>> PARAMETERIZATION_GRID["d"], PARAMETERIZATION_GRID["P"]
    (3, (1, 3, 10, 30))
    >>> quick = dict(P=(1,), draws=2, starts=1)              # one task per set: a quick look
    >>> with mock.patch.dict(PARAMETERIZATION_GRID, quick):
    ...     rows = parameterization_sweep(backend="numpy")
    >>> for row in rows:
    ...     print(f"{row['model']:40} {row['family']:9} train {row['train']:.3f}",
    ...           f"test {row['test']:.3f}")
    Merged(d=3, d_y=1)                       gaussian  train 0.248 test 0.838
    MultiHead(d=3, heads=2, d_y=1)           gaussian  train 0.248 test 0.838
    SeparateKQ(d=3, heads=1, rank=2, d_y=1)  gaussian  train 0.248 test 0.838
    FullLSA(d=3, d_y=1)                      gaussian  train 0.180 test 10.333
    Merged(d=3, d_y=2)                       gaussian  train 0.598 test 1.799
    Merged(d=3, d_y=3)                       diagonal  train 0.413 test 1.096
    """
    g = PARAMETERIZATION_GRID
    d, Lam = g["d"], np.diag(g["Lambda"])
    cases = [(models.Merged(d), {}), (models.MultiHead(d, heads=2), {}),
             (models.SeparateKQ(d, heads=1, rank=2), {}), (models.FullLSA(d), {}),
             (models.Merged(d, d_y=2), {"d_y": 2}),
             (models.Merged(d, d_y=d), {"d_y": d, "tasks": "diagonal"})]
    tell = progress or (lambda *a: None)
    tell("parameterizations", 0, len(cases))
    rows = []
    for done, (model, family) in enumerate(cases, 1):
        training = SetTraining(model, ICLData(d=d, N=g["N"], Lambda=Lam, noise=g["noise"],
                                              **family), backend)
        rows += set_count_sweep(training, g["P"], g["draws"], seed, g["starts"])
        tell("parameterizations", done, len(cases))
    return rows


PARAMETERIZATION_FIRST = ("model", "family", "P", "draws", "train", "train_se", "test",
                          "test_se", "gap", "gap_se", "family_min", "grad_max")


def lu_setting(d: int, alpha: float, rho: float, backend: str = "numba") -> TaskDiversity:
    """Lu et al.'s conventions as package data: x ~ N(0, I_d/d) (Λ = I/d, exact), N = round(αd)
    context examples, noise variance ρ (σ = √ρ), family w ~ N(0, I_d). Their e = 2 × our loss.

    Parameters
    ----------
    d : int
        Input dimension.
    alpha : float
        Context length over dimension, α = N/d (> 0).
    rho : float
        Noise variance ρ (≥ 0).
    backend : str
        "numba" or "numpy".

    Returns
    -------
    TaskDiversity

    Examples
    --------
    >>> from icldyn.numerics.experiments.taskdiversity import lu_setting
    >>> setting = lu_setting(d=4, alpha=2.0, rho=0.25, backend="numpy")
    >>> setting.N, setting.noise, float(setting.Lambda[0, 0])     # N = αd, σ = √ρ, Λ = I/d
    (8, 0.5, 0.25)
    >>> round(2 * setting.family_minimum()[1], 4)               # their e = 2 × our loss
    0.6786
    """
    alpha = check_real("alpha", alpha)
    rho = check_real("rho", rho, allow_zero=True)
    N = max(1, round(alpha * d))
    return TaskDiversity(d, N, sp.eye(d) / d, noise=math.sqrt(rho), backend=backend)


_LU_NAMES = {"test": "e_icl", "test_se": "e_icl_se", "train": "e_idg", "train_se": "e_idg_se",
             "family_min": "e_family"}


def lu_sweep(ds, kappas, alpha: float = 1.0, rho: float = 0.25, draws: int = 8, seed: int = 0,
             prompts: int = 0, progress=None, backend: str = "numba") -> list[dict]:
    """Exact finite-d task-diversity curves in Lu et al.'s conventions (``lu_setting``), next to
    their asymptotic e_ICL (τ → ∞, ridgeless: the population loss on the P tasks, which our M*(T)
    minimises exactly).

    Conventions converted (ours → theirs): x ~ N(0, Λ) with Λ = I/d; w ~ N(0, I); σ² = ρ;
    context length N = αd with our 1/N in ŷ = u S_yx Q x_q / N (their d/ℓ only rescales Γ, free
    at the minimum); e = E(ŷ − y_q)² = 2 L. Their Γ also reads x_q Σ y_i² / ℓ (a (d+1)-th
    column); the Merged model has no such term (it is FullLSA's P₂ S_yy Q₂) — it only affects
    the error at O(1/d) — and their code normalises training tasks to ‖w‖ = √d, ours are
    Gaussian: both are part of the finite-d difference. ``draws`` is the number of task sets at
    the smallest d, scaled ∝ 1/d (at least 2): draw-to-draw fluctuations shrink with d.

    Parameters
    ----------
    ds : iterable of int
        Dimensions d.
    kappas : iterable of float
        Task diversities κ = P/d.
    alpha : float
        α = N/d.
    rho : float
        Noise variance ρ.
    draws : int
        Task sets at the smallest d.
    seed : int
        Base seed.
    prompts : int
        Monte-Carlo prompts for the baselines (0: none).
    progress : callable, optional
        Called as ``progress(stage, done, total)`` before the first point and after each
        dimension's points, with stage ``"task diversity α = …, ρ = …"`` and ``done`` of the
        ``total`` = len(ds)·len(kappas) points (d, κ) finished.
    backend : str
        "numba" or "numpy" (``lu_setting``).

    Returns
    -------
    list of dict
        One row per (d, κ): ``e_icl`` (fresh tasks), ``e_idg`` (the training tasks),
        ``e_gap``, their SEs over draws, ``e_family`` (P → ∞ at this d), ``e_asymptotic`` at
        the realised α = N/d, κ = P/d, ``diff`` = e_icl − e_asymptotic, and with ``prompts``
        > 0 the Monte-Carlo baselines as e_<name>_<test|train>.

    Examples
    --------
    >>> from icldyn.numerics.experiments.taskdiversity import lu_sweep
    >>> for row in lu_sweep(ds=[2, 4], kappas=[1.0, 4.0], draws=4, backend="numpy"):
    ...     print(row["d"], row["kappa"], f"e_ICL {row['e_icl']:.3f}",
    ...           f"(asymptotic {row['e_asymptotic']:.3f})")
    2 1.0 e_ICL 0.948 (asymptotic 0.958)
    2 4.0 e_ICL 0.898 (asymptotic 0.842)
    4 1.0 e_ICL 1.005 (asymptotic 0.958)
    4 4.0 e_ICL 0.872 (asymptotic 0.842)
    """
    ds = [check_int("d", d) for d in ds]
    kappas = list(kappas)
    stage, total = f"task diversity α = {alpha:g}, ρ = {rho:g}", len(ds) * len(kappas)
    tell = progress or (lambda *a: None)
    tell(stage, 0, total)
    rows = []
    for d in ds:
        setting = lu_setting(d, alpha, rho, backend)
        n_draws = max(2, math.ceil(draws * min(ds) / d))
        Ps = [max(1, round(k * d)) for k in kappas]
        for kappa, sweep in zip(kappas, task_count_sweep(setting, Ps, n_draws, seed, prompts)):
            row = {"d": d, "kappa": kappa, "P": sweep.pop("P"), "N": setting.N,
                   "alpha": alpha, "rho": rho, "draws": sweep.pop("draws")}
            row.update({_LU_NAMES.get(k, f"e_{k}"): 2 * v for k, v in sweep.items()})
            row["e_asymptotic"] = icl_error(setting.N / d, row["P"] / d, rho)
            row["diff"] = row["e_icl"] - row["e_asymptotic"]
            rows.append(row)
        tell(stage, len(rows), total)
    return rows


TABLE_FIRST = ("d", "kappa", "alpha", "rho", "P", "N", "draws", "e_icl", "e_icl_se",
               "e_asymptotic", "diff", "e_idg", "e_idg_se", "e_gap", "e_gap_se", "e_family")


def write_task_diversity(out, ds, kappas, alphas=(1.0,), rhos=(0.25,), draws: int = 16,
                         seed: int = 0, prompts: int = 0, progress=None,
                         parameterizations: bool = False, backend: str = "numba") -> dict:
    """``lu_sweep`` over the grid alphas × rhos, written to the run folder ``out``:
    ``task_diversity.csv`` (one row per d, κ, α, ρ), ``results.json`` (config, seed,
    provenance, rows) and ``task_diversity.png`` (e_ICL and e_IDG against κ per d with the
    asymptotic curve; d·(e_ICL − asymptotic) against κ, flat where the approach is O(1/d)).
    With ``parameterizations``, also ``parameterization_sweep`` (the package's ½E(ŷ − y)²,
    not Lu et al.'s e) in ``parameterizations.csv`` and under that key in results.json.

    Parameters
    ----------
    out : str or pathlib.Path
        The run folder.
    ds, kappas : iterable
        As in ``lu_sweep``.
    alphas, rhos : iterable of float
        The grid of α and ρ.
    draws, seed, prompts, progress
        As in ``lu_sweep`` (``progress`` also follows ``parameterization_sweep``).
    parameterizations : bool
        Also run ``parameterization_sweep``.
    backend : str
        "numba" or "numpy", for both sweeps.

    Returns
    -------
    dict
        The content of results.json.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.taskdiversity import write_task_diversity
    >>> tmp = tempfile.TemporaryDirectory()
    >>> result = write_task_diversity(tmp.name, ds=[2], kappas=[1.0, 4.0], draws=2,
    ...                               backend="numpy")
    >>> sorted(p.name for p in Path(tmp.name).iterdir())
    ['results.json', 'task_diversity.csv', 'task_diversity.png']
    >>> [row["P"] for row in json.loads((Path(tmp.name) / "results.json").read_text())["rows"]]
    [2, 8]
    >>> tmp.cleanup()
    """
    from pathlib import Path

    from .runfolder import provenance, save_figure, write_csv, write_json

    out = Path(out)
    rows = [r for a in alphas for rho in rhos
            for r in lu_sweep(ds, kappas, a, rho, draws, seed, prompts, progress, backend)]
    config = {"d": list(ds), "kappa": list(kappas), "alpha": list(alphas), "rho": list(rhos),
              "draws_at_smallest_d": draws, "seed": seed, "prompts": prompts,
              "conventions": "Lu et al. (arXiv:2405.11751): x ~ N(0, I/d), w ~ N(0, I), "
                             "noise variance rho, N = round(alpha d), e = E(y_hat - y_q)^2 "
                             "= 2 x the package's loss; tau = infinity (population loss on "
                             "the P tasks, ridgeless)"}
    result = {"config": config, "provenance": provenance(), "rows": rows}
    if parameterizations:
        config["parameterizations"] = dict(PARAMETERIZATION_GRID, loss="1/2 E(y_hat - y_q)^2")
        result["parameterizations"] = parameterization_sweep(seed, progress, backend)
        write_csv(out / "parameterizations.csv", result["parameterizations"],
                  PARAMETERIZATION_FIRST)
    write_csv(out / "task_diversity.csv", rows, TABLE_FIRST)
    write_json(out / "results.json", result)
    save_figure(_figure(rows, alphas, rhos), out / "task_diversity.png")
    return result


def _figure(rows, alphas, rhos):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    grid = [(a, r) for a in alphas for r in rhos]
    fig, axes = plt.subplots(len(grid), 2, figsize=(11, 4.2 * len(grid)), squeeze=False)
    for (alpha, rho), (ax, ax2) in zip(grid, axes):
        sel = [r for r in rows if r["alpha"] == alpha and r["rho"] == rho]
        kap = np.geomspace(min(r["kappa"] for r in sel), max(r["kappa"] for r in sel), 200)
        ax.plot(kap, [icl_error(alpha, k, rho) for k in kap], "k-", lw=2,
                label="asymptotic e_ICL (Lu et al.)")
        ds = sorted({r["d"] for r in sel})
        for i, d in enumerate(ds):
            part = sorted((r for r in sel if r["d"] == d), key=lambda r: r["kappa"])
            k = [r["kappa"] for r in part]
            col = plt.cm.viridis(i / max(1, len(ds) - 1))
            ax.errorbar(k, [r["e_icl"] for r in part], [r["e_icl_se"] for r in part], fmt="o-",
                        color=col, ms=4, label=f"d = {d}: fresh tasks (ICL)")
            ax.errorbar(k, [r["e_idg"] for r in part], [r["e_idg_se"] for r in part], fmt="s--",
                        color=col, ms=3, alpha=0.7, label=f"d = {d}: training tasks (IDG)")
            ax2.errorbar(k, [d * r["diff"] for r in part], [d * r["e_icl_se"] for r in part],
                         fmt="o-", color=col, ms=4, label=f"d = {d}")
        ax.set(xscale="log", xlabel="κ = P/d", ylabel="e = E(ŷ − y)²",
               title=f"exact finite d vs asymptotic, α = {alpha}, ρ = {rho}, τ = ∞")
        ax.legend(fontsize=7)
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set(xscale="log", xlabel="κ = P/d", ylabel="d · (e_ICL − asymptotic)",
                title="O(1/d) approach: curves coincide")
        ax2.legend(fontsize=7)
        for a in (ax, ax2):
            a.set_xticks(sorted({r["kappa"] for r in sel}))
            a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.tight_layout()
    return fig
