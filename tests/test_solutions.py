"""Eigenmode reduction and stage times against integration and docs/math.md §3.3."""

import numpy as np
import pytest
import sympy as sp

from conftest import rotated_vector_tasks
from icldyn.numerics import compile_flow, integrate
from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.solutions import mode_reduction

N = sp.Symbol("N", positive=True, integer=True)


@pytest.mark.parametrize("s,n,eps", [(2.0, 16, 0.01), (0.5, 4, 0.05), (1.3, 30, 0.002)])
def test_half_time_of_a_single_mode_equals_integration(s, n, eps):
    """With d = 1 there are no cross-mode terms: the decoupled reduction is exact."""
    data = ICLData(d=1, N=n, Lambda=[[s]], d_y=1, tasks="diagonal")
    der = derive(models.Merged(1, d_y=1), data)
    red = mode_reduction(der)
    a0 = sp.nsimplify(eps) ** 2
    t_half = float(red.half_time(0, a0))
    a_star = float(red.fixed_point(0))
    flow = compile_flow(der)
    t = np.linspace(0, 3 * t_half, 3001)
    traj = integrate(flow, {"V": eps, "Q": eps}, t_end=t[-1], t_eval=t, rtol=1e-12, atol=1e-14)
    a = np.prod(traj.theta, axis=1)
    i = np.argmax(a >= a_star / 2)
    crossing = t[i - 1] + (a_star / 2 - a[i - 1]) * (t[i] - t[i - 1]) / (a[i] - a[i - 1])
    assert crossing == pytest.approx(t_half, rel=1e-4)
    assert a[-1] == pytest.approx(a_star, rel=1e-3)


def test_decoupled_fixed_points_and_growth_rates_match_the_vector_task_oracle():
    """§3.3 without its cross-mode term: a* = s²/((N+2)/N s³); at the origin the modes grow
    at s_α² (the paper's 1/τ_α per unit learning rate)."""
    data = ICLData(d=3, N=N, Lambda="diag", d_y=3, tasks="diagonal")
    red = mode_reduction(derive(models.Merged(3, d_y=3), data), symbolic_s=True)
    for k, s in enumerate(red.s):
        assert sp.simplify(red.fixed_point(k) - N / ((N + 2) * s)) == 0
    assert sorted(red.saddle_growth_rates(), key=str) == sorted([s**2 for s in red.s], key=str)


def test_growth_rates_against_a_numerical_hessian_in_a_rotated_basis():
    s = np.array([1.5, 0.8, 0.3])
    data = rotated_vector_tasks(s, N=7, seed=2)
    der = derive(models.Merged(3, d_y=3), data)
    flow = compile_flow(der, backend="numpy")
    n, h = flow.size, 1e-5
    H = np.array([(flow.grad(h * e) - flow.grad(-h * e)) / (2 * h) for e in np.eye(n)])
    negative = np.sort(-np.linalg.eigvalsh((H + H.T) / 2))[::-1][:3]
    predicted = sorted(map(float, mode_reduction(der).saddle_growth_rates()), reverse=True)
    np.testing.assert_allclose(negative, predicted, rtol=1e-6)
    np.testing.assert_allclose(predicted, s**2, rtol=1e-12)


def test_reduction_needs_eigenbasis_tasks():
    data = ICLData(d=2, N=4, Lambda=np.eye(2))
    with pytest.raises(InputError, match="diagonal"):
        mode_reduction(derive(models.Merged(2), data))


def test_exact_vs_decoupled_gap_and_the_breaking_of_per_mode_conservation():
    """The cross-mode terms are exactly O(1/N); they break the per-mode balance p_α² − q_α²
    (conserved by the decoupled flow) while the sum over modes stays conserved; the exact
    fixed point differs from the decoupled one by O(1/N) and is where the exact flow goes."""
    from icldyn.theory.data import N_SYM
    s_vals = (2, 1, sp.Rational(1, 2))
    data = ICLData(d=3, N=N_SYM, Lambda=sp.diag(*s_vals), d_y=3, tasks="diagonal")
    red = mode_reduction(derive(models.Merged(3, d_y=3), data))
    scaled = sp.expand(red.coupling * N_SYM)
    assert scaled != 0 and N_SYM not in scaled.free_symbols
    rates = [red.balance_rate(k) for k in range(3)]
    assert all(red.balance_rate(k, exact=False) == 0 for k in range(3))
    assert all(r != 0 for r in rates) and sp.expand(sum(rates)) == 0
    gaps = {}
    for N in (16, 64, 256):
        exact = red.exact_fixed_point(N)
        decoupled = [red.fixed_point(k).subs(N_SYM, N) for k in range(3)]
        gaps[N] = max(abs(float((e - x) / x)) for e, x in zip(exact, decoupled))
    assert 3.0 < gaps[16] / gaps[64] < 4.5 and 3.5 < gaps[64] / gaps[256] < 4.5   # ~ 1/N
    # the exact flow (numeric N = 16) converges to the exact fixed point, not the decoupled one
    numeric = ICLData(d=3, N=16, Lambda=sp.diag(*s_vals), d_y=3, tasks="diagonal")
    flow = compile_flow(derive(models.Merged(3, d_y=3), numeric), "numpy")
    traj = integrate(flow, flow.pack({"V": 0.1, "Q": 0.1}), t_end=600.0, n_points=3)
    final = flow.unpack(traj.theta[-1])
    modes = np.diag(final["V"]) * np.diag(final["Q"])
    assert np.allclose(modes, [float(a) for a in red.exact_fixed_point(16)], rtol=1e-6)


def test_isotropic_reduction_refuses_data_it_does_not_fit():
    from icldyn.theory.solutions import isotropic_reduction
    for Lambda in (np.diag([1.0, 0.5]), "full", "diag"):
        with pytest.raises(InputError, match=r"der: .*Λ = λI"):
            isotropic_reduction(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=Lambda)))
    # a numeric multiple of I fits: the reduction is the symbolic one at λ = 2
    sym = isotropic_reduction(derive(models.Merged(2), ICLData(d=2, N=4, Lambda="iso")))
    num = isotropic_reduction(derive(models.Merged(2), ICLData(d=2, N=4, Lambda=2 * np.eye(2))))
    lam = sp.Symbol("lambda", positive=True)
    assert sp.simplify(num.rate() - sym.rate().subs(lam, 2)) == 0
    with pytest.raises(InputError, match="delta: must be a real number"):
        sym.rate("__import__('os')")
