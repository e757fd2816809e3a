"""Polynomials in traces of matrix words: the algebra every derived quantity lives in.

A *letter* is a matrix: a named matrix ``Mat`` (optionally transposed) or ``Dg(Y)``, the
eigenbasis-diagonal part of a word ``Y``:

    Dg(Y) = U diag(c ∘ diag(Uᵀ Y U)) Uᵀ = Σ_k c_k (u_kᵀ Y u_k) u_k u_kᵀ,

with U the eigenbasis of Λ and c the variances of the task amplitudes δ (docs/math.md §1, tasks
``diagonal``). It is symmetric, Dg(Y) = Dg(Yᵀ), and self-adjoint in the trace pairing:
tr(R Dg(Y)) = Σ_k c_k (UᵀRU)_kk (UᵀYU)_kk = tr(Y Dg(R)).

A *word* is a tuple of letters read as their matrix product; a *trace* is a word up to cyclic
rotation and transposition, kept in a canonical form so that equal traces compare equal. A
``TracePoly`` is a sum of sympy coefficients times products of traces (a scalar); a ``MatPoly``
is a sum of coefficients times products of traces times one open word (a matrix). Derivatives use
∂ tr(X R)/∂X = Rᵀ and ∂ tr(Xᵀ R)/∂X = R at each occurrence of X.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from typing import Callable, Iterable

import sympy as sp


@dataclass(frozen=True)
class Mat:
    """A named matrix letter. ``rows``/``cols`` name the spaces it maps between (for identities)."""

    name: str
    T: bool = False
    symmetric: bool = False
    rows: str = "x"
    cols: str = "x"

    def transpose(self) -> "Mat":
        if self.symmetric:
            return self
        return Mat(self.name, not self.T, False, self.cols, self.rows)

    def key(self):
        return (0, self.name, self.T)


@dataclass(frozen=True)
class Dg:
    """Eigenbasis-diagonal part of the word ``inner`` (symmetric; see module docstring)."""

    inner: tuple

    def __post_init__(self):
        object.__setattr__(self, "inner", _min_word(self.inner, transpose_word(self.inner)))

    rows = "x"
    cols = "x"

    def transpose(self) -> "Dg":
        return self

    def key(self):
        return (1, _word_key(self.inner))


Letter = Mat | Dg

DIMS = {"x": sp.Symbol("d", positive=True, integer=True),
        "y": sp.Symbol("d_y", positive=True, integer=True),
        "r": sp.Symbol("r", positive=True, integer=True)}


def dim_symbol(space: str) -> sp.Symbol:
    """The symbol for the dimension of a space: ``d`` (inputs), ``d_y`` (outputs), ``r`` (rank)."""
    return DIMS[space]


def entry_symbol(name: str, i: int, j: int) -> sp.Symbol:
    """The real symbol ``name_i_j`` of a matrix entry: indices separated, so no two entries
    share a name at any size (``m_1_11`` ≠ ``m_11_1``)."""
    return sp.Symbol(f"{name}_{i}_{j}", real=True)


def _word_key(word: tuple):
    return tuple(letter.key() for letter in word)


def transpose_word(word: tuple) -> tuple:
    return tuple(letter.transpose() for letter in reversed(word))


def _min_word(*words: tuple) -> tuple:
    return min(words, key=_word_key)


@lru_cache(maxsize=1 << 18)
def canonical_trace(word: tuple) -> tuple:
    """Canonical representative of tr(word) under rotation, transposition and, for a single
    Dg letter, the self-adjointness tr(R Dg(Y)) = tr(Y Dg(R))."""
    word = tuple(word)
    dgs = [i for i, letter in enumerate(word) if isinstance(letter, Dg)]
    if len(dgs) == 1 and not any(isinstance(a, Dg) for a in word[dgs[0]].inner):
        i = dgs[0]
        rest = word[i + 1:] + word[:i]
        y = word[i].inner
        rest = _min_word(rest, transpose_word(rest))
        small, big = sorted((rest, y), key=_word_key)
        return (Dg(big),) + small
    best = None                       # (key, word) of the least rotation of either reading
    for w in (word, transpose_word(word)):
        keys = _word_key(w)
        for k in range(len(w)):
            key = keys[k:] + keys[:k]
            if best is None or key < best[0]:
                best = key, w[k:] + w[:k]
    return best[1] if best else ()


def _sorted_traces(traces: Iterable[tuple]) -> tuple:
    return tuple(sorted(traces, key=_word_key))


class TracePoly:
    """Σ coeff · Π tr(word): a scalar polynomial in traces with sympy coefficients."""

    def __init__(self, terms: dict | None = None):
        self.terms: dict[tuple, sp.Expr] = {}
        for traces, coeff in (terms or {}).items():
            self._add(traces, coeff)

    def _add(self, traces: tuple, coeff) -> None:
        self._add_canonical(_sorted_traces(canonical_trace(w) for w in traces), coeff)

    def _add_canonical(self, traces: tuple, coeff) -> None:
        value = sp.expand(self.terms.get(traces, 0) + coeff)
        if value == 0:
            self.terms.pop(traces, None)
        else:
            self.terms[traces] = value

    @classmethod
    def _canonical(cls, terms: dict) -> "TracePoly":
        """From terms already in canonical form (no re-canonicalisation)."""
        out = cls()
        out.terms = {t: c for t, c in terms.items() if c != 0}
        return out

    @classmethod
    def constant(cls, value) -> "TracePoly":
        return cls({(): sp.sympify(value)})

    @classmethod
    def trace(cls, *letters, coeff=1) -> "TracePoly":
        return cls({(tuple(letters),): sp.sympify(coeff)})

    def __add__(self, other: "TracePoly") -> "TracePoly":
        return TracePoly._canonical(self.terms).accumulate(other)

    def accumulate(self, other: "TracePoly") -> "TracePoly":
        """self += other in place (for sums built term by term); returns self."""
        for traces, coeff in other.terms.items():
            self._add_canonical(traces, coeff)
        return self

    def __neg__(self) -> "TracePoly":
        return self.scale(-1)

    def __sub__(self, other: "TracePoly") -> "TracePoly":
        return self + (-other)

    def __mul__(self, other: "TracePoly") -> "TracePoly":
        out = TracePoly()
        for t1, c1 in self.terms.items():
            for t2, c2 in other.terms.items():
                out._add(t1 + t2, c1 * c2)
        return out

    def scale(self, factor) -> "TracePoly":
        return TracePoly._canonical({t: sp.expand(c * factor) for t, c in self.terms.items()})

    def map_coeffs(self, fn: Callable) -> "TracePoly":
        return TracePoly._canonical({t: sp.expand(fn(c)) for t, c in self.terms.items()})

    def is_zero(self) -> bool:
        return not self.terms

    def __eq__(self, other) -> bool:
        return isinstance(other, TracePoly) and (self - other).is_zero()

    def __repr__(self) -> str:
        return f"TracePoly({len(self.terms)} terms: {sp.sstr(self.to_sympy())})"

    def scalar_letter(self, name: str, value) -> "TracePoly":
        """The polynomial with the letter ``name`` equal to ``value`` times the identity."""
        out = TracePoly()
        for traces, coeff in self.terms.items():
            factor, kept = coeff, []
            for w in traces:
                space = w[0].rows                 # an emptied trace is tr(I) on this space
                w, power = _drop_letter(w, name)
                factor = factor * value**power
                if w:
                    kept.append(w)
                else:
                    factor = factor * dim_symbol(space)
            out._add(tuple(kept), factor)
        return out

    def zero_letters(self, names: set) -> "TracePoly":
        """The polynomial with the letters ``names`` equal to zero (terms holding any dropped)."""
        return TracePoly({traces: coeff for traces, coeff in self.terms.items()
                          if not letter_names(traces) & set(names)})

    def diff(self, symbol: Mat) -> "MatPoly":
        """Gradient ∂(self)/∂symbol, a matrix of symbol's shape."""
        out = MatPoly(symbol.rows, symbol.cols)
        for traces, coeff in self.terms.items():
            for i, w in enumerate(traces):
                others = traces[:i] + traces[i + 1:]
                for open_word in _diff_cyclic(w, symbol.name, len(w)):
                    out._add(others, open_word, coeff)
        return out

    def to_sympy(self, symbols: dict | None = None) -> sp.Expr:
        return sp.Add(*(c * sp.Mul(*(_trace_sympy(w, symbols) for w in t))
                        for t, c in self.terms.items()))

    def evaluate(self, values: dict):
        """Exact value with ``values[name]`` (sympy Matrices) substituted and the scalars in
        ``values['_scalars']``. Dg needs ``values['U']`` (eigenbasis as columns) and
        ``values['c']`` (task-mode variances)."""
        ops = _Ops(values)
        total = 0
        for traces, coeff in self.terms.items():
            total = total + ops.scalar(coeff) * ops.average(traces, lambda o: sp.Mul(
                *[o.trace(o.word(w)) for w in traces]))
        return total


class MatPoly:
    """Σ coeff · Π tr(word) · open_word: a matrix mapping space ``cols`` to space ``rows``."""

    def __init__(self, rows: str, cols: str, terms: dict | None = None):
        self.rows, self.cols = rows, cols
        self.terms: dict[tuple, sp.Expr] = {}
        for (traces, word), coeff in (terms or {}).items():
            self._add(traces, word, coeff)

    def _add(self, traces: tuple, word: tuple, coeff) -> None:
        self._add_canonical((_sorted_traces(canonical_trace(w) for w in traces), tuple(word)),
                            coeff)

    def _add_canonical(self, key: tuple, coeff) -> None:
        value = sp.expand(self.terms.get(key, 0) + coeff)
        if value == 0:
            self.terms.pop(key, None)
        else:
            self.terms[key] = value

    def _canonical(self, terms: dict) -> "MatPoly":
        """Same spaces, terms already in canonical form (no re-canonicalisation)."""
        out = MatPoly(self.rows, self.cols)
        out.terms = {k: c for k, c in terms.items() if c != 0}
        return out

    def __add__(self, other: "MatPoly") -> "MatPoly":
        out = self._canonical(self.terms)
        for key, coeff in other.terms.items():
            out._add_canonical(key, coeff)
        return out

    def scale(self, factor) -> "MatPoly":
        return self._canonical({k: sp.expand(c * factor) for k, c in self.terms.items()})

    def map_coeffs(self, fn: Callable) -> "MatPoly":
        return self._canonical({k: sp.expand(fn(c)) for k, c in self.terms.items()})

    def scalar_letter(self, name: str, value) -> "MatPoly":
        """The polynomial with the letter ``name`` equal to ``value`` times the identity."""
        out = MatPoly(self.rows, self.cols)
        for (traces, word), coeff in self.terms.items():
            word, power = _drop_letter(word, name)
            part = TracePoly({traces: coeff * value**power}).scalar_letter(name, value)
            for t, c in part.terms.items():
                out._add(t, word, c)
        return out

    def inner(self, other: "MatPoly") -> TracePoly:
        """Frobenius inner product ⟨self, other⟩ = tr(selfᵀ other)."""
        out = TracePoly()
        for (t1, w1), c1 in self.terms.items():
            for (t2, w2), c2 in other.terms.items():
                w = transpose_word(w1) + w2
                if w:
                    out._add(t1 + t2 + (w,), c1 * c2)
                else:
                    out._add(t1 + t2, c1 * c2 * dim_symbol(self.cols))
        return out

    def matmul(self, other: "MatPoly") -> "MatPoly":
        """The matrix product self · other."""
        out = MatPoly(self.rows, other.cols)
        for (t1, w1), c1 in self.terms.items():
            for (t2, w2), c2 in other.terms.items():
                out._add(t1 + t2, w1 + w2, c1 * c2)
        return out

    def transpose(self) -> "MatPoly":
        return MatPoly(self.cols, self.rows, {(t, transpose_word(w)): c
                                              for (t, w), c in self.terms.items()})

    def trace_with(self, letter: Mat) -> TracePoly:
        """tr(letter · self): a scalar that vanishes identically for a generic ``letter`` iff
        self does (so identities of matrices reduce to canonical trace polynomials)."""
        return TracePoly({traces + ((letter,) + word,): c
                          for (traces, word), c in self.terms.items()})

    @classmethod
    def letter(cls, m: Mat) -> "MatPoly":
        return cls(m.rows, m.cols, {((), (m,)): sp.Integer(1)})

    def to_sympy(self, symbols: dict | None = None) -> sp.MatrixExpr:
        parts = []
        for (traces, word), coeff in self.terms.items():
            scalar = coeff * sp.Mul(*(_trace_sympy(w, symbols) for w in traces))
            if word:
                parts.append(scalar * _word_sympy(word, symbols))
            else:
                parts.append(scalar * sp.Identity(dim_symbol(self.rows)))
        return sp.MatAdd(*parts) if parts else sp.ZeroMatrix(1, 1)

    def evaluate(self, values: dict, shape: tuple):
        ops = _Ops(values)
        total = sp.zeros(*shape)
        for (traces, word), coeff in self.terms.items():
            def realisation(o, traces=traces, word=word):
                scalar = sp.Mul(*[o.trace(o.word(w)) for w in traces])
                return scalar * (o.word(word) if word else sp.eye(shape[0]))
            total = total + ops.scalar(coeff) * ops.average(traces + (word,), realisation)
        return total


def _drop_letter(word: tuple, name: str) -> tuple:
    """(word without the letter ``name``, how many times it occurred) — also inside Dg, which
    is linear in its argument. For a square letter (a multiple of the identity on its space)."""
    kept, power = [], 0
    for letter in word:
        if isinstance(letter, Mat) and letter.name == name:
            power += 1
        elif isinstance(letter, Dg):
            inner, p = _drop_letter(letter.inner, name)
            kept.append(Dg(inner))
            power += p
        else:
            kept.append(letter)
    return tuple(kept), power


def _diff_cyclic(word: tuple, name: str, npos: int):
    """Open words G with ∂ tr(word)/∂X = Σ G, counting occurrences of X at positions < npos
    (occurrences inside a Dg letter are reached through tr(R Dg(Y)) = tr(Y Dg(R)))."""
    for p in range(npos):
        letter = word[p]
        rest = word[p + 1:] + word[:p]
        if isinstance(letter, Mat) and letter.name == name:
            yield rest if letter.T else transpose_word(rest)
        elif isinstance(letter, Dg):
            inner = letter.inner
            yield from _diff_cyclic(inner + (Dg(rest),), name, len(inner))


# --- sympy conversion -------------------------------------------------------------------------

class EigDiag(sp.MatrixExpr):
    """SymPy node for Dg(Y) = U diag(c ∘ diag(UᵀYU)) Uᵀ."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    @property
    def arg(self):
        return self.args[0]

    @property
    def shape(self):
        return self.arg.shape

    def _latex(self, printer):
        return r"\mathcal{D}\!\left(%s\right)" % printer._print(self.arg)

    def _sympystr(self, printer):
        return "Dg(%s)" % printer._print(self.arg)


def _letter_sympy(letter, symbols: dict | None):
    if isinstance(letter, Dg):
        return EigDiag(_word_sympy(letter.inner, symbols) if letter.inner
                       else sp.Identity(dim_symbol("x")))
    base = (symbols or {}).get(letter.name)
    if base is None:
        rows, cols = (letter.cols, letter.rows) if letter.T else (letter.rows, letter.cols)
        base = sp.MatrixSymbol(letter.name, dim_symbol(rows), dim_symbol(cols))
    return base.T if letter.T else base


def _word_sympy(word: tuple, symbols: dict | None):
    return sp.MatMul(*(_letter_sympy(a, symbols) for a in word))


def _trace_sympy(word: tuple, symbols: dict | None):
    return sp.Trace(_word_sympy(word, symbols))


# --- numerical / exact evaluation -------------------------------------------------------------

class TaskSet(tuple):
    """The value of a random letter that takes finitely many matrices W_1..W_P with weights
    (uniform unless given): a term containing the letter evaluates to its weighted mean over
    the set, exact for any power of the letter (independent random letters are averaged over
    their product set). A finite task set, or a cubature rule exact for a task law's moments."""

    def __new__(cls, matrices, weights=None):
        out = super().__new__(cls, matrices)
        out.weights = (tuple(sp.sympify(w) for w in weights) if weights is not None
                       else (sp.Rational(1, len(out)),) * len(out))
        return out


def letter_names(words: Iterable[tuple]) -> set:
    """Names of the Mat letters in ``words``, also inside Dg letters."""
    out = set()
    for w in words:
        for letter in w:
            if isinstance(letter, Dg):
                out |= letter_names([letter.inner])
            else:
                out.add(letter.name)
    return out


def _poly_words(poly, key) -> tuple:
    return key if isinstance(poly, TracePoly) else key[0] + (key[1],)


def split_by_letters(poly, names: Iterable[str]) -> dict:
    """{frozenset of the ``names`` a term contains: the polynomial of those terms} for a
    TracePoly or MatPoly."""
    names, parts = set(names), {}
    for key, coeff in poly.terms.items():
        present = frozenset(letter_names(_poly_words(poly, key)) & names)
        parts.setdefault(present, {})[key] = coeff
    return {k: poly._canonical(p) for k, p in parts.items()}


def _rename_word(word: tuple, old: str, new: str) -> tuple:
    out = []
    for letter in word:
        if isinstance(letter, Dg):
            out.append(Dg(_rename_word(letter.inner, old, new)))
        elif letter.name == old:
            out.append(Mat(new, letter.T, letter.symmetric, letter.rows, letter.cols))
        else:
            out.append(letter)
    return tuple(out)


def rename_letter(poly, old: str, new: str):
    """The polynomial with the letter ``old`` renamed ``new`` (a TracePoly or MatPoly)."""
    if isinstance(poly, TracePoly):
        return TracePoly({tuple(_rename_word(w, old, new) for w in traces): c
                          for traces, c in poly.terms.items()})
    return MatPoly(poly.rows, poly.cols, {
        (tuple(_rename_word(w, old, new) for w in traces), _rename_word(word, old, new)): c
        for (traces, word), c in poly.terms.items()})


class _Ops:
    """Evaluate words exactly with sympy Matrices (numerics compiles its own code)."""

    def __init__(self, values: dict):
        self.values = values
        self.random = {n for n, v in values.items() if isinstance(v, TaskSet)}

    def average(self, words: tuple, fn: Callable):
        """fn(ops) with the letters fixed; its mean over the task sets of the random letters
        that ``words`` contain."""
        names = sorted(letter_names(words) & self.random)
        if not names:
            return fn(self)
        sets = [self.values[n] for n in names]
        values = [sp.Mul(*[s.weights[i] for s, i in zip(sets, choice)])
                  * fn(_Ops({**self.values, **{n: s[i] for n, s, i in zip(names, sets, choice)}}))
                  for choice in product(*(range(len(s)) for s in sets))]
        return sum(values[1:], values[0])

    def scalar(self, coeff):
        return coeff.subs(self.values.get("_scalars", {}))

    def trace(self, m):
        return m.trace()

    def letter(self, letter):
        if isinstance(letter, Dg):
            U, c = self.values["U"], self.values["c"]
            y = self.word(letter.inner) if letter.inner else sp.eye(U.shape[0])
            diag = [c[k] * (U[:, k].T * y * U[:, k])[0, 0] for k in range(U.shape[1])]
            return U * sp.diag(*diag) * U.T
        m = self.values[letter.name]
        return m.T if letter.T else m

    def word(self, word):
        out = self.letter(word[0])
        for letter in word[1:]:
            out = out * self.letter(letter)
        return out
