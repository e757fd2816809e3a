"""Numba's on-disk cache of the compiled kernels, kept inside the private cache folder.

Numba stores machine code as pickles (an index ``.nbi`` and data ``.nbc`` files per function);
loading a planted one would run code. So they are read and written only in
``<cache>/kernels``, a folder ``theory/cache.py`` creates 0700 and checks (owner, not group-
or other-writable, marked as ours) before every load and save — never Numba's default places
(``__pycache__`` beside a source file, ``$NUMBA_CACHE_DIR``, ``~/.cache/numba``). The kernels
are always compiled from source held in memory (our generated code), never from a file read
back; the digest of that source is the entry's stamp, so machine code is reused only for the
very same source. An unreadable entry (truncated, foreign) is recompiled and replaced, with a
warning, never fatal.
"""

from __future__ import annotations

import sys
import warnings

import numba
from numba.core.caching import (CompileResultCacheImpl, FunctionCache, IndexDataCacheFile,
                                _CacheLocator)

from ...theory.cache import private_folder
from .warmup import FOLDER


def njit_cached(fn, digest: str):
    """``numba.njit(fn)`` with its machine code cached in the private kernels folder (or not
    cached when the disk cache is off). ``digest`` (hex) identifies ``fn``'s source.

    Parameters
    ----------
    fn : function
        A kernel compiled from generated source held in memory.
    digest : str
        Hex digest of that source: the cache entry's stamp and name.

    Returns
    -------
    numba.core.registry.CPUDispatcher
        The lazily compiling dispatcher.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled.kernelcache import njit_cached
    >>> def double(x):
    ...     return 2.0 * x
    >>> kernel = njit_cached(double, "d" * 64)
    >>> kernel(np.arange(3.0))          # compiled on the first call, its machine code cached
    array([0., 2., 4.])
    >>> kernel.py_func is double
    True
    """
    dispatcher = numba.njit(fn)
    folder = private_folder(FOLDER)
    if folder is not None:
        dispatcher._cache = _KernelCache(fn, str(folder), digest)   # what enable_caching sets
    return dispatcher


class _Locator(_CacheLocator):
    """Numba's cache locator for one kernel: the private folder and the source digest."""

    def __init__(self, folder: str, stamp: str, lineno: int):
        self._folder, self._stamp, self._lineno = folder, stamp, lineno

    def ensure_cache_path(self):
        if private_folder(FOLDER) is None:
            raise OSError(f"the kernel cache folder {self._folder} is not private")

    def get_cache_path(self):
        return self._folder

    def get_source_stamp(self):
        return self._stamp

    def get_disambiguator(self):
        return str(self._lineno)


class _Impl(CompileResultCacheImpl):
    def __init__(self, locator: _Locator, filename_base: str):      # no source-file lookup
        self._locator, self._filename_base = locator, filename_base


class _KernelCache(FunctionCache):
    """Numba's function cache, located by ``_Locator`` and failing soft: a load from a folder
    that is no longer private is skipped, an unreadable entry is dropped and recompiled, a
    failed save is a warning."""

    def __init__(self, py_func, folder: str, digest: str):
        self._name, self._py_func = repr(py_func), py_func
        lineno = py_func.__code__.co_firstlineno
        base = (f"k{digest[:32]}.{py_func.__name__}-{lineno}"
                f".py{sys.version_info[0]}{sys.version_info[1]}")
        self._impl = _Impl(_Locator(folder, digest, lineno), base)
        self._cache_path = folder
        self._cache_file = IndexDataCacheFile(folder, base, digest)
        self.enable()

    def load_overload(self, sig, target_context):
        if private_folder(FOLDER) is None:
            return None
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:          # noqa: BLE001 — any broken entry: recompile it
            warnings.warn(f"ignoring unreadable compiled kernel {self._impl.filename_base} in "
                          f"{self._cache_path} ({type(exc).__name__}); recompiling it",
                          RuntimeWarning, stacklevel=2)
            try:
                self.flush()                  # an empty index: the next save rewrites it
            except OSError:
                pass
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as exc:          # noqa: BLE001 — a full disk must not stop a run
            warnings.warn(f"could not cache compiled kernel {self._impl.filename_base}: {exc}",
                          RuntimeWarning, stacklevel=2)
