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
from ..theory.words import DIMS, Dg, Mat, MatPoly, TracePoly

BACKENDS = ("numpy", "numba")
COEFF_SYMBOLS = (N_SYM, SIGMA, DIMS["x"], DIMS["y"], ETA)


def eigdiag(Y, U, c):
    """Dg(Y) = U diag(c ∘ diag(Uᵀ Y U)) Uᵀ."""
    v = c * np.diag(U.T @ Y @ U)
    return (U * v) @ U.T


class _Printer:
    """Collects the statements that evaluate words and traces, each once."""

    def __init__(self, param_names):
        self.lines: list[str] = []
        self.names: dict = {}
        self.params = set(param_names)
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


def _generate(der: Derivation) -> _Polys:
    model = der.model
    coeffs: list = []

    def k(expr) -> int:
        coeffs.append(expr)
        return len(coeffs) - 1

    shapes_code = []
    offset_expr = "0"
    for p in model.params:
        rows, cols = f"n_{p.rows}", f"n_{p.cols}"
        shapes_code.append(
            f"    {p.name} = theta[{offset_expr}:{offset_expr} + {rows} * {cols}]"
            f".reshape(({rows}, {cols}))")
        offset_expr = f"({offset_expr} + {rows} * {cols})"
    header = ["    n_x = Lambda.shape[0]", "    n_y = n_y_arr[0]"] + shapes_code
    args = "theta, k, Lambda, Sigma_w, U, c, n_y_arr"

    def scalar_fn(name: str, poly: TracePoly) -> list[str]:
        pr = _Printer(p.name for p in model.params)
        terms = [pr.scalar_term(tr, k(c)) for tr, c in poly.terms.items()]
        body = " + ".join(terms) if terms else "0.0"
        return [f"def {name}({args}):"] + header + pr.lines + [f"    return {body}", ""]

    def grad_fn(name: str, grads: dict) -> list[str]:
        pr = _Printer(p.name for p in model.params)
        out = [f"    out = np.empty(theta.shape[0])", "    pos = 0"]
        for p in model.params:
            g: MatPoly = grads[p.name]
            parts = [f"np.zeros(({f'n_{p.rows}'}, {f'n_{p.cols}'}))"]
            for (traces, word), c in g.terms.items():
                s = pr.scalar_term(traces, k(c))
                parts.append(f"({s}) * " + (pr.word(word) if word else f"np.eye(n_{p.rows})"))
            out.append(f"    G_{p.name} = " + " + ".join(parts))
            out.append(f"    out[pos:pos + G_{p.name}.size] = G_{p.name}.ravel()")
            out.append(f"    pos += G_{p.name}.size")
        return [f"def {name}({args}):"] + header + pr.lines + out + ["    return out", ""]

    lines = ["import numpy as np", ""]
    lines += scalar_fn("loss", der.loss_poly)
    lines += grad_fn("grad", der.gradient_poly)
    for i, c in enumerate(der.conserved):
        lines += scalar_fn(f"conserved_{i}", c.poly)
        lines += scalar_fn(f"gd_change_{i}", c.gd_change)
    return _Polys(coeffs, "\n".join(lines))


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
        self.n_y = np.array([data.d_y], dtype=np.int64)
        self._scalars = [float(data.N), float(data.noise), float(d), float(data.d_y)]
        self.k = np.array(self._coeff_fn(*self._scalars, 0.0), dtype=float)

    def _args(self, theta, k=None):
        return (np.ascontiguousarray(theta, dtype=float), self.k if k is None else k,
                self.Lambda, self.Sigma_w, self.U, self.c, self.n_y)

    # --- parameters ------------------------------------------------------------------------------
    def pack(self, params: dict) -> np.ndarray:
        """Flat θ from {name: array or scalar}; a scalar broadcasts to a 1×1 block, and a scalar
        for a square block of size > 1 means that multiple of the identity."""
        missing = set(self.shapes) - set(params)
        extra = set(params) - set(self.shapes)
        if missing or extra:
            raise InputError("params", f"expected entries {sorted(self.shapes)}; missing "
                             f"{sorted(missing)}, unexpected {sorted(extra)}")
        out = []
        for name, shape in self.shapes.items():
            value = np.asarray(params[name], dtype=float)
            if value.ndim == 0 and shape[0] == shape[1]:
                value = value * np.eye(shape[0])
            if value.shape != shape:
                raise InputError("params", f"{name} must have shape {shape}, got {value.shape}")
            if not np.all(np.isfinite(value)):
                raise InputError("params", f"{name} contains NaN or infinite entries")
            out.append(value.ravel())
        return np.concatenate(out)

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
