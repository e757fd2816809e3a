"""Finite task sets (task diversity): W uniform over P given matrices. The engine derives the
loss conditional on the task and averages it over the set; checked against brute force of the
actual layer (each task a fixed matrix), against Gaussian tasks with the set's second moment
(d_y = 1, where the loss only sees E[wwᵀ]), against SGD on the layer, and the gradient
covariance against Monte Carlo."""

import numpy as np
import pytest
import sympy as sp

from brute import Components, layer_loss
from icldyn.numerics import compile_flow, gradient_descent, simulate_sgd
from icldyn.theory import ICLData, InputError, derive, models
from test_models import LAMBDA, explicit_heads, rational

R = sp.Rational
TASKS = [[[1, R(-1, 2)], [0, 2]], [[R(1, 3), 1], [-1, 0]], [[0, 0], [R(3, 2), 1]]]


@pytest.mark.parametrize("model,n", [
    (models.MultiHead(2, heads=2, d_y=2), 2), (models.SeparateKQ(2, heads=2, rank=1, d_y=2), 1),
    (models.FullLSA(2, d_y=2), 1)], ids=repr)
def test_loss_equals_brute_force_average_over_tasks(model, n):
    """FullLSA's ŷ has S_yy terms, so its loss is quartic in W: the set's fourth moments
    enter, and only an exact average over the set (not a second moment) gets it right."""
    sigma = R(1, 3)
    data = ICLData(d=2, N=n, Lambda=LAMBDA, d_y=2, tasks=np.array(TASKS, dtype=object),
                   noise=sigma)
    params = {name: rational(shape, seed + 3) for seed, (name, shape)
              in enumerate(model.shapes().items())}
    heads = explicit_heads(model, params, 2, 2)
    brute = sum(layer_loss(Components(2, 2, n, LAMBDA, sigma, W=W), heads) for W in TASKS) / 3
    der = derive(model, data)
    assert sp.expand(der.loss_value(params) - brute) == 0
    flow = compile_flow(der, "numpy")
    assert flow.loss(flow.pack({k: v.astype(float) for k, v in params.items()})) == \
        pytest.approx(float(brute), rel=1e-12)


def test_scalar_tasks_see_only_the_second_moment():
    rng = np.random.default_rng(4)
    T = rng.standard_normal((5, 1, 3))
    Lam = np.diag([1.5, 1.0, 0.4]) + 0.1
    second = np.einsum("kai,kaj->ij", T, T) / 5
    finite = derive(models.Merged(3), ICLData(d=3, N=6, Lambda=Lam, tasks=T, noise=0.2))
    gauss = derive(models.Merged(3), ICLData(d=3, N=6, Lambda=Lam, Sigma_w=second, noise=0.2))
    params = {"V": 0.7, "Q": rng.standard_normal((3, 3))}
    assert float(finite.loss_value(params)) == pytest.approx(float(gauss.loss_value(params)),
                                                             rel=1e-12)
    f1, f2 = compile_flow(finite), compile_flow(gauss)
    theta = f1.pack(params)
    np.testing.assert_allclose(f1.grad(theta), f2.grad(theta), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f1.conserved(theta), f2.conserved(theta), rtol=1e-12)


def test_theory_matches_sgd_on_a_finite_task_set():
    """Two tasks, vector outputs, non-diagonal Λ, label noise: the expected GD curve against
    the seed-averaged SGD curve of the actual layer, within 4 Monte-Carlo standard errors."""
    rng = np.random.default_rng(2)
    T = rng.standard_normal((2, 2, 3))
    Lam = np.array([[1.0, 0.3, 0.0], [0.3, 0.8, 0.2], [0.0, 0.2, 0.5]])
    data = ICLData(d=3, N=8, Lambda=Lam, d_y=2, tasks=T, noise=0.3)
    model = models.MultiHead(3, heads=2, d_y=2)
    init = {"V": 0.3 * rng.standard_normal((2, 2, 2)), "Q": 0.3 * rng.standard_normal((2, 3, 3))}
    flow = compile_flow(derive(model, data))
    gd = gradient_descent(flow, flow.pack(init), lr=0.02, steps=300, every=50)
    sim = simulate_sgd(model, data, init, lr=0.02, batch=32, steps=300, seeds=64, seed=1,
                       record_every=50)
    z = (sim.loss[::50] - gd.loss) / sim.loss_se[::50]
    assert np.abs(z).max() < 4, z
    assert gd.loss[-1] < 0.6 * gd.loss[0]                       # it did learn


def test_views_show_the_task_average():
    der = derive(models.Merged(2), ICLData(d=2, N=sp.Symbol("N"), tasks="finite"),
                 structural=True)
    latex = sp.latex(der.loss)
    assert r"\sum_{k=1}^{P}" in latex and "W_{k}" in latex
    assert r"\frac{1}{P}\sum_{k=1}^{P}" in sp.latex(der.gradient["Q"])
    with pytest.raises(InputError, match="symbolic"):
        der.loss_value({"V": 1, "Q": np.eye(2)})


@pytest.mark.parametrize("tasks,match", [
    (np.zeros((0, 1, 2)), "at least one"), (np.ones((2, 2, 2)), r"shape \(d_y, d\)"),
    ([[["a", 1]]], "real number"), ([[[np.inf, 1.0]]], "finite real"), ("ridge", "one of"),
    (5, "could not be read")])
def test_bad_task_sets_are_clear_errors(tasks, match):
    with pytest.raises(InputError, match=match):
        ICLData(d=2, N=3, tasks=tasks)


def test_sigma_w_with_a_task_set_is_refused():
    with pytest.raises(InputError, match="Sigma_w"):
        ICLData(d=2, N=3, tasks=np.ones((1, 1, 2)), Sigma_w=np.eye(2))


def test_gd_change_uses_two_independent_draws():
    """ΔC under one GD step is η² times a product of two task averages, i.e. an average over
    two independent draws: exact (SymPy), compiled, and the actual change of C agree."""
    from icldyn.theory.derive import ETA
    data = ICLData(d=2, N=3, Lambda=LAMBDA, d_y=2, tasks=np.array(TASKS, dtype=float),
                   noise=0.3)
    der = derive(models.MultiHead(2, heads=2, d_y=2), data)
    flow = compile_flow(der)
    theta = 0.5 * np.random.default_rng(3).standard_normal(flow.size)
    lr = 0.05
    actual = flow.conserved(theta - lr * flow.grad(theta)) - flow.conserved(theta)
    np.testing.assert_allclose(flow.gd_change(theta, lr), actual, rtol=1e-9, atol=1e-14)
    values = der.values(flow.unpack(theta))
    values["_scalars"] = {**values["_scalars"], ETA: lr}
    exact = [float(law.gd_change.evaluate(values)) for law in der.conserved]
    np.testing.assert_allclose(exact, actual, rtol=1e-9, atol=1e-14)
    view = der.conserved[0].gd_change_expr          # (1/P²) Σ_k Σ_j (…)(W_k, W_j)
    assert any(len(s.limits) == 2 for s in view.atoms(sp.Sum)) and "W_{j}" in sp.latex(view)


def test_fixed_points_of_scalar_finite_tasks_match_the_second_moment_oracle():
    """d_y = 1: the minimum set {uQ = M*} with M* = A⁻¹ΛΣ̂ (docs/math.md §3.2 oracle, Σ̂ the set's
    second moment), Hessian index 0; the saddle at the origin has index 1."""
    T = np.random.default_rng(1).standard_normal((4, 1, 2))
    Lam, N, sigma = np.array([[1.0, 0.2], [0.2, 0.5]]), 5, 0.25
    minimum, saddle = derive(models.Merged(2), ICLData(d=2, N=N, Lambda=Lam, tasks=T,
                                                       noise=sigma)).fixed_points()
    S = np.einsum("kai,kaj->ij", T, T) / 4
    A = (N + 1) / N * Lam @ S @ Lam + (np.trace(S @ Lam) + sigma**2) / N * Lam
    M_star = np.linalg.solve(A, Lam @ S)
    np.testing.assert_allclose(np.array(minimum.info["M_star"], dtype=float), M_star, rtol=1e-10)
    assert (minimum.hessian_index, saddle.hessian_index) == (0, 1)


@pytest.mark.parametrize("tasks, symmetric", [
    ([[[1, 2], [0, 1]], [[-1, -2], [0, -1]]], True),
    ([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[-1, 0], [0, 0]]], True),    # the zero task alone
    ([[[1, 0], [0, 1]], [[1, 0], [0, 1]], [[-1, 0], [0, -1]]], False),  # one W unpaired
    ([[[1, 0], [0, 2]], [[-1, 0], [0, 1]]], False),
])
def test_symmetric_task_sets_pair_off_as_w_and_minus_w(tasks, symmetric):
    data = ICLData(d=2, N=3, Lambda=np.eye(2), d_y=2, tasks=np.array(tasks))
    assert data.symmetric_tasks() is symmetric
    assert ICLData(d=2, N=3, Lambda=np.eye(2), d_y=2, tasks="diagonal").symmetric_tasks()


def test_tasks_in_eigenbasis_need_every_task_diagonal_in_lambdas_eigenbasis():
    U = np.array([[3.0, -4.0], [4.0, 3.0]]) / 5
    Lam = U @ np.diag([2.0, 1.0]) @ U.T
    diagonal = np.array([U @ np.diag([1.0, -2.0]) @ U.T, U @ np.diag([0.5, 1.0]) @ U.T])
    assert ICLData(d=2, N=3, Lambda=Lam, d_y=2, tasks=diagonal).tasks_in_eigenbasis()
    assert not ICLData(d=2, N=3, Lambda=Lam, d_y=2,
                       tasks=np.array([np.diag([1.0, -2.0])])).tasks_in_eigenbasis()


FEW_TASKS = np.array([[[1.0, 0, 0]], [[0, 2.0, 0]]])


@pytest.mark.parametrize("heads, rank, sets", [(2, 1, 4), (1, 2, 4), (1, 1, 3)])
def test_rank_limited_heads_with_fewer_tasks_than_dimensions(heads, rank, sets):
    """P = 2 tasks in d = 3: C = X^-½ B Y^-½ has rank 2, so a third singular mode (σ = 0) is no
    critical set of its own (it once gave c = 0^(-1/6) and a NaN Hessian). With H r ≥ rank C the
    minimum reaches Merged's minimum (convexity of F); with H r = 1 it lies above it."""
    data = ICLData(d=3, N=4, Lambda=np.diag([2.0, 1.0, 0.5]), tasks=FEW_TASKS)
    merged_min = derive(models.Merged(3), data).fixed_points()[0]
    found = derive(models.SeparateKQ(3, heads=heads, rank=rank), data).fixed_points()
    assert len(found) == sets and found[0].kind == "minimum"
    assert all(np.isfinite(float(fp.loss)) for fp in found)
    gap = float(found[0].loss - merged_min.loss)
    assert abs(gap) < 1e-25 if heads * rank >= 2 else gap > 1e-3


def test_fulllsa_lists_no_zero_mode_as_a_set_of_its_own():
    """FullLSA's rank-one modes (on P₂ = 0, Q₁ = 0) with σ = 0 sat at the origin: the origin was
    listed twice. Every listed set has its own point."""
    data = ICLData(d=3, N=4, Lambda=np.diag([2.0, 1.0, 0.5]), tasks=np.vstack([FEW_TASKS,
                                                                              -FEW_TASKS]))
    found = derive(models.FullLSA(3), data).fixed_points()
    points = [np.concatenate([np.array(v.tolist(), dtype=float).ravel()
                              for v in fp.point.values()]) for fp in found]
    assert len(found) == 4          # Merged's two sets and the two non-zero rank-one modes
    assert min(np.abs(p - q).max() for i, p in enumerate(points) for q in points[:i]) > 1e-6
