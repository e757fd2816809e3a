"""Critical sets: the scalar-task minimum against MATH.md §3.2's M*, the eigenmode sets of the
paper's tasks against integration of the flow, and Hessian indices."""

import numpy as np
import pytest
import sympy as sp

from conftest import rotated_vector_tasks
from icldyn.numerics import compile_flow, integrate
from icldyn.theory import ICLData, InputError, derive, models

R = sp.Rational


@pytest.mark.parametrize("seed", range(3))
def test_scalar_minimum_is_the_oracle_m_star(seed):
    rng = np.random.default_rng(seed)
    d = 3
    A = sp.Matrix(d, d, lambda i, j: R(int(rng.integers(-3, 4)), 2))
    Lam = A * A.T + sp.eye(d) / 2
    B = sp.Matrix(d, d, lambda i, j: R(int(rng.integers(-3, 4)), 2))
    Sw = B * B.T + sp.eye(d)
    n, sigma = int(rng.integers(1, 12)), R(int(rng.integers(0, 4)), 3)
    der = derive(models.Merged(d), ICLData(d=d, N=n, Lambda=Lam, Sigma_w=Sw, noise=sigma))
    minimum, saddle = der.fixed_points()
    Aop = R(n + 1, n) * Lam * Sw * Lam + ((Sw * Lam).trace() + sigma**2) / n * Lam
    M_star = Aop.inv() * Lam * Sw                                  # oracle
    assert minimum.info["M_star"] == M_star
    assert minimum.hessian_index == 0 and saddle.hessian_index == 1
    u, Q = minimum.point["V"][0, 0], minimum.point["Q"]
    assert sp.simplify(der.loss_value({"V": u, "Q": Q}) - minimum.loss) == 0
    assert all(sp.simplify(g) == 0 for G in der.gradient_value({"V": u, "Q": Q}).values()
               for g in G)
    assert saddle.loss == der.loss_value({"V": 0, "Q": sp.zeros(d, d)})


def test_symbolic_m_star_for_diagonal_lambda():
    N = sp.Symbol("N", positive=True, integer=True)
    sigma = sp.Symbol("sigma", nonnegative=True)
    der = derive(models.Merged(2), ICLData(d=2, N=N, Lambda="diag", noise=sigma))
    M = der.fixed_points()[0].info["M_star"]
    s = [der.data.Lambda[k, k] for k in range(2)]
    for k in range(2):       # (N+1)/N s + (tr Λ + σ²)/N, inverted
        assert sp.simplify(M[k, k] - N / ((N + 1) * s[k] + s[0] + s[1] + sigma**2)) == 0
    assert M[0, 1] == 0


def test_eigenmode_critical_sets_and_their_indices():
    data = rotated_vector_tasks([2.0, 1.0, 0.5], N=8)
    der = derive(models.Merged(3, d_y=3), data)
    sets = der.fixed_points()
    assert len(sets) == 8                                     # one per subset of modes
    for fp in sets:                                           # unstable: one per unlearned mode
        assert fp.hessian_index == 3 - len(fp.info["learned"])
    minimum = sets[0]
    flow = compile_flow(der)
    traj = integrate(flow, {"V": 0.01, "Q": 0.01}, t_end=400.0, n_points=2)
    assert traj.loss[-1] == pytest.approx(float(minimum.loss), rel=1e-8)
    final = flow.unpack(traj.theta[-1])
    Ub = flow.U
    a = np.diag(Ub.T @ final["V"] @ Ub) * np.diag(Ub.T @ final["Q"] @ Ub)
    np.testing.assert_allclose(a, [float(v) for v in minimum.info["a"]], rtol=1e-6)
    grad = flow.grad(flow.pack({k: np.array(v.tolist(), dtype=float)
                                for k, v in minimum.point.items()}))
    assert np.abs(grad).max() < 1e-12


def test_fixed_points_reject_unsupported_settings():
    with pytest.raises(InputError, match="Merged"):
        derive(models.MultiHead(2, heads=2), ICLData(d=2, N=3, Lambda=np.eye(2))).fixed_points()
    with pytest.raises(InputError, match="d_y = 1"):
        derive(models.Merged(2, d_y=2), ICLData(d=2, N=3, Lambda=np.eye(2), d_y=2)).fixed_points()


@pytest.mark.slow
def test_learned_algorithm_risk_against_monte_carlo_ols_and_bayes():
    from icldyn.numerics.algorithms import incontext_risks
    sigma, d = 0.3, 3
    rows = incontext_risks(d, np.diag([2.0, 1.0, 0.5]), [1, 4, 8, 16], noise=sigma,
                           prompts=40000, seed=1)
    for row in rows:
        mean, se = row["learned_mc"]
        assert abs(mean - row["theory"]) < 4 * se, row      # derived risk = simulated risk
        assert row["bayes_mc"][0] <= row["ols_mc"][0] + 3 * row["ols_mc"][1]
        assert row["bayes_mc"][0] <= mean
    for row in rows:
        if row["N"] >= d + 2:     # classical OLS risk for Gaussian inputs: ½σ²(1 + d/(N−d−1))
            expected = 0.5 * sigma**2 * (1 + d / (row["N"] - d - 1))
            assert abs(row["ols_mc"][0] - expected) < 4 * row["ols_mc"][1]
    theory = [row["theory"] for row in rows]
    assert all(b < a for a, b in zip(theory, theory[1:]))   # more context, lower risk
