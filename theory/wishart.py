"""Exact expectations through the context's Wishart matrix, for polynomials in which every
context token enters only through

    S = Σ_{i=1}^N x_i x_iᵀ   and   E = Σ_{i=1}^N ε_i x_iᵀ.

Attention layers that read their keys and queries from the x-rows and their values from the
y-rows (Merged, MultiHead, SeparateKQ, and stacks of them: the x-rows never change) give such
polynomials: every context label of a monomial occurs exactly twice, as x_i … x_i or as
ε_i … x_i, in two different bilinear forms, which ``contract`` joins through S or E. The
expectation then splits into two exact stages (docs/math.md §3.1 generalised):

1. *Conditional on the context* X, E is centred Gaussian, E[E_ab E_cd] = σ² δ_ac S_bd, and
   independent of the task W, the query x_q and its noise ε_q: the Isserlis engine
   (``gaussian``) averages these with S a constant letter (``conditional_law``);
2. *over the context*, S is Wishart with N degrees of freedom and scale Λ. Stein's identity
   E[x φ(x)] = Λ E[∇φ(x)], applied to one x_i of one S and summed over i, lowers the degree
   in S by one:

       E[tr(S C) R] = N tr(Λ C) E[R]
                    + Σ_{C = C₁ S C₂} E[tr(Λ C₁) tr(S C₂) R + tr(S C₁ᵀ Λ C₂) R]
                    + Σ_{R = tr(S D) R'} E[tr(S Cᵀ Λ D) R' + tr(S Cᵀ Λ Dᵀ) R'],

   for C, D words and R, R' products of traces (``wishart_expect``). Every intermediate
   product of traces is canonical and memoised, so a term of degree k in S costs the number
   of distinct S-words it reaches, not the (2k − 1)!! pairings of its 2k context vectors.

Both stages are exact for every N; ``expect_products_by_context`` chains them.
"""

from __future__ import annotations

from array import array

from .data import LAMBDA
from .gaussian import EigenCov, GaussianLaw, KronCov, Monomial, Segment, expect_products
from .memory import MemoryGuard
from .tally import Tally
from .wordcodes import CODES
from .words import Mat, TracePoly, transpose_word

__all__ = ["S_CONTEXT", "E_CONTEXT", "contract", "context_degree", "conditional_law",
           "wishart_expect", "expect_products_by_context"]

S_CONTEXT = Mat("S_ctx", symmetric=True)          # Σ_i x_i x_iᵀ
E_CONTEXT = Mat("E_ctx", rows="y", cols="x")      # Σ_i ε_i x_iᵀ
_JOIN = {("x", "x"): S_CONTEXT, ("eps", "x"): E_CONTEXT, ("x", "eps"): E_CONTEXT.transpose()}


def contract(mono: Monomial) -> Monomial | None:
    """``mono`` with its context sums done: each label's two vectors, ends of two different
    segments aᵀ A v_i and w_iᵀ B b, joined into aᵀ A (Σ_i v_i w_iᵀ) B b with Σ_i v_i w_iᵀ = S
    (x x), E (ε x) or Eᵀ (x ε).

    Parameters
    ----------
    mono : Monomial
        A monomial of the expectation engine.

    Returns
    -------
    Monomial or None
        The monomial without context labels, or None when some label does not occur exactly
        twice, in two different segments, as x x or ε x (then the two stages do not apply).

    Examples
    --------
    >>> from icldyn.theory.data import x, eps
    >>> from icldyn.theory.gaussian import Monomial, Segment
    >>> from icldyn.theory.wishart import contract
    >>> from icldyn.theory.words import Mat
    >>> Q = Mat("Q")
    >>> m = Monomial(1, ("i",), (Segment(x("q"), (), eps("i")), Segment(x("i"), (Q,), x("q"))))
    >>> [letter.name for letter in contract(m).segments[0].letters]       # x_qᵀ E Q x_q
    ['E_ctx', 'Q']
    >>> contract(Monomial(1, ("i",), (Segment(x("i"), (Q,), x("i")),))) is None   # tr(Q S)
    True
    """
    segments = list(mono.segments)
    for label in mono.labels:
        ports = [(k, end) for k, seg in enumerate(segments)
                 for end, vec in (("start", seg.start), ("end", seg.end)) if vec.sample == label]
        if len(ports) != 2 or ports[0][0] == ports[1][0]:
            return None
        (k1, end1), (k2, end2) = ports
        first = segments[k1] if end1 == "end" else _reversed(segments[k1])
        second = segments[k2] if end2 == "start" else _reversed(segments[k2])
        middle = _JOIN.get((first.end.var, second.start.var))
        if middle is None:
            return None
        joined = Segment(first.start, first.letters + (middle,) + second.letters, second.end)
        segments = [joined if k == k1 else seg for k, seg in enumerate(segments) if k != k2]
    return Monomial(mono.coeff, (), tuple(segments))


def context_degree(monos, law: GaussianLaw) -> float | None:
    """The largest degree in S of the monomials once contracted, E counting ½ (a pair of E's
    averages to σ² S): the depth of the Stein recursion a product of two such sums needs is at
    most the sum of their degrees.

    Parameters
    ----------
    monos : iterable of Monomial
    law : GaussianLaw
        The data's law (an eigenbasis task law is not supported: its Dg letters would hold S).

    Returns
    -------
    float or None
        The degree (0 for no monomial), None when some monomial does not contract or the law
        has an eigenbasis task.

    Examples
    --------
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.theory.terms import inner_monomial, residual
    >>> from icldyn.theory.wishart import context_degree
    >>> r = residual(models.Stack([models.Merged(2)] * 2))
    >>> law = ICLData(d=2, N=4).law()
    >>> context_degree([inner_monomial(a, b, 1) for a in r for b in r], law)    # the loss: ≤ 4
    4.0
    """
    if _eigen_tasks(law):
        return None
    degree = 0.0
    for mono in monos:
        contracted = contract(mono)
        if contracted is None:
            return None
        letters = [m for seg in contracted.segments for m in seg.letters]
        degree = max(degree, sum(m == S_CONTEXT for m in letters)
                     + sum(m.name == E_CONTEXT.name for m in letters) / 2)
    return degree


def _eigen_tasks(law: GaussianLaw) -> bool:
    """Whether the law holds an eigenbasis task (whose Dg letters the recursion cannot
    reach)."""
    return any(isinstance(cov, EigenCov) for cov in law.matrices.values())


def _reversed(seg: Segment) -> Segment:
    """The same bilinear form read the other way: bᵀ Aᵀ a = aᵀ A b."""
    return Segment(seg.end, transpose_word(seg.letters), seg.start)


def conditional_law(law: GaussianLaw) -> GaussianLaw:
    """The law of stage 1: ``law`` (its vectors now only the query's) with E = Σ_i ε_i x_iᵀ,
    conditional on the context, E[E_ab E_cd] = σ² δ_ac S_bd.

    Parameters
    ----------
    law : GaussianLaw
        The law of the data (x ~ N(0, Λ), ε ~ N(0, σ² I), the task law).

    Returns
    -------
    GaussianLaw

    Examples
    --------
    >>> from icldyn.theory import ICLData
    >>> from icldyn.theory.wishart import conditional_law
    >>> sorted(conditional_law(ICLData(d=2, N=4).law()).matrices)
    ['E_ctx', 'W']
    """
    noise = law.vectors["eps"]
    matrices = dict(law.matrices)
    matrices[E_CONTEXT.name] = KronCov(row=noise.letter, col=S_CONTEXT, scale=noise.scale)
    return GaussianLaw(vectors=dict(law.vectors), matrices=matrices)


def wishart_expect(poly: TracePoly, N, guard: MemoryGuard | None = None) -> TracePoly:
    """E over S ~ Wishart(N, Λ) of a trace polynomial in the letter ``S_CONTEXT`` (stage 2),
    by the Stein recursion of the module docstring; traces without S are constant factors.

    Parameters
    ----------
    poly : TracePoly
        A polynomial in traces of words holding S and constant letters (no Dg letter holding
        S).
    N : int or sympy.Symbol
        The degrees of freedom (the context length).
    guard : MemoryGuard, optional
        Ticked once per term and per memoised product: the recursion stops with its error
        past the memory budget.

    Returns
    -------
    TracePoly
        The expectation, free of S.

    Raises
    ------
    ValueError
        When S occurs inside a Dg letter (the recursion does not reach it).
    InputError
        From ``guard``, past the memory budget.

    Examples
    --------
    E tr(S²) = N(N + 1) tr Λ² + N (tr Λ)², and E tr(S)² = N² (tr Λ)² + 2N tr Λ²:

    >>> import sympy as sp
    >>> from icldyn.theory.words import TracePoly
    >>> from icldyn.theory.wishart import S_CONTEXT as S, wishart_expect
    >>> N = sp.Symbol("N")
    >>> wishart_expect(TracePoly.trace(S, S), N).to_sympy()
    N*Trace(Lambda)**2 + (N**2 + N)*Trace(Lambda*Lambda)
    >>> wishart_expect(TracePoly.trace(S) * TracePoly.trace(S), N).to_sympy()
    N**2*Trace(Lambda)**2 + 2*N*Trace(Lambda*Lambda)
    """
    stein, tally = _Stein(guard), Tally(N)
    for traces, coeff in poly.terms.items():
        if guard is not None:
            guard.tick()
        if any(_inside_dg(letter) for word in traces for letter in word):
            raise ValueError("S occurs inside a Dg letter")
        random, fixed = stein.split([CODES.trace(CODES.chain(word)[0]) for word in traces])
        sink: dict = {}
        stein.push(random, fixed, 0, sink)
        tally.add(coeff, sink)
    del stein                       # the memo's memory goes back to the conversion below
    return tally.trace_poly()


def _inside_dg(letter) -> bool:
    return not isinstance(letter, Mat) and any(
        a == S_CONTEXT or _inside_dg(a) for a in letter.inner)


class _Stein:
    """The recursion on integer-coded traces (``wordcodes``): a product of traces is the
    sorted tuple of their ids. Products of degree ≤ ``MEMO_DEGREE`` in S are memoised
    (``moment``: their expectation as the (sorted ids of S-free traces, power of N) keys and
    their integer coefficients; such small products recur across terms and blocks); higher
    ones are expanded into the caller's sink without being stored (``push``). A memoised
    expectation is stored compactly, its keys interned (one object per distinct key, shared by
    every product that reaches it) and its coefficients a machine-integer array: about 16 bytes
    per entry instead of about 200 (the memo holds millions of entries for a 2-layer stack)."""

    MEMO_DEGREE = 8

    def __init__(self, guard: MemoryGuard | None = None):
        self.guard = guard
        self.s, self.lam = CODES.code(S_CONTEXT), CODES.code(LAMBDA)
        self.memo: dict = {(): ((((), 0),), array("q", [1]))}
        self._keys: dict = {}
        self._words: dict = {}
        self._degree: dict = {}

    def word(self, t: int) -> tuple:
        w = self._words.get(t)
        if w is None:
            w = self._words[t] = CODES.chain(CODES.traces[t])[0]
            self._degree[t] = w.count(self.s)
        return w

    def degree(self, t: int) -> int:
        """The number of S letters in trace ``t``."""
        self.word(t)
        return self._degree[t]

    def split(self, ids) -> tuple:
        """(sorted ids of the traces holding S, ids of the others)."""
        return (tuple(sorted(t for t in ids if self.degree(t))),
                tuple(t for t in ids if not self.degree(t)))

    def children(self, ids: tuple):
        """One Stein step on the first S of the first trace: (random ids, fixed ids, power of
        N) of each term of the module docstring's identity."""
        s, lam, transposed = self.s, self.lam, CODES.transposed
        first, rest = self.word(ids[0]), ids[1:]
        p = first.index(s)
        C = first[p + 1:] + first[:p]
        CT = tuple(transposed[c] for c in reversed(C))

        def child(words: tuple, others: tuple, shift: int):
            random, fixed = self.split([CODES.trace(w) for w in words])
            return tuple(sorted(others + random)), fixed, shift

        yield child(((lam,) + C,), rest, 1)
        for q, c in enumerate(C):
            if c == s:
                C1, C2 = C[:q], C[q + 1:]
                C1T = tuple(transposed[c] for c in reversed(C1))
                yield child(((lam,) + C1, (s,) + C2), rest, 0)
                yield child(((s,) + C1T + (lam,) + C2,), rest, 0)
        for k, t in enumerate(rest):
            others = rest[:k] + rest[k + 1:]
            word = self.word(t)
            for q, c in enumerate(word):
                if c == s:
                    D = word[q + 1:] + word[:q]
                    DT = tuple(transposed[c] for c in reversed(D))
                    yield child(((s,) + CT + (lam,) + D,), others, 0)
                    yield child(((s,) + CT + (lam,) + DT,), others, 0)

    def moment(self, ids: tuple) -> tuple:
        """E of the product of traces ``ids``: ((sorted ids of S-free traces, power of N) keys,
        their integer coefficients), memoised."""
        out = self.memo.get(ids)
        if out is None:
            acc: dict = {}
            for random, fixed, shift in self.children(ids):
                self.push(random, fixed, shift, acc)
            intern = self._keys.setdefault
            keys = tuple(intern(key, key) for key, count in acc.items() if count)
            counts = [count for count in acc.values() if count]
            try:
                counts = array("q", counts)
            except OverflowError:                # beyond 64 bits: Python integers
                counts = tuple(counts)
            self.memo[ids] = out = (keys, counts)
            if self.guard is not None:
                self.guard.tick()
        return out

    def push(self, ids: tuple, fixed: tuple, shift: int, sink: dict) -> None:
        """sink[(sorted ids of S-free traces, power of N)] += the expectation of the product
        ``ids`` times the traces ``fixed`` times N^shift."""
        if sum(self._degree[t] for t in ids) <= self.MEMO_DEGREE:
            get = sink.get
            keys, counts = self.moment(ids)
            if fixed:
                for (tail, power), count in zip(keys, counts):
                    key = (tuple(sorted(fixed + tail)), power + shift)
                    sink[key] = get(key, 0) + count
            else:
                for (tail, power), count in zip(keys, counts):
                    key = (tail, power + shift)
                    sink[key] = get(key, 0) + count
            return
        for random, more, step in self.children(ids):
            self.push(random, fixed + more, shift + step, sink)


def expect_products_by_context(left, right, law: GaussianLaw, N, exchange: tuple | None = None,
                               guard: MemoryGuard | None = None) -> TracePoly | None:
    """E[Σ_{a ∈ left} Σ_{b ∈ right} a · b] by the two stages (``contract``, the Isserlis
    engine conditional on the context, ``wishart_expect``), the same polynomial
    ``gaussian.expect_products`` gives.

    Parameters
    ----------
    left, right : iterable of Monomial
        The two sums (their labels summed apart).
    law : GaussianLaw
        The data's law; an eigenbasis task law is not supported (its Dg letters would hold S).
    N : int or sympy.Symbol
        The context length.
    exchange : tuple of two str, optional
        As for ``expect_products``.
    guard : MemoryGuard, optional
        As for ``wishart_expect``.

    Returns
    -------
    TracePoly or None
        The expectation, or None when some monomial does not contract (``contract``) or the
        law has an eigenbasis task: then use ``expect_products``.

    Examples
    --------
    The second moment of a one-layer Merged model's prediction, both ways:

    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.theory.data import N_SYM
    >>> from icldyn.theory.gaussian import expect_products
    >>> from icldyn.theory.terms import inner_monomial
    >>> from icldyn.theory.wishart import expect_products_by_context
    >>> yhat = models.Merged(2).prediction()
    >>> squares = [inner_monomial(a, b, 1) for a in yhat for b in yhat]
    >>> law = ICLData(d=2, N=4, noise=0.5).law()
    >>> two = expect_products_by_context(squares, squares, law, N_SYM)
    >>> two == expect_products(squares, squares, law, N_SYM)
    True
    """
    if _eigen_tasks(law):
        return None
    sides = []
    for monos in (left, right):
        contracted = [contract(m) for m in monos]
        if any(m is None for m in contracted):
            return None
        sides.append(contracted)
    conditional = expect_products(sides[0], sides[1], conditional_law(law), N, exchange)
    return wishart_expect(conditional, N, guard)

