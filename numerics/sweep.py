"""Sweeps: the theory and the simulation over a grid of settings, run by local processes or by a
Dask distributed cluster, resumable, gathered into one table.

A grid point fixes d, N, Λ's spectrum, the label noise σ, the initialisation scale, the learning
rate η, the batch size B, the seed and the task count P (task diversity: 0 is the whole task
family, P ≥ 1 a finite set of P tasks drawn from it with the point's seed, so theory and SGD
train on the same P tasks). At each point:

- theory: exact expected GD, θ_{n+1} = θ_n − η ∇L(θ_n) for ``steps`` steps (derived loss,
  compiled kernels; both cached on disk, so workers share them);
- simulation: ``replicas`` SGD runs of the actual layer at batch B (``simulate_sgd``).

Λ = diag(spectrum) with spectrum ``iso`` (all ones), ``geom:r`` (λ_k = r^k, k = 0..d−1) or an
explicit list ``a/b/...`` of d positive numbers. The initial parameters are
``init_scale · G`` with G standard normal entries drawn from the point's seed.

The run folder holds ``spec.json`` (the grid, provenance), one ``points/<id>.json`` per finished
point (written atomically as each finishes, so an interrupted sweep keeps them), ``results.csv``
(one row per point, in grid order), ``summary.json`` and ``summary.png``. ``resume=True``
continues a sweep in the same folder, computing only the missing points.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..theory.errors import DivergenceError, InputError, check_int, check_real
from .runfolder import provenance, save_figure, write_csv, write_json

AXES = ("d", "N", "spectrum", "noise", "init_scale", "lr", "batch", "seed", "task_count")
MODES = ("theory", "simulation", "both")


@dataclass
class SweepSpec:
    """The grid (one list per axis) and the per-point settings."""

    d: tuple = (2,)
    N: tuple = (4, 16)
    spectrum: tuple = ("iso", "geom:0.5")
    noise: tuple = (0.0,)
    init_scale: tuple = (0.3,)
    lr: tuple = (0.05,)
    batch: tuple = (32,)
    seed: tuple = (0,)
    task_count: tuple = (0,)
    steps: int = 300
    replicas: int = 8
    mode: str = "both"
    model: str = "Merged"
    tasks: str = "gaussian"

    def __post_init__(self):
        for axis in AXES:
            value = getattr(self, axis)
            values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if not values:
                raise InputError(axis, "needs at least one value")
            setattr(self, axis, values)
        self.validate()

    def validate(self) -> None:
        from ..theory.models import MODELS

        checks = {"d": check_int, "N": check_int, "batch": check_int,
                  "seed": lambda a, v: check_int(a, v, minimum=0),
                  "task_count": lambda a, v: check_int(a, v, minimum=0),
                  "noise": lambda a, v: check_real(a, v, allow_zero=True),
                  "init_scale": check_real, "lr": check_real}
        for axis, check in checks.items():
            for value in getattr(self, axis):
                check(axis, value)
        for d in self.d:
            for text in self.spectrum:
                spectrum_values(text, d)
        check_int("steps", self.steps)
        check_int("replicas", self.replicas)
        for name in ("mode", "model", "tasks"):
            if not isinstance(getattr(self, name), str):
                raise InputError(name, f"must be a string, got {getattr(self, name)!r}")
        if self.mode not in MODES:
            raise InputError("mode", f"must be one of {MODES}, got {self.mode!r}")
        if self.model not in MODELS:
            raise InputError("model", f"unknown model {self.model!r}; choose from {sorted(MODELS)}")
        if self.tasks not in ("gaussian", "diagonal"):
            raise InputError("tasks", f"must be gaussian or diagonal, got {self.tasks!r}")

    def points(self) -> list[dict]:
        """Every grid point (a dict over ``AXES``) in grid order."""
        return [dict(zip(AXES, combo))
                for combo in itertools.product(*(getattr(self, a) for a in AXES))]

    def settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in AXES}

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, obj: dict) -> "SweepSpec":
        unknown = set(obj) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError("spec", f"unknown keys {sorted(unknown)}")
        return cls(**obj)


def spectrum_values(text: str, d: int) -> np.ndarray:
    """Eigenvalues of Λ from ``iso``, ``geom:r`` or ``a/b/...`` (see the module docstring)."""
    text = str(text).strip()
    try:
        if text == "iso":
            values = np.ones(d)
        elif text.startswith("geom:"):
            values = float(text[5:]) ** np.arange(d)
        else:
            values = np.array([float(x) for x in text.split("/")])
    except ValueError:
        raise InputError("spectrum", f"{text!r} is not iso, geom:r or a/b/... numbers") from None
    if values.shape != (d,):
        raise InputError("spectrum", f"{text!r} gives {values.size} eigenvalues; d = {d} "
                         "needs d of them (or use iso / geom:r)")
    if not (np.all(np.isfinite(values)) and values.min() > 0):
        raise InputError("spectrum", f"{text!r} must give positive finite eigenvalues")
    return values


def point_id(point: dict) -> str:
    """A stable name for a point: a digest of its axis values."""
    return hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:16]


# --- one point --------------------------------------------------------------------------------
def run_point(point: dict, settings: dict) -> dict:
    """Theory and/or simulation at one grid point; a row of the results table. A point that
    diverges or fails is recorded (``status``) instead of stopping the sweep."""
    start = time.perf_counter()
    row = {"id": point_id(point), **point, "status": "ok"}
    try:
        row.update(_evaluate(point, settings))
    except DivergenceError as exc:
        row["status"] = f"diverged at step {exc.step}"
    except Exception as exc:  # one bad point must not lose the others
        row["status"] = f"failed: {type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc(limit=5)
    row["wall_s"] = time.perf_counter() - start
    row["worker_pid"] = os.getpid()
    return row


def _evaluate(point: dict, settings: dict) -> dict:
    from ..theory import ICLData, derive, models
    from .codegen import compile_flow
    from .integrate import gradient_descent
    from .simulate import PromptSampler, simulate_sgd

    d, steps = point["d"], settings["steps"]
    d_y = d if settings["tasks"] == "diagonal" else 1
    setting = dict(d=d, N=point["N"], Lambda=np.diag(spectrum_values(point["spectrum"], d)),
                   d_y=d_y, noise=point["noise"])
    data = ICLData(tasks=settings["tasks"], **setting)
    if point["task_count"] > 0:          # P tasks drawn from the family (own random stream)
        draw = np.random.default_rng([point["seed"], 1])
        data = ICLData(tasks=PromptSampler(data).tasks(draw, (point["task_count"],)), **setting)
    model = models.MODELS[settings["model"]](d, d_y=d_y)
    rng = np.random.default_rng(point["seed"])
    init = {name: point["init_scale"] * rng.standard_normal(shape)
            for name, shape in model.shapes().items()}
    out = {}
    flow = compile_flow(derive(model, data), backend="numba")
    theta0 = flow.pack(init)
    out["loss_initial"] = flow.loss(theta0)
    if settings["mode"] in ("theory", "both"):
        gd = gradient_descent(flow, theta0, lr=point["lr"], steps=steps)
        half = 0.5 * (gd.loss[0] + gd.loss.min())
        out.update(loss_final_theory=float(gd.loss[-1]),
                   step_half_theory=int(np.argmax(gd.loss <= half)),
                   conserved_drift_theory=_drift(gd.conserved[-1] - gd.conserved[0]))
    if settings["mode"] in ("simulation", "both"):
        sim = simulate_sgd(model, data, init, lr=point["lr"], batch=point["batch"], steps=steps,
                           seeds=settings["replicas"], seed=point["seed"], record_every=steps)
        finals = sim.theta()[:, -1]
        changes = np.array([flow.conserved(th) - flow.conserved(theta0) for th in finals])
        out.update(loss_final_sgd=float(sim.loss[-1]), loss_final_sgd_se=float(sim.loss_se[-1]),
                   loss_final_sgd_sd=float(sim.losses[-1].std(ddof=1)) if settings["replicas"] > 1
                   else float("nan"),
                   conserved_change_sgd_mean=_drift(changes.mean(axis=0)),
                   conserved_change_sgd_sd=_drift(changes.std(axis=0, ddof=1))
                   if settings["replicas"] > 1 else float("nan"))
        if "loss_final_theory" in out and out["loss_final_sgd_se"] > 0:
            out["z_sgd_vs_theory"] = ((out["loss_final_sgd"] - out["loss_final_theory"])
                                      / out["loss_final_sgd_se"])
    return out


def _drift(values: np.ndarray) -> float:
    """The largest magnitude over the conserved quantities (NaN when the model has none)."""
    values = np.atleast_1d(values)
    return float(np.abs(values).max()) if values.size else float("nan")


# --- the sweep ----------------------------------------------------------------------------------
def run_sweep(spec: SweepSpec, out, resume: bool = False, workers: int | None = None,
              scheduler=None, progress=None) -> dict:
    """Run every missing point of ``spec`` into the folder ``out``; returns the summary.

    ``scheduler``: None (local processes; ``workers`` of them, default the CPU count, 1 runs in
    this process), a Dask scheduler address, or a ``distributed.Client``.
    ``progress(stage, done, total)`` is called as points finish."""
    if not isinstance(spec, SweepSpec):
        raise InputError("spec", f"must be a SweepSpec, got {type(spec).__name__}")
    _check_executor(workers, scheduler)
    out = Path(out)
    _prepare(out, spec, resume)
    points = spec.points()
    done = {p.stem for p in (out / "points").glob("*.json")}
    todo = [p for p in points if point_id(p) not in done]
    tell = progress or (lambda *a: None)
    tell("sweep points", len(points) - len(todo), len(points))
    start = time.perf_counter()
    finished = len(points) - len(todo)
    for row in _execute(todo, spec.settings(), workers, scheduler):
        write_json(out / "points" / f"{row['id']}.json", row)
        finished += 1
        tell("sweep points", finished, len(points))
    rows = [json.loads((out / "points" / f"{point_id(p)}.json").read_text()) for p in points]
    write_csv(out / "results.csv", rows, TABLE_FIRST, drop=("traceback",))
    summary = {"points": len(points), "computed": len(todo), "reused": len(points) - len(todo),
               "failed_or_diverged": sum(r["status"] != "ok" for r in rows),
               "wall_s": time.perf_counter() - start,
               "executor": _executor_name(workers, scheduler),
               "worker_pids": sorted({r["worker_pid"] for r in rows})}
    write_json(out / "summary.json", summary)
    save_figure(summary_figure(rows, spec), out / "summary.png")
    return {**summary, "rows": rows}


def _prepare(out: Path, spec: SweepSpec, resume: bool) -> None:
    spec_file = out / "spec.json"
    if spec_file.exists():
        if not resume:
            raise InputError("out", f"{out} already holds a sweep; pass resume=True (--resume) "
                             "to continue it, or choose a new folder")
        saved = SweepSpec.from_json(json.loads(spec_file.read_text())["spec"]).to_json()
        if saved != spec.to_json():
            raise InputError("spec", f"differs from the sweep saved in {spec_file}; resume "
                             "with the same grid (omit the grid options to reuse it)")
        return
    write_json(spec_file, {"spec": spec.to_json(), "provenance": provenance()})


def load_spec(out) -> SweepSpec:
    """The grid saved in a sweep folder (for ``--resume`` without repeating the options)."""
    path = Path(out) / "spec.json"
    if not path.exists():
        raise InputError("out", f"{out} holds no sweep (no spec.json) to resume")
    return SweepSpec.from_json(json.loads(path.read_text())["spec"])


def _executor_name(workers, scheduler) -> str:
    if scheduler is not None:
        return f"dask ({scheduler if isinstance(scheduler, str) else type(scheduler).__name__})"
    return f"local processes ({_workers(workers)})"


def _workers(workers) -> int:
    return (os.cpu_count() or 1) if workers is None else check_int("workers", workers)


def _execute(points: list[dict], settings: dict, workers, scheduler):
    """Rows as points finish (any order)."""
    if not points:
        return
    if scheduler is not None:
        yield from _execute_dask(points, settings, scheduler)
        return
    n = min(_workers(workers), len(points))
    if n == 1:
        for p in points:
            yield run_point(p, settings)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_point, p, settings) for p in points]
        try:
            for f in as_completed(futures):
                yield f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


SCHEDULER_ADDRESS = re.compile(r"([a-z]+://)?[^\s:/]+(:[0-9]+)?")


def _check_executor(workers, scheduler) -> None:
    """Before any work: the worker count, a scheduler address that looks like one (a Client
    passes) and Dask installed when a scheduler is named."""
    if scheduler is None:
        _workers(workers)
        return
    if isinstance(scheduler, str) and not (SCHEDULER_ADDRESS.fullmatch(scheduler)
                                           and ("://" in scheduler or ":" in scheduler)):
        raise InputError("scheduler", f"must be a Dask scheduler address like "
                         f"tcp://HOST:PORT, got {scheduler!r}")
    _distributed()


def _distributed():
    """The ``distributed`` module, or an InputError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise InputError("scheduler", "needs Dask distributed: pip install "
                         "'icl-dynamics[sweep]'") from None
    return distributed


def _execute_dask(points: list[dict], settings: dict, scheduler):
    dask = _distributed()
    Client, as_completed = dask.Client, dask.as_completed
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="20s") if own else scheduler
    except (OSError, ValueError, TypeError) as exc:
        raise InputError("scheduler", f"cannot reach a Dask scheduler at {scheduler!r}: "
                         f"{exc}") from None
    try:
        futures = client.map(run_point, points, settings=settings, pure=False)
        for f in as_completed(futures):
            yield f.result()
    finally:
        if own:
            client.close()


TABLE_FIRST = ("id",) + AXES + ("status",)


def read_table(path) -> list[dict]:
    """``results.csv`` back as dicts with numbers parsed."""
    with open(path, newline="") as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _parse(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def summary_figure(rows: list[dict], spec: SweepSpec):
    """Final loss against N, one line per spectrum (theory lines, SGD points with 2 SE bars),
    first values of the other axes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    base = {a: getattr(spec, a)[0] for a in AXES if a not in ("N", "spectrum")}
    for i, spectrum in enumerate(spec.spectrum):
        sel = sorted((r for r in rows if r["spectrum"] == spectrum and r["status"] == "ok"
                      and all(r[a] == v for a, v in base.items())), key=lambda r: r["N"])
        if not sel:
            continue
        N = [r["N"] for r in sel]
        color = f"C{i}"
        if "loss_final_theory" in sel[0]:
            ax.plot(N, [r["loss_final_theory"] for r in sel], "-", color=color,
                    label=f"theory, Λ {spectrum}")
        if "loss_final_sgd" in sel[0]:
            ax.errorbar(N, [r["loss_final_sgd"] for r in sel],
                        yerr=[2 * r["loss_final_sgd_se"] for r in sel], fmt="o", color=color,
                        ms=4, capsize=2, label=f"SGD ({spec.replicas} runs), Λ {spectrum}")
    ax.set_xscale("log")
    ax.set_xticks(sorted(spec.N), [str(n) for n in sorted(spec.N)])
    ax.minorticks_off()
    ax.set_xlabel("context length N")
    ax.set_ylabel(f"loss after {spec.steps} steps")
    ax.set_title(", ".join(f"{a}={v}" for a, v in base.items()), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig
