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
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..theory.data import N_SYM, SIGMA
from ..theory.derive import ETA, Derivation
from ..theory.errors import InputError
from ..theory.words import DIMS, Dg, MatPoly, TracePoly
from .params import as_arrays

BACKENDS = ("numpy", "numba")
COEFF_SYMBOLS = (N_SYM, SIGMA, DIMS["x"], DIMS["y"], DIMS["r"], ETA)


def eigdiag(Y, U, c):
    """Dg(Y) = U diag(c ∘ diag(Uᵀ Y U)) Uᵀ."""
    v = c * np.diag(U.T @ Y @ U)
    return (U * v) @ U.T


class _Printer:
    """Collects the statements that evaluate words and traces, each once."""

    def __init__(self):
        self.lines: list[str] = []
        self.names: dict = {}
        self.counter = 0

    def _new(self, expr: str, prefix: str) -> str:
        name = f"{prefix}{self.counter}"
        self.counter += 1
        self.lines.append(f"    {name} = {expr}")
        return name

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
        if len(word) == 1:
            return self.letter(word[0])
        key = ("word", word)
        if key not in self.names:
            self.names[key] = self._new(f"{self.word(word[:-1])} @ {self.letter(word[-1])}", "m")
        return self.names[key]

    def trace(self, word: tuple) -> str:
        key = ("trace", word)
        if key not in self.names:
            self.names[key] = self._new(f"np.trace({self.word(word)})", "s")
        return self.names[key]

    def scalar_term(self, traces, kidx: int) -> str:
        return " * ".join([f"k[{kidx}]"] + [self.trace(w) for w in traces])


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


def _index_code(block) -> str:
    parts = [_PART[block.row_part], _PART[block.col_part]]
    return "[" + ", ".join(([str(block.head)] if block.head is not None else []) + parts) + "]"


def _generate(der: Derivation) -> _Polys:
    model = der.model
    coeffs: list = []

    def k(expr) -> int:
        coeffs.append(expr)
        return len(coeffs) - 1

    header = ["    n_x = Lambda.shape[0]", "    n_y = dims[0]", "    n_r = dims[1]", "    pos = 0"]
    for p in model.params:
        header += [f"    P_{p.name} = theta[pos:pos + {_size_code(p)}].reshape({_shape_code(p)})",
                   f"    pos += {_size_code(p)}"]
    for b in model.blocks():
        header.append(f"    {b.letter.name} = np.ascontiguousarray(P_{b.param}{_index_code(b)})")
    args = "theta, k, Lambda, Sigma_w, U, c, dims"

    def scalar_fn(name: str, poly: TracePoly) -> list[str]:
        pr = _Printer()
        terms = [pr.scalar_term(tr, k(c)) for tr, c in poly.terms.items()]
        body = " + ".join(terms) if terms else "0.0"
        return [f"def {name}({args}):"] + header + pr.lines + [f"    return {body}", ""]

    def grad_fn(name: str, grads: dict) -> list[str]:
        pr = _Printer()
        out = ["    out = np.empty(theta.shape[0], dtype=theta.dtype)", "    pos = 0"]
        for p in model.params:
            out.append(f"    G_{p.name} = np.zeros({_shape_code(p)}, dtype=theta.dtype)")
            for b in (b for b in model.blocks() if b.param == p.name):
                g: MatPoly = grads[b.letter.name]
                rows, cols = _SIZE[b.letter.rows], _SIZE[b.letter.cols]
                parts = []
                for (traces, word), c in g.terms.items():
                    s = pr.scalar_term(traces, k(c))
                    parts.append(f"({s}) * " + (pr.word(word) if word else f"np.eye({rows})"))
                value = " + ".join(parts) if parts else "0.0"
                out.append(f"    G_{p.name}{_index_code(b)} = {value}")
            out += [f"    out[pos:pos + G_{p.name}.size] = G_{p.name}.ravel()",
                    f"    pos += G_{p.name}.size"]
        return [f"def {name}({args}):"] + header + pr.lines + out + ["    return out", ""]

    lines = ["import numpy as np", ""]
    lines += scalar_fn("loss", der.loss_poly)
    lines += grad_fn("grad", der.gradient_poly)
    for i, c in enumerate(der.conserved):
        lines += scalar_fn(f"conserved_{i}", c.quantity)
        lines += scalar_fn(f"gd_change_{i}", c.gd_change)
    return _Polys(coeffs, "\n".join(lines))


def _size_code(param) -> str:
    return " * ".join(_shape_code(param)[1:-1].split(", "))


_COMPILED: dict = {}


def _compile(source: str, backend: str) -> dict:
    key = (hashlib.sha256(source.encode()).hexdigest(), backend)
    if key not in _COMPILED:
        namespace = {"_eigdiag": eigdiag}
        if backend == "numba":
            import numba
            namespace["_eigdiag"] = numba.njit(cache=False)(eigdiag)
        exec(compile(source, f"<icldyn-generated-{key[0][:8]}>", "exec"), namespace)
        fns = {n: f for n, f in namespace.items() if callable(f) and n[0] != "_" and n != "np"}
        if backend == "numba":
            import numba
            fns = {n: numba.njit(f) for n, f in fns.items()}
        _COMPILED[key] = fns
    return _COMPILED[key]


class CompiledFlow:
    """Gradient flow of a derivation, compiled. θ is a flat float64 vector (``pack``/``unpack``).

    ``loss(θ)``, ``grad(θ)`` (= ∂L/∂θ, so dθ/dt = −grad), ``conserved(θ)`` (one value per
    conserved quantity), ``gd_change(θ, lr)`` (the derived exact change of each conserved
    quantity under one GD step)."""

    def __init__(self, der: Derivation, backend: str = "numba"):
        if backend not in BACKENDS:
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
        vals = data.values()
        d = data.d
        self.Lambda = np.array(vals["Lambda"].tolist(), dtype=float)
        self.Sigma_w = np.array(vals.get("Sigma_w", sp.eye(d)).tolist(), dtype=float)
        self.U = np.array(vals.get("U", sp.eye(d)).tolist(), dtype=float)
        self.c = np.array(vals.get("c", sp.ones(d, 1)).tolist(), dtype=float).ravel()
        sizes = self.model.sizes()
        self.dims = np.array([data.d_y, sizes.get("r", 0)], dtype=np.int64)
        self._scalars = [float(data.N), float(data.noise), float(d), float(data.d_y),
                         float(sizes.get("r", 0))]
        self.k = np.array(self._coeff_fn(*self._scalars, 0.0), dtype=float)

    def _args(self, theta, k=None):
        return (np.ascontiguousarray(theta, dtype=float), self.k if k is None else k,
                self.Lambda, self.Sigma_w, self.U, self.c, self.dims)

    # --- parameters ------------------------------------------------------------------------------
    def pack(self, params: dict) -> np.ndarray:
        """Flat θ from {name: array or scalar} (see ``params.as_arrays`` for broadcasting)."""
        return np.concatenate([a.ravel() for a in as_arrays(self.shapes, params).values()])

    def unpack(self, theta) -> dict:
        theta = np.asarray(theta, dtype=float)
        if theta.shape[-1] != self.size:
            raise InputError("theta", f"must have length {self.size}, got {theta.shape[-1]}")
        out, pos = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            out[name] = theta[..., pos:pos + n].reshape(theta.shape[:-1] + shape)
            pos += n
        return out

    # --- evaluation --------------------------------------------------------------------------------
    def loss(self, theta) -> float:
        return float(self._fns["loss"](*self._args(theta)))

    def grad(self, theta) -> np.ndarray:
        return self._fns["grad"](*self._args(theta))

    def hvp(self, theta, v, h: float = 1e-30) -> np.ndarray:
        """Hessian-vector product ∇²L(θ) v by complex-step differentiation of the exact
        gradient: Im ∇L(θ + i h v) / h, exact to rounding since L is a polynomial."""
        z = np.asarray(theta, dtype=float) + 1j * h * np.asarray(v, dtype=float)
        k, *data, dims = self._args(theta)[1:]
        data = [a.astype(complex) for a in data]     # numba's @ needs one dtype
        return self._fns["grad"](z, k, *data, dims).imag / h

    def rhs(self, t, theta) -> np.ndarray:
        """Gradient-flow vector field dθ/dt = −∇L (signature of scipy's solve_ivp)."""
        return -self.grad(theta)

    def conserved(self, theta) -> np.ndarray:
        return np.array([self._fns[f"conserved_{i}"](*self._args(theta))
                         for i in range(len(self.der.conserved))])

    def gd_change(self, theta, lr: float) -> np.ndarray:
        k = np.array(self._coeff_fn(*self._scalars, float(lr)), dtype=float)
        return np.array([self._fns[f"gd_change_{i}"](*self._args(theta, k))
                         for i in range(len(self.der.conserved))])

    @property
    def grad_kernel(self):
        """(function, extra args) for compiled loops: grad = fn(theta, *extra)."""
        return self._fns["grad"], self._args(np.zeros(self.size))[1:]


def compile_flow(der: Derivation, backend: str = "numba") -> CompiledFlow:
    """Compile a derivation's loss, gradient and conserved quantities for ``backend``."""
    if not isinstance(der, Derivation):
        raise InputError("der", f"must be a Derivation from icldyn.theory.derive, got {der!r}")
    return CompiledFlow(der, backend)
