"""Independent brute force: explicit scalar components and scalar Isserlis, exact rationals.

Nothing here uses the engine: polynomials are built from explicit component symbols, expanded,
and each monomial's Gaussian moment is summed over all pairings of its variables."""

from __future__ import annotations

from functools import lru_cache
from itertools import product

import sympy as sp


class Components:
    """Explicit random components: x (per sample), eps (per sample), W, with their covariances;
    ``W`` given: the task is that fixed matrix (the conditional expectation given the task)."""

    def __init__(self, d, d_y, N, Lambda, sigma=0, Sigma_w=None, eigen=None, W=None):
        self.d, self.d_y, self.N = d, d_y, N
        self.Lambda, self.sigma = sp.Matrix(Lambda), sp.sympify(sigma)
        self.Sigma_w = sp.eye(d) if Sigma_w is None else sp.Matrix(Sigma_w)
        self.eigen = eigen  # (U, c) for diagonal tasks
        self.samples = [str(s) for s in range(1, N + 1)] + ["q"]
        self.x = {s: sp.Matrix(sp.symbols(f"x{s}_0:{d}")) for s in self.samples}
        self.eps = {s: sp.Matrix(sp.symbols(f"e{s}_0:{d_y}")) for s in self.samples}
        self.W = sp.Matrix(d_y, d, lambda a, b: sp.Symbol(f"W_{a}_{b}"))
        if W is not None:
            self.W = sp.Matrix(W)
        self.cov = {}
        for s in self.samples:
            for a, b in product(range(d), repeat=2):
                self.cov[(self.x[s][a], self.x[s][b])] = self.Lambda[a, b]
            for a in range(d_y):
                self.cov[(self.eps[s][a], self.eps[s][a])] = self.sigma**2
        for a, b, c, e in product(range(d_y), range(d), range(d_y), range(d)):
            if W is not None:
                break
            if eigen is None:
                value = self.Sigma_w[b, e] if a == c else 0
            else:
                U, var = eigen
                value = sum(var[k] * U[a, k] * U[b, k] * U[c, k] * U[e, k] for k in range(d))
            self.cov[(self.W[a, b], self.W[c, e])] = value

    def y(self, s):
        return self.W * self.x[s] + self.eps[s]

    def expect(self, expr) -> sp.Expr:
        poly = sp.Poly(sp.expand(expr), *sorted(self._symbols(), key=str))
        total = sp.Integer(0)
        gens = poly.gens
        for monom, coeff in poly.terms():
            variables = tuple(v for v, k in zip(gens, monom) for _ in range(k))
            total += coeff * self._moment(variables)
        return sp.expand(total)

    def _symbols(self):
        out = {w for w in self.W if isinstance(w, sp.Symbol)}
        for s in self.samples:
            out |= set(self.x[s]) | set(self.eps[s])
        return out

    def _moment(self, variables: tuple):
        cov = self.cov

        @lru_cache(maxsize=None)
        def moment(vs: tuple):
            if not vs:
                return sp.Integer(1)
            if len(vs) % 2:
                return sp.Integer(0)
            first, rest = vs[0], vs[1:]
            total = sp.Integer(0)
            for j, v in enumerate(rest):
                c = cov.get((first, v), 0)
                if c != 0:
                    total += c * moment(rest[:j] + rest[j + 1:])
            return total

        return moment(tuple(sorted(variables, key=str)))


def layer_loss(comp: Components, heads: list) -> sp.Expr:
    """E ½‖ŷ − y_q‖² for the multi-head layer f(Z) = Z + Σ_h W_PV,h (Z Zᵀ/N) W_KQ,h Z, with
    ``heads`` a list of explicit (W_PV, W_KQ) pairs, by brute force."""
    d, n = comp.d, comp.N
    cols = [comp.x[str(i)].col_join(comp.y(str(i))) for i in range(1, n + 1)]
    zq = comp.x["q"].col_join(sp.zeros(comp.d_y, 1))
    Z = sp.Matrix.hstack(*cols, zq)
    f = Z + sum((W_PV * (Z * Z.T / n) * W_KQ * Z for W_PV, W_KQ in heads), sp.zeros(*Z.shape))
    r = f[d:, n] - comp.y("q")
    return comp.expect((r.T * r)[0, 0] / 2)
