"""Derivation → fast NumPy / Numba functions generated at the matrix level.

Each trace polynomial is printed as Python source over whole matrices: every distinct matrix
word is a named intermediate built from its longest already-computed prefix (so shared products
are computed once), traces are ``np.trace`` of those, and the eigenbasis-diagonal operator
Dg(Y) = U diag(c ∘ diag(UᵀYU)) Uᵀ is a helper. Coefficients (rational functions of N, σ, d, d_y
and η) are evaluated once per data set and passed in as a vector ``k``, so a sweep over data
values reuses the same compiled code. The ``numba`` backend ``njit``s the very same source.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from ...theory.data import N_SYM, SIGMA, W_COPY, W_TASK
from ...theory.derive import Derivation
from ...theory.errors import InputError
from ...theory.words import (DIMS, Dg, MatPoly, TracePoly, split_by_letters,
                             transpose_word)
from ...theory.params import as_arrays
from ..limits import RUNAWAY, data_overflow
from ..params import as_theta

BACKENDS = ("numpy", "numba")
COEFF_SYMBOLS = (N_SYM, SIGMA, DIMS["x"], DIMS["y"], DIMS["r"])


def eigdiag(Y, U, c):
    """Dg(Y) = U diag(c ∘ diag(Uᵀ Y U)) Uᵀ."""
    v = c * np.diag(U.T @ Y @ U)
    return (U * v) @ U.T


DATA_LETTERS = ("Lambda", "Sigma_w")
TASK_LETTERS = (W_TASK.name, W_COPY.name)       # draws from a finite task set


def _is_data(letter) -> bool:
    """Letters fixed by the data (symmetric): Λ, Σ_w, and Dg of a data-only word."""
    if isinstance(letter, Dg):
        return all(_is_data(a) for a in letter.inner)
    return letter.name in DATA_LETTERS


class _Printer:
    """Collects the statements that evaluate words and traces, each once. Products of data
    letters only go to the shared ``constants`` printer (computed once per data set)."""

    def __init__(self, constants: "_Printer | None" = None):
        self.lines: list[str] = []
        self.names: dict = {}
        self.counter = 0
        self.constants = constants
        self.prefix = "c" if constants is None else ""
        self.indent = "    "

    def _new(self, expr: str, prefix: str) -> str:
        name = f"{self.prefix}{prefix}{self.counter}"
        self.counter += 1
        self.lines.append(f"{self.indent}{name} = {expr}")
        return name

    def open_loops(self, letters) -> str:
        """Open nested loops over the task set, one per task letter (independent draws:
        W = tasks[t0], W_j = tasks[t1]); statements printed until ``close_loops`` go inside.
        Returns the draws' joint weight (an expression)."""
        self._outside = dict(self.names)
        for depth, name in enumerate(letters):
            indent = "    " * (depth + 1)
            self.lines += [f"{indent}for _t{depth} in range(tasks.shape[0]):",
                           f"{indent}    {name} = np.ascontiguousarray(tasks[_t{depth}])"]
        self.indent = "    " * (len(letters) + 1)
        return " * ".join(f"task_weights[_t{depth}]" for depth in range(len(letters)))

    def add_up(self, target: str, terms: list[str], weight: str = "", chunk: int = 64) -> None:
        """target += weight · Σ terms, in statements of at most ``chunk`` terms (Python's
        compiler recurses once per ``+``)."""
        for start in range(0, len(terms), chunk):
            part = " + ".join(terms[start:start + chunk])
            self.lines.append(f"{self.indent}{target} += "
                              + (f"{weight} * ({part})" if weight else part))

    def close_loops(self) -> None:
        """Leave the loops: what was computed inside is forgotten (it held one task's value)."""
        self.names, self.indent = self._outside, "    "

    def letter(self, letter) -> str:
        if letter in self.names:
            return self.names[letter]
        if isinstance(letter, Dg):
            inner = self.word(letter.inner) if letter.inner else "np.eye(U.shape[0])"
            name = self._new(f"_eigdiag({inner}, U, c)", "g")
        elif letter.T:
            name = self._new(f"np.ascontiguousarray({letter.name}.T)", "t")
        else:
            name = letter.name
        self.names[letter] = name
        return name

    def word(self, word: tuple) -> str:
        if self.constants is not None and all(map(_is_data, word)):
            return self.constants.word(word)
        if len(word) == 1:
            return self.letter(word[0])
        key = ("word", word)
        if key not in self.names:
            self.names[key] = self._new(f"{self.word(word[:-1])} @ {self.letter(word[-1])}", "m")
        return self.names[key]

    def known(self, word: tuple) -> bool:
        return len(word) == 1 or ("word", word) in self.names or (
            self.constants is not None and all(map(_is_data, word)))

    def trace(self, word: tuple) -> str:
        """tr(H·T) = Σ_ij H_ij (Tᵀ)_ij over the cyclic rotations (and the transpose) of the
        word, with T a single letter or a run of data letters (a constant): the last product
        costs O(d²), not O(d³). The split reuses an already computed product H where it can,
        else takes the longest run of data letters."""
        key = ("trace", word)
        if key in self.names:
            return self.names[key]
        if len(word) == 1 or self.known(word):
            expr = f"np.trace({self.word(word)})"
        else:
            best = None
            for cand in _rotations(word) + _rotations(transpose_word(word)):
                for cut in range(1, len(cand)):
                    head, tail = cand[:cut], cand[cut:]
                    data_tail = all(map(_is_data, tail))
                    if len(tail) > 1 and not data_tail:
                        continue
                    cost = (0 if self.known(head) else len(head) - 1,
                            -(len(tail) if data_tail else 0))
                    if best is None or cost < best[0]:
                        best = (cost, head, tail)
            _, head, tail = best
            tail_t = self.word(transpose_word(tail))
            expr = f"np.sum({self.word(head)} * {tail_t})"
        self.names[key] = self._new(expr, "s")
        return self.names[key]

    def scalar_term(self, traces, kidx: int) -> str:
        return " * ".join([f"k[{kidx}]"] + [self.trace(w) for w in traces])


def _rotations(word: tuple) -> list[tuple]:
    return [word[k:] + word[:k] for k in range(len(word))]


@dataclass
class _Polys:
    """The polynomials a flow needs, with one flat coefficient list."""

    coeffs: list
    source: str


_SIZE = {"x": "n_x", "y": "n_y", "r": "n_r", "z": "(n_x + n_y)"}
_PART = {None: ":", "x": ":n_x", "y": "n_x:"}


def _shape_code(param) -> str:
    core = [_SIZE[param.rows], _SIZE[param.cols]]
    return "(" + ", ".join(([str(param.heads)] if param.heads else []) + core) + ")"


def _ident(name: str) -> str:
    """A parameter name as part of a Python identifier (a stack's "0.V" → "0_V")."""
    return name.replace(".", "_")


def _index_code(block) -> str:
    parts = [_PART[block.row_part], _PART[block.col_part]]
    return "[" + ", ".join(([str(block.head)] if block.head is not None else []) + parts) + "]"


def _generate(der: Derivation) -> _Polys:
    model = der.model
    coeffs: list = []

    def k(expr) -> int:
        coeffs.append(expr)
        return len(coeffs) - 1

    consts = _Printer()
    header = ["    n_x = Lambda.shape[0]", "    n_y = dims[0]", "    n_r = dims[1]",
              "    CONSTANTS", "    pos = 0"]
    for p in model.params:
        header += [f"    P_{_ident(p.name)} = theta[pos:pos + {_size_code(p)}].reshape({_shape_code(p)})",
                   f"    pos += {_size_code(p)}"]
    for b in model.blocks():
        header.append(f"    {b.letter.name} = np.ascontiguousarray(P_{_ident(b.param)}{_index_code(b)})")
    args = "theta, k, Lambda, Sigma_w, U, c, tasks, task_weights, dims, consts"

    def scalar_fn(name: str, poly: TracePoly) -> list[str]:
        pr = _Printer(consts)
        groups = split_by_letters(poly, TASK_LETTERS)
        fixed = groups.pop(frozenset(), TracePoly())
        pr.lines.append("    total = 0.0 * theta[0]")           # θ's dtype (complex in hvp)
        pr.add_up("total", [pr.scalar_term(tr, k(c)) for tr, c in fixed.terms.items()])
        for present, part in sorted(groups.items(), key=lambda g: sorted(g[0])):
            weight = pr.open_loops(sorted(present))
            pr.add_up("total", [pr.scalar_term(tr, k(c)) for tr, c in part.terms.items()],
                      weight)
            pr.close_loops()
        return [f"def {name}({args}):"] + header + pr.lines + ["    return total", ""]

    def block_value(pr: _Printer, b, g: MatPoly) -> list[str]:
        rows = _SIZE[b.letter.rows]
        return [f"({pr.scalar_term(traces, k(c))}) * "
                + (pr.word(word) if word else f"np.eye({rows})")
                for (traces, word), c in g.terms.items()]

    def grad_fn(name: str, grads: dict) -> list[str]:
        pr = _Printer(consts)
        split = {}     # letter -> (terms in the task W, the other terms): the mean is linear
        for n, g in grads.items():
            parts = split_by_letters(g, TASK_LETTERS)
            split[n] = tuple(parts.get(frozenset(key), g._canonical({}))
                             for key in ({W_TASK.name}, ()))
            if set(parts) - {frozenset({W_TASK.name}), frozenset()}:
                raise ValueError("a gradient holds one expectation over the task")
        for _, fixed in split.values():      # open products first: traces may reuse them
            for _, word in fixed.terms:
                if word:
                    pr.word(word)
        blocks = list(model.blocks())
        fixed = [block_value(pr, b, split[b.letter.name][1]) for b in blocks]
        cut = len(pr.lines)                    # where the task loop (if any) starts
        init = _Printer()
        init.lines = [f"    G_{_ident(p.name)} = np.zeros({_shape_code(p)}, dtype=theta.dtype)"
                      for p in model.params]
        for b, parts in zip(blocks, fixed):
            init.add_up(f"G_{_ident(b.param)}{_index_code(b)}", parts)
        loop = _Printer()
        if any(split[n][0].terms for n in split):
            weight = pr.open_loops([W_TASK.name])
            loop.indent = pr.indent
            for b in blocks:
                loop.add_up(f"G_{_ident(b.param)}{_index_code(b)}",
                            block_value(pr, b, split[b.letter.name][0]), weight)
            pr.close_loops()
        init, loop = init.lines, loop.lines
        out = ["    out = np.empty(theta.shape[0], dtype=theta.dtype)", "    pos = 0"]
        for p in model.params:
            out += [f"    out[pos:pos + G_{_ident(p.name)}.size] = G_{_ident(p.name)}.ravel()",
                    f"    pos += G_{_ident(p.name)}.size"]
        return ([f"def {name}({args}):"] + header + pr.lines[:cut] + init + pr.lines[cut:]
                + loop + out + ["    return out", ""])

    lines = scalar_fn("loss", der.loss_poly)
    lines += grad_fn("grad", der.gradient_poly)
    for i, c in enumerate(der.conserved):
        lines += scalar_fn(f"conserved_{i}", c.quantity)
    lines += _observe_fn(len(der.conserved), args)
    names = [line.split(" = ")[0].strip() for line in consts.lines] or ["Lambda"]
    unpack = f"({', '.join(names)},) = consts"
    constants_fn = (["def constants(Lambda, Sigma_w, U, c):"] + consts.lines
                    + [f"    return ({', '.join(names)},)", ""])
    lines = ["import numpy as np", ""] + constants_fn + [
        line.replace("    CONSTANTS", "    " + unpack) for line in lines]
    return _Polys(coeffs, "\n".join(lines) + FIXED_STEP_LOOP)


def _observe_fn(conserved: int, args: str) -> list[str]:
    """``observe(rows, …)``: the loss and every conserved quantity of each row of θ in one
    loop (compiled with the kernels, so recording a trajectory costs no Python per row)."""
    call = args.replace("theta, ", "rows[i], ", 1)
    return ([f"def observe({args.replace('theta', 'rows', 1)}):",
             f"    out = np.empty((rows.shape[0], {1 + conserved}))",
             "    for i in range(rows.shape[0]):",
             f"        out[i, 0] = loss({call})"]
            + [f"        out[i, {j + 1}] = conserved_{j}({call})" for j in range(conserved)]
            + ["    return out", ""])


# Emitted into every generated module (not passed the gradient as an argument) so that Numba can
# cache it on disk with the kernels it calls.
FIXED_STEP_LOOP = f'''
def fixed_step(theta0, h, steps, every, rk4, k, Lambda, Sigma_w, U, c, tasks, task_weights,
               dims, consts):
    out = np.empty((steps // every + 1, theta0.size))
    theta = theta0.copy()
    out[0] = theta
    data = (Lambda, Sigma_w, U, c, tasks, task_weights, dims, consts)
    for n in range(1, steps + 1):
        k1 = -grad(theta, k, *data)
        if rk4:
            k2 = -grad(theta + 0.5 * h * k1, k, *data)
            k3 = -grad(theta + 0.5 * h * k2, k, *data)
            k4 = -grad(theta + h * k3, k, *data)
            theta = theta + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        else:
            theta = theta + h * k1
        if not np.all(np.abs(theta) < {RUNAWAY!r}):
            return out[: (n - 1) // every + 1], n
        if n % every == 0:
            out[n // every] = theta
    return out, steps
'''


def _size_code(param) -> str:
    return " * ".join(_shape_code(param)[1:-1].split(", "))


_COMPILED: dict = {}


def _compile(source: str, backend: str) -> dict:
    """The generated functions for ``backend``, compiled once per process from ``source`` (held
    in memory, never read back from disk). Numba's machine code is cached in the private
    kernels folder (``kernelcache.py``) for every later process."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    if (digest, backend) not in _COMPILED:
        module = types.ModuleType(f"icldyn_kernel_{digest[:16]}_{backend}")
        sys.modules[module.__name__] = module       # Numba rebuilds cached code by module name
        namespace = module.__dict__
        namespace["_eigdiag"] = eigdiag if backend == "numpy" else _eigdiag_numba()
        exec(compile(source, f"<icldyn-generated-{digest[:8]}>", "exec"), namespace)
        fns = {n: f for n, f in namespace.items()
               if isinstance(f, types.FunctionType) and n[0] != "_"}
        if backend == "numba":
            from .kernelcache import njit_cached    # imports Numba
            fns = {n: njit_cached(f, digest) for n, f in fns.items()}
            namespace.update(fns)                   # kernels call each other compiled
        _COMPILED[digest, backend] = fns
    return _COMPILED[digest, backend]


@lru_cache(maxsize=None)
def _eigdiag_numba():
    from .kernelcache import njit_cached
    return njit_cached(eigdiag, hashlib.sha256(inspect.getsource(eigdiag).encode()).hexdigest())


class CompiledFlow:
    """Gradient flow of a derivation, compiled. θ is a flat float64 vector (``pack``/``unpack``).

    ``loss(θ)``, ``grad(θ)`` (= ∂L/∂θ, so dθ/dt = −grad), ``conserved(θ)`` (one value per
    conserved quantity), ``gd_change(θ, lr)`` (the derived exact change of each conserved
    quantity under one GD step).

    Parameters
    ----------
    der : Derivation
        The derivation to compile.
    backend : str
        "numba" or "numpy" (``BACKENDS``).
    """

    def __init__(self, der: Derivation, backend: str = "numba"):
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise InputError("backend", f"must be one of {BACKENDS}, got {backend!r}")
        self.der, self.backend = der, backend
        self.model, self.data = der.model, der.data
        polys = _generate(der)
        self.source = polys.source
        self._fns = _compile(polys.source, backend)
        self._coeff_fn = sp.lambdify(COEFF_SYMBOLS, polys.coeffs, modules="math")
        self.shapes = self.model.shapes()
        self.size = sum(int(np.prod(s)) for s in self.shapes.values())
        self._set_data(self.data)

    def _set_data(self, data) -> None:
        arrays = data.arrays()
        d = data.d
        self.Lambda, self.Sigma_w, self.U, self.c = (
            arrays[name] for name in ("Lambda", "Sigma_w", "U", "c"))
        # the tasks (or cubature nodes) W is averaged over
        self.tasks, self.task_weights = task_arrays(self.der.task_values().get(W_TASK.name),
                                                    data)
        sizes = self.model.sizes()
        self.dims = np.array([data.d_y, sizes.get("r", 0)], dtype=np.int64)
        scalars = [float(data.N), float(data.noise), float(d), float(data.d_y),
                         float(sizes.get("r", 0))]
        self.k = np.array(self._coeff_fn(*scalars), dtype=float)
        self.consts = self._constants(self.Lambda, self.Sigma_w, self.U, self.c)
        if not all(np.all(np.isfinite(a)) for a in (self.k, self.tasks, *self.consts)):
            raise data_overflow(data, "the products of the data the loss needs")

    def _constants(self, *data) -> tuple:
        """Products of data letters only, computed once per data set (overflow is checked
        by ``_set_data``)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return tuple(np.ascontiguousarray(a) for a in self._fns["constants"](*data))

    def _args(self, theta):
        theta = np.ascontiguousarray(theta, dtype=float)
        if theta.shape != (self.size,):
            theta = as_theta(theta, self.size)              # raises a clear error
        return (theta, *self._data_args())

    def _data_args(self) -> tuple:
        """The kernels' arguments after θ: coefficients, data arrays, tasks, constants."""
        return (self.k, self.Lambda, self.Sigma_w, self.U, self.c, self.tasks,
                self.task_weights, self.dims, self.consts)

    # --- parameters ------------------------------------------------------------------------------
    def pack(self, params: dict) -> np.ndarray:
        """Flat θ from parameter arrays.

        Parameters
        ----------
        params : dict
            {name: array or scalar} (a scalar for a square block means that multiple of I;
            ``theory.params.as_arrays``).

        Returns
        -------
        ndarray
            Flat float64 θ, the parameters in the model's order, each raveled.
        """
        return np.concatenate([a.ravel() for a in as_arrays(self.shapes, params).values()])

    def letter_positions(self) -> dict:
        """Where each letter's entries sit in θ.

        Returns
        -------
        dict
            {letter name: integer array of the θ indices of its entries, in the letter's
            shape}.
        """
        index, sizes = self.unpack(np.arange(self.size, dtype=float)), self.model.sizes()
        return {b.letter.name: index[b.param][b.index(sizes)].astype(int)
                for b in self.model.blocks()}

    def unpack(self, theta) -> dict:
        """Parameter arrays from flat θ (any leading axes).

        Parameters
        ----------
        theta : array_like (..., size)
            Flat θ, or rows of them.

        Returns
        -------
        dict
            {name: array of shape theta.shape[:-1] + the parameter's shape}.
        """
        theta = as_theta(theta, self.size, leading=True)
        out, pos = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            out[name] = theta[..., pos:pos + n].reshape(theta.shape[:-1] + shape)
            pos += n
        return out

    # --- evaluation --------------------------------------------------------------------------------
    def loss(self, theta) -> float:
        """The loss L(θ).

        Parameters
        ----------
        theta : array_like (size,)
            Flat θ.

        Returns
        -------
        float
        """
        return self._finite(float(self._eval("loss", theta)), theta)

    def grad(self, theta) -> np.ndarray:
        """The gradient ∂L/∂θ (dθ/dt = −grad).

        Parameters
        ----------
        theta : array_like (size,)
            Flat θ.

        Returns
        -------
        ndarray (size,)
        """
        return self._finite(self._eval("grad", theta), theta)

    def _eval(self, name: str, theta):
        with np.errstate(over="ignore", invalid="ignore"):    # overflow: see ``_finite``
            return self._fns[name](*self._args(theta))

    def _finite(self, value, theta):
        """``value`` if finite. A NaN or ∞ from finite θ means float64 overflowed: the data's
        scale is blamed when θ scaled to entries of at most 1 overflows too, else θ."""
        if np.all(np.isfinite(value)):
            return value
        top = float(np.abs(theta).max())
        if top <= 1 or not np.all(np.isfinite(self._eval("grad", theta / top))):
            raise data_overflow(self.data, "the loss or its gradient")
        raise InputError("theta", f"|θ| up to {top:.3g} overflows float64 in the loss or its "
                         "gradient; rescale the parameters")

    def hvp(self, theta, v, h: float = 1e-30) -> np.ndarray:
        """Hessian-vector product ∇²L(θ) v by complex-step differentiation of the exact
        gradient: Im ∇L(θ + i h v) / h, exact to rounding since L is a polynomial.

        Parameters
        ----------
        theta : array_like (size,)
            Flat parameter vector (``pack``'s ordering).
        v : array_like (size,)
            The direction.
        h : float
            Complex step (tiny: no subtractive cancellation).

        Returns
        -------
        numpy.ndarray (size,)
        """
        z = np.asarray(theta, dtype=float) + 1j * h * np.asarray(v, dtype=float)
        data = [a.astype(complex) for a in (self.Lambda, self.Sigma_w, self.U, self.c)]
        consts = self._constants(*data)               # numba's @ needs one dtype
        return self._fns["grad"](z, self.k, *data, self.tasks.astype(complex),
                                 self.task_weights, self.dims, consts).imag / h

    def rhs(self, t, theta) -> np.ndarray:
        """Gradient-flow vector field dθ/dt = −∇L (signature of scipy's solve_ivp).

        Parameters
        ----------
        t : float
            Time (unused: the flow is autonomous).
        theta : array_like (size,)
            Flat parameter vector (``pack``'s ordering).

        Returns
        -------
        numpy.ndarray (size,)
        """
        return -self.grad(theta)

    def conserved(self, theta) -> np.ndarray:
        """The derived scalar conserved quantities at θ (``der.conserved``, in order).

        Parameters
        ----------
        theta : array_like (size,)
            Flat θ.

        Returns
        -------
        ndarray (C,)
        """
        return np.array([self._fns[f"conserved_{i}"](*self._args(theta))
                         for i in range(len(self.der.conserved))])

    def observe(self, rows) -> np.ndarray:
        """The loss and the conserved quantities of each row of θ, in one compiled loop.

        Parameters
        ----------
        rows : array_like (R, size)
            Parameter vectors, one per row.

        Returns
        -------
        numpy.ndarray (R, 1 + number of conserved quantities)
            The loss first, then ``der.conserved`` in order.
        """
        rows = np.ascontiguousarray(rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != self.size:
            raise InputError("rows", f"must have shape (R, {self.size}), got {rows.shape}")
        with np.errstate(over="ignore", invalid="ignore"):    # overflow: see ``_finite``
            out = self._fns["observe"](rows, *self._data_args())
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            self._finite(out[bad][0], rows[bad][0])     # raises, blaming the data or θ
        return out

    def gd_change(self, theta, lr: float) -> np.ndarray:
        """ΔC of each conserved quantity under one GD step of size lr, in the derived form
        lr² Σ s ⟨G_L, G_M⟩ (``ConservationLaw.terms``) at the compiled gradient. (The expanded
        polynomial ``law.gd_change`` is the same quantity; it is checked exactly in SymPy.)

        Parameters
        ----------
        theta : array_like (size,)
            Flat parameter vector (``pack``'s ordering).
        lr : float
            The GD step size η.

        Returns
        -------
        numpy.ndarray (number of conserved quantities,)
        """
        g, pos = self.grad(theta), self.letter_positions()
        return np.array([lr**2 * sum(float(s) * np.dot(g[pos[L]].ravel(), g[pos[M]].ravel())
                                     for s, L, M in law.terms)
                         for law in self.der.conserved])

    def fixed_step(self, theta0, h: float, steps: int, every: int, rk4: bool):
        """θ ← θ + h·(RK4 increment of −∇L) if ``rk4`` else θ − h∇L (a GD step), ``steps``
        times, in one compiled loop; rows every ``every`` steps. It stops at the first step
        whose θ is not finite or exceeds ``RUNAWAY`` in magnitude.

        Parameters
        ----------
        theta0 : array_like (size,)
            Start.
        h : float
            Step size (η for GD, dt for RK4).
        steps : int
            Number of steps.
        every : int
            Record a row every this many steps.
        rk4 : bool
            RK4 step of the flow if True, else a GD step.

        Returns
        -------
        tuple
            (recorded rows (at most steps // every + 1, size), steps done).
        """
        theta, *extra = self._args(theta0)
        return self._fns["fixed_step"](theta, float(h), int(steps), int(every), bool(rk4),
                                       *extra)


def task_arrays(task_set, data) -> tuple[np.ndarray, np.ndarray]:
    """(tasks (P, d_y, d), weights (P,)) of a ``TaskSet``; empty for None."""
    task_set = task_set or ()
    tasks = np.array([m.tolist() for m in task_set], dtype=float).reshape(
        len(task_set), data.d_y, data.d)
    return tasks, np.array(getattr(task_set, "weights", ()), dtype=float)


def compile_flow(der: Derivation, backend: str = "numba") -> CompiledFlow:
    """Compile a derivation's loss, gradient and conserved quantities for ``backend``.

    Parameters
    ----------
    der : Derivation
        From ``icldyn.theory.derive``.
    backend : str
        "numba" (compiled once, cached on disk) or "numpy".

    Returns
    -------
    CompiledFlow
        ``pack``/``unpack``, ``loss``, ``grad``, ``conserved``, ``gd_change``.
    """
    if not isinstance(der, Derivation):
        raise InputError("der", f"must be a Derivation from icldyn.theory.derive, got {der!r}")
    return CompiledFlow(der, backend)
