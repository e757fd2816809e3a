"""The on-disk derivation cache: data, never code, in a folder only its owner can write.

Structural results (expected losses, symmetry generators, ...) depend only on a model's
structure, the data's structure and the code that derived them, so they are stored once per
key in a folder shared by every process:

    <cache dir>/<kind>/<sha256(kind, key, code version)>.json

Each entry is data-only JSON (``serial.py``: loading never runs code) holding its kind, key and
code version besides the value; an entry that is unreadable or names another key is recomputed
and replaced with a warning, never fatal. The cache dir is ``$ICLDYN_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/icldyn`` or ``~/.cache/icldyn``; ``ICLDYN_CACHE_DIR=off`` turns the disk
layer off (memory only). The code version is the package version plus a hash of the ``theory``
sources, so an edited derivation never reads a stale entry. Writes are atomic renames, so
processes racing on one key each compute it and the last rename wins with identical content.

Trust: folders are created 0700 and marked with ``CACHEDIR.TAG`` (the cache-directory
standard, with an icldyn line). A cache folder owned by another user, writable by group or
others, or holding other files without the marker is refused with one warning, and the disk
layer is then off (computations still run).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import stat
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from icldyn import __version__
from icldyn.files import write_atomic

from . import serial
from .errors import InputError

__all__ = ["ENV", "configured_dir", "cache_dir", "private_folder", "code_version", "entry_name",
           "cached", "clear_memory", "clear_cache", "cache_info"]

ENV = "ICLDYN_CACHE_DIR"
MARKER = "CACHEDIR.TAG"
MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
               "# icldyn derivation cache: `icldyn cache clear` removes only the files it wrote.\n")
FORMAT = "icldyn-cache/2"
# names of the files the cache writes: entries (and write_atomic's temporaries), and Numba's
# index/data files of the kernels (and Numba's temporaries; numerics/compiled/kernelcache.py)
_WRITTEN = re.compile(r"\.?[0-9a-f]{32}\.json(\..+\.tmp)?"
                      r"|k[0-9a-f]{32}\..+\.nb[ic](\.tmp\.[0-9a-f]+)?")
_MEMORY: dict = {}
_REFUSED: set = set()


def configured_dir() -> Path | None:
    """The cache folder the environment names: ``$ICLDYN_CACHE_DIR`` ("", "off", "0", "none":
    switched off), else ``$XDG_CACHE_HOME/icldyn`` or ``~/.cache/icldyn``.

    Returns
    -------
    pathlib.Path or None
        None when the disk cache is switched off.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> from icldyn.theory.cache import configured_dir
    >>> with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": "off"}):
    ...     print(configured_dir())
    None
    >>> with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": "/tmp/my-icldyn-cache"}):
    ...     print(configured_dir())
    /tmp/my-icldyn-cache
    """
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "icldyn"


def cache_dir() -> Path | None:
    """The cache folder, created private if missing; None when the disk cache is off or the
    folder is refused (see the module docstring).

    Returns
    -------
    pathlib.Path or None

    Examples
    --------
    >>> import os, stat, tempfile
    >>> from unittest import mock
    >>> from icldyn.theory.cache import cache_dir
    >>> with tempfile.TemporaryDirectory() as root:
    ...     with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": os.path.join(root, "cache")}):
    ...         folder = cache_dir()
    ...     print(oct(stat.S_IMODE(folder.stat().st_mode)), [p.name for p in folder.iterdir()])
    0o700 ['CACHEDIR.TAG']
    >>> with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": ""}):
    ...     print(cache_dir())
    None
    """
    folder = configured_dir()
    return None if folder is None else _usable(folder, root=True)


def private_folder(name: str) -> Path | None:
    """``<cache dir>/<name>``, created 0700 and checked like the cache dir.

    Parameters
    ----------
    name : str
        The sub-folder's name.

    Returns
    -------
    pathlib.Path or None
        None when the cache is off or the folder is refused.

    Examples
    --------
    >>> import os, tempfile
    >>> from unittest import mock
    >>> from icldyn.theory.cache import private_folder
    >>> with tempfile.TemporaryDirectory() as root:
    ...     with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": root}):
    ...         print(private_folder("loss").relative_to(root))
    loss
    """
    folder = cache_dir()
    return None if folder is None else _usable(folder / name, root=False)


def _usable(folder: Path, root: bool) -> Path | None:
    """``folder``, created 0700 if missing (and marked, for the root), or None with one
    warning when it is refused."""
    try:
        if root:
            folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        problem = _untrusted(folder) or (_foreign(folder) if root else None)
    except OSError as exc:
        problem = f"it cannot be used ({exc})"
    if problem is not None:
        _refuse(folder, problem)
        return None
    return folder


def _foreign(folder: Path) -> str | None:
    """Why ``folder`` is not ours: it holds files but not our marker. An empty folder is
    adopted (the marker written)."""
    if (folder / MARKER).is_file():
        return None
    if any(folder.iterdir()):
        return (f"it holds files but no {MARKER}, so it is not an icldyn cache; name an empty "
                "or new folder")
    write_atomic(folder / MARKER, MARKER_TEXT)
    return None


def _untrusted(folder: Path) -> str | None:
    """Why ``folder`` may hold files planted by someone else, or None if only we can write it."""
    st = folder.stat()
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if st.st_uid != os.geteuid():
        return f"it is owned by another user (uid {st.st_uid}); name a folder of your own"
    if st.st_mode & 0o022:
        return (f"it is writable by group or others (mode {stat.filemode(st.st_mode)}); "
                f"run `chmod go-w {folder}` or name a private folder")
    return None


def _refuse(folder: Path, problem: str) -> None:
    if str(folder) not in _REFUSED:
        _REFUSED.add(str(folder))
        warnings.warn(f"{ENV}: not using the cache folder {folder}: {problem}; the disk cache "
                      "is off (results are computed, not stored)", RuntimeWarning, stacklevel=4)


@lru_cache(maxsize=None)
def code_version() -> str:
    """Package version and a digest of the theory sources (computed once per process).

    Returns
    -------
    str
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{__version__}-{digest.hexdigest()[:16]}"


def entry_name(kind: str, key) -> str:
    """File stem of an entry: a digest of ``repr(key)`` and the code version.

    Parameters
    ----------
    kind : str
        The entry's kind (its sub-folder).
    key : object
        Its key (a ``repr`` that determines the result).

    Returns
    -------
    str
        32 hex digits.

    Examples
    --------
    >>> from icldyn.theory.cache import entry_name
    >>> name = entry_name("loss", ("Merged", 1, "gaussian"))
    >>> len(name), name == entry_name("loss", ("Merged", 2, "gaussian"))
    (32, False)
    """
    text = f"{kind}\0{key!r}\0{code_version()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached(kind: str, key, compute):
    """``compute()`` memoised in memory and on disk under (kind, key, code version).

    Parameters
    ----------
    kind : str
        The entry's kind (its sub-folder).
    key : object
        Must have a ``repr`` that determines the result (tuples of strings and ints).
    compute : callable
        () ↦ the value; it must be data ``serial.py`` covers.

    Returns
    -------
    object
        The value, computed or read back.

    Examples
    --------
    >>> import os, tempfile
    >>> from unittest import mock
    >>> from icldyn.theory.cache import cached, clear_memory
    >>> calls = []
    >>> def compute():
    ...     calls.append(1)
    ...     return {"coefficient": 3}
    >>> with tempfile.TemporaryDirectory() as root:
    ...     with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": root}):
    ...         first = cached("demo", ("example", 1), compute)
    ...         clear_memory()                      # forget the memory layer: read from disk
    ...         again = cached("demo", ("example", 1), compute)
    >>> first == again, len(calls)
    (True, 1)
    """
    mem_key = (kind, key)
    if mem_key in _MEMORY:
        return _MEMORY[mem_key]
    folder = private_folder(kind)
    path = None if folder is None else folder / f"{entry_name(kind, key)}.json"
    header = {"format": FORMAT, "kind": kind, "key": repr(key), "code_version": code_version()}
    with _collector_paused():
        value = _load(path, header) if path is not None and path.exists() else None
        if value is None:
            value = compute()
            if path is not None:
                _store(kind, path.name, header, value)
    _MEMORY[mem_key] = value
    return value


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off meanwhile (back on after, if it was on). A
    derivation and its (de)serialisation build millions of small acyclic objects, and every
    full collection traverses all of them: ≈ 25 % of FullLSA's covariance went there, while
    the cycles left for the collector held ≈ 4 % of the peak memory."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _load(path: Path, header: dict):
    try:
        entry = json.loads(path.read_bytes())
        if not isinstance(entry, dict) or {k: entry.get(k) for k in header} != header \
                or "value" not in entry:
            raise ValueError("the entry is for another key or version")
        return serial.from_data(entry["value"])
    except (OSError, ValueError) as exc:  # truncated, foreign or stale: recompute, replace
        warnings.warn(f"ignoring unreadable cache entry {path} ({exc}); recomputing it",
                      RuntimeWarning, stacklevel=3)
        return None


def _store(kind: str, name: str, header: dict, value) -> None:
    folder = private_folder(kind)         # again: the folder may have been removed meanwhile
    if folder is None:
        return
    path = folder / name
    try:
        write_atomic(path, json.dumps({**header, "value": serial.to_data(value)}))
    except (OSError, TypeError) as exc:  # a full disk or an unserialisable value: not stored
        warnings.warn(f"could not write cache entry {path}: {exc}", RuntimeWarning, stacklevel=3)


def clear_memory() -> None:
    """Forget the in-memory layer (the disk entries stay).

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> from icldyn.theory.cache import cached, clear_memory
    >>> with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": "off"}):      # memory only
    ...     first = cached("demo", ("clear_memory",), lambda: 1)
    ...     clear_memory()
    ...     second = cached("demo", ("clear_memory",), lambda: 2)
    >>> first, second                           # recomputed once forgotten
    (1, 2)
    >>> clear_memory()
    """
    _MEMORY.clear()


def clear_cache() -> int:
    """Remove the files the cache wrote (entries, compiled kernels, their temporary files)
    and the in-memory layer; returns the number of files removed. The folder itself, its
    marker and anything else in it stay.

    Returns
    -------
    int
        The number of files removed.

    Raises
    ------
    InputError
        For a folder without the marker (nothing is removed).

    Examples
    --------
    >>> import os, tempfile
    >>> from unittest import mock
    >>> from icldyn.theory.cache import cached, clear_cache
    >>> with tempfile.TemporaryDirectory() as root:
    ...     with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": root}):
    ...         values = cached("demo", ("a",), lambda: 1), cached("demo", ("b",), lambda: 2)
    ...         print(clear_cache(), os.listdir(root))
    2 ['CACHEDIR.TAG']
    """
    clear_memory()
    folder = configured_dir()
    if folder is None or not folder.exists():
        return 0
    if not (folder / MARKER).is_file():
        raise InputError(ENV, f"{folder} has no {MARKER}, so it is not an icldyn cache; "
                         f"nothing was removed (point {ENV} at the cache folder)")
    count = 0
    for sub in folder.iterdir():
        if not sub.is_dir() or sub.is_symlink():
            continue
        for path in sub.iterdir():
            if _WRITTEN.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                count += 1
        try:
            sub.rmdir()
        except OSError:                     # it holds files the cache did not write
            pass
    return count


def cache_info() -> dict:
    """Folder, number of entries and bytes per kind.

    Returns
    -------
    dict
        {"dir": str or None, "code_version": str, "kinds": {kind: {"entries": int,
        "bytes": int}}}.

    Examples
    --------
    >>> import os, tempfile
    >>> from unittest import mock
    >>> from icldyn.theory.cache import cache_info, cached
    >>> with tempfile.TemporaryDirectory() as root:
    ...     with mock.patch.dict(os.environ, {"ICLDYN_CACHE_DIR": root}):
    ...         value = cached("demo", ("info",), lambda: [1, 2, 3])
    ...         info = cache_info()
    >>> info["kinds"]["demo"]["entries"], info["code_version"].startswith("0.1.0-")
    (1, True)
    """
    folder = cache_dir()
    kinds = {}
    if folder is not None and folder.exists():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = [p for p in sub.rglob("*") if p.is_file()]
            kinds[sub.name] = {"entries": len(files),
                               "bytes": sum(p.stat().st_size for p in files)}
    return {"dir": None if folder is None else str(folder), "code_version": code_version(),
            "kinds": kinds}
