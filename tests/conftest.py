"""Shared fixtures and Hypothesis strategies."""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from icldyn.theory.cache import cache_dir

os.environ.setdefault("MPLBACKEND", "Agg")
# A fresh derivation/kernel cache per test session (set ICLDYN_CACHE_DIR to reuse one locally).
os.environ.setdefault("ICLDYN_CACHE_DIR", tempfile.mkdtemp(prefix="icldyn-test-cache-"))
# Create and mark it here, once: pytest-xdist's workers inherit the variable and share the
# folder (entries are written atomically), so none of them sees a half-made cache.
cache_dir()


def pytest_collection_modifyitems(config, items):
    """Slow tests first (stable otherwise), so that most of them start early under ``-n auto``
    (the run's wall time is the busiest worker's; ``--dist worksteal`` in pyproject.toml
    hands the rest to whichever worker is idle). Not a guarantee: worksteal splits the list
    in halves and steals from a queue's tail, so one slow test can still run last (seen in
    CI, 2026-12-02)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


settings.register_profile("default", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


@pytest.fixture
def progress_calls(monkeypatch):
    """The (stage, done, total) updates a command sends to its progress display (the real
    display of ``cli._progress`` still receives them), in order."""
    from icldyn.numerics.experiments import cli
    calls, display = [], cli._progress

    def recording():
        bar, update = display()

        def record(stage, done, total):
            calls.append((stage, done, total))
            update(stage, done, total)
        return bar, record

    monkeypatch.setattr(cli, "_progress", recording)
    return calls


def progress_is_sensible(calls, stage_count: int) -> None:
    """``stage_count`` stages, each counted up from 0 (or started without a total) to its
    total, never backwards and never past it."""
    stages = {}
    for stage, done, total in calls:
        stages.setdefault(stage, []).append((done, total))
    assert len(stages) == stage_count, list(stages)
    for stage, updates in stages.items():
        assert updates[0][0] == 0, (stage, updates)
        done = [d for d, _ in updates]
        assert done == sorted(done), (stage, updates)
        last, total = updates[-1]
        assert total is not None and last == total >= 1, (stage, updates)
        assert all(t is None or d <= t for d, t in updates), (stage, updates)


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


def kind_check(der, sets, seed: int = 0, scale: float = 1e-2, t_end: float = 2000.0,
               on_curve: bool = False):
    """Each set's kind against the exact flow (compiled), from a random perturbation of size
    ``scale`` of its representative: a minimum holds index 0 and evidence, and the flow returns
    to its loss (to 1e-8); a degenerate saddle holds index 0 and an escape whose point has lower
    loss, and the flow leaves it with the loss falling (by > 1e-4 below the set's); a strict
    saddle has index > 0. The escape's order and coefficient are checked on the compiled loss:
    for a line (order 3), (L(θ₀ + tv) − L(θ₀ − tv))/2 = c t³ + O(t⁵); for a curve (order 4),
    the even part of L(θ₀ ± tv + t²w/2) − L₀ is c t⁴ + O(t⁶) and the odd part has no t³ term.
    ``on_curve``: degenerate saddles start on their escape curve at half its step (plus the
    random perturbation), for escapes too slow to leave from a random start within ``t_end``
    (order 4 with a small coefficient: time ~ 1/(|c| ε²)). Returns {kind: count}."""
    import pytest
    from icldyn.numerics import compile_flow, integrate
    flow = compile_flow(der)
    rng = np.random.default_rng(seed)
    counts: dict = {}
    for fp in sets:
        counts[fp.kind] = counts.get(fp.kind, 0) + 1
        theta = flow.pack(_floats(fp.point))
        loss0 = flow.loss(theta)
        if fp.kind == "strict saddle":
            assert fp.hessian_index > 0 and fp.escape is None, fp.name
            continue
        if fp.kind == "unresolved":
            continue
        assert fp.hessian_index == 0 and fp.evidence, fp.name
        start = theta + scale * rng.standard_normal(flow.size)
        if on_curve and fp.escape:
            t, esc = float(fp.escape.step) / 2, fp.escape
            bend = 0 if esc.bend is None else flow.pack(_floats(esc.bend))
            start += t * flow.pack(_floats(esc.direction)) + t * t * bend / 2
        end = integrate(flow, start, t_end=t_end, n_points=2).loss[-1]
        if fp.kind == "minimum":
            assert fp.escape is None and abs(end - loss0) < 1e-8, (fp.name, end, loss0)
            continue
        assert fp.kind == "degenerate saddle" and end < loss0 - 1e-4, (fp.name, end, loss0)
        esc = fp.escape
        assert esc.coefficient < 0 and esc.loss < fp.loss
        assert flow.loss(flow.pack(_floats(esc.point))) < loss0 - 1e-6, fp.name
        v = flow.pack(_floats(esc.direction))
        assert abs(np.linalg.norm(v) - 1) < 1e-12
        if esc.bend is None:
            t = 1e-3
            odd = (flow.loss(theta + t * v) - flow.loss(theta - t * v)) / 2
            assert esc.order == 3 and odd / t**3 == pytest.approx(float(esc.coefficient), 1e-3)
            continue
        # order 4 along θ(t) = θ₀ + tv + t²w/2: the even part of L(θ(±t)) − L₀ is c₄t⁴ + c₆t⁶ + …,
        # the odd part c₃t³ + c₅t⁵ + …; one Richardson step (t, t/2) removes the next term
        w = flow.pack(_floats(esc.bend))

        def parts(t):
            up, down = (flow.loss(theta + s * v + s * s * w / 2) for s in (t, -t))
            return ((up + down) / 2 - loss0) / t**4, (up - down) / 2 / t**3

        (even, odd), (even2, odd2) = parts(2e-2), parts(1e-2)
        c4, c3 = (4 * even2 - even) / 3, (4 * odd2 - odd) / 3
        assert esc.order == 4 and c4 == pytest.approx(float(esc.coefficient), rel=1e-3), fp.name
        assert abs(c3) < 1e-3 * abs(c4), (fp.name, c3, c4)
    return counts


def _floats(point: dict) -> dict:
    return {k: np.array(v.tolist(), dtype=float) for k, v in point.items()}
