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
"""

from __future__ import annotations

import numpy as np

from ...theory.errors import DivergenceError, check_int, check_real
from ..compiled.codegen import CompiledFlow
from ..compiled.integrate import start_theta
from ..limits import RUNAWAY
from ..results import Trajectory, standard_error
from .covariance import CompiledCovariance, compile_covariance

__all__ = ["SMEResult", "sqrt_psd", "simulate_sme"]

SMEResult = Trajectory      # the former name of the SME ensemble's result


def sqrt_psd(S: np.ndarray) -> np.ndarray:
    """Symmetric square roots of a stack of positive semi-definite matrices (eigenvalues below
    zero by rounding are clipped).

    Parameters
    ----------
    S : numpy.ndarray (…, P, P)
        Symmetric positive semi-definite matrices (symmetrised first).

    Returns
    -------
    numpy.ndarray (…, P, P)
        S^{1/2}, symmetric.
    """
    w, U = np.linalg.eigh(0.5 * (S + S.swapaxes(-1, -2)))
    return (U * np.sqrt(np.clip(w, 0.0, None))[..., None, :]) @ U.swapaxes(-1, -2)


def simulate_sme(flow: CompiledFlow, theta0, lr: float, batch: int, steps: int,
                 replicas: int = 64, seed: int = 0, record_every: int = 1,
                 covariance: CompiledCovariance | None = None, progress=None) -> Trajectory:
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
        Called with the step number after every step.

    Returns
    -------
    Trajectory
        Per recorded step: ``t`` (flow time nη), ``steps``, ``theta`` (replicas, records, P),
        the population loss L(θ) of each replica ``losses`` (records, replicas) with its mean
        ``loss`` and standard error ``loss_se``, ``conserved`` (records, replicas, C).
    """
    theta0 = start_theta(flow, theta0)
    lr = check_real("lr", lr)
    batch, steps, replicas, record_every = (check_int(n, v) for n, v in (
        ("batch", batch), ("steps", steps), ("replicas", replicas),
        ("record_every", record_every)))
    seed = check_int("seed", seed, minimum=0)
    cov = covariance if covariance is not None else compile_covariance(flow)
    rng = np.random.default_rng(seed)
    theta = np.repeat(theta0[None], replicas, axis=0)
    records, recorded = [theta.copy()], [0]
    scale = lr / np.sqrt(batch)
    for n in range(1, steps + 1):
        drift = np.array([flow.grad(t) for t in theta])
        noise = sqrt_psd(cov.matrix(theta)) @ rng.standard_normal((replicas, flow.size, 1))
        theta = theta - lr * drift + scale * noise[..., 0]
        if not np.all(np.abs(theta) < RUNAWAY):
            raise DivergenceError(f"SME diverged at step {n}; lower lr (now {lr:g})", n,
                                  _result(flow, records, recorded, lr, {}))
        if n % record_every == 0 or n == steps:
            records.append(theta.copy())
            recorded.append(n)
        if progress is not None:
            progress(n)
    info = dict(lr=lr, batch=batch, steps=steps, replicas=replicas, seed=seed)
    return _result(flow, records, recorded, lr, info)


def _result(flow, records, recorded, lr, info) -> Trajectory:
    theta = np.stack(records, axis=1)                       # (replicas, records, P)
    observed = flow.observe(theta.reshape(-1, theta.shape[-1])).reshape(theta.shape[:2] + (-1,))
    losses = observed[..., 0].T                             # (records, replicas)
    conserved = observed[..., 1:].swapaxes(0, 1)            # (records, replicas, C)
    steps = np.array(recorded)
    return Trajectory(steps * lr, steps, theta, losses.mean(axis=1), standard_error(losses),
                      conserved, info, losses)
