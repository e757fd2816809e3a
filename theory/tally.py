"""Exact coefficients of the expectation engine, summed as counts and converted to SymPy once
per distinct term.

The engine finds, for every monomial, how many pairings give each (product of traces, power k
of N, dimension factor D). The coefficient of a product of traces is then

    Σ_{monomials} Σ_{(k, D)} count · const · N^k · D,

with ``const`` the monomial's coefficient times its covariance scales. Every factor is a sum
of monomials Π bᵉ in SymPy atoms (N, σ, d, …) with rational coefficients, so the sum is kept
as {frozenset of (base, exponent): rational} and built into a SymPy expression at the end: the
expanded polynomial that ``sympy.expand`` of the sum gives.
"""

from __future__ import annotations

import sympy as sp

from .wordcodes import CODES
from .words import TracePoly


def _monomials(expr) -> tuple:
    """The expanded ``expr`` as ((frozenset of (base, exponent)), rational coefficient) pairs."""
    out = []
    for mono, coeff in sp.expand(expr).as_coefficients_dict().items():
        powers = frozenset((b, e) for b, e in mono.as_powers_dict().items() if b != 1)
        out.append((powers, coeff))
    return tuple(out)


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
    """Σ const · count · N^k · D · Π traces over the monomials of one expectation."""

    def __init__(self, N):
        self.N = N
        self.terms: dict = {}      # canonical traces -> {(const, k, D): count}
        self._factors: dict = {}

    def add(self, const, counts: dict) -> None:
        """Add const · Σ count · N^k · term over ``counts`` {(cycle codes, k): count}."""
        for (cycles, k), n in counts.items():
            traces, dims = CODES.term(cycles)
            bucket = self.terms.setdefault(traces, {})
            key = (const, k, dims)
            bucket[key] = bucket.get(key, 0) + n

    def _factor(self, key: tuple) -> tuple:
        """const · N^k · D as a sum of monomials (memoised)."""
        out = self._factors.get(key)
        if out is None:
            const, k, dims = key
            out = self._factors[key] = _times(_monomials(const * dims), _monomials(self.N**k))
        return out

    def trace_poly(self) -> TracePoly:
        """The tally as a TracePoly (zero coefficients dropped)."""
        terms = {}
        for traces, bucket in self.terms.items():
            total = {}
            for key, n in bucket.items():
                for powers, c in self._factor(key):
                    total[powers] = total.get(powers, 0) + n * c
            coeff = sp.Add(*[c * sp.Mul(*[b**e for b, e in powers])
                             for powers, c in total.items() if c != 0])
            if coeff != 0:
                terms[traces] = coeff
        return TracePoly._canonical(terms)
