"""The derived gradient covariance (``theory/covariance.py``) evaluated as a P×P matrix in the
ordering of a compiled flow's θ.

Each term of the bilinear form M₂(A, B) is c · Π tr(…) with the probe A_L in one trace and B_M
in one trace (the same or another). Rotated (and transposed) so that A_L comes first:

    tr(A Y B X) = Σ A_ab Y_bc B_cd X_da   → block entry [(a,b), (c,d)] += X_da Y_bc,
    tr(A Y Bᵀ X)                          → block entry [(a,b), (d,c)] += X_da Y_bc,
    tr(A X) · tr(B Y)                     → block += vec(Xᵀ) vec(Yᵀ)ᵀ,

times the coefficient and the remaining traces at θ. Terms sharing (L, M, case, X, Y) are summed
as scalars first, so each θ costs one outer product per distinct pair of words. Then
Σ(θ) = M₂ − ∇L ∇Lᵀ, and the (M, L) block is the transpose of the (L, M) block.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ...theory.covariance import PROBES
from ...theory.errors import InputError
from ...theory.data import W_TASK
from ...theory.words import Mat, letter_names, transpose_word
from ..compiled.codegen import CompiledFlow, task_arrays
from ..simulation.sgd import letter_values

__all__ = ["CompiledCovariance", "compile_covariance"]


class CompiledCovariance:
    """``matrix(θ)``: the exact covariance of one prompt's gradient at θ (P×P, θ's ordering);
    ``second_moment(θ)``: E[g gᵀ]. Here g = ∇_θ ½‖ŷ − y_q‖² for one prompt (the package's loss
    convention, ŷ with the 1/N context normalisation), so E[g] = ∇L; a batch of B prompts has
    covariance matrix(θ) / B.

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow``; its derivation's ``gradient_covariance()`` is evaluated.

    Raises
    ------
    InputError
        When ``flow`` is not a CompiledFlow.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.covariance import CompiledCovariance
    >>> from icldyn.numerics.simulation.sgd import PromptSampler, model_loss_and_grad
    >>> model, data = models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))
    >>> flow = compile_flow(derive(model, data), backend="numpy")
    >>> theta = flow.pack({"V": 0.5, "Q": 0.5})
    >>> exact = CompiledCovariance(flow).matrix(theta)
    >>> np.round(exact, 3)
    array([[0.957, 0.957],
           [0.957, 0.957]])
    >>> n = 200_000                     # the network's own gradients on n single prompts
    >>> prompts = PromptSampler(data).prompts(np.random.default_rng(0), (n, 1))
    >>> params = {k: np.repeat(v[None], n, axis=0) for k, v in flow.unpack(theta).items()}
    >>> _, g = model_loss_and_grad(model, data, params, prompts)
    >>> sampled = np.cov(np.concatenate([g["V"].reshape(-1, 1), g["Q"].reshape(-1, 1)], axis=1).T)
    >>> bool(np.allclose(sampled, exact, rtol=0.05))      # heavy tails: a few % at this n
    True
    """

    def __init__(self, flow: CompiledFlow):
        if not isinstance(flow, CompiledFlow):
            raise InputError("flow", f"must come from compile_flow, got {type(flow).__name__}")
        self.flow = flow
        der = flow.der
        scalars, sizes = der.scalars(), der.model.sizes()
        self.positions = flow.letter_positions()
        self.letters = der.letters
        # (L, M, case, X, Y) -> [(coeff, other traces)], apart for terms with the task letter W
        # (a finite task set: averaged over the tasks)
        self.groups, self.task_groups = defaultdict(list), defaultdict(list)
        theory = der.gradient_covariance()
        for (L, M), poly in theory.second_moment.items():
            for traces, coeff in poly.terms.items():
                key, others = _classify(traces, L, M)
                groups = self.task_groups if W_TASK.name in letter_names(traces) else self.groups
                groups[key].append((float(coeff.subs(scalars)), others))
        self.space_size = {"x": der.data.d, "y": der.data.d_y, "r": sizes.get("r", 0),
                           "z": der.data.d + der.data.d_y}
        # the tasks the conditional terms are averaged over, with their weights
        self.tasks, self.weights = task_arrays(theory.task_set(), der.data)

    def second_moment(self, theta) -> np.ndarray:
        """The second moment E[g gᵀ] of one prompt's gradient.

        Parameters
        ----------
        theta : array_like, shape (P,) or (R, P)
            One flat parameter vector in the flow's ordering, or a stack of R of them.

        Returns
        -------
        numpy.ndarray, shape (P, P) or (R, P, P)
        """
        theta = np.asarray(theta, dtype=float)
        stack = theta.reshape(-1, self.flow.size)
        letters = letter_values(self.flow.model, self.flow.unpack(stack))
        values = {"Lambda": self.flow.Lambda, "Sigma_w": self.flow.Sigma_w, **letters}
        out = np.zeros((len(stack), self.flow.size, self.flow.size))
        self._add(out, self.groups, _Evaluator(values, self.space_size))
        if len(self.tasks):       # every task at once: θ's letters (R, 1, …), the tasks (T, …)
            per_task = {**values, **{k: v[:, None] for k, v in letters.items()},
                        W_TASK.name: self.tasks}
            self._add(out, self.task_groups, _Evaluator(per_task, self.space_size),
                      self.weights)
        return out.reshape(theta.shape[:-1] + out.shape[1:])

    def _add(self, out: np.ndarray, groups: dict, ev: "_Evaluator",
             task_weights: np.ndarray | None = None) -> None:
        """out += (the blocks of ``groups`` evaluated by ``ev``); with ``task_weights`` the
        evaluation has a task axis after θ's (R, T) and the blocks are averaged over it."""
        lead = (len(out),) if task_weights is None else (len(out), len(task_weights))
        for (L, M, case, X, Y), terms in groups.items():
            weight = sum(c * math.prod((ev.trace(t) for t in others), start=1.0)
                         for c, others in terms) * np.ones(lead)
            A, B = self.letters[L], self.letters[M]
            Xm = ev.word(X, A.rows)
            Ym = ev.word(Y, A.cols if case != "split" else B.rows)
            if case == "split":
                Xv, Yv = (np.broadcast_to(m.swapaxes(-1, -2), lead + m.shape[-2:][::-1])
                          .reshape(lead + (-1,)) for m in (Xm, Ym))
                block = Xv[..., :, None] * Yv[..., None, :]
            else:
                four = np.einsum("...da,...bc->...abcd" if case == "B" else
                                 "...da,...bc->...abdc", Xm, Ym)
                four = np.broadcast_to(four, lead + four.shape[-4:])
                block = four.reshape(lead + (four.shape[-4] * four.shape[-3], -1))
            block = weight[..., None, None] * block
            if task_weights is not None:
                block = np.einsum("t,rtij->rij", task_weights, block)
            pL, pM = self.positions[L].ravel(), self.positions[M].ravel()
            out[:, pL[:, None], pM[None, :]] += block
            if L != M:
                out[:, pM[:, None], pL[None, :]] += block.swapaxes(1, 2)

    def matrix(self, theta) -> np.ndarray:
        """The single-prompt gradient covariance Σ(θ) = E[g gᵀ] − ∇L ∇Lᵀ.

        Parameters
        ----------
        theta : array_like, shape (P,) or (R, P)
            One flat parameter vector in the flow's ordering, or a stack of R of them.

        Returns
        -------
        numpy.ndarray, shape (P, P) or (R, P, P)
            Symmetric positive semi-definite (to rounding); divide by B for a batch of B.
        """
        theta = np.asarray(theta, dtype=float)
        g = np.array([self.flow.grad(t) for t in theta.reshape(-1, self.flow.size)])
        g = g.reshape(theta.shape)
        return self.second_moment(theta) - g[..., :, None] * g[..., None, :]


def compile_covariance(flow: CompiledFlow) -> CompiledCovariance:
    """The gradient covariance of ``flow``'s derivation, ready to evaluate at any θ.

    Parameters
    ----------
    flow : CompiledFlow
        From ``compile_flow``.

    Returns
    -------
    CompiledCovariance
        ``matrix(θ)`` (the covariance Σ(θ)) and ``second_moment(θ)``.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.covariance import compile_covariance
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> S = compile_covariance(flow).matrix(flow.pack({"V": 0.1, "Q": 0.1}))
    >>> S.shape, bool(np.allclose(S, S.T))
    ((5, 5), True)
    """
    return CompiledCovariance(flow)


def _is_probe(letter, prefix: str) -> bool:
    return isinstance(letter, Mat) and letter.name.startswith(prefix)


def _classify(traces: tuple, L: str, M: str):
    """((L, M, case, X, Y), other traces) for one term of the (L, M) block."""
    a_idx = next(i for i, w in enumerate(traces) if any(_is_probe(x, PROBES[0]) for x in w))
    b_idx = next(i for i, w in enumerate(traces) if any(_is_probe(x, PROBES[1]) for x in w))
    others = tuple(w for i, w in enumerate(traces) if i not in (a_idx, b_idx))
    first = _rotate_to(traces[a_idx], PROBES[0])            # (A, ...rest)
    if a_idx == b_idx:
        rest = first[1:]
        j = next(i for i, x in enumerate(rest) if _is_probe(x, PROBES[1]))
        Y, Bl, X = rest[:j], rest[j], rest[j + 1:]
        return (L, M, "B" if not Bl.T else "BT", X, Y), others
    second = _rotate_to(traces[b_idx], PROBES[1])
    return (L, M, "split", first[1:], second[1:]), others


def _rotate_to(word: tuple, prefix: str) -> tuple:
    """The cyclic rotation of ``word`` (or of its transpose) that starts with the untransposed
    probe of ``prefix``."""
    for w in (word, transpose_word(word)):
        for k, letter in enumerate(w):
            if _is_probe(letter, prefix) and not letter.T:
                return w[k:] + w[:k]
    raise AssertionError(f"no {prefix} probe in {word}")


class _Evaluator:
    """Numeric words and traces at one θ, memoised."""

    def __init__(self, values: dict, space_size: dict):
        self.values, self.space_size = values, space_size
        self._words: dict = {}
        self._traces: dict = {}

    def word(self, word: tuple, space: str) -> np.ndarray:
        """The product of ``word``'s letters; the identity on ``space`` when it is empty."""
        if not word:
            return np.eye(self.space_size[space])
        if word not in self._words:
            out = self._letter(word[0])
            for letter in word[1:]:
                out = out @ self._letter(letter)
            self._words[word] = out
        return self._words[word]

    def trace(self, word: tuple):
        if word not in self._traces:
            self._traces[word] = np.trace(self.word(word, word[0].rows), axis1=-2, axis2=-1)
        return self._traces[word]

    def _letter(self, letter) -> np.ndarray:
        if not isinstance(letter, Mat):
            raise InputError("data", "the gradient covariance is evaluated for Gaussian tasks")
        m = self.values[letter.name]
        return m.swapaxes(-1, -2) if letter.T else m
