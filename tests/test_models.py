"""Every parameterization through the same engine: exact loss against brute force of the
actual (multi-head) layer, compiled flows against exact values, conservation laws, and the
simulator's parameter gradients against finite differences."""

import numpy as np
import pytest
import sympy as sp

from brute import Components, layer_loss
from icldyn.numerics import compile_flow, integrate
from icldyn.numerics.simulation.sgd import PromptSampler, model_loss_and_grad
from icldyn.theory import ICLData, derive, models

R = sp.Rational
LAMBDA = sp.Matrix([[2, R(1, 2)], [R(1, 2), 1]])
SIGMA_W = sp.Matrix([[1, R(1, 3)], [R(1, 3), 2]])


def rational(shape, seed):
    rng = np.random.default_rng(seed)
    return np.array([R(int(v), 3) for v in rng.integers(-3, 4, size=int(np.prod(shape)))],
                    dtype=object).reshape(shape)


def explicit_heads(model, params, d, d_y):
    """(W_PV, W_KQ) per head written out from the parameterization's definition."""
    D = d + d_y
    M = lambda a: sp.Matrix(a.tolist())  # noqa: E731
    if isinstance(model, models.FullLSA):
        return [(M(params["W_PV"]), M(params["W_KQ"]))]
    heads = []
    for h in range(model.heads):
        W_PV, W_KQ = sp.zeros(D, D), sp.zeros(D, D)
        W_PV[d:, d:] = M(params["V"][h])
        if isinstance(model, models.SeparateKQ):
            W_KQ[:d, :d] = M(params["W_K"][h]).T * M(params["W_Q"][h])
        else:
            W_KQ[:d, :d] = M(params["Q"][h])
        heads.append((W_PV, W_KQ))
    return heads


CASES = [
    (models.MultiHead(2, heads=2, d_y=1), 1), (models.MultiHead(2, heads=2, d_y=2), 2),
    (models.SeparateKQ(2, heads=2, rank=1, d_y=1), 2),
    (models.SeparateKQ(2, heads=1, rank=2, d_y=2), 1),
    (models.FullLSA(2, d_y=1), 1), (models.FullLSA(2, d_y=1), 2), (models.FullLSA(2, d_y=2), 1),
]


@pytest.mark.parametrize("model,n", CASES, ids=lambda v: repr(v))
def test_loss_equals_brute_force_of_the_layer(model, n):
    d, d_y = model.d, model.d_y
    sigma = R(1, 2)
    data = ICLData(d=d, N=n, Lambda=LAMBDA, d_y=d_y, Sigma_w=SIGMA_W, noise=sigma)
    params = {name: rational(shape, seed) for seed, (name, shape)
              in enumerate(model.shapes().items())}
    comp = Components(d, d_y, n, LAMBDA, sigma, SIGMA_W)
    brute = layer_loss(comp, explicit_heads(model, params, d, d_y))
    der = derive(model, data)
    assert sp.expand(der.loss_value(params) - brute) == 0


def test_eigenbasis_tasks_with_separate_kq_against_brute_force():
    model = models.SeparateKQ(2, heads=2, rank=1, d_y=2)
    c = [2, R(1, 2)]
    data = ICLData(d=2, N=2, Lambda=sp.diag(2, 1), d_y=2, tasks="diagonal", Sigma_w=c)
    params = {name: rational(shape, seed + 7) for seed, (name, shape)
              in enumerate(model.shapes().items())}
    comp = Components(2, 2, 2, sp.diag(2, 1), 0, eigen=(sp.eye(2), c))
    brute = layer_loss(comp, explicit_heads(model, params, 2, 2))
    assert sp.expand(derive(model, data).loss_value(params) - brute) == 0


@pytest.mark.slow
@pytest.mark.parametrize("model", [models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 2),
                                   models.FullLSA(3, d_y=2)], ids=repr)
def test_compiled_flow_matches_exact_values_and_conserves(model):
    rng = np.random.default_rng(4)
    A = rng.standard_normal((3, 3))
    data = ICLData(d=3, N=6, Lambda=A @ A.T / 3 + 0.4 * np.eye(3), d_y=model.d_y, noise=0.3,
                   Sigma_w=np.diag([1.0, 0.5, 2.0]))
    der = derive(model, data)
    assert der.conserved and all(c.proved for c in der.conserved)
    params = {k: 0.5 * rng.standard_normal(s) for k, s in model.shapes().items()}
    flows = [compile_flow(der, backend=b).compiled() for b in ("numpy", "numba")]
    theta = flows[0].pack(params)
    exact_loss = float(der.loss_value(params))
    for f in flows:
        assert f.loss(theta) == pytest.approx(exact_loss, rel=1e-11)
    np.testing.assert_allclose(flows[0].grad(theta), flows[1].grad(theta), rtol=1e-11,
                               atol=1e-12)
    exact = der.gradient_value(params)
    sizes = model.sizes()
    grads = flows[0].unpack(flows[0].grad(theta))
    for block in model.blocks():
        got = grads[block.param][block.index(sizes)]
        np.testing.assert_allclose(got, np.array(exact[block.letter.name].tolist(), float),
                                   rtol=1e-9, atol=1e-12)
    traj = integrate(flows[1], theta, t_end=2.0, n_points=5, rtol=1e-11, atol=1e-12)
    assert np.abs(traj.conserved - traj.conserved[0]).max() < 1e-8
    assert traj.loss[-1] < traj.loss[0]


@pytest.mark.parametrize("model", [models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 2),
                                   models.FullLSA(3, d_y=2)], ids=repr)
def test_simulator_parameter_gradient_matches_finite_differences(model):
    rng = np.random.default_rng(6)
    data = ICLData(d=3, N=5, Lambda=np.eye(3), d_y=model.d_y, noise=0.1)
    X, Y, xq, yq = PromptSampler(data).prompts(rng, (1, 3))
    params = {k: rng.standard_normal((1,) + s) for k, s in model.shapes().items()}

    def loss_and_grad(p):
        loss, grads = model_loss_and_grad(model, data, p, (X, Y, xq, yq))
        return loss[0], grads

    _, grads = loss_and_grad(params)
    h = 1e-6
    for name, value in params.items():
        for flat in rng.choice(value.size, size=min(6, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            fd = (loss_and_grad(plus)[0] - loss_and_grad(minus)[0]) / (2 * h)
            assert grads[name][idx] == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_inert_entries_of_full_lsa_have_zero_gradient():
    model = models.FullLSA(2, d_y=1)
    data = ICLData(d=2, N=4, Lambda=np.eye(2))
    flow = compile_flow(derive(model, data))
    rng = np.random.default_rng(0)
    g = flow.unpack(flow.grad(flow.pack({k: rng.standard_normal(s)
                                         for k, s in model.shapes().items()})))
    assert np.all(g["W_PV"][:2, :] == 0) and np.all(g["W_KQ"][:, 2:] == 0)
    assert np.any(g["W_PV"][2:, :] != 0) and np.any(g["W_KQ"][:, :2] != 0)


def test_full_lsa_with_eigenbasis_tasks_through_the_task_cubature():
    """FullLSA's S_yy terms make its loss quartic in W; for the paper's eigenbasis tasks the
    engine derives it conditional on W and averages with the exact cubature of δ: equal to brute
    force of the layer, and the expected GD curve matches SGD (non-diagonal Λ, noise)."""
    from icldyn.numerics import gradient_descent, simulate_sgd
    model = models.FullLSA(2, d_y=2)
    c, sigma = [2, R(1, 2)], R(1, 3)
    data = ICLData(d=2, N=1, Lambda=sp.diag(2, 1), d_y=2, tasks="diagonal", Sigma_w=c,
                   noise=sigma)
    der = derive(model, data)
    assert der.conditional and r"\mathbb{E}_{\delta}" in sp.latex(der.loss)   # shown as such
    params = {name: rational(shape, seed + 3) for seed, (name, shape)
              in enumerate(model.shapes().items())}
    comp = Components(2, 2, 1, sp.diag(2, 1), sigma, eigen=(data.eigenbasis(), c))
    assert sp.expand(der.loss_value(params) - layer_loss(comp, explicit_heads(model, params,
                                                                              2, 2))) == 0
    data = ICLData(d=2, N=4, Lambda=np.array([[1.0, 0.3], [0.3, 0.6]]), d_y=2,
                   tasks="diagonal", Sigma_w=[1.5, 0.6], noise=0.3)
    flow = compile_flow(derive(model, data))
    rng = np.random.default_rng(1)
    init = {"W_PV": 0.2 * rng.standard_normal((4, 4)), "W_KQ": 0.2 * rng.standard_normal((4, 4))}
    gd = gradient_descent(flow, flow.pack(init), lr=0.02, steps=200, every=50)
    sim = simulate_sgd(model, data, init, lr=0.02, batch=32, steps=200, seeds=64, seed=1,
                       record_every=50)
    z = (sim.loss[::50] - gd.loss) / sim.loss_se[::50]
    assert np.abs(z).max() < 4, z
    assert gd.loss[-1] < 0.6 * gd.loss[0]
