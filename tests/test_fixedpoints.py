"""Critical sets: the scalar-task minimum against docs/math.md §3.2's M*, the eigenmode sets of the
paper's tasks against integration of the flow, and Hessian indices."""

import numpy as np
import pytest
import sympy as sp

from conftest import critical_check, kind_check, rotated_vector_tasks
from icldyn.numerics import compile_flow, integrate
from icldyn.theory import ICLData, derive, models

R = sp.Rational


@pytest.mark.parametrize("seed", range(3))
def test_scalar_minimum_is_the_oracle_m_star(seed):
    rng = np.random.default_rng(seed)
    d = 3
    A = sp.Matrix(d, d, lambda i, j: R(int(rng.integers(-3, 4)), 2))
    Lam = A * A.T + sp.eye(d) / 2
    B = sp.Matrix(d, d, lambda i, j: R(int(rng.integers(-3, 4)), 2))
    Sw = B * B.T + sp.eye(d)
    n, sigma = int(rng.integers(1, 12)), R(int(rng.integers(0, 4)), 3)
    der = derive(models.Merged(d), ICLData(d=d, N=n, Lambda=Lam, Sigma_w=Sw, noise=sigma))
    minimum, saddle = der.fixed_points()
    Aop = R(n + 1, n) * Lam * Sw * Lam + ((Sw * Lam).trace() + sigma**2) / n * Lam
    M_star = Aop.inv() * Lam * Sw                                  # oracle
    assert minimum.info["M_star"] == M_star
    assert minimum.hessian_index == 0 and saddle.hessian_index == 1
    u, Q = minimum.point["V"][0, 0], minimum.point["Q"]
    assert sp.simplify(der.loss_value({"V": u, "Q": Q}) - minimum.loss) == 0
    assert all(sp.simplify(g) == 0 for G in der.gradient_value({"V": u, "Q": Q}).values()
               for g in G)
    assert saddle.loss == der.loss_value({"V": 0, "Q": sp.zeros(d, d)})


def test_symbolic_m_star_for_diagonal_lambda():
    N = sp.Symbol("N", positive=True, integer=True)
    sigma = sp.Symbol("sigma", nonnegative=True)
    der = derive(models.Merged(2), ICLData(d=2, N=N, Lambda="diag", noise=sigma))
    M = der.fixed_points()[0].info["M_star"]
    s = [der.data.Lambda[k, k] for k in range(2)]
    for k in range(2):       # (N+1)/N s + (tr Λ + σ²)/N, inverted
        assert sp.simplify(M[k, k] - N / ((N + 1) * s[k] + s[0] + s[1] + sigma**2)) == 0
    assert M[0, 1] == 0


@pytest.mark.slow
def test_eigenmode_critical_sets_and_their_indices():
    data = rotated_vector_tasks([2.0, 1.0, 0.5], N=8)
    der = derive(models.Merged(3, d_y=3), data)
    sets = der.fixed_points()
    assert len(sets) == 8                                     # one per subset of modes
    for fp in sets:                                           # unstable: one per unlearned mode
        assert fp.hessian_index == 3 - len(fp.info["learned"])
    minimum = sets[0]
    flow = compile_flow(der)
    traj = integrate(flow, {"V": 0.01, "Q": 0.01}, t_end=400.0, n_points=2)
    assert traj.loss[-1] == pytest.approx(float(minimum.loss), rel=1e-8)
    final = flow.unpack(traj.theta[-1])
    Ub = flow.U
    a = np.diag(Ub.T @ final["V"] @ Ub) * np.diag(Ub.T @ final["Q"] @ Ub)
    np.testing.assert_allclose(a, [float(v) for v in minimum.info["a"]], rtol=1e-6)
    grad = flow.grad(flow.pack({k: np.array(v.tolist(), dtype=float)
                                for k, v in minimum.point.items()}))
    assert np.abs(grad).max() < 1e-12




@pytest.mark.slow
def test_learned_algorithm_risk_against_monte_carlo_ols_and_bayes():
    from icldyn.numerics.experiments.risks import incontext_risks
    sigma, d = 0.3, 3
    rows = incontext_risks(d, np.diag([2.0, 1.0, 0.5]), [1, 4, 8, 16], noise=sigma,
                           prompts=40000, seed=1)
    for row in rows:
        mean, se = row["learned_mc"]
        assert abs(mean - row["theory"]) < 4 * se, row      # derived risk = simulated risk
        assert row["bayes_mc"][0] <= row["ols_mc"][0] + 3 * row["ols_mc"][1]
        assert row["bayes_mc"][0] <= mean
    for row in rows:
        if row["N"] >= d + 2:     # classical OLS risk for Gaussian inputs: ½σ²(1 + d/(N−d−1))
            expected = 0.5 * sigma**2 * (1 + d / (row["N"] - d - 1))
            assert abs(row["ols_mc"][0] - expected) < 4 * row["ols_mc"][1]
    theory = [row["theory"] for row in rows]
    # SeparateKQ with one rank-1 head: principal-component regression in context, its
    # derived risk equals the simulated one and lies above the full M*'s at every N
    rank_one = incontext_risks(d, np.diag([2.0, 1.0, 0.5]), [1, 4, 8, 16], noise=sigma,
                               prompts=40000, seed=2, model=models.SeparateKQ(d, rank=1))
    for row, full in zip(rank_one, rows):
        mean, se = row["learned_mc"]
        assert abs(mean - row["theory"]) < 4 * se, row
        assert row["theory"] > full["theory"]
    assert all(b < a for a, b in zip(theory, theory[1:]))   # more context, lower risk


SCALAR = ICLData(d=3, N=6, Lambda=np.diag([2.0, 1.0, 0.5]), noise=0.1)


def test_multihead_sets():
    """M = Σ_h u_h Q_h: the minimum set Σ u_h Q_h = M* (Merged's M*) and the saddle at
    u = 0, whose index is H (one unstable direction per head)."""
    merged_min = derive(models.Merged(3), SCALAR).fixed_points()[0]
    der = derive(models.MultiHead(3, heads=2), SCALAR)
    minimum, saddle = der.fixed_points()
    critical_check(der, [minimum, saddle])
    assert minimum.loss == merged_min.loss and minimum.info["M_star"] == merged_min.info["M_star"]
    assert (minimum.hessian_index, saddle.hessian_index) == (0, 2)


def test_separate_kq_sets_are_eigenmode_subsets_of_m_star():
    """Σ_w = I, Λ diagonal: the singular modes are Λ's eigenmodes and the set of subset S has
    M = the part of M* on S (docs/math.md §3.2 oracle M*_αα = N/((N+1)s_α + tr Λ + σ²))."""
    der = derive(models.SeparateKQ(3, heads=1, rank=2), SCALAR)
    sets = der.fixed_points()
    assert len(sets) == 1 + 3 + 3                    # subsets of at most rank r = 2 modes
    critical_check(der, sets)
    s, N, sigma2 = [2.0, 1.0, 0.5], 6, 0.01
    m_star = [N / ((N + 1) * v + sum(s) + sigma2) for v in s]
    for fp in sets:
        expected = np.diag([m_star[i] if i in fp.info["learned"] else 0 for i in range(3)])
        np.testing.assert_allclose(np.array(fp.info["M"], dtype=float), expected, atol=1e-25)
    assert sets[0].name == "global minimum (rank 2)" and sets[0].info["learned"] == (0, 1)
    assert sets[0].hessian_index == 0 and all(fp.info["loss_gap"] > 0 for fp in sets[1:])
    # strict saddles with a free rank slot: one unstable direction per better unlearned mode
    # and per free slot pairing (index counted at the balanced representative)
    by_learned = {fp.info["learned"]: fp.hessian_index for fp in sets}
    assert by_learned[(0, 2)] == 1 and by_learned[(1, 2)] == 2 and by_learned[()] == 0


def test_separate_kq_saddle_to_saddle_dynamics():
    """From a small start the flow visits the predicted critical sets in order: origin →
    mode 1 learned → modes 1, 2 (the rank-2 minimum), with plateaus at their losses."""
    der = derive(models.SeparateKQ(3, heads=1, rank=2), SCALAR)
    sets = {fp.info["learned"]: fp for fp in der.fixed_points()}
    flow = compile_flow(der)
    rng = np.random.default_rng(0)
    init = {"V": 1e-3, "W_K": 1e-3 * rng.standard_normal((1, 2, 3)),
            "W_Q": 1e-3 * rng.standard_normal((1, 2, 3))}
    traj = integrate(flow, init, t_end=400.0, n_points=4001)
    speed = np.array([np.linalg.norm(flow.grad(th)) for th in traj.theta])
    visits = []
    for S in [(), (0,), (0, 1)]:
        near = np.abs(traj.loss - float(sets[S].loss)) < 1e-3
        slow = near & (speed < 1e-2)
        assert slow.any(), S                           # a plateau at that set's loss
        visits.append(np.argmax(slow))
    assert visits == sorted(visits)
    for a, b in zip(visits, visits[1:]):               # a fast drop between the plateaus
        assert speed[a:b].max() > 0.1
    assert traj.loss[-1] == pytest.approx(float(sets[(0, 1)].loss), rel=1e-9)


@pytest.mark.slow
def test_full_lsa_sets_and_its_spurious_local_minimum():
    """FullLSA: the Merged sets on P₁ = 0, Q₂ = 0 and the rank-one modes on P₂ = 0, Q₁ = 0.
    The top rank-one mode has Hessian index 0: a local minimum above the global one, where
    some random starts end (ŷ = (P₁S_xy)(Q₂x_q)/N)."""
    data = ICLData(d=2, N=3, Lambda=np.array([[1.5, 0.3], [0.3, 0.7]]))
    der = derive(models.FullLSA(2), data)
    sets = der.fixed_points()
    flow = critical_check(der, sets)
    names = [fp.name for fp in sets]
    assert names[0].startswith("global minimum") and len(sets) == 4
    spurious = next(fp for fp in sets if fp.name.startswith("rank-one mode 1"))
    assert spurious.hessian_index == 0 and spurious.info["loss_gap"] > 0.1
    rng = np.random.default_rng(0)
    ends = []
    for _ in range(4):
        traj = integrate(flow, 0.5 * rng.standard_normal(flow.size), t_end=3000.0, n_points=2)
        ends.append(traj.loss[-1])
    targets = [float(sets[0].loss), float(spurious.loss)]
    assert all(min(abs(e - t) for t in targets) < 1e-9 for e in ends), ends
    assert any(abs(e - targets[1]) < 1e-9 for e in ends)      # the local minimum is reached


def test_separate_kq_sets_with_general_lambda_and_sigma_w():
    """Non-diagonal Λ, Σ_w ≠ I, noise: the whitened singular modes are not Λ's eigenmodes,
    every representative is still critical, and with H r ≥ d the minimum is Merged's."""
    data = ICLData(d=2, N=4, Lambda=[[1.2, 0.4], [0.4, 0.6]], Sigma_w=[[1.0, 0.3], [0.3, 0.5]],
                   noise=0.2)
    der = derive(models.SeparateKQ(2, heads=2, rank=1), data)
    sets = der.fixed_points()
    critical_check(der, sets)
    assert len(sets) == 4 and sets[0].name == "global minimum"
    merged = derive(models.Merged(2), data).fixed_points()[0]
    assert float(sets[0].loss) == pytest.approx(float(merged.loss), rel=1e-25)
    M = np.array(sets[1].info["M"], dtype=float)
    assert np.linalg.matrix_rank(M) == 1 and abs(M[0, 1]) > 1e-3     # not diagonal


KINDS_DATA = ICLData(d=2, N=4, Lambda=np.diag([2.0, 1.0]), noise=0.1)


@pytest.mark.parametrize("model, expected", [
    (models.Merged(2), {"minimum": 1, "strict saddle": 1}),
    (models.MultiHead(2, heads=2), {"minimum": 1, "strict saddle": 1}),
    pytest.param(models.SeparateKQ(2, heads=2, rank=1), {"minimum": 1, "strict saddle": 1,
                                                         "degenerate saddle": 2},
                 marks=pytest.mark.slow),
])
def test_kinds_of_scalar_sets_against_the_flow(model, expected):
    """Every set's kind is confirmed by the exact flow (``kind_check``); the product-form
    minima are certified globally, and SeparateKQ's origin and one-mode set (an idle head) are
    degenerate saddles escaped at third order."""
    der = derive(model, KINDS_DATA)
    sets = der.fixed_points()
    assert kind_check(der, sets) == expected
    assert "global minimum" in sets[0].evidence
    assert all(fp.escape.order == 3 for fp in sets if fp.escape)


@pytest.mark.slow
def test_the_issue_example_has_exactly_one_minimum():
    """SeparateKQ(4, heads=4, rank=1): the origin and the stage sets {1}, {1, 2}, {1, 2, 3} have
    Hessian index 0 but are degenerate saddles (an idle head takes the next mode at third
    order); the global minimum alone is a minimum, the rest strict saddles."""
    der = derive(models.SeparateKQ(4, heads=4, rank=1),
                 ICLData(d=4, N=31, Lambda=np.diag([.4, .3, .2, .1])))
    sets = der.fixed_points()
    assert [fp.name for fp in sets if fp.kind == "minimum"] == ["global minimum"]
    stages = {fp.info["learned"] for fp in sets if fp.kind == "degenerate saddle"}
    assert stages == {(), (0,), (0, 1), (0, 1, 2)}
    assert all(fp.kind == "strict saddle" for fp in sets if fp.hessian_index)
    for fp in sets:
        if fp.escape:
            assert fp.escape.order == 3 and fp.escape.loss < fp.loss


@pytest.mark.slow
def test_full_lsa_kinds_against_the_flow():
    """FullLSA (not product-form): both index-0 sets are local minima by the Hessian on the
    normal space of the rescaling orbit, and the flow returns to each."""
    der = derive(models.FullLSA(2), ICLData(d=2, N=3, Lambda=np.array([[1.5, 0.3], [0.3, 0.7]])))
    sets = der.fixed_points()
    assert kind_check(der, sets) == {"minimum": 2, "strict saddle": 2}
    assert all("normal space" in fp.evidence for fp in sets if fp.kind == "minimum")


@pytest.mark.parametrize("d, d_y", [(12, 1), (2, 12)])
def test_entry_symbols_never_collide_at_two_digit_sizes(d, d_y):
    """Entry symbols once named m_{i}{j} made m_111 both (1, 11) and (11, 1): critical sets at
    d = 12 or d_y = 12 failed with 'duplicate symbols'."""
    from icldyn.theory.fixedpoints import entry_symbols
    assert len(set(entry_symbols("m", 12, 12))) == 144
    der = derive(models.Merged(d, d_y=d_y),
                 ICLData(d=d, N=4, Lambda=np.diag(np.linspace(2, 1, d)), d_y=d_y))
    sets = der.fixed_points()
    assert sorted(fp.hessian_index for fp in sets) == [0, 1]
    saddle = next(fp for fp in sets if fp.hessian_index == 1)
    assert float(saddle.loss) == pytest.approx(d_y * np.linspace(2, 1, d).sum() / 2)  # d_y trΛ/2


@pytest.mark.slow
def test_plateaus_of_saddle_to_saddle_learning_are_the_degenerate_saddles_in_order():
    """SeparateKQ(3, heads=3, rank=1), Λ = diag(1, ½, ¼), N = 15, from a 10⁻² start: the exact
    flow's loss sits at the level of each degenerate saddle — origin, modes {1}, modes {1, 2} —
    in that order (plateaus: points within 10⁻³ of the level where the gradient is small), then
    reaches the minimum; it never plateaus at a strict saddle's level."""
    der = derive(models.SeparateKQ(3, heads=3, rank=1),
                 ICLData(d=3, N=15, Lambda=np.diag([1.0, 0.5, 0.25])))
    sets = der.fixed_points()
    flow = compile_flow(der, backend="numpy")
    rng = np.random.default_rng(0)
    theta = flow.pack({k: 1e-2 * rng.standard_normal(s) for k, s in der.model.shapes().items()})
    traj = integrate(flow, theta, t_end=2e4, t_eval=np.geomspace(1e-2, 2e4, 3000))
    grad = np.array([np.linalg.norm(flow.grad(th)) for th in traj.theta])

    def plateau(level):          # first time on a plateau at this loss level, or None
        on = np.nonzero((np.abs(traj.loss - level) < 1e-3 * level) & (grad < 1e-3))[0]
        return traj.t[on[0]] if len(on) else None

    visited = sorted((fp for fp in sets if fp.kind in ("degenerate saddle", "minimum")),
                     key=lambda fp: -float(fp.loss))
    assert [fp.kind for fp in visited] == ["degenerate saddle"] * 3 + ["minimum"]
    times = [plateau(float(fp.loss)) for fp in visited]
    assert None not in times and times == sorted(times), times
    for fp in sets:
        if fp.kind == "strict saddle":
            assert plateau(float(fp.loss)) is None, fp.name


SYMBOLIC_DATA = [ICLData(d=2, N=sp.Symbol("N", positive=True, integer=True), Lambda="diag"),
                 ICLData(d=2, N=5, Lambda="diag", noise=sp.Symbol("sigma", nonnegative=True))]


@pytest.mark.parametrize("data", SYMBOLIC_DATA, ids=["symbolic N", "symbolic Λ, σ"])
@pytest.mark.parametrize("model, d_y", [(models.Merged(2), 1), (models.MultiHead(2, heads=2), 1),
                                        (models.FullLSA(2), 1), (models.Merged(2, d_y=2), 2)])
def test_symbolic_data_never_report_a_minimum_without_a_proof(data, model, d_y):
    """With symbolic Λ, N or σ the Hessian's signature is not decided: a product-form model's
    global minimum is still proved (F convex in M, or its lift), every other set is
    "unresolved" and says why (FullLSA's symbolic sets were once a crash: their losses cannot
    be sorted)."""
    from icldyn.theory.criticality import SYMBOLIC
    from icldyn.theory.fixedpoints import CONVEX
    from icldyn.theory.vectorsets import LIFTED_CONVEX
    data = data.with_outputs(d_y) if d_y > 1 else data
    sets = derive(model, data).fixed_points()
    for fp in sets:
        assert fp.hessian_index is None
        if fp.kind == "minimum":
            assert fp.evidence in (CONVEX, LIFTED_CONVEX) and fp.name.startswith("global"), fp
        else:
            assert fp.kind == "unresolved" and fp.evidence == SYMBOLIC, fp.name
    # FullLSA is not a product-form model: even its Merged-set minimum is proved only by the
    # Hessian on the orbit's normal space, which symbolic data leave undecided
    expected = 0 if isinstance(model, models.FullLSA) else 1
    assert [fp.kind for fp in sets].count("minimum") == expected


def test_classify_refuses_a_kind_without_evidence():
    """The last guard of ``classify``: a set marked a minimum (or saddle) with no evidence is
    an error, not a silent claim."""
    from icldyn.theory.criticality import classify
    from icldyn.theory.fixedpoints import FixedPointSet
    der = derive(models.Merged(2), KINDS_DATA)
    fake = FixedPointSet("fake", [], {}, 0, 0, kind="minimum")
    with pytest.raises(ArithmeticError, match="without evidence"):
        classify(der, lambda point: None, [fake])


def test_critical_params_names_a_letter_without_a_value():
    from icldyn.theory.errors import InputError
    from icldyn.theory.landscape import critical_params

    der = derive(models.MultiHead(1, heads=2), ICLData(d=1, N=4))
    one = sp.Matrix([[1]])
    assert critical_params(der, {"V0": one, "Q0": one, "V1": one, "Q1": one})["V"].shape \
        == (2, 1, 1)
    with pytest.raises(InputError, match="letters: no value for Q1; give one per letter"):
        critical_params(der, {"V0": one, "Q0": one, "V1": one})
