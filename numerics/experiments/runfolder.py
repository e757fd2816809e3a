"""Run folders: atomic writes (no half-written file after an interrupt), whole folders swapped
in at the end (a killed run never leaves a folder mixing two runs), and provenance (package and
dependency versions, git revision, platform) stored next to every result."""

from __future__ import annotations

import contextvars
import ctypes
import errno
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from ...files import write_atomic
from ...theory.errors import InputError

DEPENDENCIES = ("icl-dynamics", "sympy", "numpy", "scipy", "numba", "mpmath", "matplotlib")


def write_json(path: Path, obj) -> Path:
    """``obj`` as indented JSON (atomic); NumPy scalars and arrays become numbers and lists,
    anything else unknown its ``str``.

    Parameters
    ----------
    path : path-like
    obj : object

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.runfolder import write_json
    >>> tmp = tempfile.TemporaryDirectory()
    >>> result = {"loss": np.float64(0.5), "curve": np.arange(3), "path": Path("a")}
    >>> path = write_json(Path(tmp.name) / "results.json", result)
    >>> json.loads(path.read_text())                # NumPy values as numbers, the rest as str
    {'loss': 0.5, 'curve': [0, 1, 2], 'path': 'a'}
    >>> tmp.cleanup()
    """
    return write_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path: Path, rows: list[dict], first: tuple = (), drop: tuple = ()) -> Path:
    """``rows`` as a CSV table (atomic): the columns ``first`` in that order, then every other
    key of the rows sorted, without ``drop``.

    Parameters
    ----------
    path : path-like
    rows : list of dict
        One dict per row; a missing key is an empty cell.
    first : tuple of str
        Columns to put first.
    drop : tuple of str
        Keys to leave out.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.runfolder import write_csv
    >>> tmp = tempfile.TemporaryDirectory()
    >>> rows = [{"N": 4, "loss": 0.5, "note": "x"}, {"N": 8, "loss": 0.25, "seed": 1}]
    >>> path = write_csv(Path(tmp.name) / "table.csv", rows, first=("N",), drop=("note",))
    >>> print(path.read_text())
    N,loss,seed
    4,0.5,
    8,0.25,1
    >>> tmp.cleanup()
    """
    import csv
    import io
    keys = list(first) + sorted({k for r in rows for k in r} - set(first) - set(drop))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buf.getvalue())


_ALSO_PDF = contextvars.ContextVar("also_pdf", default=False)


@contextmanager
def figures_also_as_pdf(on: bool = True):
    """Inside this context ``save_figure`` writes a PDF beside every PNG (``--pdf``).

    Parameters
    ----------
    on : bool
        Whether PDFs are written inside the context (the setting is restored on exit).

    Yields
    ------
    None

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from icldyn.numerics.experiments.runfolder import figures_also_as_pdf, save_figure
    >>> tmp = tempfile.TemporaryDirectory()
    >>> fig, ax = plt.subplots(figsize=(2, 2))
    >>> with figures_also_as_pdf():
    ...     _ = save_figure(fig, Path(tmp.name) / "loss.png")
    >>> _ = save_figure(fig, Path(tmp.name) / "modes.png")          # outside: PNG only
    >>> sorted(p.name for p in Path(tmp.name).iterdir())
    ['loss.pdf', 'loss.png', 'modes.png']
    >>> plt.close(fig); tmp.cleanup()
    """
    token = _ALSO_PDF.set(on)
    try:
        yield
    finally:
        _ALSO_PDF.reset(token)


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure atomically as PNG, and as PDF beside it (same name, .pdf)
    inside ``figures_also_as_pdf``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : path-like
        The PNG's path (120 dpi, tight bounding box).

    Returns
    -------
    pathlib.Path
        The PNG's path.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from icldyn.numerics.experiments.runfolder import save_figure
    >>> tmp = tempfile.TemporaryDirectory()
    >>> fig, ax = plt.subplots(figsize=(2, 2))
    >>> path = save_figure(fig, Path(tmp.name) / "loss.png")
    >>> path.name, path.read_bytes()[1:4]
    ('loss.png', b'PNG')
    >>> plt.close(fig); tmp.cleanup()
    """
    import io
    path = Path(path)
    for fmt in ("png", "pdf") if _ALSO_PDF.get() else ("png",):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120, bbox_inches="tight")
        write_atomic(path if fmt == "png" else path.with_suffix(".pdf"), buf.getvalue())
    return path


def _jsonable(obj):
    import numpy as np
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def provenance() -> dict:
    """Versions of Python and the dependencies, the git revision of the source tree, platform.

    Returns
    -------
    dict
        {"python", "versions" ({package: version or None}), "git_revision" (None outside a
        git checkout; ``+dirty`` with uncommitted changes), "platform", "argv"}.

    Examples
    --------
    >>> from icldyn.numerics.experiments.runfolder import provenance
    >>> p = provenance()
    >>> sorted(p)
    ['argv', 'git_revision', 'platform', 'python', 'versions']
    >>> sorted(p["versions"])
    ['icl-dynamics', 'matplotlib', 'mpmath', 'numba', 'numpy', 'scipy', 'sympy']
    """
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
    its results with another's. An ``InputError`` naming ``option`` otherwise.

    Parameters
    ----------
    out : path-like
        The run folder.
    option : str
        The command-line option that named it, for the error message.
    reuse : bool
        Accept a folder that already holds files.

    Returns
    -------
    pathlib.Path
        The folder (created).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.runfolder import prepare_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = prepare_folder(Path(tmp.name) / "run")          # created
    >>> _ = (out / "results.json").write_text("{}")
    >>> prepare_folder(out)
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: --out: .../run already holds files; pass --resume ...
    >>> prepare_folder(out, reuse=True) == out                # --resume / --overwrite
    True
    >>> tmp.cleanup()
    """
    out = _check_target(out, option, reuse)
    _probe(out, option)
    return out


def _check_target(out, option: str, reuse: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(option, f"{out} is a file; name a folder")
    if not reuse and out.is_dir() and any(out.iterdir()):
        raise InputError(option, f"{out} already holds files; pass --resume to continue that "
                         "run (where the command has it), --overwrite to replace its results, "
                         "or name a new folder")
    return out


STAGING_MARK = ".icldyn-staging"
STAGES = "stages"


def staging_path(out) -> Path:
    """The staging folder of the run folder ``out``: ``.<name>.staging`` beside it.

    Parameters
    ----------
    out : path-like

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> from icldyn.numerics.experiments.runfolder import staging_path
    >>> staging_path("runs/default")
    PosixPath('runs/.default.staging')
    """
    out = Path(out)
    return out.with_name(f".{out.name}.staging")


@contextmanager
def staged_folder(out, option: str = "--out", resume: bool = False, overwrite: bool = False):
    """Write the run folder ``out`` as a whole: checks it before any work (as
    ``prepare_folder``), yields a staging folder beside it to write into, and swaps that in for
    ``out`` when the block ends normally (an atomic exchange of the two folders on Linux), so
    ``out`` always holds one complete run: the old one until the swap (``--overwrite`` replaces
    it only then), the new one after it.

    The staging folder holds a marker file, locked while a run writes into it. A staging folder
    left by a killed run (marker unlocked) is taken over: with ``resume`` its saved ``stages/``
    (and those of ``out``) are kept for reuse, otherwise it is emptied; a warning says so. One
    locked by a live run, or one without the marker, is an ``InputError`` naming ``option``. If
    the block raises, the staging folder is removed unless it holds saved stages (kept for
    ``--resume``).

    Parameters
    ----------
    out : path-like
        The run folder (a symlink: the folder it names is swapped).
    option : str
        The command-line option that named it, for error messages.
    resume : bool
        Keep saved stages (``stages/``) of ``out`` and of a killed run's staging folder.
    overwrite : bool
        Accept an ``out`` that already holds files (replaced at the swap).

    Yields
    ------
    pathlib.Path
        The staging folder to write the run into.

    Raises
    ------
    InputError
        When ``out`` is a file, holds files (without ``resume``/``overwrite``), names no folder
        or is not writable, or its staging folder is in use or not one of ours.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.runfolder import staged_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = Path(tmp.name) / "run"
    >>> with staged_folder(out) as staging:
    ...     _ = (staging / "report.md").write_text("first run")
    ...     print(staging.name, out.exists())                # out untouched while writing
    .run.staging False
    >>> (out / "report.md").read_text()
    'first run'
    >>> with staged_folder(out, overwrite=True) as staging:
    ...     _ = (staging / "report.md").write_text("second run")
    ...     print((out / "report.md").read_text())           # the old run until the swap
    first run
    >>> (out / "report.md").read_text(), sorted(p.name for p in Path(tmp.name).iterdir())
    ('second run', ['run'])
    >>> tmp.cleanup()
    """
    out = _check_target(out, option, reuse=resume or overwrite)
    if out.is_symlink():                     # swap the folder it names, not the link
        out = out.resolve()
    if not out.absolute().name:
        raise InputError(option, f"{out} names no folder; name one")
    _probe(out.absolute().parent, option)
    staging = staging_path(out)
    lock = _claim(staging, option, keep=STAGES if resume else None)
    try:
        if resume:
            _carry(out / STAGES, staging / STAGES)
        yield staging
        _swap(staging, out)
    except BaseException:
        if not any(p.is_file() for p in (staging / STAGES).rglob("*")):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        lock.close()


def _claim(staging: Path, option: str, keep: str | None):
    """Create or take over ``staging``; returns the open, locked marker file."""
    stale = False
    try:
        staging.mkdir()
    except FileExistsError:
        stale = True
        if staging.is_symlink() or not (staging / STAGING_MARK).is_file():
            if staging.is_symlink() or not staging.is_dir() or any(staging.iterdir()):
                raise InputError(option, f"{staging} is in the way and was not made by icldyn; "
                                 "move it away or name another folder") from None
            stale = False                    # an empty folder: killed right after creating it
    marker = open(staging / STAGING_MARK, "a+")
    try:
        fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        marker.seek(0)
        who = marker.read().strip() or "a live process"
        marker.close()
        raise InputError(option, f"another icldyn run ({who}) is writing this folder through "
                         f"{staging}; wait for it to end or name another folder") from None
    if stale:
        for child in staging.iterdir():
            if child.name not in (STAGING_MARK, keep):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        warnings.warn(f"{staging} was left by an interrupted run; "
                      + ("its saved stages are reused" if keep else "it is discarded"),
                      RuntimeWarning, stacklevel=4)
    marker.seek(0)
    marker.truncate()
    marker.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    marker.flush()
    return marker


def _carry(src: Path, dst: Path) -> None:
    """Copy the saved stages of the finished run into the staging folder (those already there,
    from an interrupted run, win)."""
    if not src.is_dir():
        return
    dst.mkdir(exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and not (dst / path.name).exists():
            shutil.copy2(path, dst / path.name)


def _swap(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; the old ``out`` (if it holds files) is removed after."""
    if out.is_dir() and any(out.iterdir()):
        (out / STAGING_MARK).touch()         # once swapped out, the old run is a stale staging
        _exchange(staging, out)
        shutil.rmtree(staging, ignore_errors=True)
    else:
        os.rename(staging, out)             # onto a missing or empty folder: atomic
    (out / STAGING_MARK).unlink(missing_ok=True)


AT_FDCWD, RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> None:
    """Swap two existing paths: atomically by Linux's renameat2(RENAME_EXCHANGE); where the
    system or file system lacks it, by three renames (not atomic: a kill between them leaves
    ``b`` missing and its old content at ``a``'s name + ``.swap``)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                              ctypes.c_uint]
        if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(a), None, str(b))
    parked = a.with_name(a.name + ".swap")
    os.rename(b, parked)
    os.rename(a, b)
    os.rename(parked, a)


def check_file(path, option: str) -> Path:
    """Check before any work that ``path`` can be written as a file (not a folder, its folder
    writable); an ``InputError`` naming ``option`` otherwise.

    Parameters
    ----------
    path : path-like
    option : str
        The command-line option that named it.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        When ``path`` is a folder, or its folder cannot be created or written.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.runfolder import check_file
    >>> tmp = tempfile.TemporaryDirectory()
    >>> check_file(Path(tmp.name) / "doc" / "merged.tex", "--latex").name    # its folder made
    'merged.tex'
    >>> check_file(tmp.name, "--latex")
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: --latex: ... is a folder; name a file
    >>> tmp.cleanup()
    """
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
