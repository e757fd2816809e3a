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
    """A named matrix letter: a matrix symbol, optionally transposed, mapping the space ``cols``
    to the space ``rows`` (the spaces size the identities a letter leaves when it is set to a
    multiple of I, and the MatrixSymbol of ``to_sympy``).

    Parameters
    ----------
    name : str
        The matrix's name (a parameter such as ``"Q"``, or ``"L"`` for Λ, ``"W"`` for a task).
    T : bool
        Whether the letter stands for the transpose of ``name``.
    symmetric : bool
        Whether the matrix is symmetric (then it is its own transpose and ``T`` stays False).
    rows, cols : {"x", "y", "r"}
        The spaces of its rows and columns, of dimensions d, d_y, r (``dim_symbol``), as the
        untransposed matrix has them.

    Examples
    --------
    >>> from icldyn.theory.words import Mat
    >>> Mat("Q").transpose()
    Mat(name='Q', T=True, symmetric=False, rows='x', cols='x')
    >>> Mat("L", symmetric=True).transpose() == Mat("L", symmetric=True)
    True
    >>> W = Mat("W", rows="y", cols="x")                            # a task, x-space to y-space
    >>> W.transpose().rows, W.transpose().cols
    ('x', 'y')
    """

    name: str
    T: bool = False
    symmetric: bool = False
    rows: str = "x"
    cols: str = "x"

    def transpose(self) -> "Mat":
        """The transposed letter: ``T`` flipped, ``rows``/``cols`` exchanged (itself when
        symmetric).

        Returns
        -------
        Mat
        """
        if self.symmetric:
            return self
        return Mat(self.name, not self.T, False, self.cols, self.rows)

    def key(self):
        """The sort key of the letter in canonical words (named letters before ``Dg``).

        Returns
        -------
        tuple
            ``(0, name, T)``.
        """
        return (0, self.name, self.T)


@dataclass(frozen=True)
class Dg:
    """Eigenbasis-diagonal part of the word ``inner``, Dg(Y) = U diag(c ∘ diag(UᵀYU)) Uᵀ
    (symmetric; see the module docstring). ``inner`` is stored as the lesser of Y and Yᵀ in
    canonical order, which Dg(Y) = Dg(Yᵀ) allows.

    Parameters
    ----------
    inner : tuple of letters
        The word Y (the empty word is the identity, Dg(I) = U diag(c) Uᵀ).

    Examples
    --------
    >>> from icldyn.theory.words import Dg, Mat, TracePoly
    >>> Q, L = Mat("Q"), Mat("L", symmetric=True)
    >>> Dg((Q,)) == Dg((Q.transpose(),))                      # Dg(Y) = Dg(Yᵀ)
    True
    >>> TracePoly.trace(L, Dg((Q,))).to_sympy()               # Σ_k c_k s_k (UᵀQU)_kk
    Trace(Dg(Q)*L)
    """

    inner: tuple

    def __post_init__(self):
        object.__setattr__(self, "inner", _min_word(self.inner, transpose_word(self.inner)))

    rows = "x"
    cols = "x"

    def transpose(self) -> "Dg":
        """Dg(Y)ᵀ = Dg(Y): the letter itself.

        Returns
        -------
        Dg
        """
        return self

    def key(self):
        """The sort key of the letter in canonical words (after every named letter).

        Returns
        -------
        tuple
            ``(1, key of the inner word)``.
        """
        return (1, _word_key(self.inner))


Letter = Mat | Dg

DIMS = {"x": sp.Symbol("d", positive=True, integer=True),
        "y": sp.Symbol("d_y", positive=True, integer=True),
        "r": sp.Symbol("r", positive=True, integer=True)}


def dim_symbol(space: str) -> sp.Symbol:
    """The symbol for the dimension of a space: ``d`` (inputs), ``d_y`` (outputs), ``r`` (rank).

    Parameters
    ----------
    space : {"x", "y", "r"}
        The space, as a letter's ``rows``/``cols`` name it.

    Returns
    -------
    sympy.Symbol
        A positive integer symbol.

    Examples
    --------
    >>> from icldyn.theory.words import dim_symbol
    >>> [dim_symbol(s) for s in ("x", "y", "r")]
    [d, d_y, r]
    >>> dim_symbol("x").is_positive
    True
    """
    return DIMS[space]


def entry_symbol(name: str, i: int, j: int) -> sp.Symbol:
    """The real symbol ``name_i_j`` of a matrix entry: indices separated, so no two entries
    share a name at any size (``m_1_11`` ≠ ``m_11_1``).

    Parameters
    ----------
    name : str
        The matrix's name.
    i, j : int
        Row and column index.

    Returns
    -------
    sympy.Symbol

    Examples
    --------
    >>> from icldyn.theory.words import entry_symbol
    >>> entry_symbol("Q", 1, 12), entry_symbol("Q", 11, 2)
    (Q_1_12, Q_11_2)
    """
    return sp.Symbol(f"{name}_{i}_{j}", real=True)


def _word_key(word: tuple):
    return tuple(letter.key() for letter in word)


def transpose_word(word: tuple) -> tuple:
    """The transpose of a word, (A₁A₂⋯A_k)ᵀ = A_kᵀ⋯A₂ᵀA₁ᵀ.

    Parameters
    ----------
    word : tuple of letters

    Returns
    -------
    tuple of letters

    Examples
    --------
    >>> from icldyn.theory.words import Mat, transpose_word
    >>> V, W, L = Mat("V", rows="y", cols="y"), Mat("W", rows="y"), Mat("L", symmetric=True)
    >>> [(m.name, m.T) for m in transpose_word((V, W, L))]           # (VWΛ)ᵀ = ΛWᵀVᵀ
    [('L', False), ('W', True), ('V', True)]
    """
    return tuple(letter.transpose() for letter in reversed(word))


def _min_word(*words: tuple) -> tuple:
    return min(words, key=_word_key)


@lru_cache(maxsize=1 << 18)
def canonical_trace(word: tuple) -> tuple:
    """Canonical representative of tr(word) under rotation, transposition and, for a single
    Dg letter, the self-adjointness tr(R Dg(Y)) = tr(Y Dg(R)).

    Parameters
    ----------
    word : tuple of letters
        The word whose trace is meant (a product of letters).

    Returns
    -------
    tuple of letters
        The least of the word's rotations and its transpose's rotations in letter order (for
        one Dg letter: Dg of the larger of R and Y, followed by the smaller), so that equal
        traces have equal representatives; ``()`` for the empty word.
    """
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


def canonical_product(words: Iterable[tuple]) -> tuple:
    """The canonical key of a product of traces Π tr(word): each trace canonical
    (``canonical_trace``), the traces sorted — the keys of ``TracePoly.terms``.

    Parameters
    ----------
    words : iterable of tuple
        The words whose traces are multiplied.

    Returns
    -------
    tuple of tuple

    Examples
    --------
    >>> from icldyn.theory.words import Mat, canonical_product
    >>> L, Q = Mat("L", symmetric=True), Mat("Q")
    >>> canonical_product([(Q, L), (L,)]) == canonical_product([(L,), (L, Q.transpose())])
    True
    """
    return _sorted_traces(canonical_trace(w) for w in words)


class TracePoly:
    """Σ coeff · Π tr(word): a scalar polynomial in traces with sympy coefficients.

    Terms are kept canonical (each trace by ``canonical_trace``, the traces of a product
    sorted), with zero coefficients dropped, so equal polynomials have equal ``terms``.

    Parameters
    ----------
    terms : dict, optional
        {tuple of words (the traces multiplied): coefficient}; canonicalised on construction,
        equal keys summed. Empty (the zero polynomial) when omitted.

    Attributes
    ----------
    terms : dict
        {sorted tuple of canonical words: nonzero expanded sympy coefficient}.

    Examples
    --------
    >>> from icldyn.theory.words import Mat, TracePoly
    >>> L, Q = Mat("L", symmetric=True), Mat("Q")
    >>> p = TracePoly.trace(Q, L) + TracePoly.trace(L, Q.transpose())     # tr(QΛ) = tr(ΛQᵀ)
    >>> p
    TracePoly(1 terms: 2*Trace(L*Q))
    >>> p.diff(Q).to_sympy()                                             # ∂/∂Q = 2Λ
    2*L
    """

    def __init__(self, terms: dict | None = None):
        self.terms: dict[tuple, sp.Expr] = {}
        for traces, coeff in (terms or {}).items():
            self._add(traces, coeff)

    def _add(self, traces: tuple, coeff) -> None:
        self._add_canonical(canonical_product(traces), coeff)

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
        """The constant polynomial ``value`` (the empty product of traces).

        Parameters
        ----------
        value : sympy-compatible scalar

        Returns
        -------
        TracePoly
        """
        return cls({(): sp.sympify(value)})

    @classmethod
    def trace(cls, *letters, coeff=1) -> "TracePoly":
        """The single trace ``coeff · tr(letters[0] letters[1] ⋯)``.

        Parameters
        ----------
        *letters : Mat or Dg
            The word, read as a matrix product.
        coeff : sympy-compatible scalar, optional
            The coefficient (1).

        Returns
        -------
        TracePoly
        """
        return cls({(tuple(letters),): sp.sympify(coeff)})

    def __add__(self, other: "TracePoly") -> "TracePoly":
        return TracePoly._canonical(self.terms).accumulate(other)

    def accumulate(self, other: "TracePoly") -> "TracePoly":
        """self += other in place (for sums built term by term); returns self.

        Parameters
        ----------
        other : TracePoly
            Canonical terms to add.

        Returns
        -------
        TracePoly
            ``self``, now holding the sum.
        """
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
        """The polynomial times a scalar (coefficients expanded).

        Parameters
        ----------
        factor : sympy-compatible scalar

        Returns
        -------
        TracePoly
        """
        return TracePoly._canonical({t: sp.expand(c * factor) for t, c in self.terms.items()})

    def map_coeffs(self, fn: Callable) -> "TracePoly":
        """The polynomial with ``fn`` applied to every coefficient (the traces unchanged; results
        expanded, zeros dropped) — e.g. a substitution of scalar symbols.

        Parameters
        ----------
        fn : callable
            sympy Expr -> sympy Expr.

        Returns
        -------
        TracePoly
        """
        return TracePoly._canonical({t: sp.expand(fn(c)) for t, c in self.terms.items()})

    def is_zero(self) -> bool:
        """Whether the polynomial has no terms (identically zero, since terms are canonical).

        Returns
        -------
        bool
        """
        return not self.terms

    def __eq__(self, other) -> bool:
        return isinstance(other, TracePoly) and (self - other).is_zero()

    def __repr__(self) -> str:
        return f"TracePoly({len(self.terms)} terms: {sp.sstr(self.to_sympy())})"

    def scalar_letter(self, name: str, value) -> "TracePoly":
        """The polynomial with the letter ``name`` equal to ``value`` times the identity.

        Each occurrence contributes a factor ``value`` (also inside Dg, which is linear); a trace
        left empty becomes tr(I) = the dimension of its space (``dim_symbol``).

        Parameters
        ----------
        name : str
            The letter (a square matrix).
        value : sympy-compatible scalar
            The multiple of the identity it is set to.

        Returns
        -------
        TracePoly
        """
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
        """The polynomial with the letters ``names`` equal to zero (terms holding any dropped).

        Parameters
        ----------
        names : set of str
            Letter names, also looked up inside Dg letters.

        Returns
        -------
        TracePoly
        """
        return TracePoly({traces: coeff for traces, coeff in self.terms.items()
                          if not letter_names(traces) & set(names)})

    def diff(self, symbol: Mat) -> "MatPoly":
        """Gradient ∂(self)/∂X for X the letter ``symbol``, a matrix of X's shape.

        Each occurrence of X in a trace contributes by ∂ tr(X R)/∂X = Rᵀ and
        ∂ tr(Xᵀ R)/∂X = R (R the rest of the word read cyclically from after X); an occurrence
        inside Dg(Y) is reached through tr(R Dg(Y)) = tr(Y Dg(R)). The other traces of a product
        are carried as factors (product rule).

        Parameters
        ----------
        symbol : Mat
            The (untransposed) letter to differentiate by; its ``rows``/``cols`` are the result's.

        Returns
        -------
        MatPoly
        """
        out = MatPoly(symbol.rows, symbol.cols)
        for traces, coeff in self.terms.items():
            for i, w in enumerate(traces):
                others = traces[:i] + traces[i + 1:]
                for open_word in _diff_cyclic(w, symbol.name, len(w)):
                    out._add(others, open_word, coeff)
        return out

    def to_sympy(self, symbols: dict | None = None) -> sp.Expr:
        """The polynomial as a SymPy scalar: Σ coeff · Π Trace(MatMul(...)).

        Parameters
        ----------
        symbols : dict, optional
            {letter name: SymPy matrix or MatrixSymbol} to use for the letters; a letter not given
            becomes a MatrixSymbol of its spaces' dimension symbols. Dg letters print as
            ``EigDiag``.

        Returns
        -------
        sympy.Expr
        """
        return sp.Add(*(c * sp.Mul(*(_trace_sympy(w, symbols) for w in t))
                        for t, c in self.terms.items()))

    def evaluate(self, values: dict):
        """Exact value with ``values[name]`` (sympy Matrices) substituted and the scalars in
        ``values['_scalars']``. Dg needs ``values['U']`` (eigenbasis as columns) and
        ``values['c']`` (task-mode variances). A letter whose value is a ``TaskSet`` is random:
        each term is averaged over the task sets of the random letters it contains.

        Parameters
        ----------
        values : dict
            {letter name: sympy Matrix or TaskSet}, plus ``'_scalars'`` ({symbol: value}) and, for
            Dg letters, ``'U'`` and ``'c'``.

        Returns
        -------
        sympy.Expr
            The scalar (a number when every letter and symbol has a value).
        """
        ops = _Ops(values)
        total = 0
        for traces, coeff in self.terms.items():
            total = total + ops.scalar(coeff) * ops.average(traces, lambda o: sp.Mul(
                *[o.trace(o.word(w)) for w in traces]))
        return total


class MatPoly:
    """Σ coeff · Π tr(word) · open_word: a matrix mapping space ``cols`` to space ``rows``.

    The traces are canonical (as in ``TracePoly``), the open word is kept as written; the
    empty open word is the identity on ``rows``.

    Parameters
    ----------
    rows, cols : {"x", "y", "r"}
        The spaces of the matrix's rows and columns.
    terms : dict, optional
        {(tuple of trace words, open word): coefficient}; canonicalised on construction.

    Attributes
    ----------
    rows, cols : str
    terms : dict
        {(sorted canonical traces, open word): nonzero expanded sympy coefficient}.

    Examples
    --------
    >>> from icldyn.theory.words import Mat, MatPoly
    >>> L, Q = Mat("L", symmetric=True), Mat("Q")
    >>> LQ = MatPoly.letter(L).matmul(MatPoly.letter(Q))
    >>> LQ.to_sympy(), LQ.transpose().to_sympy()
    (L*Q, Q.T*L)
    >>> LQ.inner(MatPoly.letter(Q)).to_sympy()                     # ⟨ΛQ, Q⟩ = tr((ΛQ)ᵀQ)
    Trace(L*Q*Q.T)
    """

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
        """The matrix polynomial times a scalar.

        Parameters
        ----------
        factor : sympy-compatible scalar

        Returns
        -------
        MatPoly
        """
        return self._canonical({k: sp.expand(c * factor) for k, c in self.terms.items()})

    def map_coeffs(self, fn: Callable) -> "MatPoly":
        """The matrix polynomial with ``fn`` applied to every coefficient (results expanded, zeros
        dropped).

        Parameters
        ----------
        fn : callable
            sympy Expr -> sympy Expr.

        Returns
        -------
        MatPoly
        """
        return self._canonical({k: sp.expand(fn(c)) for k, c in self.terms.items()})

    def scalar_letter(self, name: str, value) -> "MatPoly":
        """The polynomial with the letter ``name`` equal to ``value`` times the identity (in the
        open word and in the traces; see ``TracePoly.scalar_letter``).

        Parameters
        ----------
        name : str
            The letter (a square matrix).
        value : sympy-compatible scalar

        Returns
        -------
        MatPoly
        """
        out = MatPoly(self.rows, self.cols)
        for (traces, word), coeff in self.terms.items():
            word, power = _drop_letter(word, name)
            part = TracePoly({traces: coeff * value**power}).scalar_letter(name, value)
            for t, c in part.terms.items():
                out._add(t, word, c)
        return out

    def inner(self, other: "MatPoly") -> TracePoly:
        """Frobenius inner product ⟨self, other⟩ = tr(selfᵀ other).

        Parameters
        ----------
        other : MatPoly
            A matrix of the same shape.

        Returns
        -------
        TracePoly
            Σ c₁c₂ · (traces of both) · tr(w₁ᵀ w₂); two identity words give tr(I) = the dimension
            of ``cols``.
        """
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
        """The matrix product self · other.

        Parameters
        ----------
        other : MatPoly
            Its ``rows`` are self's ``cols``.

        Returns
        -------
        MatPoly
            Rows of self, columns of other; open words concatenated, traces multiplied.
        """
        out = MatPoly(self.rows, other.cols)
        for (t1, w1), c1 in self.terms.items():
            for (t2, w2), c2 in other.terms.items():
                out._add(t1 + t2, w1 + w2, c1 * c2)
        return out

    def transpose(self) -> "MatPoly":
        """The transpose: every open word transposed (``transpose_word``), rows and cols exchanged.

        Returns
        -------
        MatPoly
        """
        return MatPoly(self.cols, self.rows, {(t, transpose_word(w)): c
                                              for (t, w), c in self.terms.items()})

    def trace_with(self, letter: Mat) -> TracePoly:
        """tr(letter · self): a scalar that vanishes identically for a generic ``letter`` iff
        self does (so identities of matrices reduce to canonical trace polynomials).

        Parameters
        ----------
        letter : Mat
            A letter not in self, of self's transposed shape.

        Returns
        -------
        TracePoly
        """
        return TracePoly({traces + ((letter,) + word,): c
                          for (traces, word), c in self.terms.items()})

    @classmethod
    def letter(cls, m: Mat) -> "MatPoly":
        """The single letter ``m`` as a matrix polynomial (coefficient 1, no traces).

        Parameters
        ----------
        m : Mat

        Returns
        -------
        MatPoly
        """
        return cls(m.rows, m.cols, {((), (m,)): sp.Integer(1)})

    def to_sympy(self, symbols: dict | None = None) -> sp.MatrixExpr:
        """The matrix polynomial as a SymPy matrix expression: Σ coeff · Π Trace(...) · MatMul(open
        word), the empty word as the identity of ``rows``.

        Parameters
        ----------
        symbols : dict, optional
            {letter name: SymPy matrix or MatrixSymbol}, as in ``TracePoly.to_sympy``.

        Returns
        -------
        sympy.MatrixExpr
            A ``MatAdd`` (a 1 x 1 ZeroMatrix for the zero polynomial).
        """
        parts = []
        for (traces, word), coeff in self.terms.items():
            scalar = coeff * sp.Mul(*(_trace_sympy(w, symbols) for w in traces))
            if word:
                parts.append(scalar * _word_sympy(word, symbols))
            else:
                parts.append(scalar * sp.Identity(dim_symbol(self.rows)))
        return sp.MatAdd(*parts) if parts else sp.ZeroMatrix(1, 1)

    def evaluate(self, values: dict, shape: tuple):
        """Exact value of the matrix, as ``TracePoly.evaluate`` (random letters averaged over their
        task sets, jointly with the open word).

        Parameters
        ----------
        values : dict
            {letter name: sympy Matrix or TaskSet}, ``'_scalars'``, and ``'U'``/``'c'`` for Dg.
        shape : tuple of int
            The matrix's shape (sizes the zero start and the identity of an empty word).

        Returns
        -------
        sympy.Matrix
        """
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
    r"""SymPy node for Dg(Y) = U diag(c ∘ diag(UᵀYU)) Uᵀ (what ``to_sympy`` makes of a ``Dg``
    letter; prints as 𝒟(Y) in LaTeX, ``Dg(Y)`` in text). Built as ``EigDiag(Y)``.

    Attributes
    ----------
    arg : sympy.MatrixExpr
        The word Y (square); the node's shape is Y's.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.words import EigDiag
    >>> Y = sp.MatrixSymbol("Y", 2, 2)
    >>> EigDiag(Y).shape, sp.latex(EigDiag(Y))
    ((2, 2), '\\mathcal{D}\\!\\left(Y\\right)')
    """

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
    their product set). A finite task set, or a cubature rule exact for a task law's moments.

    Built as ``TaskSet(matrices, weights=None)``: the tuple of the matrices W_1..W_P (sympy
    Matrices) with their probabilities (1/P each when omitted).

    Attributes
    ----------
    weights : tuple of sympy.Expr
        The probabilities of W_1..W_P (sympified).

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.words import TaskSet
    >>> tasks = TaskSet([sp.Matrix([[1, 0]]), sp.Matrix([[0, 1]])])
    >>> len(tasks), tasks.weights
    (2, (1/2, 1/2))
    """

    def __new__(cls, matrices, weights=None):
        out = super().__new__(cls, matrices)
        out.weights = (tuple(sp.sympify(w) for w in weights) if weights is not None
                       else (sp.Rational(1, len(out)),) * len(out))
        return out


def letter_names(words: Iterable[tuple]) -> set:
    """Names of the Mat letters in ``words``, also inside Dg letters.

    Parameters
    ----------
    words : iterable of tuple of letters

    Returns
    -------
    set of str

    Examples
    --------
    >>> from icldyn.theory.words import Dg, Mat, letter_names
    >>> sorted(letter_names([(Mat("L", symmetric=True), Dg((Mat("Q"),)))]))
    ['L', 'Q']
    """
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
    TracePoly or MatPoly.

    Parameters
    ----------
    poly : TracePoly or MatPoly
    names : iterable of str
        The letters to sort terms by (inside Dg letters too).

    Returns
    -------
    dict
        {frozenset of names: polynomial of poly's type}; the parts sum to ``poly``.

    Examples
    --------
    >>> from icldyn.theory.words import Mat, TracePoly, split_by_letters
    >>> L, Q = Mat("L", symmetric=True), Mat("Q")
    >>> loss = TracePoly.trace(Q, L, Q.transpose(), L) - TracePoly.trace(L, Q, coeff=2)
    >>> loss = loss + TracePoly.trace(L)
    >>> parts = split_by_letters(loss, ["Q"])
    >>> parts[frozenset()].to_sympy(), parts[frozenset({"Q"})].to_sympy()
    (Trace(L), -2*Trace(L*Q) + Trace(L*Q*L*Q.T))
    """
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


def exchange_letters(word: tuple, a: str, b: str) -> tuple:
    """The word with the letters named a and b exchanged (inside Dg letters too).

    Parameters
    ----------
    word : tuple of letters
    a, b : str
        Two letter names (of letters with the same spaces).

    Returns
    -------
    tuple of letters

    Examples
    --------
    >>> from icldyn.theory.words import Mat, exchange_letters
    >>> A, B, L = Mat("A"), Mat("B"), Mat("L", symmetric=True)
    >>> word = exchange_letters((A, L, B.transpose()), "A", "B")       # A Λ Bᵀ → B Λ Aᵀ
    >>> [(letter.name, letter.T) for letter in word]
    [('B', False), ('L', False), ('A', True)]
    """
    spare = "\0" + a + b                       # a name no letter has
    return _rename_word(_rename_word(_rename_word(word, a, spare), b, a), spare, b)


def rename_letter(poly, old: str, new: str):
    """The polynomial with the letter ``old`` renamed ``new`` (a TracePoly or MatPoly).

    Parameters
    ----------
    poly : TracePoly or MatPoly
    old, new : str
        Letter names (inside Dg letters too); transposition, symmetry and spaces are kept.

    Returns
    -------
    TracePoly or MatPoly
        Recanonicalised (a renaming can change the canonical order).

    Examples
    --------
    >>> from icldyn.theory.words import Mat, TracePoly, rename_letter
    >>> p = TracePoly.trace(Mat("Q"), Mat("L", symmetric=True))
    >>> rename_letter(p, "Q", "M").to_sympy()                          # F(M) from L(Q) at u = 1
    Trace(L*M)
    """
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
