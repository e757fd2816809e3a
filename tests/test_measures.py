"""Macroscopic measures on matrices with known answers, and their invariances (Hypothesis)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import ortho_group

from conftest import matrices
from icldyn.numerics.measures import (alignment_distance, effective_rank, numerical_rank,
                                      principal_angles, singular_values, stable_rank,
                                      subspace_overlap, top_hessian_eigenvalue)
from icldyn.theory import InputError


def test_known_ranks():
    assert effective_rank(np.eye(4)) == pytest.approx(4)
    assert effective_rank(np.outer([1, 2, 3], [4, 5])) == pytest.approx(1)
    assert effective_rank(np.diag([3.0, 3.0, 0.0])) == pytest.approx(2)
    assert effective_rank(np.diag([10.0, 1.0, 1.0]), drop_top=1) == pytest.approx(2)
    p = np.array([0.5, 0.25, 0.25])          # Roy–Vetterli: exp of the Shannon entropy
    assert effective_rank(np.diag(p)) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert effective_rank(np.zeros((3, 3))) == 0
    assert stable_rank(np.eye(5)) == pytest.approx(5)
    assert stable_rank(np.diag([2.0, 1.0])) == pytest.approx(1.25)
    rng = np.random.default_rng(0)
    low = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 5))
    assert numerical_rank(low) == 2
    assert numerical_rank(np.diag([1.0, 0.2, 0.01]), tol=0.1) == 2
    assert numerical_rank(np.diag([1.0, 0.2, 0.01]), rtol=0.005) == 3


def test_stacks_of_checkpoints():
    stack = np.stack([np.eye(3), np.diag([1.0, 0, 0]), np.diag([2.0, 2.0, 0])])
    np.testing.assert_allclose(effective_rank(stack), [3, 1, 2])
    np.testing.assert_array_equal(numerical_rank(stack), [3, 1, 2])
    np.testing.assert_allclose(stable_rank(stack), [3, 1, 2])
    assert singular_values(stack).shape == (3, 3)
    assert subspace_overlap(stack, stack[-1], k=1).shape == (3,)


def test_principal_angles_and_overlap_known_answers():
    theta = 0.3
    A = np.array([[1.0, 0], [0, 0]])
    B = np.array([[np.cos(theta), 0], [np.sin(theta), 0]])
    assert principal_angles(A, B, k=1)[0] == pytest.approx(theta)
    assert subspace_overlap(A, B, k=1) == pytest.approx(np.cos(theta) ** 2)
    C = np.array([[0, 0], [1.0, 0]])
    assert principal_angles(A, C, k=1)[0] == pytest.approx(np.pi / 2)
    assert subspace_overlap(np.eye(3), np.eye(3), k=2) == pytest.approx(1)
    assert principal_angles(A.T, B.T, k=1, side="right")[0] == pytest.approx(theta)


def test_alignment_distance_known_answers():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((4, 5))
    assert alignment_distance(M, rng.standard_normal((3, 4)) @ M) == pytest.approx(0, abs=1e-12)
    E = np.zeros((2, 4))
    E[0, 0] = E[1, 1] = 1.0
    F = np.zeros((2, 4))
    F[0, 2] = 1.0
    assert alignment_distance(E, F) == pytest.approx(1)
    assert alignment_distance(E, E + F) == pytest.approx(1 / np.sqrt(3))


def test_top_hessian_eigenvalue_lanczos_and_power():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((30, 30))
    H = A + A.T
    top = np.linalg.eigvalsh(H)[-1]
    assert top_hessian_eigenvalue(lambda v: H @ v, 30) == pytest.approx(top, rel=1e-9)
    P = A @ A.T                                  # PSD: dominant = largest
    assert top_hessian_eigenvalue(lambda v: P @ v, 30, method="power", maxiter=5000,
                                  tol=1e-13) == pytest.approx(np.linalg.eigvalsh(P)[-1],
                                                              rel=1e-6)
    with pytest.raises(InputError, match="method"):
        top_hessian_eigenvalue(lambda v: v, 3, method="magic")


def test_bad_input():
    with pytest.raises(InputError, match="matrix"):
        effective_rank(np.ones(3))
    with pytest.raises(InputError, match="NaN"):
        stable_rank(np.array([[np.nan]]))
    with pytest.raises(InputError, match="k"):
        subspace_overlap(np.eye(2), np.eye(2), k=3)


@given(matrices((4, 3), bound=10.0), st.floats(0.01, 100.0), st.integers(0, 2**31))
def test_invariance_to_rotations_and_scaling(M, c, seed):
    if np.linalg.norm(M) < 1e-6:
        return
    R = ortho_group.rvs(4, random_state=seed)
    S = ortho_group.rvs(3, random_state=seed + 1)
    moved = c * R @ M @ S
    assert effective_rank(moved) == pytest.approx(effective_rank(M), rel=1e-7, abs=1e-9)
    assert stable_rank(moved) == pytest.approx(stable_rank(M), rel=1e-7)
    r = numerical_rank(M)
    assert 1 - 1e-9 <= stable_rank(M) <= r + 1e-9
    assert 1 - 1e-9 <= effective_rank(M) <= r + 1e-9


@given(matrices((5, 3)), matrices((5, 3)), st.integers(1, 3), st.integers(0, 2**31))
def test_overlap_bounds_symmetry_and_rotation_invariance(A, B, k, seed):
    if min(np.linalg.svd(A, compute_uv=False)[k - 1],
           np.linalg.svd(B, compute_uv=False)[k - 1]) < 1e-3:
        return                                   # top-k subspace not well defined
    R = ortho_group.rvs(5, random_state=seed)
    o = subspace_overlap(A, B, k)
    assert -1e-12 <= o <= 1 + 1e-12
    assert o == pytest.approx(subspace_overlap(B, A, k), abs=1e-9)
    assert o == pytest.approx(subspace_overlap(R @ A, R @ B, k), abs=1e-9)
    angles = principal_angles(A, B, k)
    assert np.all((angles >= 0) & (angles <= np.pi / 2 + 1e-12))
    assert o == pytest.approx(np.mean(np.cos(angles) ** 2), abs=1e-9)


def test_linear_lens_reads_the_stages_of_an_exact_trajectory():
    from icldyn.numerics import compile_flow, integrate
    from icldyn.numerics.measures.trajectory import trajectory_measures
    from icldyn.theory import ICLData, derive, models

    data = ICLData(d=2, N=8, Lambda=np.diag([2.0, 0.5]), d_y=2, tasks="diagonal")
    flow = compile_flow(derive(models.Merged(2, d_y=2), data))
    t = np.r_[0.0, np.geomspace(1e-2, 200, 300)]
    traj = integrate(flow, {"V": 1e-3, "Q": 1e-3}, t_end=200.0, t_eval=t)
    lens = trajectory_measures(flow, traj.t, traj.theta)
    first, second = lens["Q"]["rank_step_times"]
    assert 0 < first < second / 5           # the s = 2 mode long before the s = 1/2 mode
    assert lens["top_hessian"][0] == pytest.approx(4.0, rel=1e-3)   # s_max² at the saddle
    assert lens["Q"]["effective_rank"][0] == pytest.approx(2.0)
    assert lens["Q"]["effective_rank"].min() < 1.3 < lens["Q"]["effective_rank"][-1]


def test_step_finders_of_the_training_records():
    from icldyn.numerics.nonlinear.training import fall_step, first_step
    steps = [0, 10, 20, 30, 40]
    assert first_step(steps, [5.0, 3.0, 1.5, 0.9, 0.5], below=1.0) == 30
    assert first_step(steps, [0.1, 0.5, 0.99, 0.98, 1.0], above=0.99) == 20
    assert first_step(steps, [5.0] * 5, below=1.0) is None
    assert fall_step(steps, [0.9, 0.4, 0.6, 0.3, 0.0], level=0.5) == 30   # stays below for good
    assert fall_step(steps, [0.1] * 5) == 0
    assert fall_step(steps, [0.1, 0.1, 0.1, 0.1, 0.7]) is None


def test_scale_free_measures_at_the_ends_of_the_float_range():
    """Entries near 1e308 or 1e-308 give the same effective/stable/numerical rank and
    subspaces as the unit-scale matrix, without overflow warnings."""
    import warnings
    base = np.array([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e308, 1e-308):
            M = scale * base
            for fn in (effective_rank, stable_rank, numerical_rank):
                assert fn(M) == pytest.approx(fn(base), rel=1e-12), (fn.__name__, scale)
            assert subspace_overlap(M, base, 2) == pytest.approx(1.0)
        assert numerical_rank(1e-300 * np.eye(3), tol=1e-301) == 3
