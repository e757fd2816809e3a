"""The tutorials (tutorials/*.py, jupytext percent scripts rendered in the docs) run to the end:
each asserts the published or derived number it reproduces, so a run that finishes is a pass.
Each must stay under 2 minutes on 2 cores (slow suite)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "tutorials").glob("*.py"))
BUDGET = 120.0          # seconds per tutorial on an idle 2-core machine
NEEDS = {"nonlinear_measures": "torch"}     # tutorials that need an optional extra


def test_there_are_tutorials():
    assert {p.stem for p in TUTORIALS} >= {"staged_learning", "zfb_minimum", "your_model",
                                           "sgd_noise", "saddle_to_saddle", "two_layers",
                                           "nonlinear_measures"}


@pytest.mark.slow
@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_its_assertions_hold(script, tmp_path):
    if script.stem in NEEDS:
        pytest.importorskip(NEEDS[script.stem])
    env = {**os.environ, "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=3 * BUDGET, env=env)
    seconds = time.perf_counter() - start
    assert run.returncode == 0, f"{script.name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    print(f"{script.name}: {seconds:.1f} s")
