"""Exact coefficients of the expectation engine, summed as counts and converted to SymPy once
per distinct term.

The engine finds, for every monomial, how many pairings give each (product of traces, power k
of N, dimension factor D). The coefficient of a product of traces is then

    Σ_{monomials} Σ_{(k, D)} count · const · N^k · D,

with ``const`` the monomial's coefficient times its covariance scales. Every factor is a sum
of monomials Π bᵉ in SymPy atoms (N, σ, d, …) with rational coefficients, so the sum is kept
as {frozenset of (base, exponent): rational} (Python integers and fractions, converted to SymPy
once per distinct term) and built into a SymPy expression at the end: the expanded polynomial
that ``sympy.expand`` of the sum gives.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import sympy as sp

from .wordcodes import CODES
from .words import TracePoly


def _monomials(expr) -> tuple:
    """The expanded ``expr`` as ((frozenset of (base, exponent)), coefficient) pairs, rational
    coefficients as Python ``int`` or ``Fraction``."""
    out = []
    for mono, coeff in sp.expand(expr).as_coefficients_dict().items():
        powers = frozenset((b, e) for b, e in mono.as_powers_dict().items() if b != 1)
        out.append((powers, _python(coeff)))
    return tuple(out)


def _python(coeff):
    """A SymPy rational as an ``int`` or ``Fraction`` (anything else unchanged)."""
    if coeff.is_Integer:
        return int(coeff)
    if coeff.is_Rational:
        return Fraction(int(coeff.p), int(coeff.q))
    return coeff


def _sympy(coeff) -> sp.Expr:
    """The inverse of ``_python``."""
    if isinstance(coeff, Fraction):
        return sp.Rational(coeff.numerator, coeff.denominator)
    return sp.sympify(coeff)


def _times(a: tuple, b: tuple) -> tuple:
    """The product of two sums of monomials (as ``_monomials`` gives them)."""
    out = {}
    for pa, ca in a:
        for pb, cb in b:
            powers = dict(pa)
            for base, e in pb:
                powers[base] = powers.get(base, 0) + e
            key = frozenset((base, e) for base, e in powers.items() if e != 0)
            out[key] = out.get(key, 0) + ca * cb
    return tuple(out.items())


class Tally:
    """Σ const · count · N^k · D · Π traces over the monomials of one expectation: counts keyed
    by (cycle codes, const id, k), the SymPy arithmetic deferred to ``trace_poly``.

    Parameters
    ----------
    N : int or sympy.Symbol
        The context length whose powers N^k the counts multiply.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.tally import Tally
    >>> from icldyn.theory.wordcodes import CODES, identity_loop
    >>> from icldyn.theory.words import Mat
    >>> L, B = Mat("L", symmetric=True), Mat("B")
    >>> trLB = CODES.trace(CODES.chain((L, B))[0])
    >>> t = Tally(sp.Symbol("N"))
    >>> t.add(1, {((trLB,), 2): 1, ((trLB,), 1): 2})            # (N² + 2N) tr(ΛB)
    >>> t.add(sp.Symbol("sigma")**2, {((identity_loop("y"),), 1): 1})   # σ² N d_y
    >>> t.trace_poly().to_sympy()
    N*d_y*sigma**2 + (N**2 + 2*N)*Trace(B*L)
    """

    def __init__(self, N):
        self.N = N
        self.consts: dict = {}     # const -> id
        self.counts: dict = {}     # (cycle codes, const id, k) -> count

    def add(self, const, counts: dict) -> None:
        """Add const · Σ count · N^k · term over ``counts`` {(cycle codes, k): count}.

        Parameters
        ----------
        const : sympy.Expr
            The monomial's coefficient times its covariance scales (interned: equal constants
            share an id).
        counts : dict
            {(sorted tuple of cycle codes, power k of N): number of pairings}; a cycle code is a
            trace id of ``wordcodes.CODES`` or an identity loop.
        """
        c = self.consts.setdefault(const, len(self.consts))
        total = self.counts
        for (cycles, k), n in counts.items():
            key = (cycles, c, k)
            total[key] = total.get(key, 0) + n

    def trace_poly(self) -> TracePoly:
        """The tally as a TracePoly (zero coefficients dropped): the coefficient of each product of
        traces is Σ count · const · N^k · D, built as a SymPy expression once from rational sums
        of monomials (the expansion ``sympy.expand`` would give).

        Returns
        -------
        TracePoly
        """
        consts = list(self.consts)
        factors, sums = {}, {}
        for (cycles, c, k), n in self.counts.items():
            traces, dims = CODES.term(cycles)
            key = (c, k, dims)
            factor = factors.get(key)
            if factor is None:
                factor = factors[key] = _times(_monomials(consts[c] * dims),
                                               _monomials(self.N**k))
            total = sums.get(traces)
            if total is None:
                total = sums[traces] = {}
            for powers, coeff in factor:
                total[powers] = total.get(powers, 0) + n * coeff
        terms = {}
        for traces, total in sums.items():
            coeff = sp.Add(*[_sympy(c) * _monomial(powers) for powers, c in total.items()
                             if c != 0])
            if coeff != 0:
                terms[CODES.words(traces)] = coeff
        return TracePoly._canonical(terms)


@lru_cache(maxsize=None)
def _monomial(powers: frozenset) -> sp.Expr:
    """Π bᵉ over the (base, exponent) pairs."""
    return sp.Mul(*[b**e for b, e in powers])
