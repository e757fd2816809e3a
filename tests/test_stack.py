"""Stacks of linear-attention layers (models.Stack): the derived loss against an independent
brute-force expectation (exact rationals, tests/stack_oracle.py, written without reading the
package), the simulator against the oracle's backpropagation, the compiled flow against Monte
Carlo of the actual network, symmetries, and SGD of the stacked network against the theory."""

import numpy as np
import pytest
import sympy as sp

import stack_oracle as oracle
from icldyn.numerics import compile_flow, gradient_descent, integrate, simulate_sgd
from icldyn.numerics.simulation.sgd import block_z_scores, network_loss_and_grad, pullback
from icldyn.theory import ICLData, InputError, derive, models

R = sp.Rational
LAMBDA = sp.Matrix([[R(3, 2), R(1, 4)], [R(1, 4), R(1)]])
SIGMA_W = sp.Matrix([[R(1), R(1, 2)], [R(1, 2), R(2)]])
FINITE = [[[R(1), R(-1, 2)]], [[R(1, 4), R(1)]], [[R(-3, 4), R(1, 2)]]]
MASKS = [(True, False), (False, True), (True, True), (False, False)]
LAYERS = {"merged": lambda: [models.Merged(2), models.Merged(2)],
          "multihead+separatekq": lambda: [models.MultiHead(2, heads=2),
                                           models.SeparateKQ(2, heads=1, rank=1)]}


def floats(a) -> np.ndarray:
    return np.array(a.tolist() if hasattr(a, "tolist") else a, dtype=float)


def dyadic_params(model, seed):
    """Random parameters k/8 (exact in binary floating point, so the float weights the oracle
    receives are the same rationals the derivation is evaluated at)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in model.shapes().items():
        value = (rng.integers(-6, 7, size=shape) / 8).tolist()
        out[name] = (sp.Array(value) if len(shape) == 3 else sp.Matrix(value)).applyfunc(
            sp.nsimplify)
    return out


def test_stack_api_and_weights():
    d = 3
    m = models.Stack([models.Merged(d), models.Merged(d)])
    assert m.shapes() == {"0.V": (1, 1), "0.Q": (d, d), "1.V": (1, 1), "1.Q": (d, d)}
    m = models.Stack([models.MultiHead(d, heads=2), models.SeparateKQ(d, heads=2, rank=1)])
    assert list(m.shapes()) == ["0.V", "0.Q", "1.V", "1.W_K", "1.W_Q"]
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s) for k, s in m.shapes().items()}
    W = m.attention_weights(params)
    assert [len(layer) for layer in W] == [2, 2] and W[0][0][0].shape == (d + 1, d + 1)
    for h in range(2):
        np.testing.assert_array_equal(W[0][h][0][d:, d:], params["0.V"][h])
        np.testing.assert_array_equal(W[0][h][1][:d, :d], params["0.Q"][h])
        np.testing.assert_allclose(W[1][h][1][:d, :d],
                                   params["1.W_K"][h].T @ params["1.W_Q"][h], rtol=1e-15)
        assert np.count_nonzero(W[1][h][0][:d]) == 0 and np.count_nonzero(W[1][h][1][d:]) == 0
    one = models.FullLSA(2).attention_weights({"W_PV": np.ones((3, 3)), "W_KQ": 2.0})
    np.testing.assert_array_equal(one[0][0][0], np.ones((3, 3)))      # inert entries kept
    np.testing.assert_array_equal(one[0][0][1], 2 * np.eye(3))


@pytest.mark.parametrize("bad,match", [
    (lambda: models.Stack([]), "layers"),
    (lambda: derive(models.Stack([models.FullLSA(2), models.Merged(2)]),
                    ICLData(d=2, N=3, Lambda=np.eye(2))), "cannot be derived"),
    (lambda: models.Stack([models.Merged(2), models.Merged(3)]), "d, d_y"),
    (lambda: models.Stack([models.SeparateKQ(2, rank=1), models.SeparateKQ(2, rank=2)]),
     "ranks"),
    (lambda: models.Stack([models.Merged(2)], query_in_keys="no"), "query_in_keys"),
    (lambda: models.Merged(2).attention_weights({"V": 1.0}), "params")])
def test_stack_bad_input_is_a_clear_error(bad, match):
    with pytest.raises(InputError, match=match):
        bad()


def test_a_stack_with_a_full_layer_is_simulated():
    """FullLSA inside a stack: all of W_PV and W_KQ are live (shapes, weights, SGD of the actual
    network, whose gradient is checked against the oracle's), though its loss is not derived."""
    m = models.Stack([models.FullLSA(2), models.SeparateKQ(2, heads=2, rank=1)])
    assert list(m.shapes()) == ["0.W_PV", "0.W_KQ", "1.V", "1.W_K", "1.W_Q"]
    rng = np.random.default_rng(3)
    params = {k: 0.3 * rng.standard_normal(s) for k, s in m.shapes().items()}
    W = m.attention_weights(params)
    np.testing.assert_array_equal(W[0][0][0], params["0.W_PV"])
    np.testing.assert_array_equal(W[0][0][1], params["0.W_KQ"])
    data = ICLData(d=2, N=3, Lambda=np.eye(2))
    from icldyn.numerics.simulation.sgd import PromptSampler, model_loss_and_grad
    prompts = PromptSampler(data).prompts(rng, (1, 4))
    loss, grads = model_loss_and_grad(m, data, {k: v[None] for k, v in params.items()}, prompts)
    losses, ref = oracle.loss_and_grad(W, *(p[0] for p in prompts))
    assert loss[0] == pytest.approx(losses.mean(), rel=1e-12)
    np.testing.assert_allclose(grads["0.W_PV"][0], ref[0][0][0].mean(axis=0), rtol=1e-10,
                               atol=1e-14)
    np.testing.assert_allclose(grads["0.W_KQ"][0], ref[0][0][1].mean(axis=0), rtol=1e-10,
                               atol=1e-14)
    sim = simulate_sgd(m, data, params, lr=0.01, batch=8, steps=5, seeds=2)
    assert np.all(np.isfinite(sim.loss))


def test_one_layer_stack_is_the_model():
    """A stack of one layer derives the one-layer model's loss (letters renamed)."""
    from icldyn.theory.words import rename_letter
    data = ICLData(d=2, N=4, Lambda="full")
    for layer in (models.Merged(2), models.SeparateKQ(2, heads=2, rank=1)):
        stacked = derive(models.Stack([layer]), data).loss_poly
        for name in layer.letters():
            stacked = rename_letter(stacked, f"{name}__1", name)
        assert stacked.terms == derive(layer, data).loss_poly.terms


@pytest.mark.parametrize("query_in_keys,negate_readout", MASKS)
def test_simulator_network_equals_oracle_backprop(query_in_keys, negate_readout):
    """Three layers, two heads, d_y = 2, every weight entry live: loss and gradient of the
    simulator's hand reverse mode equal the oracle's to rounding."""
    rng = np.random.default_rng(1)
    d, d_y, N, B = 2, 2, 3, 5
    D = d + d_y
    W = [[(0.3 * rng.standard_normal((D, D)), 0.3 * rng.standard_normal((D, D)))
          for _ in range(2)] for _ in range(3)]
    X, Y = rng.standard_normal((B, N, d)), rng.standard_normal((B, N, d_y))
    xq, yq = rng.standard_normal((B, d)), rng.standard_normal((B, d_y))
    losses, grads = oracle.loss_and_grad(W, X, Y, xq, yq, query_in_keys, negate_readout)
    stacked = [tuple(np.stack([head[m] for head in layer])[None] for m in range(2)) for layer in W]
    loss, ours = network_loss_and_grad(stacked, X[None], Y[None], xq[None], yq[None], d,
                                       query_in_keys, negate_readout)
    assert loss[0] == pytest.approx(losses.mean(), rel=1e-13)
    for l, layer in enumerate(W):
        for h in range(2):
            for m in range(2):
                np.testing.assert_allclose(ours[l][m][0, h], grads[l][h][m].mean(axis=0),
                                           rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("layers", sorted(LAYERS))
@pytest.mark.parametrize("N", [1, 2])
@pytest.mark.parametrize("query_in_keys,negate_readout", MASKS)
def test_derived_loss_equals_brute_force_exactly(layers, N, query_in_keys, negate_readout):
    """Non-diagonal Λ, Σ_w ≠ I, σ = ½: the derived loss (exact in N) at N = 1, 2 equals the
    oracle's brute-force Gaussian expectation of the network's polynomial, as rationals."""
    model = models.Stack(LAYERS[layers](), query_in_keys, negate_readout)
    data = ICLData(d=2, N=N, Lambda=LAMBDA, Sigma_w=SIGMA_W, noise=R(1, 2))
    params = dyadic_params(model, seed=N)
    ours = derive(model, data).loss_value(params)
    weights = model.attention_weights({k: floats(v) for k, v in params.items()})
    exact = oracle.exact_loss(weights, floats(LAMBDA), N, d_y=1, Sigma_w=floats(SIGMA_W),
                              sigma=R(1, 2), query_in_keys=query_in_keys,
                              negate_readout=negate_readout)
    assert sp.nsimplify(ours) == exact


@pytest.mark.parametrize("tasks", ["finite", "diagonal"])
def test_derived_loss_equals_brute_force_for_other_task_laws(tasks):
    """A finite task set (P = 3) and the paper's eigenbasis tasks (d_y = d, Λ non-diagonal
    with rational eigenvectors), both key masks in one stack each: exact, resp. to the 30
    digits to which ICLData computes Λ's eigenbasis."""
    d_y = 1 if tasks == "finite" else 2
    Lam = sp.Matrix([[R(5, 2), R(3, 2)], [R(3, 2), R(5, 2)]])     # eigenvalues 4, 1
    for flags in ((True, False), (False, True)):
        model = models.Stack([models.Merged(2, d_y=d_y), models.Merged(2, d_y=d_y)], *flags)
        data = ICLData(d=2, N=2, Lambda=Lam, d_y=d_y, noise=R(1, 2),
                       tasks=np.array(FINITE, dtype=object) if tasks == "finite" else tasks)
        params = dyadic_params(model, seed=3)
        ours = derive(model, data).loss_value(params)
        weights = model.attention_weights({k: floats(v) for k, v in params.items()})
        exact = oracle.exact_loss(
            weights, floats(Lam), 2, d_y=d_y, sigma=R(1, 2), query_in_keys=flags[0],
            negate_readout=flags[1], tasks=floats(FINITE) if tasks == "finite" else tasks)
        if tasks == "finite":
            assert sp.nsimplify(ours) == exact
        else:       # Λ's eigenbasis is computed to 30 digits (ICLData), the rest exactly
            assert abs(ours - exact) < 1e-25 * abs(exact)


def test_compiled_gradient_equals_monte_carlo_of_the_network():
    """Compiled loss and gradient of a MultiHead + SeparateKQ stack against 3·10⁵ prompts of the
    oracle's network (gradients pulled back to the parameters by the simulator's product rule,
    itself checked against finite differences): every |z| < 4 (15 entries; P(max |z| > 4) ≈
    15 · 6·10⁻⁵ for a correct gradient)."""
    model = models.Stack(LAYERS["multihead+separatekq"](), query_in_keys=False)
    data = ICLData(d=2, N=3, Lambda=floats(LAMBDA), Sigma_w=floats(SIGMA_W), noise=0.5)
    params = {k: floats(v) for k, v in dyadic_params(model, seed=5).items()}
    flow = compile_flow(derive(model, data), backend="numpy")
    theta = flow.pack(params)
    weights = model.attention_weights(params)
    kwargs = dict(d_y=1, Sigma_w=floats(SIGMA_W), sigma=0.5, query_in_keys=False,
                  prompts=3 * 10**5, seed=11)
    mean, se = oracle.mc_loss(weights, floats(LAMBDA), 3, **kwargs)
    assert abs(flow.loss(theta) - mean) < 4 * se
    from icldyn.numerics.simulation.sgd import letter_values
    letters = letter_values(model, {k: v[None] for k, v in params.items()})

    def pulled(g):          # the oracle's nested weight gradient on the model's parameters
        stacked = [tuple(np.stack([head[m] for head in layer])[None] for m in range(2))
                   for layer in g]
        return flow.pack({k: v[0] for k, v in pullback(model, data, letters, stacked).items()})
    # 30 independent batches of 10⁴ prompts: mean and SE of the pulled-back gradient across them
    batches = np.array([pulled(oracle.mc_grad(weights, floats(LAMBDA), 3, **{
        **kwargs, "prompts": 10**4, "seed": 100 + b})[0]) for b in range(30)])
    mc, se = batches.mean(axis=0), batches.std(axis=0, ddof=1) / np.sqrt(len(batches))
    z = (flow.grad(theta) - mc) / se
    assert np.abs(z).max() < 4, z


def test_stack_conserves_each_layers_rescaling():
    """Lifted per-layer symmetries are proved on the stack's own polynomials and hold along the
    exact flow."""
    model = models.Stack([models.Merged(2), models.Merged(2)], query_in_keys=False,
                         negate_readout=True)
    der = derive(model, ICLData(d=2, N=4, Lambda=np.diag([2.0, 1.0])))
    assert sorted(law.name for law in der.conserved) == ["‖V__1‖² - ‖Q__1‖²",
                                                        "‖V__2‖² - ‖Q__2‖²"]
    assert all(law.proved for law in der.conserved)
    flow = compile_flow(der, backend="numpy")
    rng = np.random.default_rng(2)
    theta = flow.pack({k: 0.3 * rng.standard_normal(s) for k, s in model.shapes().items()})
    traj = integrate(flow, theta, t_end=20.0)
    assert traj.loss[-1] < 0.8 * traj.loss[0]
    assert np.abs(traj.conserved - traj.conserved[0]).max() < 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("layers", [2, 3])
def test_sgd_of_the_stacked_network_matches_theory(layers):
    """Mean SGD loss of the actual stacked network (32 seeds, batch 64) against the exact
    expected GD curve: block z-scores (SE across seeds) below 4. SGD's own noise lifts its mean
    loss above expected GD by O(η/B) (at lr 0.01 the last blocks of the 2-layer run reach
    z ≈ 4), so the rate is 0.005: the bias is then about one SE by t = 3."""
    model = models.Stack([models.Merged(2)] * layers)
    data = ICLData(d=2, N=6, Lambda=floats(LAMBDA), noise=0.2)
    rng = np.random.default_rng(4)
    init = {k: 0.4 * rng.standard_normal(s) for k, s in model.shapes().items()}
    steps = 600 if layers == 2 else 200     # 3 layers: 0.3 s per generated-NumPy gradient
    sim = simulate_sgd(model, data, init, lr=0.005, batch=64, steps=steps, seeds=32, seed=1)
    flow = compile_flow(derive(model, data), backend="numpy")
    theory = gradient_descent(flow, flow.pack(init), lr=0.005, steps=steps).loss
    z = block_z_scores(sim.losses[:-1], theory[:-1], 25)
    assert np.abs(z).max() < 4, z
    assert theory[-1] < (0.8 if layers == 2 else 0.95) * theory[0]


def test_staged_learning_through_two_layers():
    """The paper's eigenbasis tasks (s = 2, 1, ½; N = 16) through 2 Merged layers with Ahn et
    al.'s conventions, from V = −εI, Q = εI: in every layer the modes are learned in the order
    of s (half-times of a_α = V_αα Q_αα), the first mode at the one-layer time within 25 %, and
    the stack ends far below one layer (measured: 0.088 against 0.332 at t = 60)."""
    s = np.array([2.0, 1.0, 0.5])
    data = ICLData(d=3, N=16, Lambda=np.diag(s), d_y=3, tasks="diagonal")
    half, loss = {}, {}
    for L in (1, 2):
        model = models.Stack([models.Merged(3, d_y=3)] * L, query_in_keys=False,
                             negate_readout=True)
        flow = compile_flow(derive(model, data), backend="numpy")
        init = {f"{l}.{n}": v * 1e-3 * np.eye(3) for l in range(L)
                for n, v in (("V", -1.0), ("Q", 1.0))}
        traj = integrate(flow, flow.pack(init), t_end=60.0)
        loss[L] = traj.loss[-1]
        for l in range(L):
            a = np.array([[p[f"{l}.V"][k, k] * p[f"{l}.Q"][k, k] for k in range(3)]
                          for p in map(flow.unpack, traj.theta)])
            half[L, l] = [traj.t[np.argmax(np.abs(a[:, k]) >= 0.5 * abs(a[-1, k]))]
                          for k in range(3)]
    for key, times in half.items():
        assert times[0] < times[1] <= times[2], (key, times)
        assert times[0] == pytest.approx(half[1, 0][0], rel=0.25)
    assert loss[2] < 0.5 * loss[1]
