"""Self-tests of the stacked-attention oracle (tests/stack_oracle.py): backpropagation against
finite differences, the exact polynomial against the network, the Hermite expectation against
direct moments, exact loss and gradient against Monte Carlo, one layer against docs/math.md §3.2."""

import math
from fractions import Fraction as F

import numpy as np
import pytest
import sympy as sp

import stack_oracle as so

LAMBDA = [[F(2), F(1, 2)], [F(1, 2), F(1)]]            # non-diagonal
SIGMA_W = [[F(1), F(1, 3)], [F(1, 3), F(3, 2)]]         # ≠ I
SIGMA = sp.Rational(1, 2)
Z_MAX = 4.0            # |z| bound for Monte Carlo against exact values (10⁶ prompts)


def rational_matrix(rng, shape, scale):
    return np.array([[F(int(v), scale) for v in row] for row in rng.integers(-3, 4, size=shape)],
                    dtype=object)


def merged(u, Q, d=2, d_y=1):
    """A Merged layer's (W_PV, W_KQ): V = u on the y,y block, Q on the x,x block."""
    D = d + d_y
    P = np.full((D, D), F(0), dtype=object)
    K = np.full((D, D), F(0), dtype=object)
    P[d:, d:] = u
    K[:d, :d] = Q
    return P, K


def as_float(weights):
    return [[tuple(np.array(M, dtype=float) for M in head) for head in layer] for layer in weights]


def merged_stack(seed, layers=2):
    rng = np.random.default_rng(seed)
    return [[merged(F(int(rng.integers(1, 4)) * (-1) ** l, 4), rational_matrix(rng, (2, 2), 6))]
            for l in range(layers)]


def full_stack(seed, scale=16, heads=(2, 1)):
    rng = np.random.default_rng(seed)
    return [[(rational_matrix(rng, (3, 3), scale), rational_matrix(rng, (3, 3), scale))
             for _ in range(h)] for h in heads]


# ---------------------------------------------------------------------------- backpropagation

@pytest.mark.parametrize("query_in_keys", [True, False])
@pytest.mark.parametrize("negate_readout", [True, False])
def test_backprop_matches_central_differences(query_in_keys, negate_readout):
    rng = np.random.default_rng(3)
    d, d_y, N, B = 2, 2, 3, 4
    D = d + d_y
    weights = [[(0.4 * rng.standard_normal((D, D)), 0.4 * rng.standard_normal((D, D)))
                for _ in range(h)] for h in (2, 1, 1)]
    X, Y = rng.standard_normal((B, N, d)), rng.standard_normal((B, N, d_y))
    xq, yq = rng.standard_normal((B, d)), rng.standard_normal((B, d_y))
    _, grads = so.loss_and_grad(weights, X, Y, xq, yq, query_in_keys, negate_readout)
    step = 1e-6
    for l, layer in enumerate(weights):
        for h, head in enumerate(layer):
            for m in range(2):
                for i, j in np.ndindex(D, D):
                    def loss(t):
                        shifted = [[list(hd) for hd in ly] for ly in weights]
                        M = head[m].copy()
                        M[i, j] += t
                        shifted[l][h][m] = M
                        return so.loss_and_grad(shifted, X, Y, xq, yq, query_in_keys,
                                                negate_readout)[0]
                    fd = (loss(step) - loss(-step)) / (2 * step)
                    # central differences: O(step²) truncation, O(ε/step) rounding
                    assert np.allclose(grads[l][h][m][:, i, j], fd, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- exact machinery

def evaluate(ring, p, h):
    """A residual polynomial at the point h (floats)."""
    if p.nums.size == 0:
        return 0.0
    exps = np.stack([ring.exponents(p, j) for j in range(ring.n)], axis=1)
    coeffs = np.array([float(F(int(c), p.den)) for c in p.nums])
    return float(np.sum(coeffs * np.prod(np.asarray(h)[None, :] ** exps, axis=1)))


@pytest.mark.parametrize("query_in_keys", [True, False])
@pytest.mark.parametrize("negate_readout", [True, False])
def test_exact_polynomial_is_the_network(query_in_keys, negate_readout):
    """With Λ = I, one fixed task and σ = 0 the variables are the inputs themselves: the
    expanded polynomial of ŷ − y_q must equal the network's forward pass at random inputs."""
    d, d_y, N = 2, 1, 2
    weights = full_stack(5, scale=4)
    task = np.array([[[F(1, 2), F(-3, 2)]]], dtype=object)
    ring, (residuals,), variances = so.residual_polynomials(
        weights, [[1, 0], [0, 1]], N, d_y=d_y, tasks=task, query_in_keys=query_in_keys,
        negate_readout=negate_readout)
    assert ring.n == (N + 1) * d and all(v == 1 for v in variances)
    rng = np.random.default_rng(0)
    for _ in range(3):
        h = rng.standard_normal(ring.n)
        X, xq = h[:N * d].reshape(1, N, d), h[N * d:].reshape(1, d)
        W = np.array(task[0], dtype=float)
        yhat = so.forward(as_float(weights), X, X @ W.T, xq, query_in_keys, negate_readout)
        expected = yhat[0] - W @ xq[0]
        assert evaluate(ring, residuals[0], h) == pytest.approx(expected[0], rel=1e-10, abs=1e-10)


def test_hermite_expectation_matches_direct_moments():
    """E[p²] through the Hermite basis equals squaring p and taking E[h^n] = v^{n/2}(n−1)!!."""
    rng = np.random.default_rng(2)
    variances = [F(1), F(3, 2), F(2, 5)]
    ring = so._Ring(len(variances), 12)
    hs = sp.symbols("h0:3")
    expr = 0
    terms = []
    for _ in range(12):
        e = rng.integers(0, 4, size=3)
        c = F(int(rng.integers(-5, 6)), int(rng.integers(1, 4)))
        expr += sp.Rational(c.numerator, c.denominator) * sp.Mul(*[x**int(k) for x, k in zip(hs, e)])
        mono = so._Poly(ring._keys([sum(int(k) << (ring.bits * j) for j, k in enumerate(e))]),
                        np.array([1], dtype=object))
        terms.append((c, mono))
    p = ring.lincomb(terms)
    direct = sp.Integer(0)
    for monom, coeff in sp.Poly(sp.expand(expr**2), *hs).terms():
        moment = sp.Integer(1)
        for n, v in zip(monom, variances):
            moment *= 0 if n % 2 else sp.Rational(v.numerator, v.denominator) ** (n // 2) \
                * sp.factorial2(n - 1)
        direct += coeff * moment
    got = so.expect_square(ring, p, variances)
    assert sp.Rational(got.numerator, got.denominator) == direct


# ---------------------------------------------------------------------------- one layer

def oracle_merged_loss(u, Q, Lambda, Sigma_w, sigma2, N):
    """docs/math.md §3.2 (*oracle*): L = ½[tr(MᵀAMΛ) − 2tr(Σ_wΛMΛ) + tr(Σ_wΛ) + σ²], M = uQ."""
    Lm, Sw = sp.Matrix(Lambda), sp.Matrix(Sigma_w)
    M = sp.nsimplify(u) * sp.Matrix(Q)
    A = sp.Rational(N + 1, N) * Lm * Sw * Lm + ((Sw * Lm).trace() + sigma2) / N * Lm
    return ((M.T * A * M * Lm).trace() - 2 * (Sw * Lm * M * Lm).trace()
            + (Sw * Lm).trace() + sigma2) / 2


@pytest.mark.parametrize("N", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_one_layer_equals_math_oracle(N, seed):
    rng = np.random.default_rng(seed)
    u, Q = F(int(rng.integers(1, 5)), 3), rational_matrix(rng, (2, 2), 4)
    exact = so.exact_loss([[merged(u, Q)]], LAMBDA, N, Sigma_w=SIGMA_W, sigma=SIGMA)
    assert exact == sp.nsimplify(oracle_merged_loss(u, Q, LAMBDA, SIGMA_W, SIGMA**2, N))


def test_one_layer_negated_readout_is_minus_u():
    rng = np.random.default_rng(4)
    u, Q = F(2, 3), rational_matrix(rng, (2, 2), 4)
    kwargs = dict(Sigma_w=SIGMA_W, sigma=SIGMA)
    negated = so.exact_loss([[merged(u, Q)]], LAMBDA, 2, negate_readout=True, **kwargs)
    assert negated == so.exact_loss([[merged(-u, Q)]], LAMBDA, 2, **kwargs)
    assert negated != so.exact_loss([[merged(u, Q)]], LAMBDA, 2, **kwargs)   # the sign matters


# ---------------------------------------------------------------------------- against Monte Carlo

def assert_mc_agrees(weights, N, Lambda=LAMBDA, prompts=10**6, **data):
    """exact_loss within Z_MAX standard errors of mc_loss (the same data, in floats)."""
    exact = so.exact_loss(weights, Lambda, N, **data)
    floats = {k: (v if isinstance(v, (str, bool, int)) else np.array(v, dtype=float))
              for k, v in data.items()}
    mean, se = so.mc_loss(as_float(weights), np.array(Lambda, dtype=float), N, prompts=prompts,
                          seed=11, **floats)
    assert abs(mean - float(exact)) < Z_MAX * se, (float(exact), mean, se)


@pytest.mark.parametrize("query_in_keys", [True, False])
@pytest.mark.parametrize("negate_readout", [True, False])
def test_two_layers_exact_equals_monte_carlo(query_in_keys, negate_readout):
    assert_mc_agrees(merged_stack(1), 2, Sigma_w=SIGMA_W, sigma=SIGMA,
                     query_in_keys=query_in_keys, negate_readout=negate_readout)


def test_two_layers_finite_tasks_exact_equals_monte_carlo():
    tasks = np.array([[[F(1), F(-1, 2)]], [[F(0), F(3, 2)]], [[F(-2), F(1, 3)]]], dtype=object)
    assert_mc_agrees(merged_stack(2), 1, tasks=tasks, sigma=SIGMA, query_in_keys=False,
                     negate_readout=True)


def test_two_layers_eigenbasis_tasks_exact_equals_monte_carlo():
    """The paper's tasks (d_y = d) with Λ = U diag(2, 1) Uᵀ, U ∝ [[1, 1], [1, −1]] (rotated)."""
    Lam = [[F(3, 2), F(1, 2)], [F(1, 2), F(3, 2)]]
    rng = np.random.default_rng(6)
    weights = [[merged(np.diag([F(1, 2), F(-1, 3)]), rational_matrix(rng, (2, 2), 6), d_y=2)],
               [merged(rational_matrix(rng, (2, 2), 6), rational_matrix(rng, (2, 2), 6), d_y=2)]]
    assert_mc_agrees(weights, 2, Lambda=Lam, d_y=2, tasks="diagonal",
                     sigma=SIGMA)


def test_two_full_layers_exact_equals_monte_carlo():
    """Every entry of W_PV and W_KQ live (FullLSA-type layers, two heads in the first). Small
    weights: ŷ has degree 18 in the Gaussians, so larger ones make the Monte-Carlo tails too
    heavy for a standard error to mean anything (measured: the estimate then jumps between seeds
    by many reported standard errors)."""
    assert_mc_agrees(full_stack(7, scale=48), 1, Sigma_w=SIGMA_W, sigma=SIGMA,
                     query_in_keys=False)


def exact_gradient(weights, N, **data):
    """∂L/∂(each weight entry), exactly: L along one entry is a polynomial of degree
    ≤ 2·3^(L−l) for layer l (ŷ is linear in layer l's output, which later layers cube), so it is
    interpolated through that many + 1 rational points and differentiated at 0."""
    t = sp.Symbol("t")
    L = len(weights)
    out = []
    for l, layer in enumerate(weights):
        degree = 2 * 3 ** (L - 1 - l)
        heads = []
        for h, head in enumerate(layer):
            mats = []
            for m in range(2):
                G = np.zeros(head[m].shape)
                for i, j in np.ndindex(*head[m].shape):
                    points = []
                    for k in range(-(degree // 2), degree - degree // 2 + 1):
                        shifted = [[list(hd) for hd in ly] for ly in weights]
                        M = head[m].copy()
                        M[i, j] = M[i, j] + F(k, 4)
                        shifted[l][h][m] = M
                        points.append((sp.Rational(k, 4), so.exact_loss(shifted, LAMBDA, N, **data)))
                    G[i, j] = float(sp.diff(sp.interpolate(points, t), t).subs(t, 0))
                mats.append(G)
            heads.append(tuple(mats))
        out.append(heads)
    return out


def assert_grad_agrees(weights, N, prompts=10**6, **data):
    """Exact gradient within Z_MAX standard errors of mc_grad, entry by entry; entries with a
    zero per-prompt gradient (inert) must be exactly zero in both."""
    exact = exact_gradient(weights, N, **data)
    floats = {k: (v if isinstance(v, (str, bool, int)) else np.array(v, dtype=float))
              for k, v in data.items()}
    grad, se = so.mc_grad(as_float(weights), np.array(LAMBDA, dtype=float), N, prompts=prompts,
                          seed=5, **floats)
    for l, layer in enumerate(exact):
        for h, head in enumerate(layer):
            for m in range(2):
                e, g, s = head[m], grad[l][h][m], se[l][h][m]
                live = s > 0
                assert np.all(e[~live] == 0) and np.all(g[~live] == 0)
                assert np.all(np.abs(g[live] - e[live]) < Z_MAX * s[live]), (l, h, m, e, g, s)
                assert np.any(live)


def test_two_layers_gradient_exact_equals_monte_carlo():
    weights = merged_stack(3)
    weights[0].append(merged(F(1, 3), rational_matrix(np.random.default_rng(9), (2, 2), 6)))
    assert_grad_agrees(weights, 2, prompts=3 * 10**5, Sigma_w=SIGMA_W, sigma=SIGMA,
                       query_in_keys=False, negate_readout=True)


@pytest.mark.slow
def test_two_full_layers_gradient_exact_equals_monte_carlo():
    """Small full weights: every one of the 36 entries has an O(1) gradient."""
    assert_grad_agrees(full_stack(7, scale=48, heads=(1, 1)), 1, Sigma_w=SIGMA_W, sigma=SIGMA)


# ---------------------------------------------------------------------------- input errors

def test_bad_inputs_are_clear_errors():
    weights = merged_stack(0)
    with pytest.raises(ValueError, match="weights"):
        so.exact_loss([[(np.eye(3), np.eye(2))]], LAMBDA, 1)
    with pytest.raises(ValueError, match="float"):
        so.exact_loss(as_float([[merged(F(1, 3), np.eye(2, dtype=object))]]), LAMBDA, 1)
    with pytest.raises(ValueError, match="tasks"):
        so.exact_loss(weights, LAMBDA, 1, tasks="ridge")
    with pytest.raises(ValueError, match="eigenbasis"):
        so.exact_loss([[merged(np.eye(2, dtype=object), np.eye(2, dtype=object), d_y=2)]],
                      [[F(1), F(1, 2)], [F(1, 2), F(1)]], 1, d_y=2, tasks="diagonal",
                      eigenbasis=[[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="Lambda"):
        so.exact_loss(weights, [[1, 2], [2, 1]], 1)
    with pytest.raises(ValueError, match="prompts"):
        so.mc_loss(as_float(weights), np.eye(2), 1, prompts=1)
    assert math.isfinite(so.mc_loss(as_float(weights), np.eye(2), 1, prompts=100)[0])
