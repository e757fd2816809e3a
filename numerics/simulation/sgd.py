"""Ground truth: train the actual linear-attention network by SGD on sampled prompts.

Nothing here uses a derived formula. Each step draws B fresh prompts per seed, builds the
embedding Z = [z_1 … z_N, (x_q; 0)], applies the layers in turn,
Z ← Z + Σ_h W_PV,h (Z M Zᵀ/N) W_KQ,h Z (one layer for the one-layer models; M the key mask),
reads ŷ = the y-rows of the last column (negated for ``negate_readout``), and back-propagates
the batch loss (1/B) Σ ½‖ŷ − y_q‖² through the layers by hand (``network_loss_and_grad``),
then pulls each layer's gradient back to the model's parameters through the words that fill
its blocks (``model.stack_layers()``). Heads add up; all seeds run at once as a leading axis."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...theory.data import ICLData
from ...theory.errors import DivergenceError, InputError, check_int, check_real
from ...theory.models import Model, fill_weights, word_value
from ...theory.params import as_arrays
from ..limits import MAX_ROWS_BYTES, RUNAWAY, data_overflow
from ..results import SimResult, standard_error

__all__ = ["VALIDATION", "VALIDATION_STREAM", "letter_values", "network_weights", "pullback",
           "check_prompt_memory", "PromptSampler", "model_loss", "network_loss_and_grad",
           "model_loss_and_grad", "simulate_sgd", "block_stats", "block_z_scores"]


VALIDATION = "_validation"      # the records' key of the validation losses
VALIDATION_STREAM = 1          # the validation prompts' generator: default_rng([seed, 1])


def _spaces(data: ICLData) -> dict:
    d, D = data.d, data.d + data.d_y
    return {"x": slice(0, d), "y": slice(d, D)}


def letter_values(model: Model, params: dict) -> dict:
    """The model's letters (blocks) cut from parameter arrays with a leading seed axis.

    Parameters
    ----------
    model : Model
        The parameterization.
    params : dict
        {parameter name: array (S, *shape)}, a leading axis of S seeds.

    Returns
    -------
    dict
        {letter name: (S, rows, cols)}.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import models
    >>> from icldyn.numerics.simulation.sgd import letter_values
    >>> W = np.arange(1.0, 5.0).reshape(1, 2, 2)              # one seed, a 2 × 2 matrix
    >>> letters = letter_values(models.FullLSA(1), {"W_PV": W, "W_KQ": -W})
    >>> sorted(letters)                                       # FullLSA(1): blocks of the two
    ['P1', 'P2', 'Q1', 'Q2']
    >>> letters["P2"], letters["Q1"]
    (array([[[4.]]]), array([[[-1.]]]))
    """
    sizes = model.sizes()
    return {b.letter.name: params[b.param][(slice(None),) + b.index(sizes)]
            for b in model.blocks()}


def network_weights(model: Model, data: ICLData, letters: dict) -> list[tuple]:
    """The actual attention weights, filled from the model's ``stack_layers()``; entries no
    word names are zero.

    Parameters
    ----------
    model : Model
        The parameterization (one layer or a Stack).
    data : ICLData
        Numeric data (d, d_y).
    letters : dict
        {letter name: (S, rows, cols)} (``letter_values``).

    Returns
    -------
    list of tuple
        [(W_PV, W_KQ) per layer], each (S, H, D, D), D = d + d_y.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics.simulation.sgd import letter_values, network_weights
    >>> model = models.Merged(1)
    >>> letters = letter_values(model, {"V": np.full((1, 1, 1), 2.0), "Q": np.full((1, 1, 1), 3.0)})
    >>> [(W_PV, W_KQ)] = network_weights(model, ICLData(d=1, N=4, Lambda=np.eye(1)), letters)
    >>> W_PV[0, 0], W_KQ[0, 0]                     # seed 0, head 0: V and Q in their blocks
    (array([[0., 0.],
           [0., 2.]]), array([[3., 0.],
           [0., 0.]]))
    """
    return [fill_weights(spec, letters, data.d, data.d_y) for spec in model.stack_layers()]


def pullback(model: Model, data: ICLData, letters: dict, grads: list[tuple]) -> dict:
    """Gradient with respect to the parameter arrays from each layer's (∂/∂W_PV, ∂/∂W_KQ), by
    the product rule on each word: ∂⟨G, L₁⋯L_k⟩/∂L_j = (L₁⋯L_{j−1})ᵀ G (L_{j+1}⋯L_k)ᵀ.

    Parameters
    ----------
    model : Model
        The parameterization (one layer or a Stack).
    data : ICLData
        Numeric data (d, d_y).
    letters : dict
        {letter name: (S, rows, cols)} (``letter_values``).
    grads : list of tuple
        [(∂/∂W_PV, ∂/∂W_KQ) per layer], each (S, H, D, D) (``network_loss_and_grad``).

    Returns
    -------
    dict
        {parameter name: gradient (S, *shape)}.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics.simulation.sgd import (PromptSampler, letter_values,
    ...     model_loss_and_grad, network_loss_and_grad, network_weights, pullback)
    >>> model, data = models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2))
    >>> params = {"V": np.ones((1, 1, 1)), "Q": 0.5 * np.eye(2)[None]}
    >>> prompts = PromptSampler(data).prompts(np.random.default_rng(0), (1, 8))
    >>> letters = letter_values(model, params)
    >>> _, layer_grads = network_loss_and_grad(network_weights(model, data, letters), *prompts, d=2)
    >>> grads = pullback(model, data, letters, layer_grads)     # ∂/∂W_PV, ∂/∂W_KQ → ∂/∂V, ∂/∂Q
    >>> {k: v.shape for k, v in grads.items()}
    {'V': (1, 1, 1), 'Q': (1, 2, 2)}
    >>> bool(np.allclose(grads["Q"], model_loss_and_grad(model, data, params, prompts)[1]["Q"]))
    True
    """
    space = _spaces(data)
    letter_grads = {name: np.zeros_like(v) for name, v in letters.items()}
    for spec, (g_PV, g_KQ) in zip(model.stack_layers(), grads):
        layer_grads = {"W_PV": g_PV, "W_KQ": g_KQ}
        for h, head in enumerate(spec):
            for wname, entries in head.items():
                for rows, cols, word in entries:
                    G = layer_grads[wname][:, h, space[rows], space[cols]]
                    for j, letter in enumerate(word):
                        g = G
                        if j > 0:
                            g = word_value(letters, word[:j]).swapaxes(-1, -2) @ g
                        if j < len(word) - 1:
                            g = g @ word_value(letters, word[j + 1:]).swapaxes(-1, -2)
                        letter_grads[letter.name] += g.swapaxes(-1, -2) if letter.T else g
    sizes = model.sizes()
    out = {}
    S = next(iter(letters.values())).shape[0]
    for p in model.params:
        out[p.name] = np.zeros((S,) + p.shape(sizes))
    for b in model.blocks():
        out[b.param][(slice(None),) + b.index(sizes)] += letter_grads[b.letter.name]
    return out


def check_prompt_memory(N: int, d: int, d_y: int, prompts: int) -> None:
    """An ``InputError`` naming N when drawing ``prompts`` prompts of N + 1 samples at once
    (inputs drawn and rotated, labels: (2d + d_y) float64 per sample) needs more than
    ``MAX_ROWS_BYTES``; checked before any work, instead of a failed allocation.

    Parameters
    ----------
    N : int
        Context length.
    d, d_y : int
        Input and output dimensions.
    prompts : int
        Prompts drawn at once (seeds × batch).

    Raises
    ------
    InputError
        Naming N, when over the limit.

    Examples
    --------
    >>> from icldyn.numerics.simulation.sgd import check_prompt_memory
    >>> check_prompt_memory(N=100, d=10, d_y=1, prompts=64)             # about 1 MB: fine
    >>> check_prompt_memory(N=100_000, d=10, d_y=1, prompts=64 * 16)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: N: 1024 prompts (seeds × batch) of N = 100000 samples ...
    """
    size = prompts * (N + 1) * (2 * d + d_y) * 8
    if size > MAX_ROWS_BYTES:
        raise InputError("N", f"{prompts} prompts (seeds × batch) of N = {N} samples need "
                         f"{size / 2**30:.3g} GiB at once, over the {MAX_ROWS_BYTES / 2**30:g} "
                         "GiB limit; use a shorter context, a smaller batch or fewer seeds")


class PromptSampler:
    """Draws prompts of the data model: x ~ N(0, Λ), W from the task law (one per prompt),
    y = W x + ε with ε ~ N(0, σ² I).

    Parameters
    ----------
    data : ICLData
        A numeric data law (Λ, Σ_w or the task set, σ given as numbers).

    Raises
    ------
    InputError
        When Λ, Σ_w or the noise are symbolic.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData
    >>> from icldyn.numerics.simulation.sgd import PromptSampler
    >>> sampler = PromptSampler(ICLData(d=2, N=8, Lambda=np.diag([1.0, 0.25])))
    >>> X, Y, xq, yq = sampler.prompts(np.random.default_rng(0), (4, 16))    # seeds × batch
    >>> X.shape, Y.shape, xq.shape, yq.shape
    ((4, 16, 8, 2), (4, 16, 8, 1), (4, 16, 2), (4, 16, 1))
    >>> x = sampler.prompts(np.random.default_rng(1), (1, 4000))[0].reshape(-1, 2)
    >>> np.round(np.var(x, axis=0), 2)                         # x ~ N(0, Λ)
    array([0.99, 0.25])
    """

    def __init__(self, data: ICLData):
        self.data = data
        if not data.is_numeric():
            raise InputError("data", "simulation needs numeric Λ, Σ_w and noise")
        arrays = data.arrays()
        self.chol = np.linalg.cholesky(arrays["Lambda"])
        if data.tasks == "gaussian":
            self.task_chol = np.linalg.cholesky(arrays["Sigma_w"])
        elif data.tasks == "finite":
            self.task_set = np.array([m.tolist() for m in data.numeric_task_set()], dtype=float)
        else:
            self.U, self.task_sd = arrays["U"], np.sqrt(arrays["c"])
        self.sigma = float(data.noise)

    def tasks(self, rng, shape) -> np.ndarray:
        """Tasks W from the task law: Gaussian rows with covariance Σ_w, uniform over a finite
        set, or U diag(δ) Uᵀ with δ_α ~ N(0, c_α) (eigenbasis tasks).

        Parameters
        ----------
        rng : numpy.random.Generator
            The random stream.
        shape : tuple of int
            Leading shape (e.g. (seeds, batch)).

        Returns
        -------
        numpy.ndarray, shape (*shape, d_y, d)
        """
        d, d_y = self.data.d, self.data.d_y
        if self.data.tasks == "gaussian":
            return rng.standard_normal(shape + (d_y, d)) @ self.task_chol.T
        if self.data.tasks == "finite":                   # uniform over the set
            return self.task_set[rng.integers(len(self.task_set), size=shape)]
        delta = rng.standard_normal(shape + (d,)) * self.task_sd
        return (self.U * delta[..., None, :]) @ self.U.T

    def prompts(self, rng, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Prompts: N context pairs and a query, all with the prompt's task W.

        Parameters
        ----------
        rng : numpy.random.Generator
            The random stream.
        shape : tuple of int
            Leading shape (e.g. (seeds, batch)); memory is checked before drawing.

        Returns
        -------
        tuple of numpy.ndarray
            X (*shape, N, d), Y (*shape, N, d_y), x_q (*shape, d), y_q (*shape, d_y).
        """
        N, d = int(self.data.N), self.data.d
        check_prompt_memory(N, d, self.data.d_y, int(np.prod(shape)))
        W = self.tasks(rng, shape)
        g = rng.standard_normal((int(np.prod(shape)) * (N + 1), d))
        x = (g @ self.chol.T).reshape(shape + (N + 1, d))
        y = x @ W.swapaxes(-1, -2)
        if self.sigma > 0:
            y = y + self.sigma * rng.standard_normal(y.shape)
        return x[..., :N, :], y[..., :N, :], x[..., N, :], y[..., N, :]


def _attention(W_PV, W_KQ, Z, rows, mask, N: int):
    """Σ_h W_PV,h (Zᵀ M Z/N) W_KQ,h z_t for the tokens ``rows`` (token-major arrays: Z is
    (S, B, N+1, D)); returns the update and A = Zᵀ M Z/N."""
    A = _masked(Z, mask).swapaxes(-1, -2) @ Z / N                         # (S,B,D,D), symmetric
    U = rows[:, :, None] @ W_KQ[:, None].swapaxes(-1, -2)                 # W_KQ,h z_t
    R = U @ A[:, :, None]                                                 # A W_KQ,h z_t
    return (R @ W_PV[:, None].swapaxes(-1, -2)).sum(axis=2), A, U, R


def _masked(Z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """M Z over the token axis (no copy when M = I: the query among the keys)."""
    return Z if mask[-1] == 1.0 else Z * mask[:, None]


def _flat_tokens(T: np.ndarray) -> np.ndarray:
    """(S, B, H, T, D) → (S, H, B·T, D): the batch and token axes as one, for sums over both."""
    S, B, H, n, D = T.shape
    return T.swapaxes(1, 2).reshape(S, H, B * n, D)


def _key_mask(N: int, query_in_keys: bool) -> np.ndarray:
    """M = diag(1, …, 1, m): the N context tokens are keys; the query is one iff
    ``query_in_keys``."""
    mask = np.ones(N + 1)
    mask[N] = 1.0 if query_in_keys else 0.0
    return mask


def _forward(weights: list[tuple], X, Y, xq, yq, d: int, mask, negate_readout: bool):
    """(loss (S,), ŷ − y_q, the query column's last Z, the tape of every layer's inputs)."""
    N = X.shape[2]
    zq = np.concatenate([xq, np.zeros_like(yq)], axis=-1)
    Z = np.concatenate([np.concatenate([X, Y], axis=-1), zq[:, :, None, :]], axis=2)
    tape = []
    for l, (W_PV, W_KQ) in enumerate(weights):
        rows = Z if l < len(weights) - 1 else Z[:, :, N:]
        update, A, U, R = _attention(W_PV, W_KQ, Z, rows, mask, N)
        tape.append((Z, rows, A, U, R))
        Z = rows + update
    r = (-1.0 if negate_readout else 1.0) * Z[:, :, -1, d:] - yq         # ŷ − y_q
    return 0.5 * np.mean(np.sum(r**2, axis=-1), axis=1), r, Z, tape


def model_loss(model: Model, data: ICLData, params: dict, prompts: tuple) -> np.ndarray:
    """Batch loss per seed of ``model``'s actual network (forward pass only): ½ mean over the
    batch of ‖ŷ − y_q‖², ŷ with the 1/N attention normalisation.

    Parameters
    ----------
    model : Model
        The parameterization (one layer or a Stack).
    data : ICLData
        Numeric data (d, d_y).
    params : dict
        {parameter name: array (S, *shape)}, a leading axis of S seeds.
    prompts : tuple
        (X, Y, x_q, y_q) with leading axes (S, B), as ``PromptSampler.prompts``.

    Returns
    -------
    numpy.ndarray (S,)

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics.simulation.sgd import PromptSampler, model_loss
    >>> model, data = models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))
    >>> prompts = PromptSampler(data).prompts(np.random.default_rng(0), (2, 10_000))
    >>> params = {"V": np.zeros((2, 1, 1)), "Q": np.zeros((2, 1, 1))}   # ŷ = 0: the loss is ½E y²
    >>> np.round(model_loss(model, data, params, prompts), 2)           # y = w x: ½ E w² E x² = ½
    array([0.49, 0.51])
    """
    mask = _key_mask(prompts[0].shape[2], model.query_in_keys)
    weights = network_weights(model, data, letter_values(model, params))
    return _forward(weights, *prompts, data.d, mask, model.negate_readout)[0]


def network_loss_and_grad(weights: list[tuple], X, Y, xq, yq, d: int,
                          query_in_keys: bool = True, negate_readout: bool = False):
    """Batch loss per seed of the stacked network and its gradient per layer.

    Z⁽ˡ⁾ = Z⁽ˡ⁻¹⁾ + Σ_h W_PV,h (Z⁽ˡ⁻¹⁾ M Z⁽ˡ⁻¹⁾ᵀ/N) W_KQ,h Z⁽ˡ⁻¹⁾ with Z⁽⁰⁾ = [z_1 … z_N, (x_q; 0)]
    and M = diag(1, …, 1, query_in_keys); ŷ = ±(y-rows of the query column of Z⁽ᴸ⁾). Every
    column is updated except in the last layer, where only the query is read. Gradients by
    hand (reverse mode): with A = Zᵀ M Z/N, U_h = W_KQ,h z_t, G = ∂ℓ/∂z_t',

        ∂/∂W_PV,h = Σ_t G_t (A U_h,t)ᵀ,   ∂/∂W_KQ,h = Σ_t (A W_PV,hᵀ G_t) z_tᵀ,
        ∂/∂z_t += G_t + Σ_h W_KQ,hᵀ A W_PV,hᵀ G_t,   ∂/∂z_j += m_j (E + Eᵀ) z_j / N,
        E = Σ_h Σ_t W_PV,hᵀ G_t U_h,tᵀ.

    Parameters
    ----------
    weights : list of tuple
        [(W_PV, W_KQ) per layer], each (S, H, D, D), D = d + d_y.
    X, Y, xq, yq : numpy.ndarray
        Prompts with leading axes (S, B): X (S, B, N, d), Y (S, B, N, d_y), xq (S, B, d),
        yq (S, B, d_y).
    d : int
        Input dimension.
    query_in_keys : bool
        Key mask m = 1 (the query among the keys) or 0.
    negate_readout : bool
        Read ŷ = −(y-rows) (Ahn et al.).

    Returns
    -------
    tuple
        (loss (S,), [(∂W_PV, ∂W_KQ) per layer]) with the loss ½ mean over the batch of
        ‖ŷ − y_q‖².

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.simulation.sgd import network_loss_and_grad
    >>> rng = np.random.default_rng(0)
    >>> S, B, N, d = 1, 3, 4, 1                               # a seed, 3 prompts, D = 2
    >>> X, Y = rng.standard_normal((S, B, N, d)), rng.standard_normal((S, B, N, 1))
    >>> xq, yq = rng.standard_normal((S, B, d)), rng.standard_normal((S, B, 1))
    >>> W_PV, W_KQ = rng.standard_normal((2, S, 1, 2, 2))     # one layer, one head
    >>> loss, [(g_PV, g_KQ)] = network_loss_and_grad([(W_PV, W_KQ)], X, Y, xq, yq, d)
    >>> loss.shape, g_PV.shape
    ((1,), (1, 1, 2, 2))
    >>> E = np.zeros_like(W_KQ); E[0, 0, 1, 0] = 1e-6         # a finite difference agrees
    >>> up = network_loss_and_grad([(W_PV, W_KQ + E)], X, Y, xq, yq, d)[0]
    >>> down = network_loss_and_grad([(W_PV, W_KQ - E)], X, Y, xq, yq, d)[0]
    >>> bool(np.isclose((up - down)[0] / 2e-6, g_KQ[0, 0, 1, 0]))
    True
    """
    S, B, N, _ = X.shape
    mask = _key_mask(N, query_in_keys)
    loss, r, Z, tape = _forward(weights, X, Y, xq, yq, d, mask, negate_readout)
    sign = -1.0 if negate_readout else 1.0
    G = np.zeros_like(Z)
    G[:, :, -1, d:] = sign * r / B
    grads = []
    for l, ((W_PV, W_KQ), (Z, rows, A, U, R)) in reversed(list(enumerate(zip(weights, tape)))):
        g_PV = _flat_tokens(G[:, :, None]).swapaxes(-1, -2) @ _flat_tokens(R)
        PG = G[:, :, None] @ W_PV[:, None]                                # W_PV,hᵀ G_t
        APG = PG @ A[:, :, None]                                          # A W_PV,hᵀ G_t (A = Aᵀ)
        g_KQ = _flat_tokens(APG).swapaxes(-1, -2) @ _flat_tokens(rows[:, :, None])
        grads.append((g_PV, g_KQ))
        if l == 0:                                                        # ∂ℓ/∂Z⁽⁰⁾ is not needed
            break
        E = (PG.reshape(S, B, -1, PG.shape[-1]).swapaxes(-1, -2)
             @ U.reshape(S, B, -1, U.shape[-1]))                          # Σ_h,t PG U_h,tᵀ
        G_rows = G + (APG @ W_KQ[:, None]).sum(axis=2)
        G = _masked(Z, mask) @ (E + E.swapaxes(-1, -2)) / N
        G[:, :, -G_rows.shape[2]:] += G_rows
    return loss, grads[::-1]


def model_loss_and_grad(model: Model, data: ICLData, params: dict, prompts: tuple):
    """Batch loss per seed of ``model``'s actual network at ``params`` and its gradient with
    respect to the parameter arrays (loss: ½ mean over the batch of ‖ŷ − y_q‖²).

    Parameters
    ----------
    model : Model
        The parameterization (one layer or a Stack).
    data : ICLData
        Numeric data (d, d_y).
    params : dict
        {parameter name: array (S, *shape)}, a leading axis of S seeds.
    prompts : tuple
        (X, Y, x_q, y_q) with leading axes (S, B), as ``PromptSampler.prompts``.

    Returns
    -------
    tuple
        (loss (S,), {parameter name: gradient, the shape of ``params``}).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.simulation.sgd import PromptSampler, model_loss_and_grad
    >>> model, data = models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))
    >>> params = {"V": np.full((1, 1, 1), 0.5), "Q": np.full((1, 1, 1), 0.5)}
    >>> prompts = PromptSampler(data).prompts(np.random.default_rng(0), (1, 50_000))
    >>> loss, grads = model_loss_and_grad(model, data, params, prompts)
    >>> flow = compile_flow(derive(model, data), backend="numpy")     # the exact expectation
    >>> theta = flow.pack({"V": 0.5, "Q": 0.5})
    >>> print(f"{loss[0]:.3f} vs {flow.loss(theta):.3f}")
    0.296 vs 0.297
    >>> print(f"{grads['Q'][0, 0, 0]:.3f} vs {flow.grad(theta)[1]:.3f}")
    -0.311 vs -0.312
    """
    letters = letter_values(model, params)
    loss, grads = network_loss_and_grad(network_weights(model, data, letters), *prompts,
                                        data.d, model.query_in_keys, model.negate_readout)
    return loss, pullback(model, data, letters, grads)


def simulate_sgd(model: Model, data: ICLData, init: dict, lr: float, batch: int, steps: int,
                 seeds: int = 16, seed: int = 0, record_every: int = 1,
                 progress: Callable[[int], None] | None = None,
                 validation: int = 0) -> SimResult:
    """Train ``model``'s layer by SGD from ``init`` on ``seeds`` independent prompt streams.

    ``loss[n]`` is the mean over seeds of the batch loss at step n (fresh prompts, evaluated
    before the update, so an unbiased estimate of the population loss at θ_n); ``loss[steps]``
    uses one extra batch.

    Parameters
    ----------
    model : Model
        The parameterization; its actual layer(s) are trained (``model.stack_layers()``).
    data : ICLData
        The data law (numeric).
    init : dict
        {name: array or scalar}, the same start for every seed.
    lr : float
        Learning rate.
    batch, steps, seeds : int
        Prompts per step, steps, independent streams.
    seed : int
        Seed of the prompt streams.
    record_every : int
        Record the parameters every this many steps (and at the end).
    progress : callable, optional
        Called with n after each step.
    validation : int
        V > 0 also draws, once per seed, V prompts of its own (from a generator independent
        of the training stream, so the training run is the same with or without it) and
        records each seed's loss on them at every recorded step (``val_losses``). Those
        prompts never enter training, so each is an unbiased estimate of the population loss
        at θ_n; being the same prompts at every step (common random numbers), they do not add
        a fresh batch's noise to every point, so a curve needs far fewer seeds for the same
        standard error (benchmarks/run.py (b) measures it).

    Returns
    -------
    SimResult
        ``loss``, ``loss_se`` (steps + 1,), ``losses`` (steps + 1, seeds), ``steps`` (the
        recorded ones), ``theta`` and ``params`` at them, ``info`` (settings).

    Raises
    ------
    InputError
        When the per-seed loss record (steps + 1) × seeds would need more memory
        than the limit (the message gives the GiB).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics import simulate_sgd
    >>> data = ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5]))
    >>> sim = simulate_sgd(models.Merged(2), data, {"V": 0.1, "Q": 0.1}, lr=0.05, batch=64,
    ...                    steps=100, seeds=4)
    >>> sim.loss.shape, sim.losses.shape
    ((101,), (101, 4))
    """
    lr = check_real("lr", lr)
    batch, steps, seeds, record_every = (check_int(n, v) for n, v in (
        ("batch", batch), ("steps", steps), ("seeds", seeds), ("record_every", record_every)))
    seed = check_int("seed", seed, minimum=0)
    validation = check_int("validation", validation, minimum=0)
    if (steps + 1) * seeds * 8 > MAX_ROWS_BYTES:
        raise InputError("steps", f"{steps} steps × {seeds} seeds of losses need "
                         f"{(steps + 1) * seeds * 8 / 2**30:.1f} GiB; fewer steps or seeds")
    shapes = model.shapes()
    params = {name: np.repeat(v[None], seeds, axis=0)
              for name, v in as_arrays(shapes, init, "init").items()}
    sampler = PromptSampler(data)
    rng = np.random.default_rng(seed)
    held_out = sampler.prompts(np.random.default_rng([seed, VALIDATION_STREAM]),
                               (seeds, validation)) if validation else None
    losses = np.empty((steps + 1, seeds))
    records = {n: [] for n in shapes}
    if held_out is not None:
        records[VALIDATION] = []
    for n in range(steps + 1):
        if n % record_every == 0 or n == steps:
            for name in shapes:
                records[name].append(params[name].copy())
            if held_out is not None:
                with np.errstate(over="ignore", invalid="ignore"):
                    records[VALIDATION].append(model_loss(model, data, params, held_out))
        with np.errstate(over="ignore", invalid="ignore"):   # overflow is checked just below
            loss, grads = model_loss_and_grad(model, data, params,
                                              sampler.prompts(rng, (seeds, batch)))
        losses[n] = loss
        if not np.all(np.isfinite(loss)) or loss.max() > RUNAWAY:
            if n == 0:                                        # before any step: not lr's fault
                _blame_start(data, params)
            partial = _result(losses[:n], records, steps, record_every, dict(
                model=repr(model), data=repr(data), lr=lr, batch=batch, steps=steps,
                seeds=seeds, seed=seed, validation=validation))
            bad = int(np.argmax(~np.isfinite(loss) | (loss > RUNAWAY)))
            raise DivergenceError(f"SGD diverged at step {n} (seed index {bad}); lower lr "
                                  f"(now {lr:g}). Steps before it are in .partial", n, partial)
        if n == steps:
            break
        for name, g in grads.items():
            params[name] = params[name] - lr * g
        if progress is not None:
            progress(n + 1)
    info = dict(model=repr(model), data=repr(data), lr=lr, batch=batch, steps=steps,
                seeds=seeds, seed=seed, validation=validation)
    return _result(losses, records, steps, record_every, info)


def _blame_start(data: ICLData, params: dict) -> None:
    """Overflow at the initial parameters: the data's scale when they are of order 1 (entries
    at most 1), else the parameters."""
    top = max(float(np.abs(v).max()) for v in params.values())
    if top <= 1:
        raise data_overflow(data, "the SGD loss at the initial parameters")
    raise InputError("init", f"entries up to {top:.3g} overflow float64 in the SGD loss; "
                     "rescale the initial parameters")


def _result(losses, records: dict, steps: int, record_every: int, info: dict) -> SimResult:
    val = records.pop(VALIDATION, None)
    n_rec = len(next(iter(records.values())))
    recorded = np.unique(np.r_[np.arange(0, steps + 1, record_every), steps])[:n_rec]
    val_losses = None if val is None else np.array(val[:n_rec]).reshape(n_rec, -1)
    return SimResult(losses.mean(axis=1), standard_error(losses), losses, recorded,
                     {k: np.stack(v, axis=1) for k, v in records.items()}, info, val_losses)


def block_stats(losses: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of per-seed means over blocks of ``block`` steps, and its standard error
    across seeds (a trailing partial block is dropped).

    Parameters
    ----------
    losses : numpy.ndarray (steps, seeds)
        Loss per step and seed (≥ 2 seeds).
    block : int
        Steps per block.

    Returns
    -------
    tuple of numpy.ndarray
        (mean (blocks,), standard error (blocks,)).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.simulation.sgd import block_stats
    >>> losses = np.array([[1.0, 3.0], [3.0, 5.0], [2.0, 2.0], [4.0, 4.0], [9.0, 9.0]])
    >>> block_stats(losses, block=2)            # steps 0–1 and 2–3 (step 4: a partial block)
    (array([3., 3.]), array([1., 0.]))
    """
    n = (len(losses) // block) * block
    per_seed = losses[:n].reshape(-1, block, losses.shape[1]).mean(axis=1)
    return per_seed.mean(axis=1), per_seed.std(axis=1, ddof=1) / np.sqrt(losses.shape[1])


def block_z_scores(losses: np.ndarray, theory: np.ndarray, block: int) -> np.ndarray:
    """z of each block's mean simulated loss against the theory's mean over the same steps.

    Parameters
    ----------
    losses : numpy.ndarray (steps, seeds)
        Simulated loss per step and seed.
    theory : numpy.ndarray (steps,)
        The theory's loss at the same steps.
    block : int
        Steps per block.

    Returns
    -------
    numpy.ndarray (blocks,)

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.simulation.sgd import block_z_scores
    >>> losses = np.array([[1.0, 3.0], [3.0, 5.0], [2.0, 2.5], [4.0, 4.5]])   # 4 steps, 2 seeds
    >>> theory = np.array([2.0, 3.0, 3.0, 3.0])
    >>> block_z_scores(losses, theory, block=2)      # (mean − theory) / standard error
    array([0.5, 1. ])
    """
    mean, se = block_stats(losses, block)
    n = len(mean) * block
    return (mean - theory[:n].reshape(-1, block).mean(axis=1)) / se
