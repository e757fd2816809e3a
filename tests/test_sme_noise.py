"""The SME's cheap noises (Σ interpolated along a path), and its compiled loop against the
NumPy reference."""

import numpy as np
import pytest

from icldyn.numerics import compile_flow
from icldyn.numerics.noise import compile_covariance, smeloop
from icldyn.numerics.noise.sme import PathNoise, simulate_sme
from icldyn.theory import ICLData, derive, models
from icldyn.theory.errors import DivergenceError, InputError


def test_path_noise_interpolates_linearly_and_holds_the_ends():
    noise = PathNoise([0, 10, 30], np.stack([np.eye(2), 3 * np.eye(2), np.diag([1.0, 5.0])]))
    assert np.allclose(noise.matrix(5), 2 * np.eye(2))
    assert np.allclose(noise.matrix(20), np.diag([2.0, 4.0]))
    assert np.allclose(noise.matrix(-1), np.eye(2)) and np.allclose(noise.matrix(99),
                                                                   np.diag([1.0, 5.0]))
    with pytest.raises(InputError, match="^steps"):
        PathNoise([0, 0], np.stack([np.eye(2)] * 2))


FINITE = np.array([[[1.0, -0.5], [0.0, 1.2]], [[0.4, 1.0], [-0.8, 0.0]], [[0.0, 0.3], [1.1, 0.6]]])


@pytest.fixture(scope="module")
def flows():
    """One derivation with finite vector tasks (its covariance has task-averaged terms), as a
    NumPy flow (the reference loop) and a Numba flow (the compiled loop)."""
    der = derive(models.Merged(2, d_y=2),
                 ICLData(d=2, N=3, Lambda=[[2, 1], [1, 2]], d_y=2, tasks=FINITE, noise=0.3))
    return compile_flow(der, "numpy"), compile_flow(der).compiled()


@pytest.mark.slow              # Numba compiles the SME kernels: ~40 s cold
def test_compiled_covariance_equals_the_numpy_one(flows):
    _, flow = flows
    cov = compile_covariance(flow)
    tables = smeloop.encode(flow, cov)
    assert len(cov.groups) and len(cov.task_groups)         # both kinds of block are covered
    kernel = smeloop.kernels(flow)[0]["sme_covariance"]
    for theta in 0.7 * np.random.default_rng(0).standard_normal((3, flow.size)):
        S = kernel(theta, flow.grad(theta), *tables)
        assert np.allclose(S, cov.matrix(theta), rtol=1e-12, atol=1e-12 * np.abs(S).max())


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["own", "refresh", "path"])
def test_compiled_sme_repeats_the_numpy_ensemble(flows, noise):
    """Same seed, same draws: the paths agree to the rounding of Σ^{1/2} (Σ is singular along
    the symmetry directions, where eigh's rounding ε shows as √ε)."""
    reference, flow = flows
    theta0 = 0.1 + 0.05 * np.arange(flow.size)
    cov = compile_covariance(reference)
    kw = {"refresh": {"refresh": [0, 4, 9]},
          "path": {"path_noise": PathNoise.along(cov, np.outer(np.linspace(1, 2, 12), theta0),
                                                 [0, 5, 11])}}.get(noise, {})
    runs = [simulate_sme(f, theta0, 0.01, 16, 13, replicas=3, seed=7, record_every=5, **kw)
            for f in (reference, flow)]
    assert runs[0].steps.tolist() == runs[1].steps.tolist() == [0, 5, 10, 13]
    assert np.abs(runs[0].theta[:, -1] - theta0).max() > 0.02            # the paths moved
    assert np.allclose(runs[0].theta, runs[1].theta, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_compiled_sme_stops_at_the_same_diverging_step(flows):
    """A run that blows up stops at the same step with the same error (here the loss of the
    partial result overflows before θ passes RUNAWAY: a divergence, not bad input)."""
    errors = []
    for flow in flows:
        with pytest.raises(DivergenceError) as info:
            simulate_sme(flow, np.full(flow.size, 2.0), 0.3, 1, 200, replicas=2, seed=0,
                         path_noise=PathNoise([0], np.eye(flow.size)[None]))
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


@pytest.fixture(scope="module")
def scalar_flow():
    return compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))), "numpy")


def _check_divergence(info, lr, batch):
    """One line naming lr and batch and the fix; the partial result ends before the step named
    and holds only finite values."""
    error, partial = info.value, info.value.partial
    assert "\n" not in str(error) and f"lr {lr:g}" in str(error)
    assert f"batch {batch}" in str(error) and "lower lr" in str(error)
    assert error.step >= 1 and partial.steps[-1] < error.step
    assert np.isfinite(partial.theta).all() and np.isfinite(partial.losses).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("every", [1, 3, 50])
@pytest.mark.parametrize("lr", [0.5, 1.0, 2.0])
def test_a_diverging_sme_raises_divergence_instead_of_returning(scalar_flow, lr, every, seed):
    """Whatever step blows up (the last of a record's steps included, or one whose loss
    overflows float64 while θ is still under RUNAWAY), the run raises DivergenceError."""
    with pytest.raises(DivergenceError) as info:
        simulate_sme(scalar_flow, {"V": 1.0, "Q": 1.0}, lr=lr, batch=4, steps=50, replicas=8,
                     seed=seed, record_every=every)
    _check_divergence(info, lr, 4)


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["own", "refresh"])
def test_a_diverging_compiled_sme_raises_divergence(flows, scalar_flow, noise):
    """The compiled loop too, at the NumPy reference's step, when Σ(θ) overflows before θ
    passes RUNAWAY (its eigh would raise on the non-finite matrix)."""
    if noise == "own":
        pair = (scalar_flow, compile_flow(scalar_flow.der).compiled())
        theta0, lr, batch, kw = np.ones(2), 1.0, 4, dict(replicas=8, seed=0)
    else:
        pair, lr, batch = flows, 0.3, 2
        theta0, kw = np.ones(flows[0].size), dict(replicas=3, seed=1, refresh=range(100))
    errors = []
    for flow in pair:
        with pytest.raises(DivergenceError) as info:
            simulate_sme(flow, theta0, lr, batch, 100, **kw)
        _check_divergence(info, lr, batch)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
