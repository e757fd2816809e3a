"""Sweeps: the theory and the simulation over a grid of settings, run by local processes or by a
Dask distributed cluster, resumable, gathered into one table.

A grid point fixes d, N, Λ's spectrum, the label noise σ, the initialisation scale, the learning
rate η, the batch size B, the seed and the task count P (task diversity: 0 is the whole task
family, P ≥ 1 a finite set of P tasks drawn from it with the point's seed, so theory and SGD
train on the same P tasks). At each point:

- theory: exact expected GD, θ_{n+1} = θ_n − η ∇L(θ_n) for ``steps`` steps (derived loss,
  kernels compiled by the ``backend`` setting, numba or numpy; both cached on disk, so workers
  share them);
- simulation: ``replicas`` SGD runs of the actual layer at batch B (``simulate_sgd``).

Λ = diag(spectrum) with spectrum ``iso`` (all ones), ``geom:r`` (λ_k = r^k, k = 0..d−1) or an
explicit list ``a/b/...`` of d positive numbers. The initial parameters are
``init_scale · G`` with G standard normal entries drawn from the point's seed.

The run folder holds ``spec.json`` (the grid, provenance), one ``points/<id>.json`` per finished
point (written atomically as each finishes, so an interrupted sweep keeps them), ``results.csv``
(one row per point, in grid order), ``summary.json`` and ``summary.png``. ``resume=True``
continues a sweep in the same folder: it computes the missing points and retries the failed ones
(a diverged point is a result and is kept); a point file or ``spec.json`` that cannot be read back
(truncated, damaged, made with other settings) counts as missing and is named in a warning.

Trust: a point's file name is computed here from the grid, never taken from a worker's answer,
and a row whose axis values are not its point's is recorded as failed. Local workers end when the
sweep that started them ends (killed included). A Dask cluster runs our code and sends back
pickled results, so its scheduler and workers must be trusted (see the README for TLS).
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
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ...theory.errors import DivergenceError, InputError, check_int, check_real
from .runfolder import provenance, save_figure, write_csv, write_json

__all__ = ["AXES", "MODES", "SweepSpec", "spectrum_values", "point_id", "settings_id", "is_failed",
           "run_point", "run_sweep", "read_spec", "load_spec", "read_table", "summary_figure"]

AXES = ("d", "N", "spectrum", "noise", "init_scale", "lr", "batch", "seed", "task_count")
MODES = ("theory", "simulation", "both")


@dataclass
class SweepSpec:
    """The grid (one list per axis) and the per-point settings (see the module docstring).

    Attributes
    ----------
    d, N, spectrum, noise, init_scale, lr, batch, seed, task_count : tuple
        The axes (``AXES``): every combination is a grid point; a scalar is a one-value axis.
    steps : int
        GD and SGD steps per point.
    replicas : int
        SGD runs per point.
    mode : {"theory", "simulation", "both"}
        What to compute.
    model : str
        A name of ``theory.models.MODELS``.
    tasks : {"gaussian", "diagonal"}
        The task law.
    backend : {"numba", "numpy"}
        The compiled code of the theory (``compile_flow``).

    Raises
    ------
    InputError
        When an axis has no value.

    Examples
    --------
    >>> from icldyn.numerics.experiments.sweep import SweepSpec
    >>> spec = SweepSpec(d=2, N=(4, 16), spectrum=("iso", "geom:0.5"), steps=50, replicas=4)
    >>> len(spec.points()), spec.points()[0]
    (4, {'d': 2, 'N': 4, 'spectrum': 'iso', 'noise': 0.0, 'init_scale': 0.3, 'lr': 0.05,
         'batch': 32, 'seed': 0, 'task_count': 0})
    >>> spec.settings()
    {'steps': 50, 'replicas': 4, 'mode': 'both', 'model': 'Merged', 'tasks': 'gaussian',
     'backend': 'numba'}
    >>> SweepSpec(mode="fast")
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: mode: must be one of ('theory', 'simulation', 'both'), ...
    """

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
    backend: str = "numba"

    def __post_init__(self):
        for axis in AXES:
            value = getattr(self, axis)
            values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
            if not values:
                raise InputError(axis, "needs at least one value")
            setattr(self, axis, values)
        self.validate()

    def validate(self) -> None:
        """Check every axis value and setting.

        Raises
        ------
        InputError
            Naming the first bad axis or setting.
        """
        from ...theory.models import MODELS
        from ..compiled.codegen import BACKENDS

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
        for name in ("mode", "model", "tasks", "backend"):
            if not isinstance(getattr(self, name), str):
                raise InputError(name, f"must be a string, got {getattr(self, name)!r}")
        if self.mode not in MODES:
            raise InputError("mode", f"must be one of {MODES}, got {self.mode!r}")
        if self.model not in MODELS:
            raise InputError("model", f"unknown model {self.model!r}; choose from {sorted(MODELS)}")
        if self.tasks not in ("gaussian", "diagonal"):
            raise InputError("tasks", f"must be gaussian or diagonal, got {self.tasks!r}")
        if self.backend not in BACKENDS:
            raise InputError("backend", f"must be one of {BACKENDS}, got {self.backend!r}")

    def points(self) -> list[dict]:
        """Every grid point in grid order.

        Returns
        -------
        list of dict
            Axis name → value.
        """
        return [dict(zip(AXES, combo))
                for combo in itertools.product(*(getattr(self, a) for a in AXES))]

    def settings(self) -> dict:
        """The per-point settings.

        Returns
        -------
        dict
            ``steps``, ``replicas``, ``mode``, ``model``, ``tasks``, ``backend``.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in AXES}

    def to_json(self) -> dict:
        """The spec as JSON-ready data (axes as lists).

        Returns
        -------
        dict
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, obj: dict) -> "SweepSpec":
        """The spec ``to_json`` wrote.

        Parameters
        ----------
        obj : dict
            Field name → value.

        Returns
        -------
        SweepSpec

        Raises
        ------
        InputError
            For unknown keys or bad values.
        """
        unknown = set(obj) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError("spec", f"unknown keys {sorted(unknown)}")
        return cls(**obj)


def spectrum_values(text: str, d: int) -> np.ndarray:
    """Eigenvalues of Λ from ``iso``, ``geom:r`` or ``a/b/...`` (see the module docstring).

    Parameters
    ----------
    text : str
        The spectrum's description.
    d : int
        Input dimension.

    Returns
    -------
    numpy.ndarray (d,)
        Positive eigenvalues.

    Raises
    ------
    InputError
        When ``text`` is not iso, geom:r or a/b/… numbers, or gives other than d
        positive finite eigenvalues.

    Examples
    --------
    >>> from icldyn.numerics.experiments.sweep import spectrum_values
    >>> spectrum_values("iso", 3), spectrum_values("geom:0.5", 3), spectrum_values("2/1/0.5", 3)
    (array([1., 1., 1.]), array([1.  , 0.5 , 0.25]), array([2. , 1. , 0.5]))
    >>> spectrum_values("2/1", 3)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: spectrum: '2/1' gives 2 eigenvalues; d = 3 needs d of them ...
    """
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
    """A stable name for a point: a digest of its axis values.

    Parameters
    ----------
    point : dict
        Axis name → value (one of ``SweepSpec.points()``).

    Returns
    -------
    str
        16 hex digits.

    Examples
    --------
    >>> from icldyn.numerics.experiments.sweep import SweepSpec, point_id
    >>> first, second = SweepSpec(N=(4, 16), spectrum="iso").points()
    >>> point_id(first), point_id(second)
    ('4da901bf4e12db6e', 'b13316a99f5180d1')
    >>> point_id(dict(reversed(first.items()))) == point_id(first)     # order-free, stable
    True
    """
    return _digest(point)


# Settings added after sweeps were first written, at the value those sweeps used: a setting at
# that value is left out of the digest, so their point files keep their settings_id.
_EARLIER_VALUES = {"backend": "numba"}


def settings_id(settings: dict) -> str:
    """A digest of the per-point settings (steps, replicas, mode, model, tasks, backend), stored
    in each point file so that a point made with other settings is never reused. ``backend``
    enters only when it is not numba (sweeps written before it was a setting used numba), so
    their points keep their id.

    Parameters
    ----------
    settings : dict
        ``SweepSpec.settings()``.

    Returns
    -------
    str
        16 hex digits.

    Examples
    --------
    >>> from icldyn.numerics.experiments.sweep import SweepSpec, settings_id
    >>> settings_id(SweepSpec(steps=300).settings()) == settings_id(SweepSpec().settings())
    True
    >>> settings_id(SweepSpec(steps=600).settings()) == settings_id(SweepSpec().settings())
    False
    >>> settings_id(SweepSpec(backend="numpy").settings()) == settings_id(SweepSpec().settings())
    False
    """
    return _digest({name: value for name, value in settings.items()
                    if not (name in _EARLIER_VALUES and _EARLIER_VALUES[name] == value)})


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


FAILED = "failed"


def is_failed(row: dict) -> bool:
    """Whether a row records a failure (retried by ``resume``); a divergence is a result.

    Parameters
    ----------
    row : dict
        A row of the results table.

    Returns
    -------
    bool

    Examples
    --------
    >>> from icldyn.numerics.experiments.sweep import is_failed
    >>> is_failed({"status": "ok"}), is_failed({"status": "diverged at step 12"})
    (False, False)
    >>> is_failed({"status": "failed: InputError: ..."}), is_failed({})
    (True, True)
    """
    return str(row.get("status", FAILED)).startswith(FAILED)


# --- one point --------------------------------------------------------------------------------
def run_point(point: dict, settings: dict) -> dict:
    """Theory and/or simulation at one grid point; a row of the results table. A point that
    diverges or fails is recorded (``status``) instead of stopping the sweep.

    Parameters
    ----------
    point : dict
        Axis name → value (one of ``SweepSpec.points()``).
    settings : dict
        ``SweepSpec.settings()``.

    Returns
    -------
    dict
        The point's axis values, ``id``, ``status``, the losses (½E(ŷ − y_q)²: initial, final
        theory and SGD with SE and SD, half-loss step), conserved-quantity drifts, the z-score
        of SGD against theory, ``wall_s`` and ``worker_pid``.

    Examples
    --------
    >>> from icldyn.numerics.experiments.sweep import SweepSpec, run_point
    >>> spec = SweepSpec(d=1, N=4, spectrum="iso", init_scale=0.3, lr=0.1, batch=16, steps=100,
    ...                  replicas=4)
    >>> row = run_point(spec.points()[0], spec.settings())
    >>> row["status"], round(row["loss_initial"], 4), round(row["loss_final_theory"], 4)
    ('ok', 0.5015, 0.1667)
    >>> bool(abs(row["z_sgd_vs_theory"]) < 4)                   # SGD's mean against expected GD
    True
    >>> bad = dict(spec.points()[0], spectrum="1/2")            # d = 1 needs one eigenvalue
    >>> print(run_point(bad, spec.settings())["status"])        # recorded, not raised
    failed: InputError: spectrum: '1/2' gives 2 eigenvalues; d = 1 needs d of them ...
    """
    start = time.perf_counter()
    row = {"id": point_id(point), **point, "status": "ok"}
    try:
        row.update(_evaluate(point, settings))
    except DivergenceError as exc:
        row["status"] = f"diverged at step {exc.step}"
    except Exception as exc:  # one bad point must not lose the others
        row["status"] = f"{FAILED}: {type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc(limit=5)
    row["wall_s"] = time.perf_counter() - start
    row["worker_pid"] = os.getpid()
    return row


def _evaluate(point: dict, settings: dict) -> dict:
    from ...theory import ICLData, derive, models
    from ..compiled.codegen import compile_flow
    from ..compiled.integrate import gradient_descent
    from ..simulation.sgd import PromptSampler, simulate_sgd

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
    flow = compile_flow(derive(model, data), backend=settings["backend"])
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
    ``progress(stage, done, total)`` is called as points finish.

    Parameters
    ----------
    spec : SweepSpec
        The grid.
    out : str or pathlib.Path
        The sweep folder.
    resume : bool
        Continue a sweep already in ``out``.
    workers : int, optional
        Local processes.
    scheduler : str or distributed.Client, optional
        A Dask cluster.
    progress : callable, optional
        (stage, done, total).

    Returns
    -------
    dict
        The summary (points, computed, reused, failed, wall time, executor, worker pids) and
        ``rows`` (the results table in grid order).

    Raises
    ------
    InputError
        When ``spec`` is not a SweepSpec.

    Examples
    --------
    >>> import tempfile
    >>> from icldyn.numerics.experiments.sweep import SweepSpec, run_sweep
    >>> spec = SweepSpec(d=1, N=(4, 16), spectrum="iso", init_scale=0.3, lr=0.1, batch=16,
    ...                  steps=100, replicas=4, mode="theory")
    >>> tmp = tempfile.TemporaryDirectory()
    >>> summary = run_sweep(spec, tmp.name, workers=1)            # in this process
    >>> summary["points"], summary["computed"], summary["failed"]
    (2, 2, 0)
    >>> [round(row["loss_final_theory"], 4) for row in summary["rows"]]    # 1/(N + 2)
    [0.1667, 0.0556]
    >>> run_sweep(spec, tmp.name, resume=True, workers=1)["reused"]       # nothing to redo
    2
    >>> tmp.cleanup()
    """
    if not isinstance(spec, SweepSpec):
        raise InputError("spec", f"must be a SweepSpec, got {type(spec).__name__}")
    _check_executor(workers, scheduler)
    out = Path(out)
    _prepare(out, spec, resume)
    points, settings = spec.points(), spec.settings()
    sid = settings_id(settings)
    rows = _finished(out / "points", points, sid)
    todo = [p for p in points if point_id(p) not in rows]
    tell = progress or (lambda *a: None)
    tell("sweep points", len(rows), len(points))
    start = time.perf_counter()
    for point, row in _execute(todo, settings, workers, scheduler):
        name = point_id(point)                        # the client names the file, not the worker
        if any(row.get(a) != point[a] for a in AXES):
            row = _failed_row(point, "the worker returned a row for another point")
        row.update(id=name, settings_id=sid)
        write_json(out / "points" / f"{name}.json", row)
        rows[name] = row
        tell("sweep points", len(rows), len(points))
    rows = [rows[point_id(p)] for p in points]
    write_csv(out / "results.csv", rows, TABLE_FIRST, drop=("traceback", "settings_id"))
    failed = sum(map(is_failed, rows))
    summary = {"points": len(points), "computed": len(todo), "reused": len(points) - len(todo),
               "failed_or_diverged": sum(r["status"] != "ok" for r in rows), "failed": failed,
               "wall_s": time.perf_counter() - start,
               "executor": _executor_name(workers, scheduler),
               "worker_pids": sorted({r["worker_pid"] for r in rows if "worker_pid" in r})}
    write_json(out / "summary.json", summary)
    save_figure(summary_figure(rows, spec), out / "summary.png")
    return {**summary, "rows": rows}


def _failed_row(point: dict, why: str) -> dict:
    return {"id": point_id(point), **point, "status": f"{FAILED}: {why}"}


def _finished(folder: Path, points: list[dict], sid: str) -> dict:
    """{point id: row} of the points already computed in ``folder`` with these settings. Failed
    points are left out (so they are retried); a file that cannot be read back as its point's
    row is left out too and named in a warning."""
    rows, unreadable = {}, []
    for point in points:
        path = folder / f"{point_id(point)}.json"
        if not path.exists():
            continue
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError) as exc:                # UnicodeDecodeError is a ValueError
            unreadable.append(f"{path} ({type(exc).__name__})")
            continue
        if not (isinstance(row, dict) and row.get("id") == path.stem
                and all(row.get(a) == point[a] for a in AXES) and "status" in row):
            unreadable.append(f"{path} (not this point's row)")
        elif row.get("settings_id") != sid:
            unreadable.append(f"{path} (made with other settings)")
        elif not is_failed(row):
            rows[path.stem] = row
    if unreadable:
        warnings.warn(f"recomputing {len(unreadable)} point(s) whose files cannot be reused: "
                      + "; ".join(unreadable), RuntimeWarning, stacklevel=3)
    return rows


def _prepare(out: Path, spec: SweepSpec, resume: bool) -> None:
    spec_file = out / "spec.json"
    if spec_file.exists():
        if not resume:
            raise InputError("out", f"{out} already holds a sweep; pass resume=True (--resume) "
                             "to continue it, or choose a new folder")
        saved = read_spec(out)
        if saved is not None:
            if saved.to_json() != spec.to_json():
                raise InputError("spec", f"differs from the sweep saved in {spec_file}; resume "
                                 "with the same grid (omit the grid options to reuse it)")
            return
    write_json(spec_file, {"spec": spec.to_json(), "provenance": provenance()})


def read_spec(out) -> SweepSpec | None:
    """The grid saved in a sweep folder; None when there is none or when ``spec.json`` cannot
    be read back (then a warning names it, and the sweep's own spec will replace it).

    Parameters
    ----------
    out : str or pathlib.Path
        The sweep folder.

    Returns
    -------
    SweepSpec or None

    Examples
    --------
    >>> import tempfile
    >>> from icldyn.numerics.experiments.runfolder import write_json
    >>> from icldyn.numerics.experiments.sweep import SweepSpec, read_spec
    >>> tmp = tempfile.TemporaryDirectory()
    >>> read_spec(tmp.name) is None                         # no sweep here yet
    True
    >>> spec = SweepSpec(N=(4, 8), steps=100)
    >>> _ = write_json(f"{tmp.name}/spec.json", {"spec": spec.to_json()})   # as run_sweep does
    >>> read_spec(tmp.name) == spec
    True
    >>> tmp.cleanup()
    """
    path = Path(out) / "spec.json"
    if not path.exists():
        return None
    try:
        return SweepSpec.from_json(json.loads(path.read_text())["spec"])
    except (OSError, ValueError, KeyError, TypeError) as exc:   # InputError is a ValueError
        warnings.warn(f"ignoring the unreadable sweep grid {path} ({type(exc).__name__}: "
                      f"{exc}); it is rewritten from the grid given now", RuntimeWarning,
                      stacklevel=2)
        return None


def load_spec(out) -> SweepSpec:
    """The grid saved in a sweep folder (for ``--resume`` without repeating the options).

    Parameters
    ----------
    out : str or pathlib.Path
        The sweep folder.

    Returns
    -------
    SweepSpec

    Raises
    ------
    InputError
        When ``out`` holds no readable grid.

    Examples
    --------
    >>> import tempfile
    >>> from icldyn.numerics.experiments.runfolder import write_json
    >>> from icldyn.numerics.experiments.sweep import SweepSpec, load_spec
    >>> tmp = tempfile.TemporaryDirectory()
    >>> load_spec(tmp.name)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: out: ... holds no readable sweep grid ...
    >>> _ = write_json(f"{tmp.name}/spec.json", {"spec": SweepSpec(N=(4, 8)).to_json()})
    >>> load_spec(tmp.name).N                               # --resume without the grid options
    (4, 8)
    >>> tmp.cleanup()
    """
    spec = read_spec(out)
    if spec is None:
        raise InputError("out", f"{out} holds no readable sweep grid (spec.json) to resume; "
                         "give the grid options again")
    return spec


def _executor_name(workers, scheduler) -> str:
    if scheduler is not None:
        return f"dask ({scheduler if isinstance(scheduler, str) else type(scheduler).__name__})"
    return f"local processes ({_workers(workers)})"


def _workers(workers) -> int:
    return (os.cpu_count() or 1) if workers is None else check_int("workers", workers)


def _execute(points: list[dict], settings: dict, workers, scheduler):
    """(point, row) pairs as points finish (any order); the point is this process's own."""
    if not points:
        return
    if scheduler is not None:
        yield from _execute_dask(points, settings, scheduler)
        return
    n = min(_workers(workers), len(points))
    if n == 1:
        for p in points:
            yield p, run_point(p, settings)
        return
    yield from _execute_local(points, settings, n)


WORKER_RETRIES = 1


def _execute_local(points: list[dict], settings: dict, n: int):
    """A pool of ``n`` spawned worker processes that end with this one. A worker that dies
    (killed, out of memory) breaks the pool: the unfinished points are retried on a fresh pool
    ``WORKER_RETRIES`` times, then recorded as failed (``--resume`` retries them)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pending = list(points)
    for _ in range(WORKER_RETRIES + 1):
        if not pending:
            return
        pool = ProcessPoolExecutor(min(n, len(pending)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_end_with_parent, initargs=(os.getpid(),))
        futures = {pool.submit(run_point, p, settings): p for p in pending}
        pending = []
        try:
            for f in as_completed(futures):
                try:
                    row = f.result()
                except BrokenProcessPool:
                    pending.append(futures[f])
                    continue
                yield futures[f], row
        finally:
            pool.shutdown(wait=not pending, cancel_futures=True)
    for p in pending:
        yield p, _failed_row(p, "its worker process died twice (killed or out of memory?)")


def _end_with_parent(parent: int) -> None:
    """Pool-worker initializer: a thread that ends this worker as soon as its parent (the
    sweep) is gone, so a killed sweep leaves no workers behind."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


PARENT_POLL_S = 0.5


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


CONNECT_TIMEOUT_S = 20      # how long a sweep waits for an unreachable Dask scheduler


def _execute_dask(points: list[dict], settings: dict, scheduler):
    dask = _distributed()
    Client, as_completed = dask.Client, dask.as_completed
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s") if own else scheduler
    except (OSError, ValueError, TypeError) as exc:
        raise InputError("scheduler", f"cannot reach a Dask scheduler at {scheduler!r}: "
                         f"{exc}") from None
    try:
        futures = client.map(run_point, points, settings=settings, pure=False)
        point_of = {f.key: p for f, p in zip(futures, points)}
        for f in as_completed(futures):
            try:
                row = f.result()
            except Exception as exc:                 # e.g. KilledWorker: the point failed
                row = _failed_row(point_of[f.key], f"{type(exc).__name__}: {exc}")
            yield point_of[f.key], row
    finally:
        if own:
            client.close()


TABLE_FIRST = ("id",) + AXES + ("status",)


def read_table(path) -> list[dict]:
    """``results.csv`` back as dicts with numbers parsed.

    Parameters
    ----------
    path : str or pathlib.Path
        The CSV file.

    Returns
    -------
    list of dict

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.runfolder import write_csv
    >>> from icldyn.numerics.experiments.sweep import read_table
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_csv(Path(tmp.name) / "results.csv",
    ...                  [{"id": "a1", "N": 4, "loss_final_theory": 0.25, "status": "ok"}])
    >>> read_table(path)                          # numbers parsed back
    [{'N': 4, 'id': 'a1', 'loss_final_theory': 0.25, 'status': 'ok'}]
    >>> tmp.cleanup()
    """
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
    first values of the other axes.

    Parameters
    ----------
    rows : list of dict
        The results table.
    spec : SweepSpec
        Its grid.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from icldyn.numerics.experiments.sweep import SweepSpec, summary_figure
    >>> spec = SweepSpec(N=(4, 16), spectrum="iso", mode="theory")
    >>> rows = [dict(point, status="ok", loss_final_theory=loss)
    ...         for point, loss in zip(spec.points(), (0.5, 0.3))]
    >>> ax = summary_figure(rows, spec).axes[0]
    >>> ax.get_xlabel(), [line.get_label() for line in ax.get_lines()]
    ('context length N', ['theory, Λ iso'])
    """
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
    if ax.get_legend_handles_labels()[0]:        # no line when every point failed
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig
