"""Faults: runs and sweeps killed at random moments (SIGKILL after a seeded random delay),
interrupted writes, stale staging folders, damaged files, failing points, rogue workers, and
float64 overflow caused by the data. Nothing is lost or mixed, and ``--resume`` heals."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from icldyn.numerics.experiments import sweep
from icldyn.numerics.experiments.cli import main
from icldyn.numerics.experiments.runfolder import STAGING_MARK, staging_path
from icldyn.numerics.experiments.sweep import SweepSpec, point_id, read_table, run_sweep
from icldyn.theory.errors import InputError

REPORT_FILES = ("loss.png", "modes.png", "arrays.npz", "results.json", "report.md")


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None)
                  for p in folder.rglob("*"))


def _fake_job(monkeypatch, fail_after=None, seen=None):
    """The main job's computation and report replaced by stand-ins that write the report's
    files one at a time, each naming the run's seed; ``fail_after`` files in, an interrupt.
    ``seen`` collects the saved stages the job was offered."""
    def run(config, progress=None, stages=None, resume=False):
        if seen is not None:
            seen.extend(sorted(p.name for p in stages.glob("*")) if stages.is_dir() else [])
        return {"seed": config.seed, "results": {
            "loss": dict.fromkeys(("initial", "final_flow", "final_gd", "final_sgd",
                                   "final_sgd_se"), 1.0),
            "agreement": {"block_z": [0.0], "late_steps": 1, **dict.fromkeys((
                "max_abs_z", "mean_z", "late_sgd", "late_sgd_se", "late_rel_dev",
                "late_rel_dev_se"), 0.0)},
            "conserved": {"name": "C", **dict.fromkeys((
                "sgd_mean_total_change", "sgd_total_change_se", "sgd_predicted_total_change",
                "gd_total_change"), 0.0)},
            "sme": {"block_z": [0.0], **dict.fromkeys((
                "max_abs_z", "mean_z", "late_sme", "late_sgd", "late_sgd_se"), 0.0)},
            "stages": []}}

    def write_report(out, outcome):
        for i, name in enumerate(REPORT_FILES):
            if i == fail_after:
                raise KeyboardInterrupt
            (out / name).write_text(f"seed {outcome['seed']}")

    monkeypatch.setattr("icldyn.numerics.experiments.mainjob.run", run)
    monkeypatch.setattr("icldyn.numerics.experiments.report.write_report", write_report)


def _whole(out, seed) -> bool:
    return all((out / n).read_text() == f"seed {seed}" for n in REPORT_FILES)


def test_an_interrupted_overwrite_leaves_the_old_run_whole(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _fake_job(monkeypatch)
    assert main(["run", "--out", str(out)]) == 0 and _whole(out, 0)
    before = _tree(out)
    _fake_job(monkeypatch, fail_after=2)               # two new files written, then a kill
    assert main(["run", "--out", str(out), "--overwrite", "--seed", "1"]) == 130
    assert _tree(out) == before                        # not a file of the new run in it
    assert not staging_path(out).exists()              # nothing saved: no staging left
    _fake_job(monkeypatch)
    assert main(["run", "--out", str(out), "--overwrite", "--seed", "1"]) == 0
    assert _whole(out, 1) and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_stale_staging_folder_is_taken_over_or_refused(tmp_path, monkeypatch, capsys):
    out, seen = tmp_path / "run", []
    staging = staging_path(out)
    _fake_job(monkeypatch, seen=seen)
    # left by a killed run (marker unlocked): discarded with a warning, or its stages reused
    for resume in (False, True):
        (staging / "stages").mkdir(parents=True)
        (staging / STAGING_MARK).write_text("pid 1")
        (staging / "results.json").write_text("half of another run")
        (staging / "stages" / "simulation.npz").write_text("saved stage")
        with pytest.warns(RuntimeWarning, match="interrupted run"):
            assert main(["run", "--out", str(out), "--overwrite"]
                        + ["--resume"] * resume) == 0
        assert _whole(out, 0) and not staging.exists() and not (out / STAGING_MARK).exists()
        assert seen == (["simulation.npz"] if resume else [])
    # not made by icldyn, or held by a live run: refused before any work, untouched
    staging.mkdir()
    (staging / "notes.txt").write_text("mine")
    assert main(["run", "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "not made by icldyn" in err[0]
    (staging / "notes.txt").unlink()
    with open(staging / STAGING_MARK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["run", "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another icldyn run" in err[0]
    assert _whole(out, 0) and staging.exists()


# --- sweeps -------------------------------------------------------------------------------------
GRID = ["--d", "2", "--N", "4,16", "--spectrum", "iso", "--seed", "0,1", "--steps", "40",
        "--replicas", "2", "--mode", "theory"]


def _numbers(rows):
    return {r["id"]: {k: v for k, v in r.items() if k not in ("wall_s", "worker_pid")}
            for r in rows}


def test_resume_retries_failed_points_and_exits_nonzero_until_none_fails(tmp_path, monkeypatch,
                                                                        capsys):
    out = str(tmp_path / "sw")
    evaluate = sweep._evaluate

    def full_disk(point, settings):
        if point["N"] == 16 and point["seed"] == 1:
            raise OSError(28, "No space left on device")
        return evaluate(point, settings)

    monkeypatch.setattr(sweep, "_evaluate", full_disk)
    assert main(["sweep", "--out", out, "--workers", "1"] + GRID) == 1
    assert "1 point(s) failed" in capsys.readouterr().err
    assert main(["sweep", "--out", out, "--workers", "1", "--resume"]) == 1   # still failing
    monkeypatch.setattr(sweep, "_evaluate", evaluate)
    assert main(["sweep", "--out", out, "--workers", "1", "--resume"]) == 0
    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    assert (summary["computed"], summary["failed"]) == (1, 0)
    assert all(r["status"] == "ok" for r in read_table(tmp_path / "sw" / "results.csv"))


def test_resume_treats_damaged_files_as_missing_and_names_them(tmp_path):
    out = tmp_path / "sw"
    assert main(["sweep", "--out", str(out), "--workers", "1"] + GRID) == 0
    before = _numbers(read_table(out / "results.csv"))
    points = sorted((out / "points").glob("*.json"))
    damaged = {points[0]: points[0].read_bytes()[:40],       # truncated
               points[1]: b"\xff\xfe not json",               # garbage
               points[2]: json.dumps({"id": points[2].stem, "status": "ok"}).encode(),  # forged
               out / "spec.json": (out / "spec.json").read_bytes()[:25]}
    for path, data in damaged.items():
        path.write_bytes(data)
    with pytest.warns(RuntimeWarning) as record:
        assert main(["sweep", "--out", str(out), "--workers", "1", "--resume"] + GRID) == 0
    said = " ".join(str(w.message) for w in record)
    assert all(str(path) in said for path in damaged)
    assert json.loads((out / "summary.json").read_text())["computed"] == 3
    assert _numbers(read_table(out / "results.csv")) == before
    json.loads((out / "spec.json").read_text())               # rewritten whole


def test_point_files_are_named_by_the_client_not_the_worker(tmp_path, monkeypatch):
    spec = SweepSpec(d=(2,), N=(4,), spectrum=("iso",), seed=(0, 1), steps=20, replicas=2,
                     mode="theory")
    honest = sweep.run_point
    first, second = spec.points()

    def rogue(point, settings):
        row = honest(point, settings)
        if point == first:
            return {**row, "id": "../../escaped"}           # tries to write outside --out
        return {**row, "seed": first["seed"]}              # claims to be another point

    monkeypatch.setattr(sweep, "run_point", rogue)
    res = run_sweep(spec, tmp_path / "sw", workers=1)
    assert not [p for p in tmp_path.rglob("*escaped*")]
    assert sorted(p.stem for p in (tmp_path / "sw" / "points").glob("*.json")) == sorted(
        map(point_id, (first, second)))
    status = {r["id"]: r["status"] for r in res["rows"]}
    assert status[point_id(first)] == "ok" and "another point" in status[point_id(second)]
    assert res["failed"] == 1


# --- overflow from the data, stage times ---------------------------------------------------------
def test_overflow_from_the_data_blames_the_data(tmp_path):
    from icldyn.numerics import compile_flow, simulate_sgd
    from icldyn.theory import ICLData, derive, models

    model, init = models.Merged(2), {"V": 0.1, "Q": 0.1}
    with pytest.raises(InputError, match=r"^Lambda: entries up to 1e\+308 .*rescale Lambda"):
        compile_flow(derive(model, ICLData(d=2, N=4, Lambda=np.diag([1e308, 1.0]))), "numpy")
    data = ICLData(d=2, N=4, Lambda=np.diag([1e150, 1.0]))        # only its cube overflows
    flow = compile_flow(derive(model, data), "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # nothing leaks first
        for call in (lambda: flow.loss(flow.pack(init)),
                     lambda: simulate_sgd(model, data, init, lr=0.01, batch=4, steps=2, seeds=2)):
            with pytest.raises(InputError, match="^Lambda: .*1e\\+150"):
                call()
    fine = compile_flow(derive(model, ICLData(d=2, N=4, Lambda=np.eye(2))), "numpy")
    with pytest.raises(InputError, match="^theta: "):              # large θ is still θ's fault
        fine.loss(np.full(fine.size, 1e120))
    res = run_sweep(SweepSpec(d=(2,), N=(4,), spectrum=("1e308/1",), steps=5, replicas=2),
                    tmp_path / "sw", workers=1)
    assert res["rows"][0]["status"].startswith("failed: InputError: Lambda: entries up to 1e+308")


@pytest.mark.slow
def test_stage_times_are_measured_against_the_fixed_point():
    """Half-times are the crossings of a*/2 with a* the reduced loss's critical point: the same
    whether the run stops at t_end = 5 or goes on to the fixed point, NaN for a mode that never
    gets there, and a short t_end warns."""
    from icldyn.numerics.experiments.mainjob import RunConfig, run

    def stages(t_end):
        config = RunConfig(d=2, spectrum=(2.0, 0.5), t_end=t_end, seeds=2, batch=8,
                           backend="numpy")
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            res = run(config)["results"]
        return res["stages"], [str(w.message) for w in record if "too short" in str(w.message)]

    short, said = stages(5.0)
    full, quiet = stages(100.0)
    assert len(said) == 1 and "t_end = 5" in said[0] and not quiet
    assert short[0]["t_half_exact_flow"] == pytest.approx(full[0]["t_half_exact_flow"], rel=2e-3)
    assert np.isnan(short[1]["t_half_exact_flow"]) and np.isnan(short[1]["t_half_sgd"])
    for st in full:     # the flow reached the fixed point: a(t_end) within 5 % of a*
        assert abs(st["a_final_exact_flow"] / st["a_star_exact"] - 1) < 0.05
        assert 0 < st["t_half_exact_flow"] < 100


# --- real kills (SIGKILL after a seeded random delay) -------------------------------------------
def _icldyn(*args):
    return [sys.executable, "-m", "icldyn.numerics.experiments.cli", *args]


def _kill_after(cmd, delay: float) -> tuple[int, str]:
    """Start ``cmd`` (unbuffered), SIGKILL it after ``delay`` seconds (unless it ended); its
    return code and what it printed before it ended."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        printed, _ = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        printed, _ = proc.communicate()
    return proc.returncode, printed


RUN = ["--t-end", "5", "--seeds", "2", "--batch", "8", "--backend", "numpy"]


@pytest.mark.slow
def test_killed_runs_never_leave_a_mixed_folder_and_resume_heals(tmp_path):
    out = tmp_path / "run"
    start = time.perf_counter()
    first = subprocess.run(_icldyn("run", "--out", str(out), *RUN), capture_output=True)
    assert first.returncode == 0, first.stderr
    wall = time.perf_counter() - start
    complete = {0: _tree(out)}
    rng = np.random.default_rng(18)
    for seed in (1, 2, 3, 4):
        code, printed = _kill_after(_icldyn("run", "--out", str(out), "--overwrite", "--resume",
                                            *RUN, "--seed", str(seed)),
                                    rng.uniform(0.1, 1.2) * wall)
        res = json.loads((out / "results.json").read_text())
        tree = _tree(out)
        # A run prints "report: …" right after its swap: one killed later (while it prints or
        # its interpreter exits) has left its own complete run, like one that ended.
        if code == 0 or "report: " in printed:
            assert res["config"]["seed"] == seed, (seed, code)
            complete[seed] = tree
        else:         # killed before its swap: one earlier complete run, byte for byte
            assert tree in complete.values(), (seed, code)
        assert {p.name for p in out.iterdir()} >= set(REPORT_FILES) | {"measures.png"}
        assert res["config"]["seed"] in complete
    assert main(["run", "--out", str(out), "--resume", *RUN, "--seed", "4"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]       # no staging left


def _children(pid: int) -> list[int]:
    found = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(stat))
    return found


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _workers(pid: int) -> list[int]:
    return [c for c in _children(pid)
            if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
def test_killed_sweeps_leave_no_workers_and_resume_heals(tmp_path):
    """A sweep on two local workers: one worker killed (its points are retried), then the
    sweep itself killed twice at random moments; its workers end with it, and --resume
    completes the table with the numbers of an uninterrupted run."""
    grid = ["--d", "2", "--N", "2,4,8", "--spectrum", "iso", "--seed", "0,1", "--steps", "2000",
            "--replicas", "2"]           # ≈ 10 s on two workers: the kills land while they run
    out = tmp_path / "sw"
    rng = np.random.default_rng(6)
    orphans = []                         # the workers alive when their sweep was killed
    for attempt in range(2):
        proc = subprocess.Popen(_icldyn("sweep", "--out", str(out), "--workers", "2",
                                        *(["--resume"] if attempt else []), *grid),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(_workers(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if attempt == 0 and proc.poll() is None:
            time.sleep(rng.uniform(0, 1))
            workers = _workers(proc.pid)
            assert workers, "the sweep ended before its worker could be killed: lengthen it"
            os.kill(workers[0], signal.SIGKILL)                # a dead worker: retried
        time.sleep(rng.uniform(0, 3))
        family = _workers(proc.pid)
        proc.kill()
        proc.wait()
        orphans += family
        deadline = time.monotonic() + 10
        while any(map(_alive, family)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, family)), "workers outlived their sweep"
    assert orphans                       # the kills did land while workers ran
    assert main(["sweep", "--out", str(out), "--workers", "1", "--resume"]) == 0
    assert main(["sweep", "--out", str(tmp_path / "ref"), "--workers", "1", *grid]) == 0
    assert _numbers(read_table(out / "results.csv")) == _numbers(
        read_table(tmp_path / "ref" / "results.csv"))
    assert sorted(p.name for p in (out / "points").glob("*.json")) == sorted(
        p.name for p in (tmp_path / "ref" / "points").glob("*.json"))
