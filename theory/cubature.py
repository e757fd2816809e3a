"""Exact cubature rules for standard Gaussian vectors z ~ N(0, I_d): finitely many nodes z_j
with weights w_j such that Σ_j w_j p(z_j) = E[p(z)] for every polynomial p of total degree
≤ ``degree`` (the task amplitudes δ_k = √c_k z_k of eigenbasis tasks; ``ICLData.task_cubature``).

* degree ≤ 5: Stroud's symmetric rule (A. H. Stroud, *Approximate Calculation of Multiple
  Integrals*, 1971, rule E_n^{r²} 5-2, here for the weight of N(0, I)): the origin, the 2d points
  ±r e_k and the 2d(d − 1) points ±s e_k ± s e_l (k < l), r² = d + 2, s² = (d + 2)/2, weights
  2/(d + 2), (4 − d)/(2(d + 2)²) and 1/(d + 2)²: 2d² + 1 nodes. Every coordinate sign flip maps
  the node set to itself with equal weights, so every monomial with an odd exponent averages to
  0, as under N(0, I); the remaining moments of degree ≤ 4 are 1, E z_k² = 2B r² + 4(d − 1)C s²
  = 1, E z_k⁴ = 2B r⁴ + 4(d − 1)C s⁴ = 3 and E z_k² z_l² = 4C s⁴ = 1 (B, C the weights of the
  axis and pair points). For d = 1 it is the 3-point Gauss–Hermite rule.
* higher degrees, or where it has no more nodes (d ≤ 2): the product of n-point Gauss–Hermite
  rules, n = ⌈(degree + 1)/2⌉ (exact to degree 2n − 1 in each coordinate): nᵈ nodes.
"""

from __future__ import annotations

import itertools
import math

import sympy as sp

from .errors import InputError, check_int


def gaussian_rule(d: int, degree: int) -> list[tuple]:
    """[(node, weight)]: nodes as {coordinate: value} (coordinates left out are 0), exact
    weights, exact for E[p(z)], z ~ N(0, I_d), deg p ≤ ``degree``.

    Parameters
    ----------
    d : int
        Dimension.
    degree : int
        Total degree the rule must integrate exactly (≥ 0).

    Returns
    -------
    list of (dict, sympy.Expr)
        The nodes (sparse) and their weights (summing to 1).

    Raises
    ------
    InputError
        For a ``d`` that is not a positive integer or a ``degree`` that is not an integer ≥ 0.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.cubature import gaussian_rule
    >>> rule = gaussian_rule(2, 4)
    >>> sum(w for _, w in rule)                                                # E[1]
    1
    >>> sum(w * node.get(0, 0)**2 * node.get(1, 0)**2 for node, w in rule)     # E[z₀² z₁²] = 1
    1
    >>> sum(w * node.get(0, 0)**4 for node, w in rule)                         # E[z₀⁴] = 3
    3
    >>> gaussian_rule(2, -1)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: degree: must be an integer ≥ 0, got -1
    """
    d = check_int("d", d)
    if not isinstance(degree, int) or degree < 0:
        raise InputError("degree", f"must be an integer ≥ 0, got {degree!r}")
    n = (degree + 2) // 2                          # Gauss–Hermite points per coordinate
    if degree > 5 or n ** d <= 2 * d * d + 1:      # the product rule when not larger (d ≤ 2)
        return _product(d, n)
    return _stroud(d)


def _stroud(d: int) -> list[tuple]:
    r, s = sp.sqrt(d + 2), sp.sqrt(sp.Rational(d + 2, 2))
    A = sp.Rational(2, d + 2)
    B = sp.Rational(4 - d, 2 * (d + 2) ** 2)
    C = sp.Rational(1, (d + 2) ** 2)
    out = [({}, A)]
    if B != 0:
        out += [({k: sign * r}, B) for k in range(d) for sign in (1, -1)]
    out += [({k: a * s, l: b * s}, C) for k, l in itertools.combinations(range(d), 2)
            for a in (1, -1) for b in (1, -1)]
    return out


def _product(d: int, n: int) -> list[tuple]:
    z = sp.Symbol("z")
    roots = sorted(sp.roots(sp.hermite_prob_poly(n, z), z), key=float)     # simple roots
    below = sp.hermite_prob_poly(n - 1, z)
    # Gauss–Hermite weights for N(0, 1): n! / (n² He_{n−1}(x)²)
    one = [(x, sp.radsimp(math.factorial(n) / (n ** 2 * sp.expand(below.subs(z, x) ** 2))))
           for x in roots]
    out = []
    for choice in itertools.product(one, repeat=d):
        node = {k: x for k, (x, _) in enumerate(choice) if x != 0}
        out.append((node, sp.Mul(*[w for _, w in choice])))
    return out
