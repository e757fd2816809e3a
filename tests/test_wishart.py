"""The two-stage route through the context's Wishart matrix (theory/wishart.py) against the
Isserlis engine and against the χ² moments: the Stein recursion on S-words equals the
pairing enumeration of S = Σ x_i x_iᵀ, and the two stages give the very polynomial the engine
gives for one-layer covariances and stack losses (exact equality of trace polynomials)."""

import itertools

import numpy as np
import pytest
import sympy as sp

from icldyn.theory import ICLData, InputError, derive, models
from icldyn.theory.covariance import PROBES, _blocks, _directional
from icldyn.theory.data import LAMBDA, N_SYM, x
from icldyn.theory.gaussian import (GaussianLaw, Monomial, Segment, VectorCov, expect,
                                    expect_products)
from icldyn.theory.terms import inner_monomial, residual
from icldyn.theory.wishart import (S_CONTEXT, context_degree, contract,
                                   expect_products_by_context, wishart_expect)
from icldyn.theory.words import Mat, TracePoly

N = sp.Symbol("N")


@pytest.mark.parametrize("k", range(1, 7))
def test_one_dimensional_moments_are_the_chi_square_ones(k):
    """d = 1: S = λ χ²_N, E S^k = λ^k N(N + 2)⋯(N + 2k − 2), whichever way S^k is traced."""
    lam = sp.Rational(3, 2)
    expected = lam**k * sp.prod([N + 2 * j for j in range(k)])
    for split in set(itertools.permutations([1] * k)) | {(k,), (1, k - 1) if k > 1 else (1,)}:
        poly = TracePoly.constant(1)
        for part in split:
            poly = poly * TracePoly.trace(*[S_CONTEXT] * part)
        value = wishart_expect(poly, N).evaluate({LAMBDA.name: sp.Matrix([[lam]]),
                                                 "_scalars": {sp.Symbol("d"): 1}})
        assert sp.expand(value - expected) == 0, (split, value)


def _engine_moment(traces, law):
    """E Π tr(word) with every S expanded as Σ_i x_i x_iᵀ over a fresh label: the pairing
    enumeration of the Isserlis engine, independent of the Stein recursion."""
    segments, labels = [], []
    for word in traces:
        cut = [i for i, letter in enumerate(word) if letter == S_CONTEXT]
        mine = [f"l{len(labels) + j}" for j in range(len(cut))]
        labels += mine
        for j, start in enumerate(cut):
            end = cut[(j + 1) % len(cut)]
            between = word[start + 1:end] if end > start else word[start + 1:] + word[:end]
            segments.append(Segment(x(mine[j]), between, x(mine[(j + 1) % len(cut)])))
    return expect([Monomial(1, tuple(labels), tuple(segments))], law, N)


def test_stein_recursion_equals_the_pairing_enumeration():
    """Random products of traces of words in S and non-symmetric letters A, B, C (degree ≤ 5
    in S, up to three traces): the recursion equals the engine's enumeration exactly."""
    A, B, C = Mat("A"), Mat("B"), Mat("C")
    letters = [A, B, C, A.transpose(), B.transpose()]
    law = GaussianLaw(vectors={"x": VectorCov("x", LAMBDA)})
    rng = np.random.default_rng(0)
    for _ in range(40):
        traces = []
        for _ in range(rng.integers(1, 4)):
            word = [S_CONTEXT]
            for _ in range(rng.integers(0, 3)):
                word += [letters[i] for i in rng.integers(0, len(letters), rng.integers(0, 3))]
                word.append(S_CONTEXT)
            word += [letters[i] for i in rng.integers(0, len(letters), rng.integers(0, 2))]
            traces.append(tuple(word))
        if sum(w.count(S_CONTEXT) for w in traces) > 5:
            continue
        poly = TracePoly({tuple(traces): sp.Integer(1)})
        assert wishart_expect(poly, N) == _engine_moment(traces, law), traces


LAMBDA_FULL = np.array([[1.0, 0.3], [0.3, 0.6]])
FINITE = [[[1.0, -0.5], [0.0, 1.2]], [[0.4, 1.0], [-0.8, 0.0]]]


@pytest.mark.parametrize("model,data", [
    (models.Merged(2), ICLData(d=2, N=3, Lambda="full", Sigma_w="full", noise=0.5)),
    (models.MultiHead(2, heads=2), ICLData(d=2, N=3, Lambda="full", noise=0.5)),
    (models.SeparateKQ(2, heads=1, rank=1), ICLData(d=2, N=3, Lambda="full", noise=0.5)),
    (models.Merged(2, d_y=2), ICLData(d=2, N=3, d_y=2, Lambda=LAMBDA_FULL, tasks=FINITE)),
    (models.Merged(2, d_y=2), ICLData(d=2, N=3, d_y=2, Lambda=LAMBDA_FULL, tasks="diagonal",
                                      Sigma_w=[1.5, 0.6], noise=0.3))], ids=repr)
def test_two_stages_give_the_engines_covariance(model, data):
    """Every block of the one-layer gradient's second moment (Gaussian tasks with Σ_w, σ > 0;
    a finite task set; the paper's eigenbasis tasks, conditional on W): identical polynomials."""
    letters, directional, law = _directional(derive(model, data))
    for L, M in _blocks(letters):
        exchange = (PROBES[0] + L, PROBES[1] + L) if L == M else None
        left, right = directional[PROBES[0], L], directional[PROBES[1], M]
        two = expect_products_by_context(left, right, law, N_SYM, exchange)
        assert two is not None and two == expect_products(left, right, law, N_SYM, exchange)


@pytest.mark.parametrize("layers", [
    lambda: [models.Merged(2), models.Merged(2)],
    lambda: [models.MultiHead(2, heads=2), models.SeparateKQ(2, heads=1, rank=1)]])
@pytest.mark.parametrize("query_in_keys,negate_readout", [(True, False), (False, True)])
def test_two_stages_give_the_stack_loss(layers, query_in_keys, negate_readout):
    """The loss of two-layer stacks (both key masks), Σ_w full, σ > 0: the two stages give the
    derived loss polynomial (itself checked against brute force in test_stack.py)."""
    model = models.Stack(layers(), query_in_keys=query_in_keys, negate_readout=negate_readout)
    data = ICLData(d=2, N=3, Lambda="full", Sigma_w="full", noise=0.5)
    r = residual(model)
    half = [inner_monomial(a, b, sp.Rational(1, 2)) for a in r for b in r]
    one = [Monomial(sp.Integer(1), (), ())]
    assert context_degree(half, data.law()) == 4
    assert expect_products_by_context(half, one, data.law(), N_SYM) == derive(model, data).loss_poly


def test_full_layers_do_not_contract():
    """FullLSA's keys read the y-rows: labels meet as ε_i ε_i, not through S or E."""
    r = residual(models.FullLSA(2))
    monos = [inner_monomial(a, b, 1) for a in r for b in r]
    assert context_degree(monos, ICLData(d=2, N=3).law()) is None
    assert any(contract(m) is None for m in monos)
    assert expect_products_by_context(monos, monos, ICLData(d=2, N=3).law(), N_SYM) is None


@pytest.mark.slow
def test_three_layers_are_refused_with_the_degree():
    """Three Merged layers: degree 12 in S, beyond the two-stage route's 8: a clear error."""
    der = derive(models.Stack([models.Merged(2)] * 3), ICLData(d=2, N=3))
    with pytest.raises(InputError, match=r"^model: .* needs 8\.65e\+14 Isserlis pairings.*"
                                         r"degree 12 > 8 in S"):
        der.gradient_covariance()


def _float_value(poly, values):
    """Σ c Π tr(word) in float64 (10⁵ terms: SymPy's exact evaluation would take hours): the
    words multiplied with NumPy and memoised, each distinct coefficient substituted once."""
    mats = {k: np.array(v.tolist(), dtype=float) for k, v in values.items()
            if isinstance(v, sp.MatrixBase)}
    traces_seen, coeffs_seen, total = {}, {}, 0.0
    for traces, coeff in poly.terms.items():
        if coeff not in coeffs_seen:
            coeffs_seen[coeff] = float(coeff.subs(values["_scalars"]))
        term = coeffs_seen[coeff]
        for word in traces:
            if word not in traces_seen:
                product = np.eye(1)
                for i, letter in enumerate(word):
                    m = mats[letter.name].T if letter.T else mats[letter.name]
                    product = m if i == 0 else product @ m
                traces_seen[word] = float(np.trace(product))
            term *= traces_seen[word]
        total += term
    return total


@pytest.mark.slow
@pytest.mark.parametrize("query_in_keys,negate_readout", [(False, True), (True, False)])
def test_stack_covariance_blocks_match_monte_carlo_of_the_network(query_in_keys, negate_readout):
    """Two Merged layers, non-diagonal Λ, Σ_w ≠ I, σ > 0: the (V¹, V¹), (V¹, V²) and (V², V²)
    blocks of the single-prompt gradient covariance by the two stages against 10⁶ prompts of
    the actual stacked network (per-prompt gradients by the simulator's backpropagation):
    |z| < 4 for each of the three entries, z from the standard error of the sample
    (co)variance over 20 batches."""
    from icldyn.numerics.simulation.sgd import PromptSampler, model_loss_and_grad
    from icldyn.theory.covariance import GradientCovariance

    model = models.Stack([models.Merged(2)] * 2, query_in_keys=query_in_keys,
                         negate_readout=negate_readout)
    data = ICLData(d=2, N=3, Lambda=LAMBDA_FULL, Sigma_w=[[1.0, -0.2], [-0.2, 0.8]], noise=0.3)
    der = derive(model, data)
    letters, directional, law = _directional(der)
    blocks = [("V__1", "V__1"), ("V__1", "V__2"), ("V__2", "V__2")]
    second = {}
    for L, M in blocks:
        exchange = (PROBES[0] + L, PROBES[1] + L) if L == M else None
        second[L, M] = expect_products_by_context(directional[PROBES[0], L],
                                                  directional[PROBES[1], M], law, N_SYM,
                                                  exchange)
    cov = GradientCovariance(der, second)
    params = {"0.V": np.array([[0.7]]), "0.Q": np.array([[0.5, -0.2], [0.1, 0.4]]),
              "1.V": np.array([[-0.6]]), "1.Q": np.array([[0.3, 0.2], [-0.1, 0.6]])}
    values = cov.values({k: sp.Matrix(v) for k, v in params.items()})
    exact = {}
    for L, M in blocks:
        values.update({PROBES[0] + L: sp.Matrix([[1]]), PROBES[1] + M: sp.Matrix([[1]])})
        exact[L, M] = _float_value(cov.covariance(L, M), values)
    batches = []
    for b in range(20):
        n = 50_000
        prompts = PromptSampler(data).prompts(np.random.default_rng(b), (n, 1))
        _, grads = model_loss_and_grad(model, data, {k: np.repeat(v[None], n, axis=0)
                                                     for k, v in params.items()}, prompts)
        g1, g2 = grads["0.V"].reshape(n), grads["1.V"].reshape(n)
        c = np.cov(np.stack([g1, g2]))
        batches.append([c[0, 0], c[0, 1], c[1, 1]])
    batches = np.array(batches)
    mc, se = batches.mean(axis=0), batches.std(axis=0, ddof=1) / np.sqrt(len(batches))
    z = (mc - np.array([exact[k] for k in blocks])) / se
    assert np.abs(z).max() < 4, (z, mc, exact)


def test_the_two_stage_route_stops_at_its_memory_budget(monkeypatch):
    """A 2-layer stack's covariance (the two-stage route: its direct enumeration is beyond
    the pairing budget) past ICLDYN_MEMORY_GB stops with a one-line InputError naming the
    budget and the way out, instead of growing until the kernel's out-of-memory killer ends
    the process (it passed 23 GB with symbolic Λ, Σ_w, σ on 2026-12-03)."""
    monkeypatch.setenv("ICLDYN_MEMORY_GB", "0.01")
    der = derive(models.Stack([models.Merged(2)] * 2), ICLData(d=2, N=3, noise=0.5))
    with pytest.raises(InputError, match=r"^model: the gradient covariance of Stack.*passed "
                                         r"its memory budget .*ICLDYN_MEMORY_GB.*simulate_sgd"):
        der.gradient_covariance()
