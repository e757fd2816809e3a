"""Cold start without waiting for Numba: a flow whose kernels are not yet in the private
kernel cache runs its generated code with NumPy at once, while a child process compiles the
very same source with Numba into that cache (``kernelcache.py``); the flow switches to the
compiled kernels as soon as the child is done (and every later process loads them from disk).

The child receives the source and one example of each kernel's arguments on its standard
input (a pickle from its own parent, never read from disk), compiles every kernel for those
argument types and exits; a child that fails only costs time (the parent compiles in-process).
"""

from __future__ import annotations

import pickle
import subprocess
import sys

from ...theory.cache import private_folder

FOLDER = "kernels"          # the private folder of Numba's machine code (``kernelcache``)
LAST = "fixed_step"         # the kernel the child compiles last: its index marks completion


def cached(digest: str) -> bool | None:
    """Whether the kernels of the source with ``digest`` are in the kernel cache (None when
    the disk cache is off: no child can help).

    Parameters
    ----------
    digest : str
        Hex digest of the generated source.

    Returns
    -------
    bool or None
        True when the index of its ``LAST`` kernel is on disk.
    """
    folder = private_folder(FOLDER)
    if folder is None:
        return None
    return any(folder.glob(f"k{digest[:32]}.{LAST}-*.nbi"))


_CHILDREN: dict = {}        # {source digest: its child} — one child per source and process


def start(digest: str, source: str, examples, module: str) -> subprocess.Popen:
    """The child process compiling ``source``'s kernels into the kernel cache for the argument
    types of ``examples()`` ({kernel name: [argument tuple, ...]}); started once per source and
    process (later flows of the same source share it). It runs ``module.warmup_child()`` (the
    code generator's entry, which calls ``receive`` and ``compile_all``).

    Parameters
    ----------
    digest : str
        Hex digest of ``source``.
    source : str
        The generated Python source of the kernels.
    examples : callable
        () -> {kernel name: [argument tuple, ...]}, called only when a child is started.
    module : str
        The importable module whose ``warmup_child()`` the child runs.

    Returns
    -------
    subprocess.Popen
        The child (its output discarded).
    """
    if digest not in _CHILDREN:
        child = subprocess.Popen(
            [sys.executable, "-c", f"import {module} as m; m.warmup_child()"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            child.stdin.write(pickle.dumps((source, examples())))
            child.stdin.close()
        except OSError:                  # the child died at once: the parent compiles
            pass
        _CHILDREN[digest] = child
    return _CHILDREN[digest]


def receive() -> tuple:
    """In the child: (source, examples) from the parent.

    Returns
    -------
    tuple
        (source str, {kernel name: [argument tuple, ...]}), unpickled from standard input
        (written by the parent's ``start``).
    """
    return pickle.loads(sys.stdin.buffer.read())


def compile_all(fns: dict, examples: dict) -> None:
    """In the child: call every kernel with each of its examples (Numba compiles and caches a
    version per argument types), ``LAST`` last.

    Parameters
    ----------
    fns : dict
        {kernel name: cached Numba dispatcher}.
    examples : dict
        {kernel name: [argument tuple, ...]}.
    """
    for name in sorted(examples, key=lambda n: n == LAST):
        for args in examples[name]:
            fns[name](*args)
