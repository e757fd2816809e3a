"""Mode gains read off the attention weights: the Merged closed form, and the actual network's
prediction with a very long context (any model or stack)."""

import numpy as np
import pytest

from icldyn.numerics.measures.gains import mode_gains
from icldyn.numerics.simulation.sgd import _forward, _key_mask, letter_values, network_weights
from icldyn.theory import ICLData, models


def _setting(d=3, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.array([1.5, 0.8, 0.4])[:d]
    return rng, U, U @ np.diag(s) @ U.T, s


def test_merged_gains_are_the_product_of_diagonals():
    rng, U, Lam, _ = _setting()
    model = models.Merged(3, d_y=3)
    params = {n: rng.standard_normal((5,) + shape) for n, shape in model.shapes().items()}
    diag = lambda M: np.einsum("ak,rab,bk->rk", U, M, U)  # noqa: E731
    assert np.allclose(mode_gains(model, params, Lam, U), diag(params["V"]) * diag(params["Q"]),
                       rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("model", [models.Stack([models.Merged(3, d_y=3)] * 2),
                                   models.FullLSA(3, d_y=3),
                                   models.Stack([models.Merged(3, d_y=3), models.FullLSA(3, d_y=3)],
                                                query_in_keys=False, negate_readout=True)],
                         ids=["merged×2", "fulllsa", "ahn-mixed"])
def test_gains_are_the_long_context_limit_of_the_network(model):
    """a_α u_α s_α is what the network predicts for the task e_α u_αᵀ and the query u_α when
    the context is long: Monte Carlo with N = 40 000 tokens (error O(1/√N) ≈ 1 %)."""
    rng, U, Lam, s = _setting()
    params = {n: 0.4 * rng.standard_normal(shape) for n, shape in model.shapes().items()}
    gains = mode_gains(model, {n: v[None] for n, v in params.items()}, Lam, U)[0]
    data = ICLData(d=3, N=4, Lambda=Lam, d_y=3, tasks="diagonal")
    weights = network_weights(model, data, letter_values(model, {n: v[None] for n, v in
                                                                 params.items()}))
    N, prompts = 40000, 4
    for a in range(3):
        W = np.outer(U[:, a], U[:, a])
        X = rng.standard_normal((1, prompts, N, 3)) @ np.linalg.cholesky(Lam).T
        xq = np.broadcast_to(U[:, a], (1, prompts, 3))
        yq = xq @ W.T
        r = _forward(weights, X, X @ W.T, xq, yq, 3, _key_mask(N, model.query_in_keys),
                     model.negate_readout)[1]
        predicted = (r + yq).mean(axis=1)[0] @ U[:, a] / s[a]
        assert predicted == pytest.approx(gains[a], rel=0.03, abs=0.01), (a, predicted, gains)
