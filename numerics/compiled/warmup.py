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


RUNNING = 1     # children compiling at once per process: the others wait in a queue


class Child:
    """A warm-up child process, started at once or, while ``RUNNING`` children of this process
    compile, queued (``start``). A queued child whose flow is gone (its ``message`` a method of
    an object no longer alive) is dropped unstarted: a script or a test run that makes many
    short-lived flows compiles only the kernels of flows still in use, one source at a time,
    instead of a process per flow, all at once.

    Parameters
    ----------
    message : callable
        () -> what the child receives; a bound method is held weakly.
    module : str
        The importable module whose ``warmup_child()`` the child runs.

    Examples
    --------
    >>> from icldyn.numerics.compiled.warmup import Child
    >>> class Flow:
    ...     def message(self):
    ...         return ("source", {}, [])
    >>> flow = Flow()
    >>> child = Child(flow.message, "icldyn.numerics.compiled.codegen")
    >>> del flow                            # gone before its turn: the child never starts
    >>> child.launch(), child.process
    (False, None)
    """

    def __init__(self, message, module: str):
        self._messages, self.module, self.process = [], module, None
        self.add(message)

    def add(self, message) -> None:
        """Another flow's ``message`` for the same source: the child starts while any is alive.

        Parameters
        ----------
        message : callable
            () -> what the child receives; a bound method is held weakly.
        """
        try:
            self._messages.append(weakref.WeakMethod(message))
        except TypeError:                 # a plain function: held as it is
            self._messages.append(lambda: message)

    def launch(self) -> bool:
        """Start the process and send it its message (the first of a flow still alive).

        Returns
        -------
        bool
            False when every flow of it is gone (nothing started).
        """
        message = next((m() for m in self._messages if m() is not None), None)
        if message is None:
            return False
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"import {self.module} as m; m.warmup_child()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            self.process.stdin.write(pickle.dumps(message()))
            self.process.stdin.close()
        except OSError:                  # the child died at once: the parent compiles
            pass
        return True

    def wait(self) -> int:
        """Wait until the child has compiled everything (its extensions too) and ended.

        Returns
        -------
        int
            Its exit code.
        """
        ready(self, wait=True)
        return self.process.wait()


_CHILDREN: dict = {}        # {source digest: its Child} — one child per source and process
_QUEUE: list = []           # Children not yet started, oldest first


def _advance() -> None:
    """Start queued children while fewer than ``RUNNING`` run (reaping the ended ones); drop
    those whose flow is gone."""
    running = sum(c.process is not None and c.process.poll() is None
                  for c in _CHILDREN.values())
    while _QUEUE and running < RUNNING:
        child = _QUEUE.pop(0)
        if child.launch():
            running += 1
        else:
            _CHILDREN.pop(next(k for k, c in _CHILDREN.items() if c is child))


def start(key: str, message, module: str) -> Child:
    """The child process compiling kernels into the kernel cache: it runs
    ``module.warmup_child()`` (the code generator's entry), which reads ``message()`` (e.g. the
    source and {kernel name: [argument tuple, ...]}) with ``receive``, compiles with
    ``compile_all`` and tells the parent with ``done``. One per ``key`` and process (later
    flows of the same source share it); queued while ``RUNNING`` others compile.

    Parameters
    ----------
    key : str
        Hex digest of what the child compiles.
    message : callable
        () -> what the child receives (picklable), called only when the child is started; a
        bound method is held weakly (the child of a flow gone before its turn never starts).
    module : str
        The importable module whose ``warmup_child()`` the child runs.

    Returns
    -------
    Child
        The child (the pipe of its standard output is closed when ``ready``).

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
        _CHILDREN[key] = Child(message, module)
        _QUEUE.append(_CHILDREN[key])
        _advance()
    elif _CHILDREN[key].process is None:
        _CHILDREN[key].add(message)
    return _CHILDREN[key]


def ready(child: Child, wait: bool = False) -> bool:
    """Whether ``child`` has compiled the kernels its parent waits for: it closed its standard
    output (``done``), or ended (a failed child too: the parent then compiles in-process). A
    queued child is not ready; waiting for it starts it at once.

    Parameters
    ----------
    child : Child
        From ``start``.
    wait : bool
        Wait until it is.

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled import warmup
    >>> source = "def fixed_step(x):\\n    return {} * x\\n"
    >>> def message(i):
    ...     return lambda: (source.format(i), {"fixed_step": [(1.0,)]}, [])
    >>> first, second = (warmup.start(str(i) * 64, message(i), "icldyn.numerics.compiled.codegen")
    ...                  for i in (5, 6))
    >>> second.process is None, warmup.ready(second)    # queued behind the first (RUNNING = 1)
    (True, False)
    >>> warmup.ready(second, wait=True), second.wait(), first.wait()   # waiting starts it
    (True, 0, 0)
    """
    _advance()
    if child.process is None:
        if not wait:
            return False
        _QUEUE.remove(child)
        if not child.launch():           # no flow of it left: the caller compiles in-process
            return True
    return bool(select.select([child.process.stdout], [], [], None if wait else 0)[0])


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
