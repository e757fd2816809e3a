"""The expectation engine against brute-force scalar Isserlis (exact) and the Wishart oracle."""

from itertools import product

import pytest
import sympy as sp

from brute import Components
from icldyn.theory import gaussian
from icldyn.theory.errors import InputError
from icldyn.theory.gaussian import (EigenCov, GaussianLaw, KronCov, Monomial, RandVec, Segment,
                                    VectorCov, expect, expect_products, group_sizes,
                                    pairing_count)
from icldyn.theory.words import DIMS, Mat, TracePoly

N = sp.Symbol("N", positive=True, integer=True)
SIG = sp.Symbol("sigma", nonnegative=True)
LAM, SW = Mat("Lambda", symmetric=True), Mat("Sigma_w", symmetric=True)
A, B, C, D = (Mat(n) for n in "ABCD")
By = Mat("By", rows="y", cols="y")
W = Mat("W", rows="y", cols="x")
xq, x1, x2 = RandVec("x", "q"), RandVec("x", "i"), RandVec("x", "j")
e1 = RandVec("eps", "i")

VALUES = {
    "Lambda": sp.Matrix([[2, sp.Rational(1, 2)], [sp.Rational(1, 2), 1]]),
    "Sigma_w": sp.Matrix([[1, sp.Rational(-1, 3)], [sp.Rational(-1, 3), 2]]),
    "A": sp.Matrix([[1, 2], [-1, 3]]), "B": sp.Matrix([[0, 1], [2, -1]]),
    "C": sp.Matrix([[2, -1], [1, 1]]), "D": sp.Matrix([[1, 0], [3, -2]]),
    "By": sp.Matrix([[1, -2], [1, 3]]),
    "U": sp.Matrix([[sp.Rational(3, 5), sp.Rational(-4, 5)], [sp.Rational(4, 5), sp.Rational(3, 5)]]),
    "c": sp.Matrix([2, sp.Rational(1, 3)]),
}
SIGMA_VALUE = sp.Rational(1, 2)


def law(task):
    task_cov = KronCov(col=SW) if task == "gaussian" else EigenCov()
    return GaussianLaw(vectors={"x": VectorCov("x", LAM), "eps": VectorCov("y", None, SIG**2)},
                       matrices={"W": task_cov})


def seg(a, letters, b):
    return Segment(a, tuple(letters), b)


CASES = {
    "xq degree 6": ((), [seg(xq, [A], xq), seg(xq, [B], xq), seg(xq, [C], xq)]),
    "two sums": (("i", "j"), [seg(x1, [A], xq), seg(xq, [B], x2), seg(x2, [C], x1)]),
    "sum and xq degree 6": (("i",), [seg(x1, [A], xq), seg(xq, [B], xq), seg(xq, [C], xq),
                                     seg(xq, [D], x1)]),
    "task and noise": (("i",), [seg(xq, [A], x1), seg(x1, [W.transpose(), By, W], xq),
                                seg(e1, [By], e1)]),
    "two tasks in a chain": (("i", "j"), [seg(xq, [A, W.transpose(), By], e1), seg(e1, [W], x2),
                                          seg(x2, [B], x1), seg(x1, [C], xq)]),
    "fourth task moment": (("i", "j"), [seg(xq, [A, W.transpose(), By, W], x1), seg(x1, [B], x2),
                              seg(x2, [W.transpose()], e1), seg(e1, [], RandVec("eps", "q")),
                              seg(RandVec("eps", "q"), [W, C], xq)]),
}


def brute_value(labels, segments, n, task):
    comp = Components(2, 2, n, VALUES["Lambda"], SIGMA_VALUE, VALUES["Sigma_w"],
                      eigen=(VALUES["U"], VALUES["c"]) if task == "eigen" else None)
    total = 0
    for values in product(map(str, range(1, n + 1)), repeat=len(labels)):
        assignment = dict(zip(labels, values))
        term = 1
        for s in segments:
            def vec(v):
                return (comp.x if v.var == "x" else comp.eps)[assignment.get(v.sample, v.sample)]
            m = vec(s.start).T
            for letter in s.letters:
                value = comp.W if letter.name == "W" else VALUES[letter.name]
                m = m * (value.T if letter.T else value)
            term *= (m * vec(s.end))[0, 0]
        total += term
    return comp.expect(total)


def engine_value(labels, segments, n, task):
    return value_at(expect([Monomial(sp.Integer(1), labels, tuple(segments))], law(task), N), n)


def value_at(poly, n):
    scalars = {N: n, SIG: SIGMA_VALUE, DIMS["x"]: 2, DIMS["y"]: 2}
    return sp.expand(poly.evaluate({**VALUES, "_scalars": scalars}))


def _task_count(case):
    return sum(letter.name == "W" for s in CASES[case][1] for letter in s.letters)


CASE_TASKS = [(case, task) for case in CASES
              for task in (["gaussian", "eigen"] if _task_count(case) else ["gaussian"])]


# Brute force of the fourth task moment at n ≥ 2 takes a minute or more: slow.
@pytest.mark.parametrize("n,case,task", [
    pytest.param(n, case, task, marks=[pytest.mark.slow] * (case == "fourth task moment" and n > 1))
    for n in (1, 2, 3) for case, task in CASE_TASKS])
def test_engine_equals_brute_force_isserlis(case, n, task):
    labels, segments = CASES[case]
    if task == "eigen" and _task_count(case) > 2:
        with pytest.raises(NotImplementedError, match="fourth moments"):
            engine_value(labels, segments, n, task)
        return
    assert engine_value(labels, segments, n, task) == brute_value(labels, segments, n, task)


def _primed(mono):
    """The monomial with its labels renamed i → i' (apart from another's)."""
    def vec(v):
        return RandVec(v.var, v.sample + "'" if v.sample in mono.labels else v.sample)
    return Monomial(mono.coeff, tuple(f"{l}'" for l in mono.labels),
                    tuple(Segment(vec(s.start), s.letters, vec(s.end)) for s in mono.segments))


@pytest.mark.parametrize("n", [1, 2])
def test_expectation_of_a_product_of_two_sums(n):
    """E[(Σ a)(Σ b)] by ``expect_products`` (factors cut once, odd products skipped) equals
    brute-force Isserlis of the products formed one by one, the labels of b summed apart from
    a's: two of the four products are odd (they vanish), one joins the context sums of the two
    factors and one the task occurrences."""
    left = [Monomial(sp.Integer(2), ("i",), (seg(x1, [A], xq),)),
            Monomial(sp.Integer(1), ("i", "j"), (seg(x1, [B], x2), seg(x2, [C], x1)))]
    right = [Monomial(sp.Integer(1), ("i",), (seg(xq, [D], x1),)),
             Monomial(sp.Integer(-3), (), (seg(xq, [A], xq),)),
             Monomial(sp.Integer(1), ("i",), (seg(xq, [W.transpose(), By], e1),
                                              seg(e1, [W], x1)))]
    brute = sum(a.coeff * b.coeff * brute_value(a.labels + _primed(b).labels,
                                                a.segments + _primed(b).segments, n, "gaussian")
                for a in left for b in right)
    got = expect_products(left, right, law("gaussian"), N)
    assert value_at(got, n) == sp.expand(brute) != 0


def test_exchanged_factors_enumerate_the_products_once():
    """When the second sum is the first with the letters A and B exchanged, ``expect_products``
    enumerates only the products a_i·b_j with i ≤ j and gets a_j·b_i by exchanging A and B in
    E[a_i·b_j]: the same polynomial as enumerating them all, from fewer pairings."""
    left = [Monomial(sp.Integer(1), ("i",), (seg(x1, [A], xq), seg(xq, [B, C], x1))),
            Monomial(sp.Integer(2), (), (seg(xq, [A, LAM], xq), seg(xq, [D], xq))),
            Monomial(N, ("i",), (seg(x1, [B], x1),))]
    right = [gaussian._exchanged(a, ("A", "B")) for a in left]
    assert right[0].segments[0].letters == (B,) and right[2].segments[0].letters == (A,)
    counts = []
    for exchange in (None, ("A", "B")):
        before = gaussian.STATS["pairings"]
        counts.append((expect_products(left, right, law("gaussian"), N, exchange),
                       gaussian.STATS["pairings"] - before))
    (full, n_full), (half, n_half) = counts
    assert half == full and not full.is_zero() and n_half < n_full
    with pytest.raises(InputError, match="^exchange: .* exchanged"):
        expect_products(left, left, law("gaussian"), N, ("A", "B"))


def test_wishart_oracle_symbolic():
    """E tr(C S B S) = tr(C [N(N−1)ΛBΛ + N(ΛBΛ + ΛBᵀΛ + tr(BΛ)Λ)]) with S = Σ_i x_i x_iᵀ."""
    got = expect([Monomial(sp.Integer(1), ("i", "j"), (seg(x1, [B], x2), seg(x2, [C], x1)))],
                 law("gaussian"), N)
    oracle = (TracePoly.trace(C, LAM, B, LAM, coeff=N * (N - 1) + N)
              + TracePoly.trace(C, LAM, B.transpose(), LAM, coeff=N)
              + TracePoly.trace(B, LAM) * TracePoly.trace(C, LAM, coeff=N))
    assert got == oracle
    assert not (got - TracePoly.trace(C, LAM, B, LAM, coeff=N**2)).is_zero()


def test_odd_moments_vanish():
    poly = expect([Monomial(sp.Integer(1), ("i",), (seg(x1, [A], xq), seg(xq, [B], xq)))],
                  law("gaussian"), N)
    assert poly.is_zero()


# Π_g (n_g − 1)!! by hand: the groups are the query x's, the context x's, the context and query
# ε's and the occurrences of W
PAIRINGS = {"xq degree 6": 15, "two sums": 3 * 1, "sum and xq degree 6": 1 * 15,
            "task and noise": 1, "two tasks in a chain": 1 * 3 * 1 * 1,
            "fourth task moment": 1 * 3 * 1 * 1 * 3}


@pytest.mark.parametrize("case", list(CASES))
def test_pairing_count_is_what_the_engine_enumerates(case):
    """``pairing_count`` of the ``group_sizes`` (the covariance's cost guard, counted without
    enumerating) is the hand count and the number of pairings the engine enumerates."""
    labels, segments = CASES[case]
    mono = Monomial(sp.Integer(1), labels, tuple(segments))
    before = gaussian.STATS["pairings"]
    expect([mono], law("gaussian"), N)
    counted = pairing_count(group_sizes(mono, law("gaussian")).values())
    assert counted == PAIRINGS[case] == gaussian.STATS["pairings"] - before
