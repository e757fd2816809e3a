"""Run folders: atomic writes (no half-written file after an interrupt) and provenance
(package and dependency versions, git revision, platform) stored next to every result."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from ..files import write_atomic
from ..theory.errors import InputError

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


def prepare_folder(out, option: str = "--out", reuse: bool = False) -> Path:
    """Check a run folder before any work and create it: not a file, writable, and — unless
    ``reuse`` (``--resume``/``--overwrite``) — new or empty, so a run never silently mixes
    its results with another's. An ``InputError`` naming ``option`` otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(option, f"{out} is a file; name a folder")
    if not reuse and out.is_dir() and any(out.iterdir()):
        raise InputError(option, f"{out} already holds files; pass --resume to continue that "
                         "run (where the command has it), --overwrite to replace its results, "
                         "or name a new folder")
    _probe(out, option)
    return out


def check_file(path, option: str) -> Path:
    """Check before any work that ``path`` can be written as a file (not a folder, its folder
    writable); an ``InputError`` naming ``option`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise InputError(option, f"{path} is a folder; name a file")
    _probe(path.parent, option)
    return path


def _probe(folder: Path, option: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise InputError(option, f"cannot write to {folder} ({exc.strerror or exc}); name a "
                         "writable folder") from None
