"""The learned in-context algorithm against classical estimators, by Monte Carlo.

For every critical set of kind "minimum" (``minima_risks``; global or local, every model and
task law) the network at the set's point is run on sampled prompts, next to OLS and the
Bayes-optimal predictor of the task law. At the global minimum of the Merged model with scalar
tasks, ŷ = S_yx M* x_q / N: one step of
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

from ...theory import ICLData, derive, models
from ...theory.errors import check_int
from ..simulation.sgd import PromptSampler, model_loss_and_grad

__all__ = ["ols_weights", "ridge_weights", "set_posterior_weights", "set_posterior_matrices",
           "bayes_predictions", "minima_risks", "incontext_risks"]


def ols_weights(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares per prompt, ŵ = X⁺ y (minimum-norm when N < d).

    Parameters
    ----------
    X : numpy.ndarray (…, N, d)
        Context inputs.
    y : numpy.ndarray (…, N) or (…, N, d_y)
        Context labels.

    Returns
    -------
    numpy.ndarray (…, d) or (…, d, d_y)
        ŵ (a column per output).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.risks import ols_weights
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])     # N = 3 examples, d = 2
    >>> w = np.array([0.5, -1.0])
    >>> ols_weights(X, X @ w)                                  # noiseless: w recovered
    array([ 0.5, -1. ])
    >>> ols_weights(X[:1], X[:1] @ w)                          # N < d: the minimum-norm fit
    array([0.5, 0. ])
    """
    return np.linalg.pinv(X) @ y if y.ndim == X.ndim else \
        np.einsum("...in,...n->...i", np.linalg.pinv(X), y)


def ridge_weights(X: np.ndarray, y: np.ndarray, Sigma_w: np.ndarray, noise: float) -> np.ndarray:
    """The posterior mean E[w | X, y] for the prior w ~ N(0, Σ_w) and noise σ:
    ŵ = Σ_w Xᵀ (X Σ_w Xᵀ + σ² I)⁻¹ y (the Σ_w-minimum-norm interpolant when σ = 0).

    Parameters
    ----------
    X : numpy.ndarray (…, N, d)
        Context inputs.
    y : numpy.ndarray (…, N)
        Context labels (one output).
    Sigma_w : numpy.ndarray (d, d)
        Prior covariance of w.
    noise : float
        Label noise standard deviation σ.

    Returns
    -------
    numpy.ndarray (…, d)

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.risks import ridge_weights
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> y = X @ np.array([0.5, -1.0])
    >>> np.round(ridge_weights(X, y, np.eye(2), noise=0.0), 6)     # σ = 0: interpolates
    array([ 0.5, -1. ])
    >>> np.round(ridge_weights(X, y, np.eye(2), noise=3.0), 3)     # noisy labels: shrunk to 0
    array([ 0.029, -0.324])
    """
    K = X @ Sigma_w @ X.swapaxes(-1, -2) + noise**2 * np.eye(X.shape[-2])
    return np.einsum("ij,...nj,...n->...i", Sigma_w, X,
                     np.einsum("...nm,...m->...n", np.linalg.pinv(K, hermitian=True), y))


def set_posterior_weights(X: np.ndarray, y: np.ndarray, tasks: np.ndarray,
                          noise: float) -> np.ndarray:
    """The posterior mean of w when w is uniform over a finite set (dMMSE, Raventós et al.):
    ŵ = Σ_k π_k w_k, π_k ∝ exp(−‖y − X w_k‖² / 2σ²); for σ = 0 the posterior is uniform over
    the tasks that fit the context best.

    Parameters
    ----------
    X : numpy.ndarray (…, N, d)
        Context inputs.
    y : numpy.ndarray (…, N)
        Context labels.
    tasks : numpy.ndarray (P, d)
        The task vectors.
    noise : float
        Label noise standard deviation σ (0: the best-fitting tasks).

    Returns
    -------
    numpy.ndarray (…, d)

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.risks import set_posterior_weights
    >>> tasks = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> X = np.array([[1.0, 0.2], [0.3, 1.0]])
    >>> set_posterior_weights(X, X @ tasks[0], tasks, noise=0.0)     # the task that fits
    array([1., 0.])
    >>> np.round(set_posterior_weights(X, X @ tasks[0], tasks, noise=5.0), 3)   # unsure: a mix
    array([0.506, 0.494])
    """
    return set_posterior_matrices(X, y[..., None], tasks[:, None, :], noise)[..., 0, :]


def set_posterior_matrices(X: np.ndarray, Y: np.ndarray, tasks: np.ndarray,
                           noise: float) -> np.ndarray:
    """``set_posterior_weights`` for task matrices: Ŵ = Σ_k π_k W_k,
    π_k ∝ exp(−Σ_n ‖y_n − W_k x_n‖² / 2σ²).

    Parameters
    ----------
    X : numpy.ndarray (…, N, d)
        Context inputs.
    Y : numpy.ndarray (…, N, d_y)
        Context labels.
    tasks : numpy.ndarray (P, d_y, d)
        The task matrices.
    noise : float
        Label noise standard deviation σ.

    Returns
    -------
    numpy.ndarray (…, d_y, d)

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.risks import set_posterior_matrices
    >>> tasks = np.stack([np.eye(2), -np.eye(2)])              # two (d_y, d) = (2, 2) tasks
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> set_posterior_matrices(X, X @ tasks[1].T, tasks, noise=0.1)   # the context says W = −I
    array([[-1.,  0.],
           [ 0., -1.]])
    """
    fits = np.einsum("...nd,kyd->...kny", X, tasks)
    sq = ((Y[..., None, :, :] - fits) ** 2).sum(axis=(-1, -2))
    if noise > 0:
        logits = -sq / (2 * noise**2)
        pi = np.exp(logits - logits.max(-1, keepdims=True))
    else:
        pi = (sq <= sq.min(-1, keepdims=True) * (1 + 1e-9) + 1e-300).astype(float)
    return np.einsum("...k,kyd->...yd", pi / pi.sum(-1, keepdims=True), tasks)


def bayes_predictions(sampler: PromptSampler, X: np.ndarray, Y: np.ndarray,
                      xq: np.ndarray) -> np.ndarray:
    """E[y_q | context, x_q] = E[W | context] x_q for the data's task law: ridge per output row
    for Gaussian rows (prior Σ_w); for the paper's tasks W = U diag(δ) Uᵀ one ridge per
    eigenmode (ỹ_nα = δ_α x̃_nα + ε̃_nα in Λ's eigenbasis, Uᵀε again N(0, σ²I), δ_α ~ N(0, c_α)):
    δ̂_α = c_α Σ_n x̃_nα ỹ_nα / (c_α Σ_n x̃_nα² + σ²); the set's posterior for a finite set.

    Parameters
    ----------
    sampler : PromptSampler
        The sampler of the data law (its task law and σ).
    X : numpy.ndarray (…, N, d)
        Context inputs.
    Y : numpy.ndarray (…, N, d_y)
        Context labels.
    xq : numpy.ndarray (…, d)
        Query inputs.

    Returns
    -------
    numpy.ndarray (…, d_y)
        The Bayes-optimal predictions of y_q.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData
    >>> from icldyn.numerics.experiments.risks import bayes_predictions, ols_weights
    >>> from icldyn.numerics.simulation.sgd import PromptSampler
    >>> sampler = PromptSampler(ICLData(d=2, N=3, Lambda=np.eye(2), noise=1.0))
    >>> X, Y, xq, yq = sampler.prompts(np.random.default_rng(0), (4000,))
    >>> bayes = bayes_predictions(sampler, X, Y, xq)
    >>> ols = np.einsum("pdk,pd->pk", ols_weights(X, Y), xq)
    >>> risk = lambda pred: float(np.mean(0.5 * (pred - yq) ** 2))
    >>> risk(bayes) < risk(ols)                               # the posterior mean is optimal
    True
    """
    tasks, sigma = sampler.data.tasks, sampler.sigma
    if tasks == "gaussian":
        Sw = sampler.task_chol @ sampler.task_chol.T
        W = np.stack([ridge_weights(X, Y[..., k], Sw, sigma) for k in range(Y.shape[-1])],
                     axis=-2)
    elif tasks == "finite":
        W = set_posterior_matrices(X, Y, sampler.task_set, sigma)
    else:
        U, c = sampler.U, sampler.task_sd ** 2
        Xt, Yt = X @ U, Y @ U
        delta = c * (Xt * Yt).sum(-2) / (c * (Xt ** 2).sum(-2) + sigma ** 2)
        W = (U * delta[..., None, :]) @ U.T
    return np.einsum("...kd,...d->...k", W, xq)


def _risk(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Mean and standard error over prompts of ½‖ŷ − y_q‖² (scalars or vectors per prompt)."""
    loss = 0.5 * (pred - target) ** 2
    loss = loss.reshape(len(loss), -1).sum(axis=1)
    return float(loss.mean()), float(loss.std(ddof=1) / np.sqrt(len(loss)))


def _network_risk(der, params: dict, prompts: tuple) -> tuple[float, float]:
    """Mean and standard error of the actual network's loss at ``params`` (no derived formula:
    ``simulate.model_loss_and_grad``), one prompt per seed axis entry."""
    X, Y, xq, yq = (a[:, None] for a in prompts)
    arrays = {k: np.broadcast_to(v, (len(X),) + v.shape) for k, v in params.items()}
    loss, _ = model_loss_and_grad(der.model, der.data, arrays, (X, Y, xq, yq))
    return float(loss.mean()), float(loss.std(ddof=1) / np.sqrt(len(loss)))


def minima_risks(der, prompts: int = 20000, seed: int = 0, sets: list | None = None,
                 rng=None) -> list[dict]:
    """For every critical set of kind "minimum" of ``der`` (``sets``, default
    ``der.fixed_points()``): its derived risk (the set's loss), its learned algorithm
    (``FixedPointSet.algorithm``) and, on the same sampled prompts, Monte-Carlo risks
    ½E‖ŷ − y_q‖² (mean, SE) of that algorithm (the network at the set's point), OLS and the
    Bayes-optimal predictor of the task law (``bayes_predictions``).

    Parameters
    ----------
    der : Derivation
        A derivation with numeric data.
    prompts : int
        Sampled prompts (≥ 2), shared by all predictors.
    seed : int
        Seed of the prompts (ignored when ``rng`` is given).
    sets : list of FixedPointSet, optional
        The critical sets to read (default ``der.fixed_points()``); those not of kind
        "minimum" are skipped.
    rng : numpy.random.Generator, optional
        A stream to draw from instead of ``seed``.

    Returns
    -------
    list of dict
        Per minimum: ``name``, ``theory`` (derived loss), ``algorithm`` (description), and
        (mean, standard error) pairs ``learned_mc``, ``ols_mc``, ``bayes_mc``.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics.experiments.risks import minima_risks
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2), noise=0.5))
    >>> [row] = minima_risks(der, prompts=4000)
    >>> row["name"], round(row["theory"], 4)
    ('global minimum', 0.5733)
    >>> print(row["algorithm"])
    ŷ = S_yx M x_q / N: one step of preconditioned gradient descent ...
    >>> {k: round(row[k][0], 2) for k in ("learned_mc", "ols_mc", "bayes_mc")}
    {'learned_mc': 0.58, 'ols_mc': 0.34, 'bayes_mc': 0.25}
    """
    prompts = check_int("prompts", prompts, minimum=2)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0)) if rng is None else rng
    sets = der.fixed_points() if sets is None else sets
    sampler = PromptSampler(der.data)
    X, Y, xq, yq = sampler.prompts(rng, (prompts,))
    ols = np.einsum("...dk,...d->...k", ols_weights(X, Y), xq)
    base = {"ols_mc": _risk(ols, yq), "bayes_mc": _risk(bayes_predictions(sampler, X, Y, xq), yq)}
    rows = []
    for fp in sets:
        if fp.kind != "minimum":
            continue
        params = {k: np.array(v.tolist(), dtype=float) for k, v in fp.point.items()}
        rows.append({"name": fp.name, "theory": float(fp.loss),
                     "algorithm": fp.algorithm.description,
                     "learned_mc": _network_risk(der, params, (X, Y, xq, yq)), **base})
    return rows


def incontext_risks(d: int, Lambda, Ns, Sigma_w=None, noise: float = 0.0,
                    prompts: int = 20000, seed: int = 0, model=None,
                    progress=None) -> list[dict]:
    """For each N: the derived risk at ``model``'s global minimum (default the Merged model),
    and Monte-Carlo risks (mean, SE) of the learned algorithm ŷ = S_yx M x_q / N, OLS and the
    Bayes-optimal ridge predictor on the same prompts (``minima_risks`` of the lowest set).

    Parameters
    ----------
    d : int
        Input dimension.
    Lambda : array_like or str
        Input covariance Λ (as ``ICLData`` takes it).
    Ns : iterable of int
        Context lengths.
    Sigma_w : array_like, optional
        Task covariance (default I).
    noise : float
        Label noise standard deviation σ.
    prompts : int
        Sampled prompts per N (≥ 2).
    seed : int
        Seed of the prompts (one stream over all N).
    model : Model, optional
        Default ``models.Merged(d)``.
    progress : callable, optional
        Called as ``progress("in-context risks", done, total)`` before the first context
        length and after each one (``done`` of the ``total`` context lengths finished).

    Returns
    -------
    list of dict
        Per N: ``N``, ``theory`` and (mean, standard error) pairs ``learned_mc``, ``ols_mc``,
        ``bayes_mc``; risks are ½E(ŷ − y_q)², noise included.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.risks import incontext_risks
    >>> for row in incontext_risks(d=2, Lambda=np.eye(2), Ns=[4, 16], noise=0.5, prompts=4000):
    ...     print(row["N"], f"theory {row['theory']:.3f}, network {row['learned_mc'][0]:.3f},",
    ...           f"OLS {row['ols_mc'][0]:.3f}, Bayes {row['bayes_mc'][0]:.3f}")
    4 theory 0.573, network 0.578, OLS 0.337, Bayes 0.254
    16 theory 0.294, network 0.299, OLS 0.150, Bayes 0.149
    """
    prompts = check_int("prompts", prompts, minimum=2)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    Ns = list(Ns)
    tell = progress or (lambda *a: None)
    tell("in-context risks", 0, len(Ns))
    rows = []
    for N in Ns:
        data = ICLData(d=d, N=int(N), Lambda=Lambda, Sigma_w=Sigma_w, noise=noise)
        der = derive(models.Merged(d) if model is None else model, data)
        row = minima_risks(der, prompts, sets=der.fixed_points()[:1], rng=rng)[0]
        rows.append({"N": int(N), **{k: row[k] for k in ("theory", "learned_mc", "ols_mc",
                                                          "bayes_mc")}})
        tell("in-context risks", len(rows), len(Ns))
    return rows
