"""Run folders: atomic writes (no half-written file after an interrupt) and provenance
(package and dependency versions, git revision, platform) stored next to every result."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ..files import write_atomic

DEPENDENCIES = ("icl-dynamics", "sympy", "numpy", "scipy", "numba", "mpmath", "matplotlib")


def write_json(path: Path, obj) -> Path:
    return write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path: Path, rows: list[dict], first: tuple = (), drop: tuple = ()) -> Path:
    """``rows`` as a CSV table (atomic): the columns ``first`` in that order, then every other
    key of the rows sorted, without ``drop``."""
    import csv
    import io
    keys = list(first) + sorted({k for r in rows for k in r} - set(first) - set(drop))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buf.getvalue())


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure atomically (PNG)."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return write_atomic(path, buf.getvalue())


def _jsonable(obj):
    import numpy as np
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def provenance() -> dict:
    """Versions of Python and the dependencies, the git revision of the source tree, platform."""
    versions = {}
    for name in DEPENDENCIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "versions": versions,
            "git_revision": _git_revision(), "platform": platform.platform(),
            "argv": sys.argv}


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True,
                           text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")
