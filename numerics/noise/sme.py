"""SGD beyond its mean: the stochastic modified equation (SME) with the derived gradient
covariance.

SGD at learning rate η and batch B is θ_{n+1} = θ_n − η ĝ_n with E[ĝ] = ∇L(θ) and
Cov[ĝ] = Σ(θ)/B, Σ the exact single-prompt gradient covariance (``theory/covariance.py``).
The SME (Li, Tai & E 2017) replaces it by the diffusion

    dθ = −∇L(θ) dt + √(η/B) Σ(θ)^{1/2} dW,   t = n η,

integrated here by Euler–Maruyama with dt = η, i.e. θ_{n+1} = θ_n − η∇L(θ_n) + (η/√B) Σ^{1/2} ξ_n
with ξ_n standard normal: the first two moments of every step equal SGD's. An ensemble of
``replicas`` paths predicts the spread across seeds of the loss and of each conserved quantity;
it needs no prompts, only the derived L, ∇L and Σ.

For long runs two cheaper noises: ``refresh`` (Σ at the replicas' mean, recomputed at a
few steps) and ``PathNoise``: Σ evaluated once at a few steps of a
reference path θ̄ (expected GD) and interpolated linearly in the step between them. In the
small-noise (linear-noise) expansion θ = θ̄ + √(η/B) ξ + …, the diffusion enters the leading
fluctuation ξ only through Σ(θ̄): replacing Σ(θ) by Σ(θ̄) changes the spread at relative order
√(η/B), and linear interpolation of Σ along θ̄ is exact up to the curvature of Σ(θ̄(n)) in n
(a convex combination of PSD matrices stays PSD).
"""

from __future__ import annotations

import numpy as np

from ...theory.errors import DivergenceError, InputError, check_int, check_real
from ..compiled.codegen import CompiledFlow
from ..compiled.integrate import start_theta
from ..limits import RUNAWAY
from ..results import Trajectory, standard_error
from . import smeloop
from .covariance import CompiledCovariance, compile_covariance
from .smeloop import interpolate, sqrt_psd

__all__ = ["PathNoise", "SMEResult", "sqrt_psd", "simulate_sme"]

SMEResult = Trajectory      # the former name of the SME ensemble's result


class PathNoise:
    """Σ along a reference path: ``matrix(n)`` interpolates linearly in the step n between the
    matrices given at ``steps`` (constant beyond the ends); see the module doc.

    Parameters
    ----------
    steps : array_like (K,)
        Increasing step indices.
    matrices : ndarray (K, P, P)
        Σ at those steps.

    Raises
    ------
    InputError
        When ``steps`` is not increasing with one step per matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.noise.sme import PathNoise
    >>> noise = PathNoise([0, 10], [np.zeros((2, 2)), 2 * np.eye(2)])
    >>> noise.matrix(5)                                       # halfway: the mean
    array([[1., 0.],
           [0., 1.]])
    >>> noise.matrix(50)                                      # beyond the last step: held
    array([[2., 0.],
           [0., 2.]])
    >>> PathNoise([10, 0], np.zeros((2, 2, 2)))
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: steps: must be increasing, one per matrix
    """

    def __init__(self, steps, matrices):
        self.steps = np.asarray(steps, dtype=float)
        self.matrices = np.asarray(matrices, dtype=float)
        if self.steps.ndim != 1 or len(self.steps) != len(self.matrices) or np.any(
                np.diff(self.steps) <= 0):
            raise InputError("steps", "must be increasing, one per matrix")

    @classmethod
    def along(cls, covariance: CompiledCovariance, path: np.ndarray, steps) -> "PathNoise":
        """Σ(θ̄_n) at the given ``steps`` of ``path``.

        Parameters
        ----------
        covariance : CompiledCovariance
            Evaluates Σ.
        path : ndarray (n, P)
            Rows θ̄_0, θ̄_1, … (e.g. expected GD's ``theta``).
        steps : array_like of int
            Increasing rows of ``path`` to evaluate Σ at.

        Returns
        -------
        PathNoise
        """
        steps = np.asarray(steps, dtype=int)
        return cls(steps, [covariance.matrix(path[n]) for n in steps])

    def matrix(self, n: float) -> np.ndarray:
        """Σ at step ``n``, linear between the given steps, constant beyond the ends.

        Parameters
        ----------
        n : float
            The step.

        Returns
        -------
        ndarray (P, P)
        """
        return interpolate(self.steps, self.matrices, n)


def simulate_sme(flow: CompiledFlow, theta0, lr: float, batch: int, steps: int,
                 replicas: int = 64, seed: int = 0, record_every: int = 1,
                 covariance: CompiledCovariance | None = None, progress=None,
                 path_noise: PathNoise | None = None, refresh=None) -> Trajectory:
    """Euler–Maruyama ensemble of the SME from ``theta0``: θ_{n+1} = θ_n − η∇L(θ_n)
    + (η/√B) Σ(θ_n)^{1/2} ξ_n, ξ_n standard normal (the first two moments of an SGD step; see
    the module doc).

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow``: the drift ∇L and, unless ``covariance`` is given, Σ.
    theta0 : dict or array_like
        Start: parameter dictionary (as ``flow.pack`` takes) or flat vector of length P.
    lr : float
        Learning rate η (> 0); the step is dt = η in flow time.
    batch : int
        SGD batch size B; the noise covariance is Σ/B.
    steps : int
        Number of steps n.
    replicas : int
        Independent paths in the ensemble.
    seed : int
        Seed of the noise (``numpy.random.default_rng``).
    record_every : int
        Record θ every this many steps (and at the last).
    covariance : CompiledCovariance, optional
        Reuse a compiled covariance of ``flow``.
    progress : callable, optional
        Called with the step number after every recorded step.
    path_noise : PathNoise, optional
        The noise of step n is Σ(θ̄_n)^{1/2} ξ_n from it (one matrix for every replica)
        instead of Σ(θ_n)^{1/2} ξ_n at each replica's own θ_n.
    refresh : sequence of int, optional
        Steps (0 among them) at which Σ is recomputed at the replicas' mean θ and held until
        the next: the noise Σ(⟨θ⟩)^{1/2} ξ_n (mean-field noise: it follows the ensemble off
        a reference path, e.g. along a conserved direction, at one evaluation per refresh).

    Returns
    -------
    Trajectory
        Per recorded step: ``t`` (flow time nη), ``steps``, ``theta`` (replicas, records, P),
        the population loss L(θ) of each replica ``losses`` (records, replicas) with its mean
        ``loss`` and standard error ``loss_se``, ``conserved`` (records, replicas, C).

    Raises
    ------
    InputError
        When ``refresh`` does not include step 0, or the loss overflows at ``theta0``.
    DivergenceError
        When a step blows up: θ beyond ``RUNAWAY`` or non-finite, or ∇L, Σ or the loss
        overflowing float64 below it. ``.partial`` holds the records before it.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow, gradient_descent
    >>> from icldyn.numerics.noise.sme import simulate_sme
    >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
    ...                     backend="numpy")
    >>> start = {"V": 0.5, "Q": 0.5}
    >>> sme = simulate_sme(flow, start, lr=0.1, batch=16, steps=40, replicas=32, record_every=20)
    >>> sme.steps, sme.theta.shape, sme.losses.shape          # (replicas, records, P)
    (array([ 0, 20, 40]), (32, 3, 2), (3, 32))
    >>> gd = gradient_descent(flow, start, lr=0.1, steps=40, every=20)
    >>> np.round(gd.loss, 3), np.round(sme.loss, 3)          # the noise keeps it above GD
    (array([0.297, 0.167, 0.167]), array([0.297, 0.18 , 0.18 ]))
    >>> np.round(sme.losses.std(axis=1), 3)                   # the spread across seeds it predicts
    array([0.   , 0.015, 0.014])
    """
    theta0 = start_theta(flow, theta0)
    lr = check_real("lr", lr)
    batch, steps, replicas, record_every = (check_int(n, v) for n, v in (
        ("batch", batch), ("steps", steps), ("replicas", replicas),
        ("record_every", record_every)))
    seed = check_int("seed", seed, minimum=0)
    if path_noise is None:
        cov = covariance if covariance is not None else compile_covariance(flow)
    refresh = None if refresh is None else {int(n) for n in refresh}
    if refresh is not None and 0 not in refresh:
        raise InputError("refresh", "must include step 0")
    rng = np.random.default_rng(seed)
    theta = np.repeat(theta0[None], replicas, axis=0)
    records, recorded, observed = [theta.copy()], [0], [flow.observe(theta)]
    run = (_compiled_steps if flow.backend == "numba" else _numpy_steps)(
        flow, None if path_noise is not None else cov, lr, batch, steps, rng, path_noise,
        refresh)
    n = 0
    while n < steps:
        end = min(n + record_every, steps)
        done = run(theta, n, end)
        seen = _unless_overflow(flow.observe, theta) if done == end else None
        if seen is None:                   # step done + 1 blew up, or the loss at step end
            step = min(done + 1, end)
            raise DivergenceError(
                f"SME diverged at step {step} of {steps} (lr {lr:g}, batch {batch}): θ or its "
                "loss left float64's range; lower lr (a larger batch also shrinks the noise). "
                "The records before it are in .partial", step,
                _result(records, recorded, observed, lr, {}))
        n = end
        records.append(theta.copy())
        recorded.append(n)
        observed.append(seen)
        if progress is not None:
            progress(n)
    info = dict(lr=lr, batch=batch, steps=steps, replicas=replicas, seed=seed)
    return _result(records, recorded, observed, lr, info)


def _unless_overflow(evaluate, theta):
    """``evaluate(theta)``, or None when it overflows float64 at this θ of the run (the flow
    then blames ``theta``: here that is the run diverging, not bad input)."""
    try:
        return evaluate(theta)
    except InputError as exc:
        if exc.argument != "theta":
            raise
        return None


def _numpy_steps(flow, cov, lr, batch, steps, rng, path_noise, refresh):
    """run(θ, n0, n1): the steps n0+1 … n1 in place on θ (replicas, P) with NumPy (the
    reference of the compiled loop); returns the last step done: a step whose ∇L or Σ
    overflows, or whose θ passes ``RUNAWAY``, is not."""
    scale, root = lr / np.sqrt(batch), None

    def run(theta, n0, n1):
        nonlocal root
        for n in range(n0 + 1, n1 + 1):
            drift = _unless_overflow(flow.grad_rows, theta)    # one compiled loop over replicas
            if drift is None:
                return n - 1
            if path_noise is not None:
                root = sqrt_psd(path_noise.matrix(n - 1))
            elif refresh is None or n - 1 in refresh:
                with np.errstate(over="ignore", invalid="ignore"):   # checked just below
                    S = cov.matrix(theta if refresh is None else theta.mean(axis=0))
                if not np.isfinite(S).all():                 # eigh may raise on it
                    return n - 1
                root = np.stack([sqrt_psd(s) for s in S]) if refresh is None else sqrt_psd(S)
            noise = root @ rng.standard_normal((len(theta), flow.size, 1))
            new = theta - lr * drift + scale * noise[..., 0]
            if not np.all(np.abs(new) < RUNAWAY):
                return n - 1
            theta[:] = new
        return n1
    return run


def _compiled_steps(flow, cov, lr, batch, steps, rng, path_noise, refresh):
    """run(θ, n0, n1) as ``_numpy_steps``, in one Numba loop per call (``smeloop``)."""
    fns, data = smeloop.kernels(flow)
    tables = smeloop.encode(flow, cov)
    mode = smeloop.MODES["path" if path_noise is not None else
                         "own" if refresh is None else "refresh"]
    flags = np.zeros(steps + 1, dtype=np.bool_)
    flags[[n for n in (refresh or ()) if 0 <= n <= steps]] = True
    path = (path_noise.steps, path_noise.matrices) if path_noise is not None else \
        (np.zeros(1), np.zeros((1, flow.size, flow.size)))
    root = np.zeros((flow.size, flow.size))

    def run(theta, n0, n1):
        return fns["sme_steps"](theta, n0, n1, float(lr), float(lr / np.sqrt(batch)), mode,
                                flags, *path, root, rng, *tables, *data)
    return run


def _result(records, recorded, observed, lr, info) -> Trajectory:
    theta = np.stack(records, axis=1)                       # (replicas, records, P)
    observed = np.stack(observed)                           # (records, replicas, 1 + C)
    losses = observed[..., 0]                               # (records, replicas)
    conserved = observed[..., 1:]                           # (records, replicas, C)
    steps = np.array(recorded)
    return Trajectory(steps * lr, steps, theta, losses.mean(axis=1), standard_error(losses),
                      conserved, info, losses)
