"""The learned in-context algorithm against classical estimators, by Monte Carlo.

At the global minimum of the Merged model with scalar tasks, ŷ = S_yx M* x_q / N: one step of
preconditioned gradient descent on the context least-squares loss (MultiHead and FullLSA learn
the same M*; SeparateKQ with H r < d learns its rank-H r truncation in the whitened singular
modes: principal-component regression in context). Its in-context risk
½E(ŷ − y_q)² is the derived loss at M*; here it is also estimated on sampled prompts (an
independent check), next to
* OLS: ŵ = X⁺ y (minimum-norm when N < d), ŷ = ŵᵀ x_q;
* the Bayes-optimal predictor E[w | context]ᵀ x_q (ridge with the prior Σ_w and noise σ²):
  ŵ = Σ_w Xᵀ (X Σ_w Xᵀ + σ² I)⁻¹ y, the Σ_w-minimum-norm interpolant when σ = 0;
* for a finite task set, the Bayes-optimal predictor of that set (dMMSE: the posterior over the
  P tasks).
"""

from __future__ import annotations

import numpy as np

from ..theory import ICLData, derive, models
from ..theory.errors import check_int
from .simulate import PromptSampler


def ols_weights(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ŵ = X⁺ y per prompt (minimum-norm when N < d); X (…, N, d), y (…, N) → (…, d)."""
    return np.einsum("...in,...n->...i", np.linalg.pinv(X), y)


def ridge_weights(X: np.ndarray, y: np.ndarray, Sigma_w: np.ndarray, noise: float) -> np.ndarray:
    """The posterior mean E[w | X, y] for the prior w ~ N(0, Σ_w) and noise σ:
    ŵ = Σ_w Xᵀ (X Σ_w Xᵀ + σ² I)⁻¹ y (the Σ_w-minimum-norm interpolant when σ = 0)."""
    K = X @ Sigma_w @ X.swapaxes(-1, -2) + noise**2 * np.eye(X.shape[-2])
    return np.einsum("ij,...nj,...n->...i", Sigma_w, X,
                     np.einsum("...nm,...m->...n", np.linalg.pinv(K, hermitian=True), y))


def set_posterior_weights(X: np.ndarray, y: np.ndarray, tasks: np.ndarray,
                          noise: float) -> np.ndarray:
    """The posterior mean of w when w is uniform over a finite set (dMMSE, Raventós et al.):
    ŵ = Σ_k π_k w_k, π_k ∝ exp(−‖y − X w_k‖² / 2σ²); for σ = 0 the posterior is uniform over
    the tasks that fit the context best. X (…, N, d), y (…, N), tasks (P, d) → (…, d)."""
    sq = ((y[..., None, :] - np.einsum("...nd,kd->...kn", X, tasks)) ** 2).sum(-1)
    if noise > 0:
        logits = -sq / (2 * noise**2)
        pi = np.exp(logits - logits.max(-1, keepdims=True))
    else:
        pi = (sq <= sq.min(-1, keepdims=True) * (1 + 1e-9) + 1e-300).astype(float)
    return (pi / pi.sum(-1, keepdims=True)) @ tasks


def _risk(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    loss = 0.5 * (pred - target) ** 2
    return float(loss.mean()), float(loss.std(ddof=1) / np.sqrt(len(loss)))


def incontext_risks(d: int, Lambda, Ns, Sigma_w=None, noise: float = 0.0,
                    prompts: int = 20000, seed: int = 0, model=None) -> list[dict]:
    """For each N: the derived risk at ``model``'s global minimum (default the Merged model),
    and Monte-Carlo risks (mean, SE) of the learned algorithm ŷ = S_yx M x_q / N, OLS and the
    Bayes-optimal ridge predictor on the same prompts."""
    prompts = check_int("prompts", prompts, minimum=2)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    rows = []
    for N in Ns:
        data = ICLData(d=d, N=int(N), Lambda=Lambda, Sigma_w=Sigma_w, noise=noise)
        minimum = derive(models.Merged(d) if model is None else model, data).fixed_points()[0]
        M = np.array(minimum.info["M"].tolist(), dtype=float)
        X, Y, xq, yq = PromptSampler(data).prompts(rng, (prompts,))
        y, target = Y[..., 0], yq[..., 0]
        learned = np.einsum("pn,pni,ij,pj->p", y, X, M, xq) / N
        w_ols = ols_weights(X, y)
        Sw = np.eye(d) if data.Sigma_w is None else np.array(data.Sigma_w.tolist(), float)
        w_bayes = ridge_weights(X, y, Sw, float(noise))
        rows.append({
            "N": int(N), "theory": float(minimum.loss),
            "learned_mc": _risk(learned, target),
            "ols_mc": _risk(np.einsum("pi,pi->p", w_ols, xq), target),
            "bayes_mc": _risk(np.einsum("pi,pi->p", w_bayes, xq), target),
        })
    return rows
