"""Symmetries found by the package, the conservation laws they give, and independent checks:
finite symmetry transformations leave the actual layer's output unchanged, and the laws hold
along integrated flows and change under GD exactly as derived."""

import numpy as np
import pytest
import sympy as sp
from scipy.linalg import expm

from icldyn.numerics import compile_flow, integrate
from icldyn.numerics.simulation.sgd import PromptSampler, model_loss_and_grad
from icldyn.theory import ICLData, derive, models
from icldyn.theory.symmetry import inert_entries

N = sp.Symbol("N", positive=True, integer=True)


def symbolic_data(d=2, d_y=1):
    return ICLData(d=d, N=N, Lambda="full", Sigma_w="full", d_y=d_y,
                   noise=sp.Symbol("sigma", nonnegative=True))


def laws(model, d_y=1):
    der = derive(model, symbolic_data(model.d, d_y))
    return der, [(law.space, law.name, law.proved) for law in der.conservation_laws()]


def test_merged_has_exactly_the_rescaling_law():
    _, found = laws(models.Merged(2))
    assert found == [(None, "‖V‖² - ‖Q‖²", True)]


def test_multihead_has_the_gl_h_head_mixing_laws():
    """Per head ‖V_h‖² − ‖Q_h‖², and across heads ⟨V_h, V_k⟩ − ⟨Q_h, Q_k⟩: the heads can be
    mixed by any invertible H×H matrix (V → R V, Q → R⁻ᵀ Q)."""
    _, found = laws(models.MultiHead(2, heads=2))
    names = sorted(name for _, name, _ in found)
    assert names == sorted(["‖V0‖² - ‖Q0‖²", "‖V1‖² - ‖Q1‖²", "⟨V0,V1⟩ - ⟨Q0,Q1⟩"])
    assert all(proved for *_, proved in found)


def test_separate_kq_has_value_scale_laws_and_the_gl_r_matrix():
    _, found = laws(models.SeparateKQ(2, heads=1, rank=2))
    assert (None, "‖V0‖² - ‖WK0‖²", True) in found and (None, "‖V0‖² - ‖WQ0‖²", True) in found
    assert ("r", "WK0·WK0ᵀ - WQ0·WQ0ᵀ", True) in found


def test_full_lsa_law_and_inert_entries():
    _, found = laws(models.FullLSA(2))
    assert found == [(None, "‖P1‖² + ‖P2‖² - ‖Q1‖² - ‖Q2‖²", True)]
    assert inert_entries(models.FullLSA(2, d_y=1)) == {"W_PV": 6, "W_KQ": 3}
    assert inert_entries(models.Merged(3)) == {"V": 0, "Q": 0}


def _layer_outputs(model, data, params, prompts):
    return model_loss_and_grad(model, data, {k: v[None] for k, v in params.items()},
                                 prompts)[0]


@pytest.mark.parametrize("case", ["gl_r", "gl_h"])
def test_finite_symmetry_transformations_leave_the_layer_unchanged(case):
    rng = np.random.default_rng(0)
    data = ICLData(d=3, N=6, Lambda=np.eye(3), noise=0.2)
    prompts = PromptSampler(data).prompts(rng, (1, 16))
    if case == "gl_r":
        model = models.SeparateKQ(3, heads=1, rank=2)
        params = {k: rng.standard_normal(s) for k, s in model.shapes().items()}
        R = expm(0.7 * rng.standard_normal((2, 2)))          # any invertible r×r matrix
        moved = dict(params, W_K=R @ params["W_K"], W_Q=np.linalg.inv(R).T @ params["W_Q"])
    else:
        model = models.MultiHead(3, heads=2)
        params = {k: rng.standard_normal(s) for k, s in model.shapes().items()}
        R = expm(0.7 * rng.standard_normal((2, 2)))          # mixes the two heads
        moved = dict(V=np.einsum("hk,kij->hij", R, params["V"]),
                     Q=np.einsum("hk,kij->hij", np.linalg.inv(R).T, params["Q"]))
    before = _layer_outputs(model, data, params, prompts)
    after = _layer_outputs(model, data, moved, prompts)
    np.testing.assert_allclose(after, before, rtol=1e-10)
    # …while a non-symmetry does change it
    other = dict(params)
    first = next(iter(params))
    other[first] = 1.1 * params[first]
    assert not np.allclose(_layer_outputs(model, data, other, prompts), before)


def test_matrix_law_is_conserved_along_the_flow_and_changes_under_gd_as_derived():
    model = models.SeparateKQ(2, heads=1, rank=2)
    Lam = sp.Matrix([[2, sp.Rational(1, 2)], [sp.Rational(1, 2), 1]])
    data = ICLData(d=2, N=5, Lambda=Lam, noise=sp.Rational(1, 3))
    der = derive(model, data)
    [law] = der.conserved_matrices
    rng = np.random.default_rng(3)
    params = {k: 0.6 * rng.standard_normal(s) for k, s in model.shapes().items()}
    flow = compile_flow(der)
    traj = integrate(flow, params, t_end=2.0, n_points=5, rtol=1e-12, atol=1e-13)
    p = flow.unpack(traj.theta)
    X = p["W_K"][:, 0] @ p["W_K"][:, 0].swapaxes(-1, -2) \
        - p["W_Q"][:, 0] @ p["W_Q"][:, 0].swapaxes(-1, -2)
    assert np.abs(X - X[0]).max() < 1e-9 and traj.loss[-1] < traj.loss[0]
    # exact GD step on rationals: X(θ − ηG) − X(θ) equals the derived η² expression
    exact = {k: sp.Matrix(2, 2, [sp.Rational(int(v), 5) for v in rng.integers(-5, 6, size=4)])
             for k in ("W_K", "W_Q")}
    exact["V"] = sp.Matrix([[sp.Rational(3, 4)]])
    params = {"V": [exact["V"].tolist()], "W_K": [exact["W_K"].tolist()],
              "W_Q": [exact["W_Q"].tolist()]}
    eta = sp.Rational(1, 7)
    grads = der.gradient_value(params)
    stepped = {"V": [(exact["V"] - eta * grads["V0"]).tolist()],
               "W_K": [(exact["W_K"] - eta * grads["WK0"]).tolist()],
               "W_Q": [(exact["W_Q"] - eta * grads["WQ0"]).tolist()]}
    vals, vals_after = der.values(params), der.values(stepped)
    measured = law.quantity.evaluate(vals_after, (2, 2)) - law.quantity.evaluate(vals, (2, 2))
    vals["_scalars"] = {**vals["_scalars"], sp.Symbol("eta", positive=True): eta}
    assert measured == law.gd_change.evaluate(vals, (2, 2))
    assert measured != sp.zeros(2, 2)
