"""Shared fixtures and Hypothesis strategies."""

import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

os.environ.setdefault("MPLBACKEND", "Agg")
# A fresh derivation/kernel cache per test session (set ICLDYN_CACHE_DIR to reuse one locally).
os.environ.setdefault("ICLDYN_CACHE_DIR", tempfile.mkdtemp(prefix="icldyn-test-cache-"))

settings.register_profile("default", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


@st.composite
def spd_matrices(draw, d, low=0.2):
    """A Aᵀ/d + low·I from bounded floats: SPD with eigenvalues in [low, low + d]."""
    entries = draw(st.lists(st.floats(-1, 1, allow_nan=False, allow_subnormal=False),
                            min_size=d * d, max_size=d * d))
    A = np.array(entries).reshape(d, d)
    return A @ A.T / d + low * np.eye(d)


@st.composite
def matrices(draw, shape, bound=1.0):
    n = int(np.prod(shape))
    entries = draw(st.lists(st.floats(-bound, bound, allow_nan=False, allow_subnormal=False),
                            min_size=n, max_size=n))
    return np.array(entries).reshape(shape)


def rotated_vector_tasks(s, N: int, seed: int = 0):
    """The paper's tasks with Λ = U diag(s) Uᵀ in a random rotated basis U."""
    from icldyn.theory import ICLData
    d = len(s)
    U, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return ICLData(d=d, N=N, Lambda=U @ np.diag(s) @ U.T, d_y=d, tasks="diagonal")


def critical_check(der, sets):
    """Each representative is critical for the compiled flow, its loss is the set's loss, and
    it is balanced (every conserved quantity zero). Returns the flow."""
    import pytest
    from icldyn.numerics import compile_flow
    flow = compile_flow(der)
    for fp in sets:
        theta = flow.pack(fp.point)
        assert np.abs(flow.grad(theta)).max() < 1e-13, fp.name
        assert flow.loss(theta) == pytest.approx(float(fp.loss), rel=1e-13)
        assert np.abs(flow.conserved(theta)).max() < 1e-13
    return flow
