"""Conventions: their loss, gradient and learning rate from ours, checked against Monte Carlo of
a layer written in their conventions (tokens as rows, no ½, MSE averaged over outputs, attention
normalised by nothing or by the N + 1 tokens), independently of the derivation."""

import numpy as np
import pytest
import sympy as sp

from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.conventions import Conventions

LINATTN_ICL = Conventions(half=False, mean_outputs=True, normalisation="none")


def their_layer(rng, Lambda, N, d_y, V, K, prompts, norm):
    """Per-prompt loss and gradients of their merged head, written from the layer's definition:
    tokens z_m = (x_m, y_m) as rows, the query last with label slot 0, attention scores
    z_qᵀ W_kq z_m with W_kq = [[K, 0], [0, 0]], values W_v z_m with W_v's y-rows [0, V];
    ŷ = Σ_m (score_m)(value_m)_y / norm; loss = mean over outputs of (ŷ − y_q)² (no ½)."""
    d = Lambda.shape[0]
    x = rng.multivariate_normal(np.zeros(d), Lambda, size=(prompts, N + 1))
    W = rng.standard_normal((prompts, d_y, d))
    y = np.einsum("pod,pnd->pno", W, x)
    tokens = np.concatenate([x, y], axis=2)
    tokens[:, -1, d:] = 0.0                                   # the query's label slot
    scores = np.einsum("pd,de,pne->pn", tokens[:, -1, :d], K, tokens[:, :, :d])
    values = np.einsum("oc,pnc->pno", V, tokens[:, :, d:])
    y_hat = np.einsum("pn,pno->po", scores, values) / norm
    r = y_hat - y[:, -1]
    loss = (r ** 2).mean(axis=1)
    S = np.einsum("pno,pnd->pod", tokens[:, :, d:], tokens[:, :, :d])   # Σ_m y_m x_mᵀ
    SK = np.einsum("pod,ed,pe->po", S, K, x[:, -1])                      # S Kᵀ x_q
    grad_V = 2 / d_y * np.einsum("po,pc->poc", r, SK) / norm
    grad_K = 2 / d_y * np.einsum("pd,po,oc,pce->pde", x[:, -1], r, V, S) / norm
    return loss, grad_V, grad_K


@pytest.mark.parametrize("normalisation, d_y", [("none", 1), ("N+1", 2)])
def test_their_loss_and_gradient_from_ours(normalisation, d_y):
    """On ``conv.data(data)`` our Merged model's parameters are theirs (V = their value
    block, Q = Kᵀ): κ L and κ ∇L match their layer's Monte Carlo mean within 4 standard errors
    (so their GD with rate η' is ours with ``conv.lr(η')``)."""
    conv = Conventions(half=False, mean_outputs=True, normalisation=normalisation)
    rng = np.random.default_rng(3)
    Lambda, N = np.array([[1.5, 0.3], [0.3, 0.8]]), 4
    V = np.array([[0.7]]) if d_y == 1 else np.array([[0.6, -0.2], [0.1, 0.5]])
    K = np.array([[0.4, -0.3], [0.2, 0.5]])
    norm = 1 if normalisation == "none" else N + 1
    data = ICLData(d=2, N=N, Lambda=Lambda, d_y=d_y)
    ours = derive(models.Merged(2, d_y=d_y), conv.data(data, models.Merged(2, d_y=d_y)))
    point = {"V": sp.Matrix(V), "Q": sp.Matrix(K.T)}
    kappa = float(conv.loss_factor(d_y))
    loss, gV, gK = their_layer(rng, Lambda, N, d_y, V, K, 400_000, norm)

    def close(mc, exact):
        se = mc.std(axis=0, ddof=1) / np.sqrt(len(mc))
        assert np.all(np.abs(mc.mean(axis=0) - exact) <= 4 * se + 1e-12), (mc.mean(0), exact)

    close(loss, float(conv.loss(ours.loss_value(point), d_y)))
    grads = ours.gradient_value(point)
    close(gV, kappa * np.array(grads["V"], dtype=float))
    close(gK, kappa * np.array(grads["Q"], dtype=float).T)
    assert conv.lr(0.001, d_y) == pytest.approx(kappa * 0.001)


def test_the_check_can_fail():
    """Without the data rescaling (ours on their data as it is) the Monte Carlo disagrees."""
    rng = np.random.default_rng(4)
    Lambda, N, V, K = np.diag([1.0, 0.5]), 4, np.array([[0.3]]), np.eye(2) * 0.4
    loss, _, _ = their_layer(rng, Lambda, N, 1, V, K, 100_000, 1)
    plain = derive(models.Merged(2), ICLData(d=2, N=N, Lambda=Lambda))
    value = float(LINATTN_ICL.loss(plain.loss_value({"V": V, "Q": K.T})))
    assert abs(loss.mean() - value) > 10 * loss.std() / np.sqrt(len(loss))


def test_loss_factor_and_units():
    assert Conventions().loss_factor(3) == 1
    assert LINATTN_ICL.loss_factor(1) == 2 and LINATTN_ICL.loss_factor(4) == sp.Rational(1, 2)
    assert Conventions(half=True, mean_outputs=True).loss(0.3, 3) == pytest.approx(0.1)
    assert LINATTN_ICL.time(5.0) == 10.0
    data = ICLData(d=2, N=7, Lambda=np.diag([2.0, 1.0]))
    assert Conventions().data(data) is data
    theirs = Conventions(normalisation="N+1").data(data)
    assert theirs.Lambda == sp.Rational(7, 8) * data.Lambda
    assert theirs.Sigma_w == sp.eye(2) * sp.Rational(8, 7)


def test_bad_conventions_are_refused():
    with pytest.raises(InputError, match="normalisation"):
        Conventions(normalisation="1/N")
    data = ICLData(d=2, N=4, Lambda=np.eye(2))
    with pytest.raises(InputError, match="model"):
        LINATTN_ICL.data(data, models.FullLSA(2))
    with pytest.raises(InputError, match="Gaussian"):
        LINATTN_ICL.data(ICLData(d=2, N=4, Lambda=np.eye(2), d_y=2, tasks="diagonal"))


def test_parameters_in_their_units():
    """Their loss at θ' on their data is ours at ``to_ours(θ')`` on our data, and ours at θ'
    itself on ``conv.data(data)`` (exact rationals); to_theirs inverts to_ours."""
    data = ICLData(d=2, N=5, Lambda=sp.diag(2, 1), noise=sp.Rational(1, 10))
    model = models.SeparateKQ(2, heads=2, rank=1)
    rng = np.random.default_rng(5)
    theirs = {k: np.round(rng.standard_normal(shape), 1) for k, shape in model.shapes().items()}
    ours = LINATTN_ICL.to_ours(model, theirs, data.N)
    assert np.allclose(ours["V"], 5 * theirs["V"]) and np.array_equal(ours["W_K"], theirs["W_K"])
    back = LINATTN_ICL.to_theirs(model, ours, data.N)
    assert all(np.allclose(back[k], theirs[k]) for k in theirs)
    rational = np.vectorize(sp.nsimplify)                  # one-decimal floats, exactly
    on_ours = derive(model, data).loss_value({k: rational(v) for k, v in ours.items()})
    on_theirs = derive(model, LINATTN_ICL.data(data, model)).loss_value(
        {k: rational(v) for k, v in theirs.items()})
    assert on_ours == on_theirs
