"""The on-disk derivation cache.

Structural results (expected losses, symmetry generators, ...) depend only on a model's
structure, the data's structure and the code that derived them, so they are stored once per
key in a folder shared by every process:

    <cache dir>/<kind>/<sha256(kind, key, code version)>.pickle

The cache dir is ``$ICLDYN_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/icldyn`` or
``~/.cache/icldyn``; ``ICLDYN_CACHE_DIR=off`` turns the disk layer off (memory only).
The code version is the package version plus a hash of the ``theory`` sources, so an edited
derivation never reads a stale entry. Writes are atomic renames, so processes racing on one key
each compute it and the last rename wins with identical content; an unreadable entry is
recomputed and replaced. ``clear_cache()`` (or ``icldyn cache clear``) empties the folder.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

from icldyn import __version__
from icldyn.files import write_atomic

ENV = "ICLDYN_CACHE_DIR"
_MEMORY: dict = {}


def cache_dir() -> Path | None:
    """The cache folder, or None when the disk cache is off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "icldyn"


@lru_cache(maxsize=None)
def code_version() -> str:
    """Package version and a digest of the theory sources (computed once per process)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{__version__}-{digest.hexdigest()[:16]}"


def entry_name(kind: str, key) -> str:
    """File stem of an entry: a digest of ``repr(key)`` and the code version."""
    text = f"{kind}\0{key!r}\0{code_version()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached(kind: str, key, compute):
    """``compute()`` memoised in memory and on disk under (kind, key, code version).

    ``key`` must have a ``repr`` that determines the result (tuples of strings and ints)."""
    mem_key = (kind, key)
    if mem_key in _MEMORY:
        return _MEMORY[mem_key]
    folder = cache_dir()
    path = None if folder is None else folder / kind / f"{entry_name(kind, key)}.pickle"
    value = _load(path) if path is not None and path.exists() else None
    if value is None:
        value = compute()
        if path is not None:
            _store(path, value)
    _MEMORY[mem_key] = value
    return value


def _load(path: Path):
    try:
        return pickle.loads(path.read_bytes())
    except Exception as exc:  # a truncated or foreign file: recompute and replace it
        warnings.warn(f"ignoring unreadable cache entry {path} ({type(exc).__name__}); "
                      "recomputing it", RuntimeWarning, stacklevel=3)
        return None


def _store(path: Path, value) -> None:
    try:
        write_atomic(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as exc:  # a read-only or full disk must not stop a derivation
        warnings.warn(f"could not write cache entry {path}: {exc}", RuntimeWarning, stacklevel=3)


def clear_memory() -> None:
    """Forget the in-memory layer (the disk entries stay)."""
    _MEMORY.clear()


def clear_cache() -> int:
    """Remove every disk entry and the in-memory layer; returns the number of files removed."""
    clear_memory()
    folder = cache_dir()
    if folder is None or not folder.exists():
        return 0
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return count


def cache_info() -> dict:
    """Folder, number of entries and bytes per kind."""
    folder = cache_dir()
    kinds = {}
    if folder is not None and folder.exists():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = [p for p in sub.rglob("*") if p.is_file()]
            kinds[sub.name] = {"entries": len(files),
                               "bytes": sum(p.stat().st_size for p in files)}
    return {"dir": None if folder is None else str(folder), "code_version": code_version(),
            "kinds": kinds}
