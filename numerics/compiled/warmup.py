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

    Examples
    --------
    >>> from icldyn.numerics.compiled.warmup import cached
    >>> cached("0" * 64)          # nothing compiled for this source yet (None: the cache is off)
    False
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

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled.warmup import start
    >>> source = "def fixed_step(x):\\n    return 3.0 * x\\n"
    >>> examples = lambda: {"fixed_step": [(np.ones(2),)]}    # compile it for float64 vectors
    >>> child = start("3" * 64, source, examples, "icldyn.numerics.compiled.codegen")
    >>> start("3" * 64, source, examples, "icldyn.numerics.compiled.codegen") is child
    True
    >>> child.wait()              # the child compiled the kernel into the cache and exited
    0
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

    Examples
    --------
    >>> import io, pickle
    >>> from unittest import mock
    >>> from icldyn.numerics.compiled.warmup import receive
    >>> message = pickle.dumps(("def loss(x):\\n    return x\\n", {"loss": [(1.0,)]}))
    >>> with mock.patch("sys.stdin", io.TextIOWrapper(io.BytesIO(message))):
    ...     source, examples = receive()
    >>> examples
    {'loss': [(1.0,)]}
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

    Examples
    --------
    >>> from icldyn.numerics.compiled.warmup import compile_all
    >>> calls = []
    >>> fns = {name: (lambda x, name=name: calls.append((name, x)))
    ...        for name in ("fixed_step", "grad", "loss")}
    >>> compile_all(fns, {"fixed_step": [(0,)], "grad": [(1.0,), (1j,)], "loss": [(2,)]})
    >>> calls                        # fixed_step last: its cache entry marks the end
    [('grad', 1.0), ('grad', 1j), ('loss', 2), ('fixed_step', 0)]
    """
    for name in sorted(examples, key=lambda n: n == LAST):
        for args in examples[name]:
            fns[name](*args)
