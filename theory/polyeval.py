"""A polynomial's value, gradient and Hessian at a point, evaluated from its terms.

Critical-set searches need the loss, ∇L and ∇²L of an explicit polynomial in many variables
(every parameter entry) at many points. Differentiating the expression symbolically costs
O(n²) SymPy derivatives; here the polynomial is kept as its terms c ∏_k x_k^{e_k} and every
derivative is a sum over them:

    ∂_i L = Σ c e_i x_i^{e_i−1} ∏_{k≠i} x_k^{e_k},
    ∂_i ∂_j L = Σ c e_i e_j x_i^{e_i−1} x_j^{e_j−1} ∏_{k≠i,j} x_k^{e_k}   (i ≠ j),
    ∂_i² L = Σ c e_i (e_i − 1) x_i^{e_i−2} ∏_{k≠i} x_k^{e_k}.

Arithmetic is mpmath's (call under ``mpmath.workdps``); ``compiled`` gives lambdified float
functions for long loops (descents), ``floats`` the same three sums vectorised over the terms in
float64 (``FloatPolyFunction``) for searches whose result is certified at full precision."""

from __future__ import annotations

import mpmath
import numpy as np
import sympy as sp

__all__ = ["PolyFunction", "FloatPolyFunction"]


class PolyFunction:
    """L(x) for a SymPy polynomial ``expr`` in the variables ``xs`` (a list of symbols).

    Parameters
    ----------
    expr : sympy.Expr
        A polynomial in ``xs`` with numeric coefficients.
    xs : list of sympy.Symbol
        The variables, in the order points are given.
    digits : int
        Precision of the stored coefficients (decimal digits).

    Examples
    --------
    >>> import mpmath
    >>> import sympy as sp
    >>> from icldyn.theory.polyeval import PolyFunction
    >>> u, q = sp.symbols("u q")
    >>> f = PolyFunction(6 * u**2 * q**2 - 4 * u * q + 1, [u, q])     # Merged, λ = 2, N = 4
    >>> with mpmath.workdps(30):
    ...     print(f.value([1, sp.Rational(1, 3)]), f.gradient([1, sp.Rational(1, 3)]))
    0.333333333333333333333333333333 [mpf('0.0'), mpf('0.0')]
    """

    def __init__(self, expr: sp.Expr, xs: list, digits: int = 40):
        self.poly, self.xs, self.size = sp.Poly(expr, *xs), list(xs), len(xs)
        with mpmath.workdps(digits):
            self.terms = [(mpmath.mpf(str(sp.N(c, digits))),
                           tuple((k, e) for k, e in enumerate(monom) if e))
                          for monom, c in self.poly.terms()]

    def compiled(self) -> tuple:
        """(value, gradient) as float functions of the variables (lambdified).

        Returns
        -------
        tuple
            (f(*x) → float, g(*x) → list of float).
        """
        gradient = [self.poly.diff(x).as_expr() for x in self.xs]
        return (sp.lambdify(self.xs, self.poly.as_expr(), modules="math"),
                sp.lambdify(self.xs, gradient, modules="math"))

    def floats(self) -> "FloatPolyFunction":
        """The same polynomial evaluated in float64, vectorised over its terms (built once).

        Returns
        -------
        FloatPolyFunction
        """
        if not hasattr(self, "_floats"):
            self._floats = FloatPolyFunction(self)
        return self._floats

    def value(self, x: list):
        """L(x).

        Parameters
        ----------
        x : list
            A value for each variable, in the order of ``xs`` (mpmath numbers: call under
            ``mpmath.workdps``).

        Returns
        -------
        mpmath.mpf
        """
        total = 0 * x[0]
        for c, monom in self.terms:
            total += c * _product(x, monom)
        return total

    def gradient(self, x: list) -> list:
        """∇L(x), term by term (module docstring).

        Parameters
        ----------
        x : list
            A value for each variable, in the order of ``xs`` (mpmath numbers: call under
            ``mpmath.workdps``).

        Returns
        -------
        list
            ∂_i L for each variable.
        """
        out = [0 * x[0]] * self.size
        for c, monom in self.terms:
            for n, (i, e) in enumerate(monom):
                out[i] += c * e * x[i] ** (e - 1) * _product(x, monom[:n] + monom[n + 1:])
        return out

    def hessian(self, x: list) -> list:
        """The Hessian ∇²L(x), term by term (module docstring).

        Parameters
        ----------
        x : list
            A value for each variable, in the order of ``xs`` (mpmath numbers: call under
            ``mpmath.workdps``).

        Returns
        -------
        list of list
            Its rows.
        """
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


class FloatPolyFunction:
    """A ``PolyFunction`` in float64: each term c ∏ x_k^{e_k} stored as up to S (variable,
    exponent) slots, padded with exponent 0, so the sums of the module docstring are NumPy
    products over the slots and scatter-adds over the variables.

    Parameters
    ----------
    f : PolyFunction
        The polynomial (its terms, rounded to float64).

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from icldyn.theory.polyeval import PolyFunction
    >>> u, q = sp.symbols("u q")
    >>> f = PolyFunction(6 * u**2 * q**2 - 4 * u * q + 1, [u, q]).floats()
    >>> round(f.value([1.0, 1 / 3]), 12), np.allclose(f.gradient([1.0, 1 / 3]), 0)
    (0.333333333333, True)
    >>> f.hessian([0.0, 0.0])                   # the saddle at the origin: eigenvalues ±4
    array([[ 0., -4.],
           [-4.,  0.]])
    """

    def __init__(self, f: PolyFunction):
        slots = max([len(m) for _, m in f.terms] + [1])
        self.size = f.size
        self.coef = np.array([float(c) for c, _ in f.terms])
        self.var = np.zeros((len(f.terms), slots), dtype=np.int64)
        self.exp = np.zeros((len(f.terms), slots), dtype=np.int64)
        for t, (_, monom) in enumerate(f.terms):
            for s, (k, e) in enumerate(monom):
                self.var[t, s], self.exp[t, s] = k, e

    def _factors(self, x):
        X = np.asarray(x, dtype=float)[self.var]
        return X, X ** self.exp

    def _without(self, P, drop: tuple):
        keep = [s for s in range(P.shape[1]) if s not in drop]
        return self.coef * np.prod(P[:, keep], axis=1)

    def _first(self, X, s: int):
        """∂(x^e)/∂x of slot s (zero where e = 0)."""
        e = self.exp[:, s]
        return e * X[:, s] ** np.maximum(e - 1, 0)

    def value(self, x) -> float:
        """L(x) in float64.

        Parameters
        ----------
        x : array_like (n,)
            A value for each variable, in the order of ``xs``.

        Returns
        -------
        float
        """
        return float(self.coef @ np.prod(self._factors(x)[1], axis=1))

    def gradient(self, x) -> np.ndarray:
        """∇L(x) in float64.

        Parameters
        ----------
        x : array_like (n,)
            A value for each variable, in the order of ``xs``.

        Returns
        -------
        numpy.ndarray (n,)
        """
        X, P = self._factors(x)
        out = np.zeros(self.size)
        for s in range(P.shape[1]):
            out += np.bincount(self.var[:, s], self._first(X, s) * self._without(P, (s,)),
                               minlength=self.size)
        return out

    def hessian(self, x) -> np.ndarray:
        """∇²L(x) in float64.

        Parameters
        ----------
        x : array_like (n,)
            A value for each variable, in the order of ``xs``.

        Returns
        -------
        numpy.ndarray (n, n)
        """
        X, P = self._factors(x)
        n, slots = self.size, P.shape[1]
        out = np.zeros(n * n)
        for s in range(slots):
            e = self.exp[:, s]
            second = e * (e - 1) * X[:, s] ** np.maximum(e - 2, 0)
            out += np.bincount(self.var[:, s] * (n + 1), second * self._without(P, (s,)),
                               minlength=n * n)
            for r in range(s + 1, slots):
                both = self._first(X, s) * self._first(X, r) * self._without(P, (s, r))
                out += np.bincount(self.var[:, s] * n + self.var[:, r], both, minlength=n * n)
                out += np.bincount(self.var[:, r] * n + self.var[:, s], both, minlength=n * n)
        return out.reshape(n, n)
