"""The model contract: a parameterization written in one file, here, by a user.

Two models the package does not ship are defined below, each from ``models.Model`` alone (its
parameters, blocks, ŷ as vector terms and its actual layer), and checked against a brute-force
average of that layer written out by hand: loss, gradient, compiled flow (with its conserved
quantities), gradient descent and SGD of the actual network. Critical sets work for the one
that states a structure the enumeration uses (``head_products``) and are refused with a clear
error for the one that does not.
"""

import numpy as np
import pytest
import sympy as sp

from brute import Components, layer_loss
from icldyn.numerics import compile_flow, gradient_descent, integrate, simulate_sgd
from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.data import N_SYM
from icldyn.theory.models import Block, HeadProducts, Model, Param
from icldyn.theory.symmetry import Span
from icldyn.theory.terms import sandwich
from icldyn.theory.words import Mat, MatPoly

R = sp.Rational
LAMBDA = sp.Matrix([[2, R(1, 2)], [R(1, 2), 1]])


class SharedKQ(Model):
    """H value heads reading through one shared key-query matrix:
    ŷ = Σ_h V_h S_yx Q x_q / N; params V (H, d_y, d_y), Q (d, d)."""

    name = "SharedKQ"

    def __init__(self, d, heads=2, d_y=1):
        super().__init__(d, d_y)
        self.heads = heads
        self.params = (Param("V", "y", "y", heads), Param("Q", "x", "x"))
        self.V = [Mat(f"V{h}", rows="y", cols="y") for h in range(heads)]
        self.Q = Mat("Q", rows="x", cols="x")

    def blocks(self):
        return [Block(V, "V", h) for h, V in enumerate(self.V)] + [Block(self.Q, "Q")]

    def prediction(self):
        return [t for V in self.V for t in sandwich((V,), "y", "x", (self.Q,), "i", 1 / N_SYM)]

    def layer(self):
        return [{"W_PV": [("y", "y", (V,))], "W_KQ": [("x", "x", (self.Q,))]} for V in self.V]

    def key(self):
        return (self.name, self.heads)


class LowRankMerged(Model):
    """One head with a rank-limited key-query matrix: ŷ = u S_yx W_Kᵀ W_Q x_q / N; params
    u (d_y, d_y), W_K, W_Q (r, d). It states its head-product structure, so its critical sets
    are enumerated."""

    name = "LowRankMerged"

    def __init__(self, d, rank=1, d_y=1):
        super().__init__(d, d_y)
        self.rank = rank
        self.params = (Param("u", "y", "y"), Param("W_K", "r", "x"), Param("W_Q", "r", "x"))
        self.u = Mat("u", rows="y", cols="y")
        self.K, self.Q = Mat("K", rows="r", cols="x"), Mat("Qr", rows="r", cols="x")

    def sizes(self):
        return {**super().sizes(), "r": self.rank}

    def blocks(self):
        return [Block(self.u, "u"), Block(self.K, "W_K"), Block(self.Q, "W_Q")]

    def prediction(self):
        return sandwich((self.u,), "y", "x", (self.K.transpose(), self.Q), "i", 1 / N_SYM)

    def layer(self):
        return [{"W_PV": [("y", "y", (self.u,))],
                 "W_KQ": [("x", "x", (self.K.transpose(), self.Q))]}]

    def product_model(self):
        return models.Merged(self.d, d_y=self.d_y)

    def head_products(self):
        return HeadProducts((("u", "K", "Qr"),), self.rank)

    def key(self):
        return (self.name,)


def by_hand(model, params, d=2, d_y=1):
    """[(W_PV, W_KQ) per head] of the actual layer, written out from the models' definitions."""
    D = d + d_y
    M = lambda a: sp.Matrix(np.atleast_2d(np.asarray(a, dtype=object)).tolist())  # noqa: E731
    heads = []
    if isinstance(model, SharedKQ):
        for h in range(model.heads):
            W_PV, W_KQ = sp.zeros(D, D), sp.zeros(D, D)
            W_PV[d:, d:], W_KQ[:d, :d] = M(params["V"][h]), M(params["Q"])
            heads.append((W_PV, W_KQ))
    else:
        W_PV, W_KQ = sp.zeros(D, D), sp.zeros(D, D)
        W_PV[d:, d:] = M(params["u"])
        W_KQ[:d, :d] = M(params["W_K"]).T * M(params["W_Q"])
        heads.append((W_PV, W_KQ))
    return heads


def rational(shape, seed):
    rng = np.random.default_rng(seed)
    return np.array([R(int(v), 3) for v in rng.integers(-3, 4, size=int(np.prod(shape)))],
                    dtype=object).reshape(shape)


MODELS = [SharedKQ(2, heads=2), LowRankMerged(2, rank=1)]


@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_user_model_loss_and_gradient_equal_brute_force_of_its_layer(model):
    """Exact loss at a rational point, and its derivative along a rational direction Δ
    (d/dt of the brute-force L(θ + tΔ) at t = 0), against the derived gradient."""
    sigma = R(1, 2)
    data = ICLData(d=2, N=2, Lambda=LAMBDA, noise=sigma)
    params = {n: rational(s, k) for k, (n, s) in enumerate(model.shapes().items())}
    delta = {n: rational(s, k + 10) for k, (n, s) in enumerate(model.shapes().items())}
    comp = Components(2, 1, 2, LAMBDA, sigma)
    der = derive(model, data)
    assert sp.expand(der.loss_value(params) - layer_loss(comp, by_hand(model, params))) == 0
    t = sp.Symbol("t")
    moved = {n: params[n] + t * delta[n] for n in params}
    slope = sp.diff(layer_loss(comp, by_hand(model, moved)), t).subs(t, 0)
    grads = der.gradient_value(params)
    derived = 0
    for b in model.blocks():
        step = sp.Matrix(np.atleast_2d(delta[b.param][b.index(model.sizes())]).tolist())
        derived += sum(grads[b.letter.name].multiply_elementwise(step))
    assert sp.expand(derived - slope) == 0
    weights = model.attention_weights({n: v.astype(float) for n, v in params.items()})[0]
    for (W_PV, W_KQ), (A, B) in zip(weights, by_hand(model, params)):
        assert np.allclose(W_PV, np.array(A, dtype=float))
        assert np.allclose(W_KQ, np.array(B, dtype=float))


@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_user_model_flow_conserves_and_sgd_of_the_network_follows_gd(model):
    """Every conserved quantity the search finds is proved, and the compiled flow keeps them
    (DOP853 at rtol 1e-10: drift ≤ 1e-7). For SharedKQ the rescaling Q → cQ, V_h → V_h/c of
    every head at once gives ‖Q‖² − Σ_h ‖V_h‖², which must lie in the span of the laws found
    (exact linear algebra on their trace polynomials; ‖Q‖² alone must not) and, written here
    by hand, stay constant along the flow, as must u₀ − u₁ (ŷ sees u₀ + u₁ only: a translation, not a linear action,
    so not in the search). SGD of the actual network (64 seeds) stays within 4 standard errors
    of the exact expected GD loss (the SGD noise at lr 0.02, batch 64 shifts the mean by
    O(lr/batch) ≈ 3e-4, below the tolerance)."""
    data = ICLData(d=2, N=4, Lambda=np.array([[1.0, 0.3], [0.3, 0.6]]), noise=0.2)
    der = derive(model, data)
    flow = compile_flow(der, backend="numpy")
    rng = np.random.default_rng(3)
    init = {n: 0.4 * rng.standard_normal(s) for n, s in model.shapes().items()}
    theta = flow.pack(init)
    assert flow.loss(theta) == pytest.approx(float(der.loss_value(init)), rel=1e-10)
    traj = integrate(flow, theta, t_end=5.0, n_points=11)
    assert traj.loss[-1] < traj.loss[0]
    assert der.conserved and all(c.proved for c in der.conservation_laws())
    found = traj.conserved
    if isinstance(model, SharedKQ):
        assert len(der.conserved) == 2 and not der.conserved_matrices
        rescaling = MatPoly.letter(model.Q).inner(MatPoly.letter(model.Q))
        for V in model.V:
            rescaling = rescaling - MatPoly.letter(V).inner(MatPoly.letter(V))
        laws = Span()
        assert all(laws.add(c.quantity) for c in der.conserved)
        assert laws.contains(rescaling)
        assert not laws.contains(MatPoly.letter(model.Q).inner(MatPoly.letter(model.Q)))
        u = np.array([flow.unpack(th)["V"].ravel() for th in traj.theta])
        Q = np.array([flow.unpack(th)["Q"] for th in traj.theta])
        found = np.column_stack([found, (Q ** 2).sum(axis=(1, 2)) - (u ** 2).sum(axis=1),
                                 u[:, 0] - u[:, 1]])
    else:
        assert len(der.conserved) == 2 and der.conserved_matrices
    name = next(iter(model.shapes()))      # a parameter the flow does move
    moved = np.array([np.sum(flow.unpack(th)[name] ** 2) for th in traj.theta])
    assert np.max(np.abs(found - found[0])) < 1e-7 and np.ptp(moved) > 1e-3
    gd = gradient_descent(flow, theta, lr=0.02, steps=100, every=50)
    sim = simulate_sgd(model, data, init, lr=0.02, batch=64, steps=100, seeds=64, seed=2,
                       record_every=50)
    rows = [0, 50, 100]
    assert np.all(np.abs(sim.loss[rows] - gd.loss) < 4 * sim.loss_se[rows] + 1e-12)


def test_user_model_critical_sets_work_or_refuse_clearly():
    """LowRankMerged states HeadProducts (one head of rank 1): its critical sets are those of
    the built-in SeparateKQ(heads=1, rank=1), set for set. SharedKQ states no structure: a
    one-line InputError naming the model and the missing hook."""
    data = ICLData(d=2, N=4, Lambda=sp.diag(2, 1), noise=0)
    own = derive(LowRankMerged(2, rank=1), data).fixed_points()
    ref = derive(models.SeparateKQ(2, heads=1, rank=1), data).fixed_points()
    assert [fp.name for fp in own] == [fp.name for fp in ref]
    assert [fp.kind for fp in own] == [fp.kind for fp in ref]
    assert all(abs(a.loss - b.loss) < 1e-30 for a, b in zip(own, ref))
    assert sorted(own[0].point) == ["W_K", "W_Q", "u"]
    with pytest.raises(InputError, match="SharedKQ.*head_products"):
        derive(SharedKQ(2), data).fixed_points()
    with pytest.raises(InputError, match="chain_rule_latex"):
        SharedKQ(2).chain_rule_latex()
