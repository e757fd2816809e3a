"""Cold start without waiting for Numba: a flow whose kernels are not yet in the private
kernel cache runs its generated code with NumPy at once, while a child process compiles the
very same source with Numba into that cache (``kernelcache.py``); the flow switches to the
compiled kernels as soon as the child is done (and every later process loads them from disk).

The child receives the source and one example of each kernel's arguments on its standard
input (a pickle from its own parent, never read from disk), compiles every kernel for those
argument types, closes its standard output (``done``: the parent's ``ready``), compiles what
is wanted later (a flow's extensions, ``codegen.Extension``) and exits; a child that fails only
costs time (the parent compiles in-process).
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import subprocess
import sys
import weakref

from ...theory.cache import private_folder

FOLDER = "kernels"          # the private folder of Numba's machine code (``kernelcache``)
LAST = "fixed_step"         # the kernel the child compiles last: its index marks completion


def cached(digest: str, kernel: str = LAST) -> bool | None:
    """Whether the kernels of the source with ``digest`` are in the kernel cache (None when
    the disk cache is off: no child can help).

    Parameters
    ----------
    digest : str
        Hex digest of the generated source.
    kernel : str
        The kernel the child compiles last (``compile_all``).

    Returns
    -------
    bool or None
        True when the index of ``kernel`` is on disk.

    Examples
    --------
    >>> from icldyn.numerics.compiled.warmup import cached
    >>> cached("0" * 64)          # nothing compiled for this source yet (None: the cache is off)
    False
    """
    folder = private_folder(FOLDER)
    if folder is None:
        return None
    return any(folder.glob(f"k{digest[:32]}.{kernel}-*.nbi"))


_CHILDREN: dict = {}        # {source digest: its child} — one child per source and process
_USERS: dict = {}           # {source digest: weak set of the objects using its kernels}


def start(key: str, message, module: str, user=None) -> subprocess.Popen:
    """The child process compiling kernels into the kernel cache: it runs
    ``module.warmup_child()`` (the code generator's entry), which reads ``message()`` (e.g. the
    source and {kernel name: [argument tuple, ...]}) with ``receive``, compiles with
    ``compile_all`` and tells the parent with ``done``. Started once per ``key`` and process
    (later flows of the same source share it).

    Starting a child first stops every child still running whose users have all been garbage
    collected (``stop_unwanted``; so does the process's exit): kernels nobody in this process
    will call no longer take the cores from the ones wanted now (a test suite builds hundreds
    of short-lived flows). A child with no ``user`` given is never stopped this way; one whose
    flows keep being rebuilt (a sweep's points) is found by ``key`` and kept.

    Parameters
    ----------
    key : str
        Hex digest of what the child compiles.
    message : callable
        () -> what the child receives (picklable), called only when a child is started.
    module : str
        The importable module whose ``warmup_child()`` the child runs.
    user : object, optional
        What uses the kernels (a flow): the child counts as wanted while one of its users is
        alive (held weakly).

    Returns
    -------
    subprocess.Popen
        The child (its standard output a pipe that it closes when ``ready``).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled.warmup import ready, start
    >>> source = "def fixed_step(x):\\n    return 3.0 * x\\n"
    >>> message = lambda: (source, {"fixed_step": [(np.ones(2),)]}, [])  # for float64 vectors
    >>> child = start("3" * 64, message, "icldyn.numerics.compiled.codegen")
    >>> start("3" * 64, message, "icldyn.numerics.compiled.codegen") is child
    True
    >>> ready(child, wait=True), child.wait()   # it compiled the kernel into the cache, exited
    (True, 0)
    """
    if key not in _CHILDREN:
        stop_unwanted()
        child = subprocess.Popen(
            [sys.executable, "-c", f"import {module} as m; m.warmup_child()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            child.stdin.write(pickle.dumps(message()))
            child.stdin.close()
        except OSError:                  # the child died at once: the parent compiles
            pass
        _CHILDREN[key], _USERS[key] = child, None if user is None else weakref.WeakSet()
    if user is not None and _USERS[key] is not None:
        _USERS[key].add(user)
    return _CHILDREN[key]


@atexit.register
def stop_unwanted() -> list:
    """Stop (kill, then reap) and forget the children still running whose users (``start``'s
    ``user``) have all been garbage collected; a later ``start`` of their key starts a new
    child. Called by ``start`` and at the process's exit, where a child of a flow still
    referenced goes on compiling for later processes, the others would only take the
    machine's cores.

    Returns
    -------
    list of subprocess.Popen
        The children stopped.

    Examples
    --------
    >>> import gc
    >>> from icldyn.numerics.compiled.warmup import start, stop_unwanted
    >>> class Flow: pass
    >>> slow = "import time; time.sleep(60)\\ndef fixed_step(x):\\n    return x\\n"
    >>> flow = Flow()
    >>> child = start("4" * 64, lambda: (slow, {}, []), "icldyn.numerics.compiled.codegen", flow)
    >>> stop_unwanted()                              # its flow is alive
    []
    >>> del flow; _ = gc.collect()
    >>> stop_unwanted() == [child], child.returncode != 0     # nobody will call its kernels
    (True, True)
    """
    stopped = []
    for key, child in list(_CHILDREN.items()):
        users = _USERS[key]
        if users is not None and not users and child.poll() is None:
            child.kill()
            child.wait()
            stopped.append(child)
            del _CHILDREN[key], _USERS[key]
    return stopped


def ready(child: subprocess.Popen, wait: bool = False) -> bool:
    """Whether ``child`` has compiled the kernels its parent waits for: it closed its standard
    output (``done``), or ended (a failed child too: the parent then compiles in-process).

    Parameters
    ----------
    child : subprocess.Popen
        From ``start``.
    wait : bool
        Wait until it is.

    Returns
    -------
    bool

    Examples
    --------
    >>> import subprocess, sys
    >>> from icldyn.numerics.compiled.warmup import ready
    >>> code = "import sys, time; from icldyn.numerics.compiled import warmup; "
    >>> child = subprocess.Popen([sys.executable, "-c", code + "warmup.done(); time.sleep(60)"],
    ...                          stdout=subprocess.PIPE)
    >>> ready(child, wait=True), child.poll()         # ready, still running (compiling more)
    (True, None)
    >>> child.kill(); child.wait() != 0
    True
    """
    return bool(select.select([child.stdout], [], [], None if wait else 0)[0])


def done() -> None:
    """In the child: tell the parent (``ready``) that the kernels it waits for are compiled, by
    closing the pipe of standard output (pointed at ``os.devnull`` from then on).

    Examples
    --------
    >>> import subprocess, sys
    >>> code = "from icldyn.numerics.compiled import warmup; warmup.done(); print('after')"
    >>> subprocess.run([sys.executable, "-c", code], capture_output=True).stdout   # closed
    b''
    """
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)


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
