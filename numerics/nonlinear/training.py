"""Shared machinery of the non-linear experiments: a training loop that records metrics and
checkpoints of the tracked matrices, the measures over those checkpoints, and the run folder."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..measures.trajectory import first_time, settle_time
from ..measures.matrices import effective_rank, singular_values, subspace_overlap
from ...files import write_atomic
from ..experiments.runfolder import provenance, save_figure, write_json


@dataclass
class Record:
    steps: list = field(default_factory=list)            # steps with metrics
    metrics: dict = field(default_factory=dict)          # name -> list (aligned with steps)
    checkpoint_steps: list = field(default_factory=list)
    checkpoints: dict = field(default_factory=dict)      # name -> list of arrays
    curvature_steps: list = field(default_factory=list)  # checkpoints with a curvature reading
    curvature: list = field(default_factory=list)        # top Hessian eigenvalue there

    def log(self, step: int, values: dict) -> None:
        self.steps.append(step)
        for k, v in values.items():
            self.metrics.setdefault(k, []).append(float(v))

    def checkpoint(self, step: int, matrices: dict) -> None:
        self.checkpoint_steps.append(step)
        for k, v in matrices.items():
            self.checkpoints.setdefault(k, []).append(v)


def train(model, step_fn, steps: int, record_every: int, eval_every: int = 1,
          eval_fn=None, stop=None, progress=None, curvature=None,
          curvature_every: int = 10) -> Record:
    """Run ``step_fn(step)`` (one optimiser step returning training metrics) ``steps`` times;
    metrics every ``eval_every`` steps (plus ``eval_fn()``), checkpoints of ``model.tracked()``
    every ``record_every`` steps and at the end, and ``curvature()`` (the top Hessian
    eigenvalue) at every ``curvature_every``-th checkpoint and the last; ``stop(record)`` may end
    the run early."""
    record = Record()

    def checkpoint(step: int) -> None:
        record.checkpoint(step, model.tracked())
        if curvature is not None and (len(record.checkpoint_steps) - 1) % curvature_every == 0:
            record.curvature_steps.append(step)
            record.curvature.append(float(curvature()))

    for step in range(steps + 1):
        if step % record_every == 0:
            checkpoint(step)
        if step == steps:
            break
        metrics = step_fn(step)
        if step % eval_every == 0:
            if eval_fn is not None:
                metrics.update(eval_fn())
            metrics["weight_norm"] = model.weight_norm()
            record.log(step, metrics)
            if stop is not None and stop(record):
                checkpoint(step + 1)
                break
        if progress is not None:
            progress(step + 1, steps)
    if curvature is not None and record.curvature_steps[-1] != record.checkpoint_steps[-1]:
        record.curvature_steps.append(record.checkpoint_steps[-1])
        record.curvature.append(float(curvature()))
    return record


def curvature_summary(record: Record) -> dict:
    """The top-Hessian-eigenvalue readings and where they peak."""
    if not record.curvature:
        return {}
    values = np.array(record.curvature)
    return {"steps": list(record.curvature_steps), "top_hessian": values.tolist(),
            "max": float(values.max()),
            "max_step": int(record.curvature_steps[int(values.argmax())])}


def analyse(record: Record, k: int = 4) -> dict:
    """Per tracked matrix over checkpoints: effective rank, top singular values, and the
    subspace distance 1 − overlap of the top-k left singular subspace with the final one."""
    out = {}
    for name, mats in record.checkpoints.items():
        M = np.stack(mats)
        kk = min(k, *M.shape[-2:])
        out[name] = {"effective_rank": effective_rank(M),
                     "singular_values": singular_values(M)[:, :8],
                     "subspace_distance": 1.0 - subspace_overlap(M, M[-1], kk)}
    return out


def _step(value: float) -> int | None:
    return None if np.isnan(value) else int(value)


def first_step(steps, values, below=None, above=None) -> int | None:
    """First step whose value is below (or at least) a threshold, None if never."""
    values = np.asarray(values)
    mask = np.zeros(len(values), dtype=bool)
    if below is not None:
        mask |= values < below
    if above is not None:
        mask |= values >= above
    return _step(first_time(np.asarray(steps), mask))


def fall_step(steps, distance, level: float = 0.5) -> int | None:
    """First checkpoint step from which the subspace distance stays below ``level``."""
    return _step(settle_time(np.asarray(steps), np.asarray(distance) < level))


def write_run(out, config, record: Record | None, analysis: dict, results: dict, figures: dict,
              seconds: float) -> None:
    """config.json, figures, for a single run (``record``) metrics.csv and checkpoints.npz
    (tracked matrices and their measures), and last results.json (with provenance): a folder
    with results.json is complete (``load_run`` reads it back for ``--resume``)."""
    config = config if isinstance(config, dict) else asdict(config)
    write_json(out / "config.json", {"config": config, "provenance": provenance()})
    _write_figures(out, figures)
    if record is not None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        names = list(record.metrics)
        writer.writerow(["step"] + names)
        for i, step in enumerate(record.steps):
            writer.writerow([step] + [record.metrics[n][i] for n in names])
        write_atomic(out / "metrics.csv", buf.getvalue())
        arrays = {f"checkpoint_{k}": np.stack(v) for k, v in record.checkpoints.items()}
        arrays["checkpoint_steps"] = np.array(record.checkpoint_steps)
        arrays["curvature_steps"] = np.array(record.curvature_steps, dtype=int)
        arrays["curvature_top_hessian"] = np.array(record.curvature, dtype=float)
        for name, a in analysis.items():
            for key, value in a.items():
                arrays[f"{key}_{name}"] = value
        b = io.BytesIO()
        np.savez_compressed(b, **arrays)
        write_atomic(out / "checkpoints.npz", b.getvalue())
    write_json(out / "results.json", dict(results, seconds=seconds, provenance=provenance()))


ANALYSIS_KEYS = ("effective_rank", "singular_values", "subspace_distance")


def load_run(out, config) -> dict | None:
    """A finished single run written by ``write_run`` whose config equals ``config``, as
    {"record", "analysis", "result", "config"}; None when absent, unfinished or different."""
    from pathlib import Path
    out = Path(out)
    needed = [out / n for n in ("results.json", "config.json", "metrics.csv", "checkpoints.npz")]
    if not all(p.exists() for p in needed):
        return None
    saved = json.loads((out / "config.json").read_text())["config"]
    if saved != json.loads(json.dumps(asdict(config))):
        return None
    record = Record()
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    for row in rows[1:]:
        record.log(int(row[0]), dict(zip(rows[0][1:], map(float, row[1:]))))
    analysis: dict = {}
    with np.load(out / "checkpoints.npz") as npz:
        record.checkpoint_steps = npz["checkpoint_steps"].tolist()
        record.curvature_steps = npz["curvature_steps"].tolist()
        record.curvature = npz["curvature_top_hessian"].tolist()
        for key in npz.files:
            if key.startswith("checkpoint_") and key != "checkpoint_steps":
                record.checkpoints[key[len("checkpoint_"):]] = list(npz[key])
            for prefix in ANALYSIS_KEYS:
                if key.startswith(prefix + "_"):
                    analysis.setdefault(key[len(prefix) + 1:], {})[prefix] = npz[key]
    result = json.loads((out / "results.json").read_text())
    result.pop("provenance", None)
    return {"record": record, "analysis": analysis, "result": result, "config": config}


def _write_figures(out, figures: dict) -> None:
    import matplotlib.pyplot as plt
    for fname, fig in figures.items():
        save_figure(fig, out / fname)
        plt.close(fig)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
