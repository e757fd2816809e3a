"""Ground truth: train the actual linear self-attention layer by SGD on sampled prompts.

Nothing here uses a derived formula. Each step draws B fresh prompts per seed, builds the
embedding Z = [z_1 … z_N, (x_q; 0)], evaluates f(Z) = Z + W_PV (Z Zᵀ/N) W_KQ Z, reads
ŷ = the y-rows of the last column, and back-propagates the batch loss
(1/B) Σ ½‖ŷ − y_q‖² through the layer by hand:

    h = H W_KQ z_q,  ∂/∂W_PV = E_yᵀ r hᵀ,  ∂/∂W_KQ = H W_PVᵀ E_yᵀ r z_qᵀ   (H = Z Zᵀ/N, r = ŷ − y_q)

then pulls the layer gradient back to the model's parameter blocks (``model.embedding``). All
seeds run at once as a leading array axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..theory.data import ICLData
from ..theory.errors import InputError
from ..theory.models import Model


@dataclass
class SimResult:
    """Mean batch loss over seeds at each step (before the update) and its standard error;
    ``params``: {name: (seeds, records, *shape)}; ``info``: the run's settings."""

    loss: np.ndarray
    loss_se: np.ndarray
    losses: np.ndarray
    steps: np.ndarray
    params: dict
    info: dict = field(default_factory=dict)


def _blocks(data: ICLData) -> dict:
    d, D = data.d, data.d + data.d_y
    return {"x": slice(0, d), "y": slice(d, D)}


def layer_weights(model: Model, data: ICLData, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(W_PV, W_KQ) with leading seed axis from {name: (S, *shape)}; inert entries are zero."""
    S = next(iter(params.values())).shape[0]
    D = data.d + data.d_y
    blocks = _blocks(data)
    weights = {}
    for wname in ("W_PV", "W_KQ"):
        w = np.zeros((S, D, D))
        for rows, cols, pname in model.embedding.get(wname, []):
            w[:, blocks[rows], blocks[cols]] += params[pname]
        weights[wname] = w
    return weights["W_PV"], weights["W_KQ"]


def pullback(model: Model, data: ICLData, g_PV: np.ndarray, g_KQ: np.ndarray) -> dict:
    """Gradient with respect to the parameter blocks from the layer's gradient."""
    blocks = _blocks(data)
    grads = {"W_PV": g_PV, "W_KQ": g_KQ}
    out = {}
    for wname, entries in model.embedding.items():
        for rows, cols, pname in entries:
            out[pname] = out.get(pname, 0) + grads[wname][:, blocks[rows], blocks[cols]]
    return out


class PromptSampler:
    """Draws prompts of the data model: x ~ N(0, Λ), W from the task law, y = W x + ε."""

    def __init__(self, data: ICLData):
        vals = data.values()
        self.data = data
        if not all(v.is_number for v in data.Lambda) or not sp_number(data.noise):
            raise InputError("data", "simulation needs numeric Λ, Σ_w and noise")
        self.chol = np.linalg.cholesky(np.array(vals["Lambda"].tolist(), dtype=float))
        if data.tasks == "gaussian":
            sw = np.array(vals["Sigma_w"].tolist(), dtype=float)
            self.task_chol = np.linalg.cholesky(sw)
        else:
            self.U = np.array(vals["U"].tolist(), dtype=float)
            self.task_sd = np.sqrt(np.array(vals["c"].tolist(), dtype=float).ravel())
        self.sigma = float(data.noise)

    def tasks(self, rng, shape) -> np.ndarray:
        d, d_y = self.data.d, self.data.d_y
        if self.data.tasks == "gaussian":
            return rng.standard_normal(shape + (d_y, d)) @ self.task_chol.T
        delta = rng.standard_normal(shape + (d,)) * self.task_sd
        return (self.U * delta[..., None, :]) @ self.U.T

    def prompts(self, rng, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(X (…, N, d), Y (…, N, d_y), x_q (…, d), y_q (…, d_y))."""
        N, d, d_y = int(self.data.N), self.data.d, self.data.d_y
        W = self.tasks(rng, shape)
        g = rng.standard_normal((int(np.prod(shape)) * (N + 1), d))
        x = (g @ self.chol.T).reshape(shape + (N + 1, d))
        y = x @ W.swapaxes(-1, -2)
        if self.sigma > 0:
            y = y + self.sigma * rng.standard_normal(y.shape)
        return x[..., :N, :], y[..., :N, :], x[..., N, :], y[..., N, :]


def sp_number(v) -> bool:
    return getattr(v, "is_number", True)


def layer_loss_and_grad(W_PV, W_KQ, X, Y, xq, yq, d: int):
    """Batch loss per seed and its gradient with respect to W_PV, W_KQ (shapes (S, D, D))."""
    S, B, N, _ = X.shape
    zq = np.concatenate([xq, np.zeros_like(yq)], axis=-1)                # (S,B,D)
    Z = np.concatenate([np.concatenate([X, Y], axis=-1), zq[:, :, None, :]], axis=2)
    H = Z.swapaxes(-1, -2) @ Z / N                                       # (S,B,D,D)
    a = np.einsum("sij,sbj->sbi", W_KQ, zq)                              # W_KQ z_q
    h = np.einsum("sbij,sbj->sbi", H, a)                                 # H W_KQ z_q
    out = np.einsum("sij,sbj->sbi", W_PV, h)                             # W_PV h
    r = out[..., d:] - yq                                                # ŷ − y_q
    loss = 0.5 * np.mean(np.sum(r**2, axis=-1), axis=1)
    g_PV = np.zeros_like(W_PV)
    g_PV[:, d:, :] = np.einsum("sbi,sbj->sij", r, h) / B
    e = np.einsum("sji,sbj->sbi", W_PV[:, d:, :], r)                      # W_PVᵀ E_yᵀ r
    f = np.einsum("sbij,sbj->sbi", H, e)                                 # H is symmetric
    g_KQ = np.einsum("sbi,sbj->sij", f, zq) / B
    return loss, g_PV, g_KQ


def simulate_sgd(model: Model, data: ICLData, init: dict, lr: float, batch: int, steps: int,
                 seeds: int = 16, seed: int = 0, record_every: int = 1,
                 progress: Callable[[int], None] | None = None) -> SimResult:
    """Train ``model``'s layer by SGD from ``init`` on ``seeds`` independent prompt streams.

    ``loss[n]`` is the mean over seeds of the batch loss at step n (fresh prompts, evaluated
    before the update, so an unbiased estimate of the population loss at θ_n); ``loss[steps]``
    uses one extra batch. Returns means and standard errors across seeds. ``progress(n)`` is
    called after each step."""
    for name, v, ok in (("lr", lr, lr > 0), ("batch", batch, batch >= 1),
                        ("steps", steps, steps >= 1), ("seeds", seeds, seeds >= 1),
                        ("record_every", record_every, record_every >= 1)):
        if not ok:
            raise InputError(name, f"must be positive, got {v!r}")
    shapes = model.shapes()
    params = {}
    for name, shape in shapes.items():
        if name not in init:
            raise InputError("init", f"missing parameter {name!r} (expected {list(shapes)})")
        value = np.asarray(init[name], dtype=float)
        if value.ndim == 0 and shape[0] == shape[1]:
            value = value * np.eye(shape[0])
        if value.shape != shape:
            raise InputError("init", f"{name} must have shape {shape}, got {value.shape}")
        params[name] = np.repeat(value[None], seeds, axis=0)
    sampler = PromptSampler(data)
    rng = np.random.default_rng(seed)
    losses = np.empty((steps + 1, seeds))
    records = {n: [] for n in shapes}
    for n in range(steps + 1):
        if n % record_every == 0 or n == steps:
            for name in shapes:
                records[name].append(params[name].copy())
        W_PV, W_KQ = layer_weights(model, data, params)
        X, Y, xq, yq = sampler.prompts(rng, (seeds, batch))
        loss, g_PV, g_KQ = layer_loss_and_grad(W_PV, W_KQ, X, Y, xq, yq, data.d)
        losses[n] = loss
        if n == steps:
            break
        for name, g in pullback(model, data, g_PV, g_KQ).items():
            params[name] = params[name] - lr * g
        if progress is not None:
            progress(n + 1)
    mean = losses.mean(axis=1)
    se = losses.std(axis=1, ddof=1) / np.sqrt(seeds) if seeds > 1 else np.full_like(mean, np.nan)
    recorded = np.unique(np.r_[np.arange(0, steps + 1, record_every), steps])
    info = dict(model=repr(model), data=repr(data), lr=lr, batch=batch, steps=steps,
                seeds=seeds, seed=seed)
    return SimResult(mean, se, losses, recorded,
                     {k: np.stack(v, axis=1) for k, v in records.items()}, info)
