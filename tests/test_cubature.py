"""The exact task cubature: every moment of z ~ N(0, I) the rules claim, against the Gaussian
moments E[z^k] = (k − 1)!! written out; and FullLSA with eigenbasis tasks evaluated with the
2d² + 1-node rule equals the 3^d-node product rule it replaced, exactly."""

import itertools

import numpy as np
import pytest
import sympy as sp

from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.cubature import gaussian_rule
from icldyn.theory.words import TaskSet

R = sp.Rational


def gaussian_moment(exponents) -> sp.Expr:
    return sp.Mul(*[0 if k % 2 else sp.factorial2(k - 1) if k else 1 for k in exponents])


def rule_moment(rule, exponents) -> sp.Expr:
    return sp.simplify(sum(w * sp.Mul(*[node.get(k, 0) ** e for k, e in enumerate(exponents)])
                           for node, w in rule))


@pytest.mark.parametrize("d,degree", [(1, 5), (2, 5), (3, 5), (4, 5), (5, 4), (2, 8)])
def test_rule_reproduces_every_gaussian_moment_up_to_its_degree(d, degree):
    rule = gaussian_rule(d, degree)
    assert len(rule) <= (2 * d * d + 1 if degree <= 5 else 5 ** d)
    for exponents in itertools.product(range(degree + 1), repeat=d):
        if sum(exponents) <= degree:
            assert rule_moment(rule, exponents) == gaussian_moment(exponents), exponents


def test_degree_five_rule_is_not_exact_beyond_and_bad_degree_is_refused():
    """E z⁶ = 15 is beyond the degree-5 rule (so the degree a caller asks for matters)."""
    assert rule_moment(gaussian_rule(3, 5), (6, 0, 0)) != 15
    assert rule_moment(gaussian_rule(3, 6), (6, 0, 0)) == 15
    with pytest.raises(InputError, match="degree"):
        gaussian_rule(2, -1)


def product_rule(data) -> TaskSet:
    """The 3-point Gauss–Hermite rule per mode (z ∈ {−√3, 0, √3}, weights 1/6, 2/3, 1/6),
    multiplied over the d modes: exact to degree 5 in each δ_k, 3^d matrices."""
    U = data.eigenbasis()
    one = ((-sp.sqrt(3), R(1, 6)), (sp.Integer(0), R(2, 3)), (sp.sqrt(3), R(1, 6)))
    mats, weights = [], []
    for nodes in itertools.product(one, repeat=data.d):
        delta = [sp.sqrt(data.Sigma_w[k]) * z for k, (z, _) in enumerate(nodes)]
        mats.append(U * sp.diag(*delta) * U.T)
        weights.append(sp.Mul(*[w for _, w in nodes]))
    return TaskSet(mats, weights)


@pytest.mark.parametrize("d", [2, 3])
def test_full_lsa_eigenbasis_loss_equals_the_product_rule(d):
    """The loss is quartic in δ: the degree-5 rule (2d² + 1 nodes) and the product rule
    (3^d) give the same exact value at a rational point, with unequal task variances."""
    model = models.FullLSA(d, d_y=d)
    data = ICLData(d=d, N=3, Lambda=sp.diag(*range(d, 0, -1)), d_y=d, tasks="diagonal",
                   Sigma_w=[2] + [R(1, 2)] * (d - 1), noise=R(1, 3))
    der = derive(model, data)
    assert der.conditional and len(der.task_values()["W"]) == 2 * d * d + 1
    rng = np.random.default_rng(d)
    params = {n: sp.Matrix(np.array([R(int(v), 3) for v in rng.integers(-3, 4, size=s[0] * s[1])],
                                    dtype=object).reshape(s).tolist())
              for n, s in model.shapes().items()}
    values = der.values(params)
    values["W"] = values["W_j"] = product_rule(data)
    assert sp.expand(der.loss_poly.evaluate(values) - der.loss_value(params)) == 0
