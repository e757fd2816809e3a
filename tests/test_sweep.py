"""Sweeps: grid validation, one point against a direct computation, resume without redoing
finished points, failures recorded per point, the CLI, and a Dask LocalCluster run."""

import json

import numpy as np
import pytest

from icldyn.numerics.experiments.sweep import (SweepSpec, load_spec, point_id, read_table,
                                               run_point, run_sweep, spectrum_values)
from icldyn.theory.errors import InputError

SMALL = dict(d=(2,), N=(4, 16), spectrum=("iso",), seed=(0, 1), steps=60, replicas=4)


def test_spectra():
    assert np.allclose(spectrum_values("iso", 3), 1)
    assert np.allclose(spectrum_values("geom:0.5", 3), [1, 0.5, 0.25])
    assert np.allclose(spectrum_values("2/1", 2), [2, 1])
    for text, d, match in (("2/1", 3, "d = 3"), ("geom:-1", 2, "positive"),
                           ("foo", 2, "not iso"), ("1/0", 2, "positive")):
        with pytest.raises(InputError, match=match):
            spectrum_values(text, d)


@pytest.mark.parametrize("bad", [dict(N=(0,)), dict(d=(1.5,)), dict(noise=(-1.0,)),
                                 dict(lr=(float("nan"),)), dict(mode="all"),
                                 dict(model="Nope"), dict(steps=0), dict(batch=()),
                                 dict(spectrum=("1/2/3",)), dict(task_count=(-1,))])
def test_bad_grids_name_the_axis(bad):
    with pytest.raises(InputError) as info:
        SweepSpec(**bad)
    assert next(iter(bad)) in str(info.value)


def test_point_matches_direct_computation():
    from icldyn.numerics import compile_flow, gradient_descent, simulate_sgd
    from icldyn.theory import ICLData, derive, models
    spec = SweepSpec(**SMALL)
    point = spec.points()[1]
    row = run_point(point, spec.settings())
    assert row["status"] == "ok" and row["id"] == point_id(point)
    data = ICLData(d=2, N=point["N"], Lambda=np.eye(2))
    rng = np.random.default_rng(point["seed"])
    init = {n: 0.3 * rng.standard_normal(s) for n, s in models.Merged(2).shapes().items()}
    flow = compile_flow(derive(models.Merged(2), data), "numpy")
    gd = gradient_descent(flow, flow.pack(init), lr=0.05, steps=60)
    assert row["loss_final_theory"] == pytest.approx(gd.loss[-1], rel=1e-10)
    sim = simulate_sgd(models.Merged(2), data, init, lr=0.05, batch=32, steps=60, seeds=4,
                       seed=point["seed"], record_every=60)
    assert row["loss_final_sgd"] == pytest.approx(sim.loss[-1], rel=1e-12)


def test_task_count_trains_theory_and_sgd_on_the_same_finite_set():
    """task_count = P: P tasks drawn from the family with the point's seed; the theory row is
    the finite-set derivation on those tasks, and more tasks move it towards the family's."""
    from icldyn.numerics import compile_flow, gradient_descent
    from icldyn.numerics.simulation.sgd import PromptSampler
    from icldyn.theory import ICLData, derive, models
    spec = SweepSpec(**{**SMALL, "N": (8,), "seed": (3,), "task_count": (0, 1, 64),
                        "mode": "theory"})
    rows = {p["task_count"]: run_point(p, spec.settings()) for p in spec.points()}
    assert all(r["status"] == "ok" for r in rows.values())
    family = ICLData(d=2, N=8, Lambda=np.eye(2))
    tasks = PromptSampler(family).tasks(np.random.default_rng([3, 1]), (1,))
    data = ICLData(d=2, N=8, Lambda=np.eye(2), tasks=tasks)
    rng = np.random.default_rng(3)
    init = {n: 0.3 * rng.standard_normal(s) for n, s in models.Merged(2).shapes().items()}
    flow = compile_flow(derive(models.Merged(2), data), "numpy")
    gd = gradient_descent(flow, flow.pack(init), lr=0.05, steps=60)
    assert rows[1]["loss_final_theory"] == pytest.approx(gd.loss[-1], rel=1e-10)
    gaps = [abs(rows[P]["loss_final_theory"] - rows[0]["loss_final_theory"]) for P in (1, 64)]
    assert gaps[1] < gaps[0]


def test_resume_computes_only_missing_points(tmp_path):
    spec = SweepSpec(**SMALL)
    first = run_sweep(spec, tmp_path, workers=1)
    assert (first["points"], first["computed"]) == (4, 4)
    before = read_table(tmp_path / "results.csv")
    with pytest.raises(InputError, match="resume"):
        run_sweep(spec, tmp_path, workers=1)
    with pytest.raises(InputError, match="differs"):
        run_sweep(SweepSpec(**{**SMALL, "steps": 61}), tmp_path, resume=True, workers=1)
    # an interrupted sweep: two finished points were never written, the table is gone
    lost = [point_id(p) for p in spec.points()[::2]]
    for name in lost:
        (tmp_path / "points" / f"{name}.json").unlink()
    (tmp_path / "results.csv").unlink()
    again = run_sweep(load_spec(tmp_path), tmp_path, resume=True, workers=1)
    assert (again["computed"], again["reused"]) == (2, 2)
    assert sorted(r["id"] for r in again["rows"]) == sorted(point_id(p) for p in spec.points())
    # same numbers as the uninterrupted run (wall times and pids aside)
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_s", "worker_pid")}  # noqa
                         for r in rows]
    assert drop(read_table(tmp_path / "results.csv")) == drop(before)
    assert json.loads((tmp_path / "summary.json").read_text())["reused"] == 2


def test_diverging_point_is_recorded_not_fatal(tmp_path):
    spec = SweepSpec(**{**SMALL, "N": (4,), "seed": (0,), "lr": (0.05, 40.0)})
    out = run_sweep(spec, tmp_path, workers=1)
    status = {r["lr"]: r["status"] for r in out["rows"]}
    assert status[0.05] == "ok" and status[40.0].startswith("diverged at step")
    assert out["failed_or_diverged"] == 1


@pytest.mark.slow
def test_cli_local_processes(tmp_path):
    from icldyn.numerics.experiments.cli import main
    out = tmp_path / "sw"
    args = ["sweep", "--out", str(out), "--N", "4,8", "--spectrum", "iso", "--seed", "0,1", "--steps", "40",
            "--replicas", "2", "--workers", "2"]
    assert main(args) == 0
    rows = read_table(out / "results.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert len({r["worker_pid"] for r in rows}) >= 1 and (out / "summary.png").stat().st_size
    assert main(["sweep", "--out", str(out), "--resume"]) == 0      # nothing left to do
    assert json.loads((out / "summary.json").read_text())["computed"] == 0
    assert main(["sweep", "--out", str(out), "--N", "x"]) == 2


@pytest.mark.slow
def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = SweepSpec(**{**SMALL, "steps": 40})
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        out = run_sweep(spec, tmp_path / "dask", scheduler=cluster.scheduler_address)
    local = run_sweep(spec, tmp_path / "local", workers=1)
    assert out["computed"] == 4 and out["executor"].startswith("dask")
    key = lambda rows: {r["id"]: (r["loss_final_theory"], r["loss_final_sgd"])  # noqa: E731
                        for r in rows}
    assert key(out["rows"]) == key(local["rows"])             # same numbers on the cluster


def test_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from icldyn.numerics.experiments import sweep
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT_S", 2)
    spec = SweepSpec(**{**SMALL, "N": (4,), "seed": (0,)})
    with pytest.raises(InputError, match="cannot reach"):
        run_sweep(spec, tmp_path, scheduler="tcp://127.0.0.1:9")


def test_backend_is_a_setting_whose_default_keeps_older_sweeps_ids(tmp_path, monkeypatch):
    """--backend numba|numpy reaches compile_flow; the default (numba, what every sweep before
    the setting used) leaves settings_id as it was, so an older sweep resumes its points."""
    from icldyn.numerics.compiled import codegen
    from icldyn.numerics.experiments.cli import parser
    from icldyn.numerics.experiments.sweep import settings_id
    assert settings_id(SweepSpec().settings()) == "c9d7c403111b5df8"      # before the setting
    assert settings_id(SweepSpec(backend="numpy").settings()) != "c9d7c403111b5df8"
    with pytest.raises(InputError, match="backend"):
        SweepSpec(backend="cython")
    assert parser().parse_args(["sweep", "--backend", "numpy"]).backend == "numpy"
    assert parser().parse_args(["sweep"]).backend is None              # the spec's default
    used, compile_flow = [], codegen.compile_flow
    monkeypatch.setattr(codegen, "compile_flow",
                        lambda der, backend: used.append(backend) or compile_flow(der, backend))
    spec = SweepSpec(**{**SMALL, "mode": "theory"})
    numpy_row = run_point(spec.points()[0], SweepSpec(**{**SMALL, "mode": "theory",
                                                          "backend": "numpy"}).settings())
    run_sweep(spec, tmp_path, workers=1)
    assert used == ["numpy"] + ["numba"] * 4
    assert numpy_row["loss_final_theory"] == pytest.approx(
        read_table(tmp_path / "results.csv")[0]["loss_final_theory"], rel=1e-10)
    saved = json.loads((tmp_path / "spec.json").read_text())         # as an older sweep wrote it
    del saved["spec"]["backend"]
    (tmp_path / "spec.json").write_text(json.dumps(saved))
    again = run_sweep(load_spec(tmp_path), tmp_path, resume=True, workers=1)
    assert (again["computed"], again["reused"]) == (0, 4)
