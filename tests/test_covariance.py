"""The exact single-prompt gradient covariance against Monte Carlo of the actual layer, and the
SME ensemble (SGD beyond its mean) against simulate_sgd ensembles."""

import numpy as np
import pytest
import sympy as sp

from icldyn.numerics import compile_flow, gradient_descent, simulate_sgd
from icldyn.numerics.noise.covariance import compile_covariance
from icldyn.numerics.simulation.sgd import PromptSampler, model_loss_and_grad
from icldyn.numerics.noise.sme import simulate_sme, sqrt_psd
from icldyn.theory import ICLData, covariance, derive, gaussian, models

LAMBDA = np.array([[1.0, 0.3], [0.3, 0.6]])


def prompt_gradients(flow, theta, n, seed):
    """n single-prompt gradients of the actual layer at θ, in θ's ordering (rows)."""
    model, data = flow.model, flow.data
    params = {k: np.repeat(v[None], n, axis=0) for k, v in flow.unpack(theta).items()}
    prompts = PromptSampler(data).prompts(np.random.default_rng(seed), (n, 1))
    _, grads = model_loss_and_grad(model, data, params, prompts)
    return np.concatenate([grads[k].reshape(n, -1) for k in flow.shapes], axis=1)


FINITE = np.array([[[1.0, -0.5], [0.0, 1.2]], [[0.4, 1.0], [-0.8, 0.0]], [[0.0, 0.3], [1.1, 0.6]]])


@pytest.mark.parametrize("model,tasks", [
    (models.Merged(2), "gaussian"), (models.Merged(2, d_y=2), "finite"),
    (models.Merged(2, d_y=2), "diagonal"),
    pytest.param(models.SeparateKQ(2, heads=1, rank=1), "gaussian", marks=pytest.mark.slow),
    pytest.param(models.FullLSA(2), "gaussian", marks=pytest.mark.slow),    # x_q to order 12
    pytest.param(models.FullLSA(2, d_y=2), "diagonal", marks=pytest.mark.slow)],
    ids=repr)
def test_covariance_matches_monte_carlo(model, tasks):
    if tasks == "finite":     # three task matrices: averaged exactly, up to any moment
        data = ICLData(d=2, N=3, Lambda=LAMBDA, d_y=2, tasks=FINITE, noise=0.3)
    elif tasks == "diagonal":  # the paper's tasks: 4th moments of δ through the cubature
        data = ICLData(d=2, N=3, Lambda=LAMBDA, d_y=2, tasks="diagonal", Sigma_w=[1.5, 0.6],
                       noise=0.3)
    else:
        data = ICLData(d=2, N=3, Lambda=LAMBDA, Sigma_w=[[1.0, -0.2], [-0.2, 0.8]], noise=0.3)
    flow = compile_flow(derive(model, data), "numpy")
    rng = np.random.default_rng(1)
    theta = 0.6 * rng.standard_normal(flow.size)
    cov = compile_covariance(flow)
    S = cov.matrix(theta)
    assert np.allclose(S, S.T) and np.linalg.eigvalsh(S).min() > -1e-10 * np.abs(S).max()
    G = prompt_gradients(flow, theta, 200_000, seed=0)
    centred = G - G.mean(axis=0)
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(axis=0) / np.sqrt(len(G))
    noisy = se > 0                                           # inert entries carry no noise
    assert np.all(S[~noisy] == 0)
    z = (products.mean(axis=0)[noisy] - S[noisy]) / se[noisy]
    assert np.abs(z).max() < 5, np.round(z, 2)              # entrywise Monte-Carlo z-scores
    # the mean of the prompt gradients is the derived gradient
    active = noisy.diagonal()
    zg = ((G.mean(axis=0) - flow.grad(theta))[active]
          / (G.std(axis=0)[active] / np.sqrt(len(G))))
    assert np.abs(zg).max() < 5 and np.all(flow.grad(theta)[~active] == 0)
    # a stack of θ gives the same blocks as one θ at a time
    stack = np.stack([theta, 0.5 * theta])
    assert np.allclose(cov.matrix(stack)[1], cov.matrix(0.5 * theta))


def test_symmetry_direction_carries_no_noise():
    """Every prompt's loss is invariant under V → e^s V, Q → e^{-s} Q, so Σ annihilates the
    generator (V, −Q) of that symmetry."""
    data = ICLData(d=2, N=3, Lambda=LAMBDA, noise=0.2)
    flow = compile_flow(derive(models.Merged(2), data), "numpy")
    theta = flow.pack({"V": 0.7, "Q": [[0.4, -0.2], [0.3, 0.5]]})
    p = flow.unpack(theta)
    generator = flow.pack({"V": p["V"], "Q": -p["Q"]})
    S = compile_covariance(flow).matrix(theta)
    assert np.linalg.norm(S @ generator) < 1e-12 * np.linalg.norm(S)


def test_sqrt_psd():
    A = np.random.default_rng(0).standard_normal((3, 4, 4))
    S = A @ A.swapaxes(-1, -2)
    for M in S:                               # one matrix at a time (Numba compiles it too)
        R = sqrt_psd(M)
        assert np.allclose(R @ R, M) and np.allclose(R, R.T)


def test_task_cubature_reproduces_the_eigenbasis_task_moments():
    """E[W_ab W_cd] (the law the engine uses) and the Gaussian fourth moments of δ, exactly."""
    data = ICLData(d=2, N=3, Lambda=[[2, 1], [1, 2]], d_y=2, tasks="diagonal", Sigma_w=[2, 1])
    rule, U, c = data.task_cubature(), data.eigenbasis(), data.Sigma_w
    assert sum(rule.weights) == 1
    delta = [U.T * W * U for W in rule]                    # diag(δ) at each node
    second = sum((w * D[0, 0] * D[1, 1] for w, D in zip(rule.weights, delta)), 0)
    fourth = [sum((w * D[k, k] ** 4 for w, D in zip(rule.weights, delta)), 0) for k in (0, 1)]
    mixed = sum((w * D[0, 0] ** 2 * D[1, 1] ** 2 for w, D in zip(rule.weights, delta)), 0)
    small = lambda v: abs(float(v)) < 1e-25               # noqa: E731 (U has 30 digits)
    assert small(second) and small(mixed - c[0] * c[1])
    assert all(small(f - 3 * c[k] ** 2) for k, f in enumerate(fourth))


@pytest.mark.slow
def test_sme_ensemble_matches_sgd_ensemble():
    """At η = 0.02, B = 64 the SME (derived drift and covariance only) reproduces SGD's mean
    loss, its spread across seeds, and SGD's drift of the conserved quantity away from GD."""
    data = ICLData(d=2, N=4, Lambda=LAMBDA, noise=0.2)
    model = models.Merged(2)
    flow = compile_flow(derive(model, data), "numpy")
    init = {"V": 0.5, "Q": [[0.55, 0.1], [-0.05, 0.45]]}
    lr, B, steps, R = 0.02, 64, 200, 384
    sme = simulate_sme(flow, init, lr, B, steps, replicas=R, seed=1, record_every=100)
    sim = simulate_sgd(model, data, init, lr=lr, batch=B, steps=steps, seeds=R, seed=2,
                       record_every=100)
    gd = gradient_descent(flow, flow.pack(init), lr=lr, steps=steps)
    theta_sgd = sim.theta()[:, -1]
    loss_sgd = np.array([flow.loss(t) for t in theta_sgd])           # population loss
    cons_sgd = np.array([flow.conserved(t)[0] for t in theta_sgd])
    loss_sme, cons_sme = sme.losses[-1], sme.conserved[-1][:, 0]

    def z(a, b):
        return (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))

    assert abs(z(loss_sme, loss_sgd)) < 4
    assert abs(z(cons_sme, cons_sgd)) < 4
    # the drift of the conserved quantity is SGD's own (GD keeps it to O(η²) per step)
    assert (gd.conserved[-1, 0] - cons_sgd.mean()) / (cons_sgd.std() / np.sqrt(R)) > 10
    # spread of the loss across seeds: interquartile ranges agree within bootstrap error
    rng = np.random.default_rng(0)

    def iqr(x):
        return np.subtract(*np.quantile(x, [0.75, 0.25]))

    boot = [iqr(rng.choice(loss_sme, R)) - iqr(rng.choice(loss_sgd, R)) for _ in range(300)]
    assert abs(iqr(loss_sme) - iqr(loss_sgd)) < 4 * np.std(boot)


@pytest.mark.parametrize("tasks", ["gaussian", "finite", "diagonal"])
def test_symbolic_covariance_block_equals_the_compiled_matrix(tasks):
    """Cov(A_Q, B_Q) from the trace polynomial, with probes E_ij, E_kl, is the compiled
    matrix's (Q_ij, Q_kl) entry; the same block as SymPy has the probes as symbols. With a
    finite task set the subtracted mean product uses two independent draws of the task; with
    eigenbasis tasks the conditional second moment is averaged by the exact cubature."""
    import sympy as sp

    d_y = 2 if tasks == "diagonal" else 1
    data = ICLData(d=2, N=3, Lambda=LAMBDA, noise=0.2, d_y=d_y,
                   tasks=FINITE[:, :1, :] if tasks == "finite" else tasks)
    der = derive(models.Merged(2, d_y=d_y), data)
    flow = compile_flow(der, "numpy")
    params = {"V": 0.7, "Q": [[0.4, -0.2], [0.3, 0.5]]}
    S = compile_covariance(flow).matrix(flow.pack(params))
    cov = der.gradient_covariance()
    poly = cov.covariance("Q", "Q")
    pos = flow.letter_positions()["Q"]
    for (i, j), (k, m) in (((0, 1), (1, 0)), ((1, 1), (0, 0))):
        values = {**cov.values(params), "A_Q": sp.zeros(2, 2), "B_Q": sp.zeros(2, 2)}
        values["A_Q"][i, j] = values["B_Q"][k, m] = 1
        assert float(poly.evaluate(values)) == pytest.approx(S[pos[i, j], pos[k, m]], rel=1e-10)
    assert {"A_Q", "B_Q"} <= {str(s) for s in cov.to_sympy("Q", "Q").free_symbols}


@pytest.mark.parametrize("model", [models.MultiHead(2, heads=2),
                                   models.SeparateKQ(2, heads=2, rank=1)], ids=repr)
def test_product_form_noise_is_the_chain_rule_of_one_kernel(model):
    """For every product-form model (d_y = 1) the gradient covariance is J Σ_M(M) Jᵀ with
    J = ∂vec M/∂θ and Σ_M the kernel derived once on the Merged model (product_noise): the
    model's own derived covariance (compiled) equals the kernel's chain rule."""
    from icldyn.theory.productform import merged_counterpart, product_noise
    data = ICLData(d=2, N=3, Lambda=LAMBDA, Sigma_w=[[1.0, -0.2], [-0.2, 0.8]], noise=0.3)
    der = derive(model, data)
    flow = compile_flow(der, "numpy")
    theta = 0.6 * np.random.default_rng(3).standard_normal(flow.size)

    def M_of(th):
        p = flow.unpack(th)
        Q = p["Q"] if "Q" in p else p["W_K"].swapaxes(1, 2) @ p["W_Q"]
        return np.einsum("h,hij->ij", p["V"][:, 0, 0], Q)

    M = M_of(theta)          # M is affine in each single entry of θ: exact differences
    J = np.array([(M_of(theta + e) - M).ravel() for e in np.eye(flow.size)])
    kernel = product_noise(der)
    vals = merged_counterpart(der).values({"V": 1, "Q": M.tolist()})
    vals["M"] = vals["Q"]
    units = [np.eye(4)[k].reshape(2, 2).tolist() for k in range(4)]
    Sigma_M = np.array([[float(kernel.evaluate({**vals, "A_M": sp.Matrix(A), "B_M": sp.Matrix(B)}))
                         for B in units] for A in units])
    S = compile_covariance(flow).matrix(theta)
    np.testing.assert_allclose(S, J @ Sigma_M @ J.T, rtol=1e-9, atol=1e-12 * np.abs(S).max())


@pytest.mark.slow
def test_full_lsa_noise_on_its_invariant_set_matches_monte_carlo():
    """The FullLSA noise printed in fulllsa.tex: on P₁ = Q₂ = 0 along Q₁ = qI, P₂ = u
    (Λ = λI), the blocks coupling (P₂, Q₁) to (P₁, Q₂) vanish and the blocks off the set are
    c · tr(A Bᵀ), i.e. c times the identity over matching entries — against the sample
    covariance of the actual layer's per-prompt gradients (entrywise z-scores, 2·10⁵ prompts)."""
    from icldyn.theory.catalogue import full_noise_blocks
    from icldyn.theory.data import LAMBDA_ISO, N_SYM
    from icldyn.theory.words import dim_symbol

    lam, N, u, q = 1.3, 5, 0.9, 0.4
    values = {LAMBDA_ISO: lam, N_SYM: N, dim_symbol("x"): 2, dim_symbol("y"): 1,
              sp.Symbol("u"): u, sp.Symbol("q"): q}
    flow = compile_flow(derive(models.FullLSA(2), ICLData(d=2, N=N, Lambda=lam * np.eye(2))),
                        "numpy")
    W_PV, W_KQ = np.zeros((3, 3)), np.zeros((3, 3))
    W_PV[2, 2], W_KQ[:2, :2] = u, q * np.eye(2)
    G = prompt_gradients(flow, flow.pack({"W_PV": W_PV, "W_KQ": W_KQ}), 200_000, seed=3)
    centred = G - G.mean(axis=0)
    pos = {k: np.ravel(v) for k, v in flow.letter_positions().items()}
    for (L, M), block in full_noise_blocks().items():
        products = centred[:, pos[L], None] * centred[:, None, pos[M]]
        if L in ("P1", "Q2") and M in ("P1", "Q2"):         # off the set: c · tr(A_L B_Mᵀ)
            assert {str(t) for t in block.atoms(sp.Trace)} == {f"Trace(A_{L}*B_{M}.T)"}
            c = block.replace(lambda e: isinstance(e, sp.Trace), lambda e: 1).subs(values)
            expected = float(c) * np.eye(len(pos[L]))
        else:                                                # coupling the set to the rest
            assert block == 0
            expected = np.zeros(products.shape[1:])
        z = (products.mean(axis=0) - expected) / (products.std(axis=0) / np.sqrt(len(G)))
        assert np.abs(z).max() < 5, (L, M, np.round(z, 2))


def test_block_on_a_set_equals_the_block_evaluated_there():
    """``on_set``: letters set to zero drop their terms and identity letters fold into the
    coefficients — the same number as evaluating the whole block with those matrices (the
    reduced block is evaluated with random values there: it must no longer hold them)."""
    from icldyn.theory import InputError

    data = ICLData(d=2, N=3, Lambda=LAMBDA, noise=0.2, d_y=2, tasks="diagonal")
    cov = derive(models.Merged(2, d_y=2), data).gradient_covariance()
    rng = np.random.default_rng(0)
    probes = {"A_Q": sp.Matrix(rng.standard_normal((2, 2))),
              "B_Q": sp.Matrix(rng.standard_normal((2, 2)))}
    for params, zero, identity in (({"V": sp.zeros(2, 2), "Q": sp.eye(2) / 3}, ("V",), {}),
                                   ({"V": 0.7 * sp.eye(2), "Q": sp.zeros(2, 2)}, ("Q",),
                                    {"V": 0.7})):
        whole = cov.covariance("Q", "Q").evaluate({**cov.values(params), **probes})
        elsewhere = {**params, **{n: sp.Matrix(rng.standard_normal((2, 2))) for n in zero}}
        elsewhere.update({n: sp.Matrix(rng.standard_normal((2, 2))) for n in identity})
        part = cov.on_set("Q", "Q", zero, identity).evaluate({**cov.values(elsewhere),
                                                               **probes})
        assert float(part) == pytest.approx(float(whole), rel=1e-12)
    with pytest.raises(InputError, match="not among"):
        cov.on_set("Q", "Q", zero=("P1",))


def test_covariance_cost_counts_the_pairings_the_engine_enumerates():
    """``covariance_cost`` (counted, never enumerated) is what deriving the blocks enumerates."""
    der = derive(models.MultiHead(2, heads=2), ICLData(d=2, N=3, Lambda=LAMBDA, noise=0.3))
    before = gaussian.STATS["pairings"]
    covariance._second_moment(der)          # the blocks, past the cache
    assert covariance.covariance_cost(der) == gaussian.STATS["pairings"] - before == 49_516
