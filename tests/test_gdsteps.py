"""L steps of preconditioned GD in context: the step-size loss derived from a stack of Merged
layers, its minima, and their status as critical points of the whole stack."""

import numpy as np
import pytest
import sympy as sp

from icldyn.numerics import compile_flow, integrate
from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.gdsteps import minimal_steps, step_size_loss

AHN = dict(query_in_keys=False, negate_readout=True)


def setting(layers, d=5, N=20, **flags):
    model = models.Stack([models.Merged(d)] * layers, **flags)
    return derive(model, ICLData(d=d, N=N, Lambda=np.eye(d)))


@pytest.mark.parametrize("d,N", [(5, 20), (8, 16)])
def test_one_step_is_the_known_optimum(d, N):
    """L = 1 with Ahn et al.'s conventions: the minimum over the step is ½ d(d+1)/(N+d+1) in
    our ½E‖ŷ − y‖² convention (one preconditioned GD step from zero; the Wishart identity
    E S² = N(N+d+1) I), at a = −N/(N+d+1) with the negated readout."""
    (best,) = minimal_steps(step_size_loss(setting(1, d, N, **AHN)))
    assert best.loss == pytest.approx(sp.Rational(d * (d + 1), 2 * (N + d + 1)), rel=1e-35)
    assert best.steps[0] == pytest.approx(-N / (N + d + 1), rel=1e-30)


def test_step_size_loss_is_exact_in_N_and_d():
    """Exact in N and d: at L = 1, ½ d (N a² + 2 N a + N + (d+1) a²)/N (query not a key)."""
    loss = step_size_loss(setting(1, **AHN))
    a, = loss.steps
    N, d = sp.Symbol("N", positive=True, integer=True), sp.Symbol("d", positive=True, integer=True)
    assert sp.simplify(loss.expr - d * (N * a**2 + 2 * N * a + N + (d + 1) * a**2) / (2 * N)) == 0


@pytest.mark.parametrize("flags", [AHN, dict(query_in_keys=True, negate_readout=False)])
def test_two_steps_are_a_local_minimum_of_the_whole_stack(flags):
    """L = 2, (d, N) = (5, 20): the best step sizes beat one layer; the point is critical for the
    whole stack (compiled gradient at rounding) and its Hessian (complex-step, exact to
    rounding) is positive semi-definite with exactly two zero eigenvalues — the tangents of
    the two layers' rescaling orbits — so the set is a local minimum (Morse–Bott)."""
    der = setting(2, **flags)
    sets = minimal_steps(step_size_loss(der))
    one = minimal_steps(step_size_loss(setting(1, **flags)))[0]
    best = sets[0]
    assert best.loss < one.loss
    flow = compile_flow(der, backend="numpy")
    theta = flow.pack({k: np.array(np.array(v.tolist(), dtype=float)) if hasattr(v, "tolist")
                       else float(v) for k, v in best.params.items()})
    assert flow.loss(theta) == pytest.approx(float(best.loss), rel=1e-12)
    assert np.abs(flow.grad(theta)).max() < 1e-12
    H = np.array([flow.hvp(theta, e) for e in np.eye(len(theta))])
    eigs = np.linalg.eigvalsh((H + H.T) / 2)
    tol = 1e-9 * eigs.max()
    assert np.sum(np.abs(eigs) <= tol) == 2 and eigs.min() > -tol


def test_query_outside_the_keys_makes_the_steps_commute():
    """Without the query among the keys the L updates are polynomials in S that commute: the
    step-size loss is symmetric in (a_1, a_2)."""
    loss = step_size_loss(setting(2, **AHN))
    a1, a2 = loss.steps
    assert sp.expand(loss.expr - loss.expr.subs({a1: a2, a2: a1}, simultaneous=True)) == 0


def test_step_size_loss_refuses_other_settings():
    with pytest.raises(InputError, match="Merged"):
        step_size_loss(derive(models.Stack([models.MultiHead(2, heads=2)] * 2),
                              ICLData(d=2, N=3, Lambda=np.eye(2))))
    with pytest.raises(InputError, match="isotropic"):
        step_size_loss(derive(models.Stack([models.Merged(2)] * 2),
                              ICLData(d=2, N=3, Lambda=np.diag([2.0, 1.0]))))


@pytest.mark.slow
def test_gradient_flow_of_the_whole_stack_finds_the_gd_steps():
    """From small random starts (3 seeds) the exact flow of a 2-layer stack (Ahn et al.'s
    conventions, d = 3, N = 8) ends at the loss of the best step sizes, with every learned
    M_l = u_l Q_l a multiple of I (the layers differ only in their step)."""
    der = setting(2, d=3, N=8, **AHN)
    best = minimal_steps(step_size_loss(der))[0]
    flow = compile_flow(der, backend="numpy")
    for seed in range(3):
        rng = np.random.default_rng(seed)
        theta = flow.pack({k: 0.05 * rng.standard_normal(s)
                           for k, s in der.model.shapes().items()})
        end = flow.unpack(integrate(flow, theta, t_end=400.0).theta[-1])
        assert flow.loss(flow.pack(end)) == pytest.approx(float(best.loss), rel=1e-8)
        steps = sorted(float(end[f"{l}.V"][0, 0]) * np.trace(end[f"{l}.Q"]) / 3 for l in (0, 1))
        assert steps == pytest.approx(sorted(float(a) for a in best.steps), rel=1e-5)
        for l in (0, 1):
            M = end[f"{l}.V"][0, 0] * end[f"{l}.Q"]
            assert np.linalg.norm(M - np.trace(M) / 3 * np.eye(3)) < 1e-6 * np.linalg.norm(M)
