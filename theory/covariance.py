"""Exact covariance of the single-prompt gradient: the noise of SGD (a batch of B prompts
divides it by B).

For one prompt, g = ∂/∂θ ½‖ŷ − y_q‖² = Σ_L ⟨r, ∂ŷ/∂L⟩ with r = ŷ − y_q. With a probe matrix
per letter L (A_L and B_L, of L's shape) the covariance is the bilinear form

    M₂(A, B) = E[⟨A, g⟩⟨B, g⟩] = Σ_{L, L'} E[⟨r, δ_L ŷ[A_L]⟩ ⟨r, δ_{L'} ŷ[B_{L'}]⟩],
    Cov(A, B) = M₂(A, B) − ⟨A, ∇L⟩⟨B, ∇L⟩,

where δ_L ŷ[A] is the derivative of ŷ in the direction A at the letter L (``terms.vary``):
both factors come from the same prompt (same task W, same query), so the engine sees one
monomial with the context labels of the two factors summed independently. M₂ is exact for
every N; it holds up to 4 context labels and task moments of order 4: Gaussian tasks through the
engine; finite task sets and the paper's eigenbasis tasks conditional on the task W (a fixed
letter), averaged over the set, or over an exact cubature of δ (``ICLData.task_cubature``).
Its cost is counted first (``covariance_cost``): beyond ``PAIRING_BUDGET`` Isserlis pairings (a
stack of two Merged layers needs 1.04·10⁹), models whose context enters only through
S = Σ x_i x_iᵀ and E = Σ ε_i x_iᵀ (stacks of Merged, MultiHead and SeparateKQ layers) take the
two-stage route of ``wishart`` — the same polynomial, Isserlis conditional on the context, then
the Wishart recursion on S — up to degree ``WISHART_DEGREE`` in S; anything else is refused with
the estimate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial

import sympy as sp

from .cache import cached
from .data import N_SYM, W_COPY, W_TASK, independent, task_degree
from .derive import Derivation, register_analysis
from .errors import InputError
from .gaussian import expect_products, group_sizes, pairing_count
from . import memory
from .terms import inner_monomial, residual, vary
from .wishart import context_degree, expect_products_by_context
from .words import Mat, MatPoly, TracePoly

PROBES = ("A_", "B_")
# The engine's cost: ≈ 5 µs of CPU per Isserlis pairing, tally and cache included (FullLSA at
# d = 2: 1.15·10⁶ pairings in 6.1 s on a loaded 2-core machine). Beyond the budget (≈ 4 minutes)
# the covariance is refused with its estimated cost.
SECONDS_PER_PAIRING = 5e-6
PAIRING_BUDGET = 5 * 10**7
# Beyond the budget, models whose context enters only through S = Σ x_i x_iᵀ and
# E = Σ ε_i x_iᵀ (x-row keys and queries, y-row values: stacks of Merged, MultiHead, SeparateKQ
# layers) take the two-stage route of ``wishart`` (Isserlis conditional on the context, then the
# Wishart recursion), up to this degree in S (8: two layers; see benchmarks for its time).
WISHART_DEGREE = 8


def _probe(letter: Mat, prefix: str) -> Mat:
    """The probe matrix for ``letter`` (same spaces, not symmetric)."""
    return Mat(prefix + letter.name, rows=letter.rows, cols=letter.cols)


@dataclass
class GradientCovariance:
    """``second_moment[(L, L')]``: E[⟨A_L, g_L⟩⟨B_{L'}, g_{L'}⟩] for letters L ≤ L' (model
    order; the (L', L) block is its transpose); ``covariance(L, L')`` subtracts the mean.

    Parameters
    ----------
    der : Derivation
        The derivation whose model and data the covariance belongs to (its gradient gives the
        mean subtracted).
    second_moment : dict
        {(L, L'): TracePoly} of the single-prompt second moment, bilinear in the probe letters
        ``A_L`` and ``B_L'`` (as ``gradient_covariance`` derives it).

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> cov = derive(models.Merged(1), ICLData(d=1, N=4)).gradient_covariance()
    >>> cov.letters, sorted(cov.second_moment)
    (['V', 'Q'], [('Q', 'Q'), ('V', 'Q'), ('V', 'V')])
    >>> sorted(map(str, cov.to_sympy("V", "Q").free_symbols))     # bilinear in the probes
    ['A_V', 'B_Q', 'Lambda', 'Q', 'V']
    """

    der: Derivation
    second_moment: dict

    @property
    def letters(self) -> list:
        return list(self.der.letters)

    def covariance(self, L: str, M: str) -> TracePoly:
        """Cov(A_L, B_M) = M₂ − ⟨A_L, ∇_L L⟩⟨B_M, ∇_M L⟩ as a trace polynomial.

        Parameters
        ----------
        L, M : str
            Letter names with L ≤ M in the model's order (the stored blocks).

        Returns
        -------
        TracePoly
            Bilinear in the probes ``A_L``, ``B_M``; the mean product's B factor is an independent
            copy (``data.independent``), so task letters of the two factors average separately.

        Raises
        ------
        InputError
            When (L, M) is not a stored block.
        """
        letters, grads = self.der.letters, self.der.gradient_poly
        if (L, M) not in self.second_moment:
            raise InputError("letters", f"blocks are stored for L ≤ M in {self.letters}")
        a = MatPoly.letter(_probe(letters[L], PROBES[0])).inner(grads[L])
        b = MatPoly.letter(_probe(letters[M], PROBES[1])).inner(grads[M])
        return self.second_moment[L, M] - a * independent(b)

    def on_set(self, L: str, M: str, zero=(), identity: dict | None = None) -> TracePoly:
        """Block (L, M) on the set where the letters ``zero`` vanish and each letter of
        ``identity`` is its value times the identity (e.g. FullLSA's invariant set P₁ = Q₂ = 0
        along the isotropic line Q₁ = qI).

        Parameters
        ----------
        L, M : str
            The block, as in ``covariance``.
        zero : iterable of str
            Letters set to zero.
        identity : dict, optional
            {letter: scalar} for letters set to scalar · I.

        Returns
        -------
        TracePoly

        Raises
        ------
        InputError
            When ``zero`` or ``identity`` names a letter the model does not have.
        """
        unknown = (set(zero) | set(identity or {})) - set(self.letters)
        if unknown:
            raise InputError("letters", f"{sorted(unknown)} are not among {self.letters}")
        block = self.covariance(L, M).zero_letters(set(zero))
        for name, value in (identity or {}).items():
            block = block.scalar_letter(name, value)
        return block

    def task_set(self):
        """What the second moment's task-conditional terms are averaged over: a finite task
        set, the exact cubature of eigenbasis tasks, or None (Gaussian tasks: no such terms).

        Returns
        -------
        TaskSet or None
            For ``tasks="diagonal"`` a cubature rule exact to the degree in δ the second moment
            holds (``task_degree``); for a finite task set its TaskSet; else None.
        """
        if self.der.data.tasks == "diagonal":
            # M₂ is conditional on W (degree 8 in δ for FullLSA's S_yy terms, 4 otherwise)
            return self.der.data.task_cubature(task_degree(self.second_moment.values()))
        return self.der.task_values().get(W_TASK.name)

    def values(self, params: dict) -> dict:
        """``der.values(params)`` with the task letters averaged over ``task_set()``.

        Parameters
        ----------
        params : dict
            {parameter name: value}, as ``Derivation.values`` takes them.

        Returns
        -------
        dict
            Letter values for ``TracePoly.evaluate``; the task letter W and its independent copy
            both take the task set (or cubature rule) when there is one.
        """
        values = self.der.values(params)
        rule = self.task_set()
        if rule is not None:
            values[W_TASK.name] = values[W_COPY.name] = rule
        return values

    def to_sympy(self, L: str, M: str, centred: bool = True) -> sp.Expr:
        """The block as a SymPy expression (probes as MatrixSymbols A_L, B_M; for eigenbasis
        tasks the second moment is shown conditional on W = U diag(δ) Uᵀ).

        Parameters
        ----------
        L, M : str
            The block, as in ``covariance``.
        centred : bool
            The covariance (True) or the raw second moment M₂ (False).

        Returns
        -------
        sympy.Expr
        """
        return self.der.to_sympy(self.covariance(L, M) if centred else self.second_moment[L, M])


def gradient_covariance(der: Derivation) -> GradientCovariance:
    """The exact single-prompt gradient covariance of ``der``'s model and data (cached per
    model and data structure, like the loss).

    Parameters
    ----------
    der : Derivation

    Returns
    -------
    GradientCovariance
        Batch-B SGD noise is its covariance divided by B.

    Raises
    ------
    InputError
        When the model with the data's task law needs what the expectation engine does not
        provide yet (the message names it; ``tasks='gaussian'`` always works); when it needs
        more Isserlis pairings than the engine's budget and the two-stage route does not
        apply; when the two-stage route passes the memory budget (``theory.memory``).

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.covariance import gradient_covariance
    >>> der = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=sp.Matrix([[2]])))
    >>> cov = gradient_covariance(der)
    >>> minimum = {"V": 1, "Q": sp.Rational(1, 3)}          # M* = 1/3: the mean gradient vanishes
    >>> values = cov.values(minimum)
    >>> values.update(A_V=sp.Matrix([[1]]), B_V=sp.Matrix([[1]]))
    >>> cov.covariance("V", "V").evaluate(values)               # yet one prompt's gradient varies
    40/3
    """
    model, data = der.model, der.data
    try:
        blocks = cached("gradient_covariance", (model.key(), data.structure()),
                        lambda: _second_moment(der))
    except NotImplementedError as exc:
        raise InputError("data", f"the gradient covariance of {model!r} with "
                         f"tasks={data.tasks!r} needs {exc}, which the engine does not "
                         "provide yet; use tasks='gaussian'") from None
    return GradientCovariance(der, blocks)


def covariance_cost(der: Derivation) -> int:
    """The number of Isserlis pairings the exact gradient covariance of ``der``'s model and
    data needs (≈ ``SECONDS_PER_PAIRING`` each), counted without forming the products: the
    count of a product a·b depends only on the group sizes of a and b, which add.

    Parameters
    ----------
    der : Derivation
        The model and data.

    Returns
    -------
    int
        Σ over the blocks' monomials a·b of Π_g (n_g − 1)!! (``gaussian.pairing_count``).

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.covariance import covariance_cost
    >>> data = ICLData(d=2, N=4)
    >>> [covariance_cost(derive(m, data)) for m in (models.Merged(2), models.FullLSA(2))]
    [4296, 1154368]
    """
    return _cost(*_directional(der))


def _second_moment(der: Derivation) -> dict:
    letters, directional, law = _directional(der)
    pairings = _cost(letters, directional, law)
    expectation = expect_products
    if pairings > PAIRING_BUDGET:
        degree = _context_degree(directional, law)
        if degree is None or degree > WISHART_DEGREE:
            why = ("its context enters only through S and E, but with degree "
                   f"{degree:g} > {WISHART_DEGREE} in S" if degree is not None else
                   "its context does not enter only through S = Σ x_i x_iᵀ and E = Σ ε_i x_iᵀ")
            raise InputError("model", f"the gradient covariance of {der.model!r} needs "
                             f"{pairings:.3g} Isserlis pairings, about "
                             f"{pairings * SECONDS_PER_PAIRING / 3600:.2g} CPU hours (the "
                             f"engine's budget is {PAIRING_BUDGET:.0e}), and {why}; measure "
                             "the noise of this model by simulation (simulate_sgd)")
        guard = memory.MemoryGuard(
            "model", f"the gradient covariance of {der.model!r} (two-stage route)",
            f"set {memory.ENV} higher on a machine with more memory, or measure the noise of "
            "this model by simulation (simulate_sgd)")
        expectation = partial(expect_products_by_context, guard=guard)
    return {(L, M): expectation(directional[PROBES[0], L], directional[PROBES[1], M], law,
                                N_SYM, (PROBES[0] + L, PROBES[1] + L) if L == M else None)
            for L, M in _blocks(letters)}


def _context_degree(directional: dict, law) -> float | None:
    """The degree in S of the two-stage route (``wishart``): the largest of a left factor's
    plus a right factor's; None when it does not apply."""
    degrees = {key: context_degree(monos, law) for key, monos in directional.items()}
    if any(d is None for d in degrees.values()):
        return None
    return max(degrees[key] for key in directional if key[0] == PROBES[0]) + \
        max(degrees[key] for key in directional if key[0] == PROBES[1])


def _directional(der: Derivation) -> tuple:
    """(letter names, {(probe prefix, L): the monomials of ⟨r, δ_L ŷ[probe]⟩}, law)."""
    model = der.model
    terms, r = model.prediction(), residual(model)
    letters = list(model.letters().values())
    directional = {}
    for prefix in PROBES:
        for L in letters:
            varied = vary(terms, L.name, (_probe(L, prefix),))
            directional[prefix, L.name] = [inner_monomial(a, b, sp.Integer(1))
                                           for a in r for b in varied]
    law = der.data.law(conditional=der.data.tasks == "diagonal")
    return [L.name for L in letters], directional, law


def _blocks(letters: list) -> list:
    """The stored blocks (L, M), L ≤ M in model order."""
    return [(L, M) for i, L in enumerate(letters) for M in letters[i:]]


def _cost(letters: list, directional: dict, law) -> int:
    sizes = {key: Counter(frozenset(group_sizes(mono, law).items()) for mono in monos)
             for key, monos in directional.items()}
    total = 0
    for L, M in _blocks(letters):
        block = 0
        for a, na in sizes[PROBES[0], L].items():
            for b, nb in sizes[PROBES[1], M].items():
                block += na * nb * pairing_count((Counter(dict(a)) + Counter(dict(b))).values())
        if L == M:      # the products a_i·b_j with i ≤ j (``expect_products``' exchange)
            block = (block + sum(na * pairing_count([2 * n for _, n in a])
                                 for a, na in sizes[PROBES[0], L].items())) // 2
        total += block
    return total


register_analysis("gradient_covariance", gradient_covariance)
