"""PolyFunction (value, gradient, Hessian from a polynomial's terms) against SymPy's own
derivatives of the same polynomial, exact at a random rational point."""

import random

import mpmath
import numpy as np
import pytest
import sympy as sp

from icldyn.theory.polyeval import PolyFunction

DIGITS = 40     # the evaluation's precision: agreement to ~1e-38 relative (terms of size ~1e3)


def _close(value, exact) -> bool:
    return abs(value - mpmath.mpf(exact.p) / exact.q) < mpmath.mpf(10) ** -33 * (1 + abs(value))


def test_value_gradient_and_hessian_equal_sympys_derivatives():
    x = sp.symbols("x0:4", real=True)
    rng = random.Random(0)
    expr = sum(sp.Rational(rng.randint(-9, 9), rng.randint(1, 5))
               * sp.Mul(*[v ** rng.randint(0, 3) for v in x]) for _ in range(30))
    point = [sp.Rational(rng.randint(-7, 7), 3) for _ in x]
    at = dict(zip(x, point))
    f = PolyFunction(expr, list(x), DIGITS)
    with mpmath.workdps(DIGITS):
        args = [mpmath.mpf(p.p) / p.q for p in point]
        value, grad, hess = f.value(args), f.gradient(args), f.hessian(args)
        assert _close(value, expr.subs(at))
        for i, a in enumerate(x):
            assert _close(grad[i], sp.diff(expr, a).subs(at))
            for j, b in enumerate(x):
                assert _close(hess[i][j], sp.diff(expr, a, b).subs(at))
    value_f, grad_f = f.compiled()
    floats = [float(p) for p in point]
    assert value_f(*floats) == pytest.approx(float(value), rel=1e-12)
    assert grad_f(*floats) == pytest.approx([float(g) for g in grad], rel=1e-12, abs=1e-12)


def test_float_evaluation_equals_the_exact_one():
    """``PolyFunction.floats()`` (vectorised float64) agrees with the exact sums to rounding,
    at a point with zero coordinates (0⁰ = 1, no 0·∞ from the exponents' derivatives)."""
    x = sp.symbols("x0:5", real=True)
    rng = random.Random(1)
    expr = sum(sp.Rational(rng.randint(-9, 9), rng.randint(1, 5))
               * sp.Mul(*[v ** rng.randint(0, 3) for v in x]) for _ in range(40))
    f = PolyFunction(expr, list(x), DIGITS)
    g = f.floats()
    for point in ([0.5, -1.25, 0.0, 2.0, 0.75], [0.0, 0.0, 1.5, 0.0, -0.5]):
        with mpmath.workdps(DIGITS):
            args = [mpmath.mpf(p) for p in point]
            value, grad, hess = f.value(args), f.gradient(args), f.hessian(args)
        scale = 1 + max(abs(float(v)) for row in hess for v in row)
        assert g.value(point) == pytest.approx(float(value), rel=1e-13, abs=1e-13 * scale)
        assert np.allclose(g.gradient(point), [float(v) for v in grad], rtol=1e-13,
                           atol=1e-13 * scale)
        assert np.allclose(g.hessian(point), [[float(v) for v in row] for row in hess],
                           rtol=1e-13, atol=1e-13 * scale)
