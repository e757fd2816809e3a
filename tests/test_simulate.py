"""The SGD simulator of the actual layer: its gradient against finite differences, and theory
against simulation within Monte-Carlo error."""

import numpy as np
import pytest

from icldyn.numerics import compile_flow, gradient_descent, simulate_sgd
from icldyn.numerics.simulation.sgd import (PromptSampler, block_z_scores, letter_values,
                                            network_loss_and_grad, network_weights)
from icldyn.theory import ICLData, InputError, derive, models


def setting(tasks):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    d_y = 1 if tasks == "gaussian" else 3
    Sigma_w = B @ B.T / 3 + 0.5 * np.eye(3) if tasks == "gaussian" else [1.5, 1.0, 0.5]
    data = ICLData(d=3, N=10, Lambda=A @ A.T / 3 + 0.3 * np.eye(3), Sigma_w=Sigma_w,
                   noise=0.2, d_y=d_y, tasks=tasks)
    init = {"V": 0.4 * np.eye(d_y), "Q": 0.3 * rng.standard_normal((3, 3))}
    return models.Merged(3, d_y=d_y), data, init


@pytest.mark.parametrize("tasks", ["gaussian", "diagonal"])
def test_layer_gradient_matches_finite_differences(tasks):
    model, data, init = setting(tasks)
    rng = np.random.default_rng(5)
    X, Y, xq, yq = PromptSampler(data).prompts(rng, (1, 4))
    D = data.d + data.d_y
    W_PV, W_KQ = rng.standard_normal((1, 2, D, D)), rng.standard_normal((1, 2, D, D))
    _, [(g_PV, g_KQ)] = network_loss_and_grad([(W_PV, W_KQ)], X, Y, xq, yq, data.d)
    h = 1e-6
    for W, g in ((W_PV, g_PV), (W_KQ, g_KQ)):
        for hd, i, j in [(0, 0, 0), (1, D - 1, 1), (0, 1, D - 1), (1, D - 1, D - 1)]:
            plus, minus = W.copy(), W.copy()
            plus[0, hd, i, j] += h
            minus[0, hd, i, j] -= h
            args = [(plus, W_KQ), (minus, W_KQ)] if W is W_PV else [(W_PV, plus), (W_PV, minus)]
            fd = (network_loss_and_grad([args[0]], X, Y, xq, yq, data.d)[0]
                  - network_loss_and_grad([args[1]], X, Y, xq, yq, data.d)[0]) / (2 * h)
            assert g[0, hd, i, j] == pytest.approx(fd[0], rel=1e-6, abs=1e-8)


def test_layer_weights_place_blocks_and_leave_the_rest_inert():
    model, data, init = setting("gaussian")
    letters = letter_values(model, {k: v[None] for k, v in init.items()})
    [(W_PV, W_KQ)] = network_weights(model, data, letters)
    assert W_PV.shape == (1, 1, 4, 4)
    assert W_PV[0, 0, 3, 3] == init["V"][0, 0] and np.count_nonzero(W_PV) == 1
    np.testing.assert_array_equal(W_KQ[0, 0, :3, :3], init["Q"])
    assert np.count_nonzero(W_KQ[0, 0, 3:, :]) == 0 and np.count_nonzero(W_KQ[0, 0, :, 3:]) == 0


def test_simulator_is_reproducible_and_checks_input():
    model, data, init = setting("gaussian")
    a = simulate_sgd(model, data, init, lr=0.01, batch=8, steps=5, seeds=3, seed=7)
    b = simulate_sgd(model, data, init, lr=0.01, batch=8, steps=5, seeds=3, seed=7)
    np.testing.assert_array_equal(a.losses, b.losses)
    with pytest.raises(InputError, match="batch"):
        simulate_sgd(model, data, init, lr=0.01, batch=0, steps=5)
    with pytest.raises(InputError, match="missing"):
        simulate_sgd(model, data, {"V": 1.0}, lr=0.01, batch=8, steps=5)


def sgd_against_theory(model, data, init, lr=0.01, steps=800, seeds=32, block=50):
    """Block z-scores of the mean SGD loss against the expected GD curve, and that curve."""
    sim = simulate_sgd(model, data, init, lr=lr, batch=64, steps=steps, seeds=seeds, seed=1)
    flow = compile_flow(derive(model, data))
    theory = gradient_descent(flow, flow.pack(init), lr=lr, steps=steps).loss
    return block_z_scores(sim.losses[:-1], theory[:-1], block), theory


@pytest.mark.slow
@pytest.mark.parametrize("tasks", ["gaussian", "diagonal"])
def test_theory_matches_sgd_within_monte_carlo_error(tasks):
    """Mean SGD loss over 32 seeds against the exact expected GD curve at the same small rate.

    Per-seed means over blocks of 50 steps give one z-score per block (SE across seeds): at
    lr = 0.01 the SGD-noise bias is far below one SE, so every |z| must be below 4."""
    z, theory = sgd_against_theory(*setting(tasks))
    assert np.abs(z).max() < 4, z
    assert theory[-1] < 0.5 * theory[0]          # the comparison covers real learning


@pytest.mark.slow
@pytest.mark.parametrize("model", [models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 1),
                                   models.FullLSA(3)], ids=repr)
def test_every_parameterization_matches_sgd(model):
    """Non-diagonal Λ, non-identity Σ_w, label noise; same block z-score criterion."""
    _, data, _ = setting("gaussian")
    rng = np.random.default_rng(1)
    init = {k: 0.3 * rng.standard_normal(s) for k, s in model.shapes().items()}
    z, theory = sgd_against_theory(model, data, init)
    assert np.abs(z).max() < 4, z
    assert theory[-1] < 0.85 * theory[0]


@pytest.mark.slow
def test_sgd_conserved_quantity_drifts_at_order_eta_squared():
    """The rescaling symmetry holds prompt by prompt, so each SGD step changes ‖V‖² − ‖Q‖² by
    η²(‖g_V‖² − ‖g_Q‖²): at equal flow time t = ηn the drift halves when η halves."""
    model, data, init = setting("gaussian")
    drift = []
    for lr in (0.02, 0.01):
        steps = int(4.0 / lr)
        sim = simulate_sgd(model, data, init, lr=lr, batch=16, steps=steps, seeds=16, seed=2,
                           record_every=steps)
        C = np.sum(sim.params["V"] ** 2, axis=(2, 3)) - np.sum(sim.params["Q"] ** 2, axis=(2, 3))
        drift.append(np.mean(np.abs(C[:, -1] - C[:, 0])))
    assert 1.5 < drift[0] / drift[1] < 2.7, drift


def test_sgd_divergence_keeps_the_steps_before_it():
    from icldyn.theory import DivergenceError
    model, data, init = setting("gaussian")
    with pytest.raises(DivergenceError, match="lower lr") as info:
        with np.errstate(over="ignore", invalid="ignore"):
            simulate_sgd(model, data, {"V": 3.0, "Q": 3 * np.eye(3)}, lr=5.0, batch=8,
                         steps=200, seeds=2)
    err = info.value
    assert 0 < err.step < 200 and len(err.partial.loss) == err.step
    assert np.all(np.isfinite(err.partial.loss))


def test_a_held_out_validation_set_estimates_the_loss_with_far_fewer_seeds():
    """Each seed's loss on V = 512 prompts of its own, drawn once, at the recorded steps: the
    training run is the same as without it; at step 0 (θ₀ shared by all seeds) it estimates
    the exact loss (|z| < 4, z from its own standard error); along the run its standard error
    across seeds is below half that of the fresh batch loss at the same steps (common random
    numbers: the prompts' noise is not redrawn every step)."""
    model, data, init = setting("gaussian")
    run = dict(lr=0.02, batch=16, steps=200, seeds=16, seed=3, record_every=20)
    plain = simulate_sgd(model, data, init, **run)
    sim = simulate_sgd(model, data, init, validation=512, **run)
    np.testing.assert_array_equal(sim.losses, plain.losses)
    assert sim.val_losses.shape == (len(sim.steps), 16) and plain.val_losses is None
    exact = float(derive(model, data).loss_value(init))
    assert abs(sim.val_loss[0] - exact) < 4 * sim.val_loss_se[0]
    later = sim.steps[1:]
    assert np.median(sim.val_loss_se[1:] / plain.loss_se[later]) < 0.5
    with pytest.raises(InputError, match="validation"):
        simulate_sgd(model, data, init, validation=-1, **run)
