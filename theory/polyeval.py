"""A polynomial's value, gradient and Hessian at a point, evaluated from its terms.

Critical-set searches need the loss, ∇L and ∇²L of an explicit polynomial in many variables
(every parameter entry) at many points. Differentiating the expression symbolically costs
O(n²) SymPy derivatives; here the polynomial is kept as its terms c ∏_k x_k^{e_k} and every
derivative is a sum over them:

    ∂_i L = Σ c e_i x_i^{e_i−1} ∏_{k≠i} x_k^{e_k},
    ∂_i ∂_j L = Σ c e_i e_j x_i^{e_i−1} x_j^{e_j−1} ∏_{k≠i,j} x_k^{e_k}   (i ≠ j),
    ∂_i² L = Σ c e_i (e_i − 1) x_i^{e_i−2} ∏_{k≠i} x_k^{e_k}.

Arithmetic is mpmath's (call under ``mpmath.workdps``); ``compiled`` gives lambdified float
functions for long loops (descents)."""

from __future__ import annotations

import mpmath
import sympy as sp


class PolyFunction:
    """L(x) for a SymPy polynomial ``expr`` in the variables ``xs`` (a list of symbols)."""

    def __init__(self, expr: sp.Expr, xs: list, digits: int = 40):
        self.poly, self.xs, self.size = sp.Poly(expr, *xs), list(xs), len(xs)
        with mpmath.workdps(digits):
            self.terms = [(mpmath.mpf(str(sp.N(c, digits))),
                           tuple((k, e) for k, e in enumerate(monom) if e))
                          for monom, c in self.poly.terms()]

    def compiled(self) -> tuple:
        """(value, gradient) as float functions of the variables (lambdified)."""
        gradient = [self.poly.diff(x).as_expr() for x in self.xs]
        return (sp.lambdify(self.xs, self.poly.as_expr(), modules="math"),
                sp.lambdify(self.xs, gradient, modules="math"))

    def value(self, x: list):
        total = 0 * x[0]
        for c, monom in self.terms:
            total += c * _product(x, monom)
        return total

    def gradient(self, x: list) -> list:
        out = [0 * x[0]] * self.size
        for c, monom in self.terms:
            for n, (i, e) in enumerate(monom):
                out[i] += c * e * x[i] ** (e - 1) * _product(x, monom[:n] + monom[n + 1:])
        return out

    def hessian(self, x: list) -> list:
        """The Hessian as a list of rows."""
        out = [[0 * x[0]] * self.size for _ in range(self.size)]
        for c, monom in self.terms:
            for n, (i, e) in enumerate(monom):
                if e > 1:
                    out[i][i] += (c * e * (e - 1) * x[i] ** (e - 2)
                                  * _product(x, monom[:n] + monom[n + 1:]))
                for m in range(n + 1, len(monom)):
                    j, f = monom[m]
                    entry = (c * e * f * x[i] ** (e - 1) * x[j] ** (f - 1)
                             * _product(x, monom[:n] + monom[n + 1:m] + monom[m + 1:]))
                    out[i][j] += entry
                    out[j][i] += entry
        return out


def _product(x: list, monom: tuple):
    out = 1
    for k, e in monom:
        out *= x[k] ** e
    return out
