"""Compiled flows against exact derivations; integrators and GD against derived invariants and
closed forms (Hypothesis over random SPD Λ, Σ_w, N, σ and initial weights)."""

import ast
import numpy as np
import pytest
from functools import lru_cache

import mpmath
import sympy as sp
from hypothesis import example, given
from hypothesis import strategies as st

from conftest import matrices, spd_matrices
from icldyn.numerics import compile_flow, gradient_descent, integrate, rk4
from icldyn.numerics.compiled.codegen import Extension
from icldyn.numerics.compiled.integrate import STALL_WINDOW
from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.solutions import isotropic_reduction


@st.composite
def scalar_problems(draw, max_d=3):
    d = draw(st.integers(1, max_d))
    data = ICLData(d=d, N=draw(st.integers(1, 30)), Lambda=draw(spd_matrices(d)),
                   Sigma_w=draw(spd_matrices(d, low=0.5)), noise=draw(st.floats(0, 1)))
    params = {"V": draw(st.floats(-1, 1)), "Q": draw(matrices((d, d)))}
    return data, params


def flow_for(data, backend="numba"):
    return compile_flow(derive(models.Merged(data.d, d_y=data.d_y), data), backend=backend)


@pytest.mark.slow
@pytest.mark.parametrize("tasks", ["gaussian", "diagonal"])
def test_backends_agree_with_each_other_and_with_exact_values(tasks):
    rng = np.random.default_rng(1)
    d = 3
    A = rng.standard_normal((d, d))
    d_y = 1 if tasks == "gaussian" else d
    data = ICLData(d=d, N=7, Lambda=A @ A.T / d + 0.3 * np.eye(d), d_y=d_y, tasks=tasks,
                   noise=0.25)
    der = derive(models.Merged(d, d_y=d_y), data)
    params = {"V": rng.standard_normal((d_y, d_y)), "Q": rng.standard_normal((d, d))}
    flows = [compile_flow(der, backend=b).compiled() for b in ("numpy", "numba")]
    assert type(flows[1]._fns["grad"]).__name__ == "CPUDispatcher"     # Numba, not NumPy
    theta = flows[0].pack(params)
    for f in flows:
        assert f.loss(theta) == pytest.approx(float(der.loss_value(params)), rel=1e-11)
        exact = der.gradient_value(params)
        np.testing.assert_allclose(f.unpack(f.grad(theta))["Q"],
                                   np.array(exact["Q"].tolist(), dtype=float), rtol=1e-10)
    np.testing.assert_allclose(flows[0].grad(theta), flows[1].grad(theta), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(flows[0].gd_change(theta, 0.1), flows[1].gd_change(theta, 0.1),
                               rtol=1e-12)


@given(scalar_problems())
def test_conserved_along_gradient_flow(problem):
    data, params = problem
    flow = flow_for(data)
    theta0 = flow.pack(params)
    traj = integrate(flow, theta0, t_end=3.0, n_points=31, rtol=1e-11, atol=1e-12)
    scale = 1.0 + np.abs(traj.theta).max() ** 2
    # DOP853 local error control at rtol 1e-11 over a few hundred steps: drift ≲ 1e-8 · scale
    assert np.abs(traj.conserved - traj.conserved[0]).max() <= 1e-8 * scale


@given(scalar_problems(), st.floats(1e-3, 0.5))
def test_gd_one_step_change_equals_derived_eta_squared_term(problem, lr):
    data, params = problem
    flow = flow_for(data)
    theta0 = flow.pack(params)
    traj = gradient_descent(flow, theta0, lr=lr, steps=1)
    measured = traj.conserved[1] - traj.conserved[0]
    predicted = flow.gd_change(theta0, lr)
    # rounding: the difference of two O(|C|) numbers, each evaluated with relative error ~1e-15
    step = np.abs(traj.theta).max() ** 2 + np.abs(traj.conserved).max()
    assert np.abs(measured - predicted).max() <= 1e-12 * (1 + step + np.abs(predicted).max())


@lru_cache(maxsize=1)
def isotropic_closed_forms():
    """The derived closed forms (theory/solutions.py) as numeric functions of
    (d, N, λ, σ, a₀, Δ, t or a)."""
    red = isotropic_reduction(derive(models.Merged(1), ICLData(d=1, N=2, Lambda="iso")))
    N, lam, sigma = (sp.Symbol(n, **kw) for n, kw in (
        ("N", dict(positive=True, integer=True)), ("lambda", dict(positive=True)),
        ("sigma", dict(nonnegative=True))))
    args = (red.d, N, lam, sigma, red.a0)
    logistic = sp.lambdify(args + (red.t,), red.balanced_solution(), "numpy")
    # mpmath at 50 digits: for |Δ| → 0 the closed form cancels catastrophically in float64
    time_to = sp.lambdify(args + (red.delta, red.a), red.unbalanced_time(), "mpmath")
    a_star = sp.lambdify(args, red.fixed_point(), "numpy")
    return logistic, time_to, a_star


@pytest.mark.slow
@example(d=3, n=3, lam=0.3, q0=0.02, imbalance=0.0)      # a long saddle escape (T = 770)
@given(st.integers(1, 4), st.integers(1, 40), st.floats(0.3, 2.0), st.floats(0.02, 0.3),
       st.floats(-0.5, 0.5))
def test_isotropic_closed_form(d, n, lam, q0, imbalance):
    """Integration of the full flow (Q a d×d matrix) against the derived closed forms: the
    logistic a(t) for balanced starts (dsolve) and the time t(a) to reach a for unbalanced ones.
    Tolerance 1e-7 relative: DOP853 at rtol 1e-12 keeps the global error (amplified by the
    exponential escape, e^{2√dλ²T} up to e^{12}) well below it."""
    logistic, time_to, a_star = isotropic_closed_forms()
    data = ICLData(d=d, N=n, Lambda=lam * np.eye(d))
    flow = flow_for(data)
    u0 = np.sqrt(d) * q0 + imbalance
    T = 6.0 / (np.sqrt(d) * lam**2 * max(q0, 0.05))
    t_eval = np.linspace(0, T, 41)
    traj = integrate(flow, {"V": u0, "Q": q0 * np.eye(d)}, t_end=T, t_eval=t_eval,
                     rtol=1e-12, atol=1e-14)
    p = flow.unpack(traj.theta)
    a = p["V"][:, 0, 0] * p["Q"][:, 0, 0]
    assert np.allclose(p["Q"], p["Q"][:, :1, :1] * np.eye(d), atol=1e-12)  # Q stays ∝ I
    a0, star = u0 * q0, a_star(d, n, lam, 0.0, u0 * q0)
    delta = u0**2 - d * q0**2
    if delta == 0:
        np.testing.assert_allclose(a, logistic(d, n, lam, 0.0, a0, t_eval), rtol=1e-7,
                                   atol=1e-9)
        return
    if u0 <= 0:
        return                                   # the closed form is for u, q > 0
    away = np.abs(a - star) > 0.05 * star           # t(a) is flat near a*: compare elsewhere
    away &= np.abs(a - a0) > 1e-3 * star
    with mpmath.workdps(50):
        predicted = [float(time_to(*map(mpmath.mpf, (d, n, lam, 0, a0, delta, x))))
                     for x in a[away]]
    np.testing.assert_allclose(predicted, t_eval[away], rtol=1e-7, atol=1e-7)


def test_isotropic_reduction_equals_the_oracle():
    """docs/math.md §3.2 oracles: ȧ = −√(Δ² + 4d a²)(c a − λ²), c = λ³(N+1+d)/N (σ = 0), and the
    balanced logistic a(t) = a*/(1 + (a*/a₀ − 1) e^{−2√d λ² t}), a* = N/(λ(N+1+d))."""
    red = isotropic_reduction(derive(models.Merged(1), ICLData(d=1, N=2, Lambda="iso")))
    N, lam, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol(
        "lambda", positive=True), sp.Symbol("sigma", nonnegative=True)
    d, a, a0, t, delta = red.d, red.a, red.a0, red.t, red.delta
    c = lam**3 * (N + 1 + d) / N
    assert sp.simplify(red.rate().subs(sigma, 0)
                       + sp.sqrt(delta**2 + 4 * d * a**2) * (c * a - lam**2)) == 0
    a_star = N / (lam * (N + 1 + d))
    assert sp.simplify(red.fixed_point().subs(sigma, 0) - a_star) == 0
    oracle = a_star / (1 + (a_star / a0 - 1) * sp.exp(-2 * sp.sqrt(d) * lam**2 * t))
    assert sp.simplify(red.balanced_solution().subs(sigma, 0) - oracle) == 0
    assert red.conservation_rate() == 0


@pytest.mark.slow
@pytest.mark.parametrize("model, backends", [
    (models.Merged(10, d_y=10), ("numpy", "numba")),
    (models.MultiHead(10, heads=2, d_y=10), ("numpy",)),
    (models.SeparateKQ(10, heads=2, rank=3, d_y=10), ("numpy",))])
def test_eigenbasis_path_gradients_are_exact(model, backends):
    """Eigenbasis tasks at d = 10 (kernels not lowered to loops), where the gradient is printed in
    Λ's eigenbasis (Λ and Dg as scalings of U's columns, no ``_eigdiag`` call): the compiled
    gradient agrees with the derivation's exact gradient at random θ (the Numba kernel, the
    same source, with NumPy's)."""
    rng = np.random.default_rng(7)
    A = rng.standard_normal((10, 10))
    data = ICLData(d=10, N=7, Lambda=A @ A.T / 10 + 0.3 * np.eye(10), d_y=10, tasks="diagonal",
                   noise=0.25)
    der = derive(model, data)
    flows = [compile_flow(der, backend=b).compiled() for b in backends]
    assert "_eigdiag" not in flows[0].source.split("def grad")[1].split("def conserved")[0]
    params = {n: rng.standard_normal(s) / 2 for n, s in model.shapes().items()}
    theta, pos = flows[0].pack(params), flows[0].letter_positions()
    for f in flows:
        grad = f.grad(theta)
        for letter, exact in der.gradient_value(params).items():
            exact = np.array(exact.tolist(), dtype=float)
            np.testing.assert_allclose(grad[pos[letter]], exact, rtol=1e-11,
                                       atol=1e-12 * np.abs(exact).max())
        np.testing.assert_allclose(grad, flows[0].grad(theta), rtol=1e-12, atol=1e-13)


@given(st.integers(2, 4), st.integers(2, 30), st.data())
def test_diagonal_set_is_invariant(d, n, draw):
    """Vector tasks in a rotated eigenbasis: V, Q diagonal in Λ's eigenbasis stay so."""
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**32 - 1)))
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.sort(draw.draw(st.lists(st.floats(0.2, 3.0), min_size=d, max_size=d)))[::-1]
    data = ICLData(d=d, N=n, Lambda=U @ np.diag(s) @ U.T, d_y=d, tasks="diagonal")
    flow = flow_for(data)
    Ub = flow.U
    p, q = (np.array(draw.draw(st.lists(st.floats(0.05, 1), min_size=d, max_size=d)))
            for _ in range(2))
    traj = integrate(flow, {"V": Ub @ np.diag(p) @ Ub.T, "Q": Ub @ np.diag(q) @ Ub.T}, t_end=2.0,
                     n_points=11)
    prm = flow.unpack(traj.theta)
    for name in ("V", "Q"):
        rotated = Ub.T @ prm[name] @ Ub
        off = rotated - np.einsum("tii->ti", rotated)[:, :, None] * np.eye(d)
        assert np.abs(off).max() <= 1e-9 * (1 + np.abs(rotated).max())


@pytest.mark.slow
@given(scalar_problems(max_d=3))
def test_uQ_converges_to_M_star(problem):
    data, params = problem
    flow = flow_for(data)
    Lam = np.array(data.Lambda.tolist(), dtype=float)
    Sw = np.array(data.Sigma_w.tolist(), dtype=float)
    n, sigma = data.N, float(data.noise)
    A = (n + 1) / n * Lam @ Sw @ Lam + (np.trace(Sw @ Lam) + sigma**2) / n * Lam
    M_star = np.linalg.solve(A, Lam @ Sw)            # oracle (docs/math.md §3.2)
    d = data.d
    theta0 = flow.pack({"V": 1.0, "Q": 0.1 * params["Q"]})
    traj = integrate(flow, theta0, t_end=2e4, n_points=2, rtol=1e-12, atol=1e-14)
    p = flow.unpack(traj.theta[-1])
    M = p["V"][0, 0] * p["Q"]
    assert np.linalg.norm(M - M_star) <= 1e-6 * np.linalg.norm(M_star), (M, M_star, d)


def test_rk4_and_gd_against_adaptive_flow():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 3))
    data = ICLData(d=3, N=10, Lambda=A @ A.T / 3 + 0.3 * np.eye(3), noise=0.1)
    flow = flow_for(data)
    theta0 = flow.pack({"V": 0.5, "Q": 0.3 * rng.standard_normal((3, 3))})
    ref = integrate(flow, theta0, t_end=4.0, n_points=5, rtol=1e-12, atol=1e-14)
    errors = [np.abs(rk4(flow, theta0, 4.0, dt).theta[-1] - ref.theta[-1]).max()
              for dt in (0.004, 0.002)]
    assert errors[1] < 1e-5 and 12 < errors[0] / errors[1] < 20     # fourth order: ratio ≈ 16
    gd = [np.abs(gradient_descent(flow, theta0, lr=lr, steps=int(4.0 / lr)).theta[-1]
                 - ref.theta[-1]).max() for lr in (0.004, 0.002)]
    assert 1.6 < gd[0] / gd[1] < 2.4                               # Euler: first order


def test_bad_inputs_raise_clear_errors():
    data = ICLData(d=2, N=4, Lambda=np.eye(2))
    der = derive(models.Merged(2), data)
    with pytest.raises(InputError, match="backend"):
        compile_flow(der, backend="fortran")
    with pytest.raises(InputError, match="^extensions"):
        compile_flow(der, extensions=["def f(): pass"])
    with pytest.raises(InputError, match="^extension: its source defines grad"):
        compile_flow(der, "numpy").extension(Extension("def grad(x):\n    return x\n",
                                                       lambda flow, data: {}))
    flow = compile_flow(der)
    with pytest.raises(InputError, match="missing"):
        flow.pack({"V": 1.0})
    with pytest.raises(InputError, match="shape"):
        flow.pack({"V": 1.0, "Q": np.ones((3, 3))})
    with pytest.raises(InputError, match="NaN"):
        flow.pack({"V": np.nan, "Q": np.eye(2)})
    with pytest.raises(InputError, match="lr"):
        gradient_descent(flow, {"V": 1.0, "Q": np.eye(2)}, lr=-1, steps=3)


def test_divergence_is_reported_with_the_step_the_limit_and_the_partial_run():
    from icldyn.theory import DivergenceError
    from icldyn.numerics.compiled.integrate import stability_limit
    data = ICLData(d=2, N=4, Lambda=np.diag([3.0, 1.0]))
    flow = flow_for(data)
    theta0 = flow.pack({"V": 1.0, "Q": np.eye(2)})
    limit = stability_limit(flow, theta0)
    gradient_descent(flow, theta0, lr=0.5 * limit, steps=50)           # below the limit: fine
    with pytest.raises(DivergenceError, match="stability limit") as info:
        gradient_descent(flow, theta0, lr=50 * limit, steps=500)
    err = info.value
    assert 0 < err.step < 500 and f"{limit:.4g}" in str(err)
    assert len(err.partial.t) == err.step and np.all(np.isfinite(err.partial.theta))


def test_a_divergence_whose_last_rows_overflow_the_loss_is_reported_as_one():
    """Rows still under RUNAWAY can overflow the loss (here of degree 4 in θ): the run is a
    divergence naming lr, its partial run the rows whose loss is finite (it was an InputError
    naming θ, advising to rescale the parameters)."""
    from icldyn.theory import DivergenceError
    flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))), "numpy")
    with pytest.raises(DivergenceError, match="lower lr") as info:
        gradient_descent(flow, {"V": 1.5, "Q": 1.5}, lr=2.0, steps=100)
    partial = info.value.partial
    assert 1 < len(partial.t) < info.value.step and np.all(np.isfinite(partial.loss))


def test_mpmath_reference_bounds_float64_integrators():
    """30-digit reference (mpmath Taylor series on the exact gradient): it keeps the conserved
    quantity to 1e-25; DOP853 at rtol 1e-10 and RK4 lie within their tolerances of it, and
    RK4's error falls 16-fold per halving of dt (fourth order)."""
    import mpmath

    from icldyn.numerics.compiled.integrate import integrate_reference
    data = ICLData(d=2, N=5, Lambda=[[1.0, 0.3], [0.3, 0.6]], noise=0.2)
    flow = compile_flow(derive(models.Merged(2), data), "numpy")
    theta = flow.pack({"V": 0.4, "Q": [[0.3, -0.1], [0.2, 0.5]]})
    ref = integrate_reference(flow, theta, t_end=2.0, n_points=3)
    c0 = ref.conserved[0][0]
    assert max(abs(c[0] - c0) for c in ref.conserved) < mpmath.mpf("1e-25")
    exact = np.array([[float(v) for v in row] for row in ref.theta])
    dop = integrate(flow, theta, t_end=2.0, t_eval=ref.t)
    assert np.abs(dop.theta - exact).max() < 1e-9
    assert np.abs(dop.conserved[:, 0] - float(c0)).max() < 1e-11
    errors = [np.abs(rk4(flow, theta, t_end=2.0, dt=dt, every=int(1.0 / dt)).theta
                     - exact).max() for dt in (0.1, 0.05)]
    assert 10 < errors[0] / errors[1] < 24, errors


def test_runaway_horizons_are_refused_not_hung():
    data = ICLData(d=2, N=4, Lambda=np.eye(2))
    flow = compile_flow(derive(models.Merged(2), data), "numpy")
    theta = flow.pack({"V": 0.3, "Q": 0.3})
    with pytest.raises(InputError, match="max_nfev"):
        integrate(flow, theta, t_end=1e300, max_nfev=2000)
    with pytest.raises(InputError, match="dt"):
        rk4(flow, theta, t_end=2.0, dt=5e-324)
    with pytest.raises(InputError, match="GiB"):
        gradient_descent(flow, theta, lr=0.01, steps=10**9)


def test_a_stiff_flow_is_stopped_by_its_pace_and_an_implicit_method_solves_it():
    """From Q of 10¹⁶ the flow along V has rate ~Q² (10³³): DOP853 would need ~10³¹ steps to
    reach t = 0.01. It is stopped within a few windows of evaluations (not at max_nfev), with
    advice that works: LSODA reaches t_end, V relaxes to ≈ 0 and the loss falls."""
    data = ICLData(d=2, N=4, Lambda=np.eye(2))
    flow = compile_flow(derive(models.Merged(2), data), "numpy")
    theta = np.array([-2.6, 4.6e16, 2.8, 3.0, 1e-15])
    calls, field = [], flow.kernel_rhs()            # the right-hand side integrate calls
    flow.kernel_rhs = lambda: lambda t, y: calls.append(t) or field(t, y)
    try:
        with pytest.raises(InputError, match="stiff.*LSODA"):
            integrate(flow, theta, t_end=0.01)
    finally:
        del flow.kernel_rhs
    assert STALL_WINDOW <= len(calls) <= 5 * STALL_WINDOW
    traj = integrate(flow, theta, t_end=0.01, method="LSODA")
    assert traj.t[-1] == 0.01 and abs(traj.theta[-1, 0]) < 1e-12
    assert traj.loss[-1] < traj.loss[0]


LOOP_CASES = {
    "Merged": (models.Merged(2), {}),
    "Merged d_y=2": (models.Merged(2, d_y=2), {"d_y": 2}),
    "MultiHead": (models.MultiHead(2, heads=2), {}),
    "SeparateKQ": (models.SeparateKQ(2, heads=2, rank=1), {}),
    "FullLSA": (models.FullLSA(2), {}),
    "task set": (models.MultiHead(2, heads=2), {"tasks": np.array([[[1.0, 0.5]], [[0.0, 1.0]]])}),
    "diagonal tasks": (models.Merged(2, d_y=2), {"d_y": 2, "tasks": "diagonal"}),
}


@pytest.mark.parametrize("case", list(LOOP_CASES))
def test_loop_kernels_step_as_the_array_kernels(case):
    """The small-d loop kernels (``loops.lower``: products, sums, traces, Dg and the task
    loop as scalar loops) give the array kernels' GD and RK4 steps and recorded loss and
    conserved quantities, model by model (run as Python: the lowering, not Numba, is tested)."""
    model, extra = LOOP_CASES[case]
    data = ICLData(d=2, N=5, Lambda=[[1.0, 0.3], [0.3, 0.6]], noise=0.2, **extra)
    flow = compile_flow(derive(model, data), "numpy")
    fns = flow._fns
    theta, *args = flow._args(0.4 * np.random.default_rng(2).standard_normal(flow.size))
    for rk4_step in (False, True):
        rows, seen, done = fns["fixed_step"](theta, 0.05, 6, 2, rk4_step, *args)
        ref_rows, ref_seen, ref_done = fns["fixed_step_arrays"](theta, 0.05, 6, 2, rk4_step, *args)
        assert done == ref_done == 6 and rows.shape == (4, flow.size)
        np.testing.assert_allclose(rows, ref_rows, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(seen, ref_seen, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(seen, flow.observe(rows), rtol=1e-13, atol=1e-15)
    loops = flow.source[flow.source.index("def loop_loss"):flow.source.index("def fixed_step(")]
    assert " @ " not in loops and "np." not in loops        # no BLAS call, no allocation


def test_large_d_keeps_the_array_kernels():
    """Above ``loops.SMALL`` the trajectory loop calls the BLAS kernels (no loop forms)."""
    from icldyn.numerics.compiled.loops import SMALL
    d = SMALL + 1
    flow = compile_flow(derive(models.Merged(d), ICLData(d=d, N=5, Lambda=np.eye(d))), "numpy")
    assert "def loop_" not in flow.source and "fixed_step_arrays" not in flow._fns
    gd = gradient_descent(flow, {"V": 0.1, "Q": 0.1}, lr=0.05, steps=4, every=2)
    np.testing.assert_allclose(gd.loss, flow.observe(gd.theta)[:, 0], rtol=1e-15)


@pytest.mark.slow
def test_compiled_trajectories_match_the_array_kernels():
    """Numba's loop kernels against NumPy's array kernels: 2 000 GD steps and 500 RK4 steps
    at d = 4 agree to 1e-13 (rows, loss and conserved quantities recorded in the loop)."""
    data = ICLData(d=4, N=16, Lambda=np.diag([2.0, 1.0, 0.5, 0.25]))
    der = derive(models.Merged(4), data)
    fast, ref = compile_flow(der, "numba").compiled(), compile_flow(der, "numpy")
    assert type(fast._fns["fixed_step"]).__name__ == "CPUDispatcher"
    theta0 = fast.pack({"V": 0.1, "Q": 0.1})
    for run in (lambda f: gradient_descent(f, theta0, lr=0.02, steps=2000, every=10),
                lambda f: rk4(f, theta0, t_end=10.0, dt=0.02, every=10)):
        a, b = run(fast), run(ref)
        for x, y in ((a.theta, b.theta), (a.loss, b.loss), (a.conserved, b.conserved)):
            np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)


def test_the_warm_up_examples_fit_their_kernels():
    """Each kernel the warm-up child compiles takes its example arguments (the loop kernels,
    named ``loop_*``, are compiled as the callees of the trajectory loops): called here with
    NumPy."""
    flow = compile_flow(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.eye(2))), "numpy")
    examples = flow._examples()
    assert "fixed_step" in examples and not any(name.startswith("loop_") for name in examples)
    for name, calls in examples.items():
        for args in calls:
            flow._fns[name](*args)


def test_the_kernels_do_not_grow_with_the_number_of_conserved_quantities():
    """MultiHead(H) has H(H+1)/2 laws (the heads' Gram matrix); the generated module defines
    the same kernels and the warm-up child compiles the same ones whatever H (one vector-valued
    ``conserved``: 136 scalar kernels at H = 16 took most of the child's 21 minutes), the laws
    that differ only by their heads are one loop over a table of heads (``conserved`` and its
    loop form compute as many traces at H = 3 as at H = 4), and ``conserved`` agrees with each law
    evaluated in SymPy."""
    kernels, lines = set(), set()
    for heads in (1, 3, 4):
        data = ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5]))
        der = derive(models.MultiHead(2, heads=heads), data)
        flow = compile_flow(der, "numpy")
        assert len(der.conserved) == heads * (heads + 1) // 2
        defs = {node.name: node for node in ast.parse(flow.source).body
                if isinstance(node, ast.FunctionDef)}
        kernels.add((frozenset(defs), frozenset(flow._examples())))
        if heads > 1:                 # the traces it computes, as sums and as loops
            lines.add(tuple(ast.get_source_segment(flow.source, defs[name]).count(part)
                            for name, part in (("conserved", "np.sum("),
                                               ("loop_conserved", "for _i"))))
        rng = np.random.default_rng(heads)
        theta = rng.standard_normal(flow.size)
        values = der.values(flow.unpack(theta))
        exact = [float(law.quantity.evaluate(values)) for law in der.conserved]
        np.testing.assert_allclose(flow.conserved(theta), exact, rtol=1e-13)
        np.testing.assert_allclose(flow.observe(theta[None])[0, 1:], exact, rtol=1e-13)
    assert len(kernels) == len(lines) == 1


@lru_cache(maxsize=None)
def compiled_merged2():
    data = ICLData(d=2, N=5, Lambda=[[1.0, 0.3], [0.3, 0.6]], noise=0.2)
    der = derive(models.Merged(2), data)
    return compile_flow(der, "numba").compiled(), compile_flow(der, "numpy")


@pytest.mark.slow
def test_compiled_dop853_matches_a_30_digit_reference_and_scipys_dop853(monkeypatch):
    """The compiled DOP853 loop (Numba; SciPy's solve_ivp is not called) lies within its
    tolerance of the mpmath reference, keeps ‖V‖² − ‖Q‖² to 1e-11 as SciPy's DOP853 does, and
    is SciPy's method: the same number of evaluations, the same rows to 1e-12."""
    import scipy.integrate

    from icldyn.numerics.compiled.integrate import integrate_reference
    fast, slow = compiled_merged2()
    assert type(fast._fns["adaptive"]).__name__ == "CPUDispatcher"
    theta = fast.pack({"V": 0.4, "Q": [[0.3, -0.1], [0.2, 0.5]]})
    ref = integrate_reference(slow, theta, t_end=2.0, n_points=3)
    exact = np.array([[float(v) for v in row] for row in ref.theta])
    scipys = integrate(slow, theta, t_end=2.0, t_eval=ref.t)
    with monkeypatch.context() as patch:
        patch.setattr(scipy.integrate, "solve_ivp", None)       # the compiled path only
        mine = integrate(fast, theta, t_end=2.0, t_eval=ref.t)
        long = integrate(fast, theta, t_end=50.0, n_points=101)
    assert np.abs(mine.theta - exact).max() < 1e-9
    assert np.abs(mine.conserved[:, 0] - float(ref.conserved[0][0])).max() < 1e-11
    assert mine.info["nfev"] == scipys.info["nfev"]
    np.testing.assert_allclose(mine.theta, scipys.theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mine.loss, slow.observe(mine.theta)[:, 0], rtol=1e-13)
    scipy_long = integrate(slow, theta, t_end=50.0, n_points=101)
    assert long.info["nfev"] == scipy_long.info["nfev"]
    # the same steps (nfev equal) rounded differently (Numba's kernels may fuse multiply-adds
    # by the host CPU: 1.8e-11 apart at t ≈ 27 on one machine, < 1e-11 on another), within
    # the integrator's own tolerance rtol = 1e-10 of the values (|θ| ≤ 1.1 here)
    np.testing.assert_allclose(long.theta, scipy_long.theta, rtol=1e-10, atol=1e-12)
    assert np.abs(long.conserved - long.conserved[0]).max() < 1e-10


def test_compiled_dop853_reports_errors_as_scipys_path_does():
    """Budget, stiffness (stopped by its pace within a few windows), overflow and bad input
    are the same one-line errors on the compiled path."""
    import re
    fast, _ = compiled_merged2()
    theta = fast.pack({"V": 0.3, "Q": 0.3})
    with pytest.raises(InputError, match="max_nfev"):
        integrate(fast, theta, t_end=1e300, max_nfev=2000)
    with pytest.raises(InputError, match="stiff.*LSODA") as info:
        integrate(fast, np.array([-2.6, 4.6e16, 2.8, 3.0, 1e-15]), t_end=0.01)
    used = int(re.search(r"in (\d+) gradient evaluations", str(info.value)).group(1))
    assert 3 * STALL_WINDOW <= used <= 4 * STALL_WINDOW
    with pytest.raises(InputError, match="theta.*overflows"):
        integrate(fast, np.full(fast.size, 1e200), t_end=1.0)
    with pytest.raises(InputError, match="t_eval"):
        integrate(fast, theta, t_end=1.0, t_eval=[0.0, 2.0])
    with pytest.raises(InputError, match="rtol"):
        integrate(fast, theta, t_end=1.0, rtol=1e-16)
