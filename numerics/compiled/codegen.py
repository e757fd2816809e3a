"""Derivation → fast NumPy / Numba functions generated at the matrix level.

Each trace polynomial is printed as Python source over whole matrices. Every distinct matrix
word is a named intermediate, built in the cheapest order for the letters' real shapes
(matrix-chain ordering; a product with a 1×d letter is a vector-matrix product) from the
words already computed or their transposes (a transpose is a view); traces are
``np.sum(H * Tᵀ)`` splits that cost O(d²) after the products they reuse; sums of words are
factored by shared prefixes and suffixes, Σ c_i A_i S = (Σ c_i A_i) S, where that costs less
than the words one by one (products and element-wise passes weighed at the model's d), and
the full-rank words of a gradient are factored or built one by one (then reused, also by the
traces), whichever a trial of both counts cheaper. The eigenbasis-diagonal operator
Dg(Y) = U diag(c ∘ diag(UᵀYU)) Uᵀ (eigenbasis tasks) is a helper (``eigdiag``, two products)
or, on the eigenbasis path, written out with Λ = U S Uᵀ: Λ's eigenvalues and Dg's middle
factor become diagonal letters, so a product with either is an O(d²) scaling, U Uᵀ = I
cancels, and diag(H T)_i = Σ_j H_ij T_ji costs a pass (``_EigenPrinter``); each function
takes the path a trial of both counts cheaper (Merged with d_y = d: 5 products per gradient
instead of 16). Coefficients (rational functions of N, σ, d,
d_y and η) are evaluated once per data set and passed in as a vector ``k``; products of data
letters, and sums of them with data-only coefficients, are constants computed once per data
set, so a sweep over data values reuses the same compiled code. A product-form model with
scalar tasks (``Model.head_products``) gets its gradient by the chain rule through G = ∇_M F,
derived once on the Merged model (``_chain_rule``; heads stacked in one parameter: one pass
over their H·d² entries for M, one for ∂L/∂u, one for ∂L/∂Q), and its loss as F(M) once M is
built (a few products, not one per pair of heads). The gradient is written into an
uninitialised ``out``, each block first by an assignment. The conserved quantities are one
kernel, ``conserved``, returning them all as a vector (one printer: a word or trace two laws
share is computed once; laws that differ only by their heads, such as MultiHead's
⟨V_h, V_g⟩ − ⟨Q_h, Q_g⟩, are one loop over a table of heads: ``_by_heads``), so the kernels to
compile (``loops.KERNELS`` and the loops that call them) do not grow with the number of laws.
The ``numba`` backend ``njit``s the very same source.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from ...theory.data import LAMBDA, N_SYM, SIGMA, W_COPY, W_TASK
from ...theory.derive import Derivation
from ...theory.errors import InputError
from ...theory.words import (DIMS, Dg, Mat, TracePoly, rename_letter, split_by_letters,
                             transpose_word)
from ...theory.params import as_arrays
from ...theory.productform import product_loss
from ..limits import RUNAWAY, data_overflow
from ..params import as_theta
from . import loops, warmup

BACKENDS = ("numpy", "numba")
PASS = 8.0    # an element-wise pass over a d×d matrix costs about PASS / d d×d×d products
COEFF_SYMBOLS = (N_SYM, SIGMA, DIMS["x"], DIMS["y"], DIMS["r"])


def eigdiag(Y, U, c):
    """Dg(Y) = U diag(c ∘ diag(Uᵀ Y U)) Uᵀ (diag(Uᵀ Y U) = column sums of U ∘ (Y U): two
    products). The generated code calls it for ``Dg`` letters.

    Parameters
    ----------
    Y : numpy.ndarray
        (d, d).
    U : numpy.ndarray
        (d, d), Λ's eigenbasis as columns.
    c : numpy.ndarray
        (d,), the task-mode variances.

    Returns
    -------
    numpy.ndarray
        (d, d), symmetric.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.compiled.codegen import eigdiag
    >>> Y = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> eigdiag(Y, np.eye(2), np.array([1.0, 2.0]))          # U = I: Y's diagonal times c
    array([[1., 0.],
           [0., 8.]])
    >>> U = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2)
    >>> np.round(eigdiag(Y, U, np.array([1.0, 0.0])), 6)      # c keeps the first mode of U
    array([[2.5, 2.5],
           [2.5, 2.5]])
    """
    v = c * np.sum(U * (Y @ U), axis=0)
    return (U * v) @ U.T


DATA_LETTERS = ("Lambda", "Sigma_w", "U")
TASK_LETTERS = (W_TASK.name, W_COPY.name)       # draws from a finite task set


def _is_data(letter) -> bool:
    """Letters fixed by the data: Λ, Σ_w, U (the eigenbasis path), and Dg (or a diagonal
    letter) of a data-only word."""
    if isinstance(letter, (Dg, _Diag)):
        return all(_is_data(a) for a in letter.inner)
    return letter.name in DATA_LETTERS


@lru_cache(maxsize=1 << 16)
def _all_data(word: tuple) -> bool:
    return all(map(_is_data, word))


def _scale(sizes: dict) -> dict:
    """Sizes of the spaces for ordering products, in units of d: what matters is which spaces
    are of size 1 (a product with them is O(d²)) and which are smaller than d (a rank); and
    under "d", d itself (an element-wise pass costs about ``PASS`` / d products)."""
    d = sizes["x"]
    scale = {s: 1.0 if n >= d else (1.0 / d if n == 1 else 0.25) for s, n in sizes.items()}
    return scale | {"d": float(d)}


@dataclass(frozen=True)
class _Leaf:
    """Σ coefficients × word (the word empty: the identity of ``rows``)."""

    coeffs: tuple          # ((traces, k index), ...)
    word: tuple


@dataclass(frozen=True)
class _Factor:
    """(Σ of ``inner``) · ``shared`` (side "R") or ``shared`` · (Σ of ``inner``) (side "L")."""

    side: str
    shared: tuple
    inner: tuple           # _Leaf / _Factor nodes
    rows: str              # the space of the inner sum's rows
    cols: str              # and of its columns


class _Printer:
    """Collects the statements that evaluate words and traces, each once. Products of data
    letters only, and sums of them with data-only coefficients, go to the shared ``constants``
    printer (computed once per data set). Products are ordered by the real shapes of the
    letters (``scale``: {space: size in units of d}), reuse every computed sub-word (or its
    transpose), and sums of words are factored by shared prefixes and suffixes."""

    def __init__(self, scale: dict, constants: "_Printer | None" = None):
        self.lines: list[str] = []
        self.names: dict = {}
        self.counter = 0
        self.scale = scale
        self.constants = constants
        self.prefix = "c" if constants is None else ""
        self.indent = "    "
        self.matrices: list[str] = []           # names of matrices (the constants returned)
        self.cost = 0.0                         # of the statements, in d×d×d products

    def clone(self) -> "_Printer":
        """A copy to try a plan on (its statements and names are its own)."""
        new = copy.copy(self)
        new.lines, new.names, new.matrices = list(self.lines), dict(self.names), list(self.matrices)
        new.constants = self.constants and self.constants.clone()
        return new

    def take(self, trial: "_Printer") -> None:
        """Take over the state of ``trial``, a ``clone`` of this printer that printed more: its
        statements, names and cost, and its constants' into this printer's own constants
        printer (shared with the other printers of the flow)."""
        constants = self.constants
        if constants is not None:
            vars(constants).update(vars(trial.constants))
        vars(self).update(vars(trial))
        self.constants = constants

    def _pass_cost(self, rows: str, cols: str) -> float:
        """The cost of one element-wise pass over a rows × cols matrix (memory-bound: about
        ``PASS`` / d d×d×d products)."""
        return PASS * self.scale[rows] * self.scale[cols] / self.scale["d"]

    def _pass(self, rows: str, cols: str) -> None:
        self.cost += self._pass_cost(rows, cols)

    def _new(self, expr: str, prefix: str) -> str:
        name = f"{self.prefix}{prefix}{self.counter}"
        self.counter += 1
        self.lines.append(f"{self.indent}{name} = {expr}")
        if prefix != "s":
            self.matrices.append(name)
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

    def add_up(self, target: str, terms: list[str], weight: str = "",
               first: bool = False) -> None:
        """target += weight · Σ terms, one statement per ``_chunks`` part; with ``first`` the
        first statement assigns (``target`` is a matrix not written before: no pass over
        zeros), and no terms zero it."""
        if first and not terms:
            self.lines.append(f"{self.indent}{target}[:, :] = 0.0")
        for i, part in enumerate(_chunks(terms)):
            op = "[:, :] =" if first and i == 0 else " +="
            self.lines.append(f"{self.indent}{target}{op} "
                              + (f"{weight} * ({part})" if weight else part))

    def close_loops(self) -> None:
        """Leave the loops: what was computed inside is forgotten (it held one task's value)."""
        self.names, self.indent = self._outside, "    "

    def _data(self, word: tuple) -> bool:
        return self.constants is not None and _all_data(word)

    def letter(self, letter) -> str:
        if letter in self.names:
            return self.names[letter]
        if self._data((letter,)):
            return self.constants.letter(letter)
        if isinstance(letter, Dg):
            inner = self.word(letter.inner) if letter.inner else "np.eye(U.shape[0])"
            name = self._new(f"_eigdiag({inner}, U, c)", "g")
            self.cost += 2.0                    # ``eigdiag``: two products
        elif letter.T:
            name = self._new(f"{letter.name}.T", "t")        # a view (BLAS takes either order)
        else:
            name = letter.name
        self.names[letter] = name
        return name

    def word(self, word: tuple) -> str:
        if self._data(word):
            return self.constants.word(word)
        if len(word) == 1:
            return self.letter(word[0])
        key = ("word", word)
        if key not in self.names:
            flipped = self.names.get(("word", transpose_word(word)))
            if flipped is not None:
                self.names[key] = self._new(f"{flipped}.T", "t")        # a view
            else:
                cut = self._order(word, {})[1]
                self.cost += self._cut_cost(word, cut)
                self.names[key] = self._new(self._times(word[:cut], word[cut:]), "m")
        return self.names[key]

    def _cut_cost(self, word: tuple, cut: int) -> float:
        """The cost of the product word[:cut] @ word[cut:] (in d×d×d products)."""
        return self.scale[word[0].rows] * self.scale[word[cut - 1].cols] * self.scale[word[-1].cols]

    def _times(self, head: tuple, tail: tuple) -> str:
        """The expression of the product of two words."""
        return f"{self.word(head)} @ {self.word(tail)}"

    def term(self, word: tuple) -> str:
        """A word as a term of a sum: the transpose of a computed word is a view (an
        element-wise sum needs no contiguous copy)."""
        flipped = self.names.get(("word", _transposed(word)))
        if len(word) > 1 and ("word", word) not in self.names and flipped is not None:
            return f"{flipped}.T"
        return self.word(word)

    def known(self, word: tuple) -> bool:
        return (len(word) == 1 or self._data(word) or ("word", word) in self.names
                or ("word", _transposed(word)) in self.names)

    def _order(self, word: tuple, memo: dict) -> tuple:
        """(cost in d×d×d products, cut) of the cheapest way to build ``word`` from what is
        known: matrix-chain ordering with the letters' real shapes."""
        if word not in memo and self.known(word):
            memo[word] = 0.0, None
        if word not in memo:
            memo[word] = min((self._order(word[:cut], memo)[0]
                              + self._order(word[cut:], memo)[0]
                              + self._cut_cost(word, cut), cut)
                             for cut in range(1, len(word)))
        return memo[word]


    def trace(self, word: tuple) -> str:
        """tr(H·T) = Σ_ij H_ij (Tᵀ)_ij over the cyclic rotations (and the transpose) of the
        word, with T a single letter, a run of data letters (a constant) or a product already
        computed: the last product costs O(d²), not O(d³). The split is the cheapest given the
        products computed so far (ties: the longest run of data letters)."""
        key = ("trace", word)
        if key in self.names:
            return self.names[key]
        if len(word) == 1 or self.known(word):
            expr = f"np.trace({self.word(word)})"
        else:
            best, memo = None, {}
            for cand in _rotations(word) + _rotations(transpose_word(word)):
                for cut in range(1, len(cand)):
                    head, tail = cand[:cut], cand[cut:]
                    data_tail = all(map(_is_data, tail))
                    if len(tail) > 1 and not data_tail and not self.known(tail):
                        continue
                    cost = (self._order(head, memo)[0], -(len(tail) if data_tail else 0))
                    if best is None or cost < best[0]:
                        best = (cost, head, tail)
            _, head, tail = best
            tail_t = self.word(transpose_word(tail))
            expr = f"np.sum({self.word(head)} * {tail_t})"
            self._pass(head[0].rows, head[-1].cols)
        self.names[key] = self._new(expr, "s")
        return self.names[key]

    def scalar_term(self, traces, kidx: int) -> str:
        return " * ".join([f"k[{kidx}]"] + [self.trace(w) for w in traces])

    # --- sums of words -----------------------------------------------------------------------
    def thin(self, word: tuple) -> bool:
        """Whether a word has a letter with a side smaller than d (its rank is lower)."""
        return any(self.scale[a.rows] < 1 or self.scale[a.cols] < 1 for a in word)

    def plan(self, terms: dict, rows: str, cols: str, full: bool = True) -> tuple:
        """Σ coefficient × word (``terms``: {word: ((traces, k index), ...)}, a ``rows`` ×
        ``cols`` matrix) as a tree of ``_Leaf`` and ``_Factor`` nodes: the words sharing a
        first or last letter (most first) are factored by their longest common prefix or
        suffix, recursively. A sum with a side of size 1 is left unfactored: each of its words
        is a chain of vector-matrix products already. Unless ``full``, words without a thin
        letter (``thin``) are left unfactored (built once, their sub-words and transposes
        reused, also by traces)."""
        out, rest = [], []
        for word, coeffs in terms.items():
            keep = len(word) <= 1 or self.known(word) or not (full or self.thin(word))
            (out if keep else rest).append(_Leaf(coeffs, word))
        if min(self.scale[rows], self.scale[cols]) < 1:
            return tuple(out + rest)
        while rest:
            groups: dict = {}
            for i, leaf in enumerate(rest):
                groups.setdefault(("R", leaf.word[-1]), []).append(i)
                groups.setdefault(("L", leaf.word[0]), []).append(i)
            ranked = sorted((_affix(side, [rest[i].word for i in members]) + (side, members)
                             for (side, _), members in groups.items()), reverse=True)
            for count, _, n, side, members in ranked:
                factor = None if count < 2 else self._factor([rest[i] for i in members],
                                                             side, n, rows, cols, full)
                if factor is not None:
                    break
            if factor is None:
                return tuple(out + rest)
            out.append(factor)
            rest = [leaf for i, leaf in enumerate(rest) if i not in members]
        return tuple(out)

    def _factor(self, group: list, side: str, n: int, rows: str, cols: str, full: bool):
        """The ``_Factor`` of ``group`` (leaves) by its common prefix (side "L") or suffix
        ("R") of length n, or None when the factored sum costs no less than the words built
        one by one (estimated with the chain costs of ``_order`` and a pass per term)."""
        word = group[0].word
        if side == "R":
            shared = word[len(word) - n:]
            inner = {leaf.word[:len(leaf.word) - n]: leaf.coeffs for leaf in group}
            inner_rows, inner_cols = rows, shared[0].rows
        else:
            shared = word[:n]
            inner = {leaf.word[n:]: leaf.coeffs for leaf in group}
            inner_rows, inner_cols = shared[-1].cols, cols
        chain = self._chain_estimator()
        separate = sum(chain(leaf.word) + self._pass_cost(rows, cols) for leaf in group)
        chain = self._chain_estimator()
        factored = (sum(chain(w) + self._pass_cost(inner_rows, inner_cols) for w in inner)
                    + chain(shared) + self._factor_product(side, shared, inner_rows, inner_cols)
                    + self._pass_cost(rows, cols))
        if factored >= separate:
            return None
        return _Factor(side, shared, self.plan(inner, inner_rows, inner_cols, full),
                       inner_rows, inner_cols)

    def _chain_estimator(self):
        """A function: word → the cost of building it from what is known (``_order``)."""
        memo: dict = {}
        return lambda w: self._order(w, memo)[0] if len(w) > 1 else 0.0

    def _factor_product(self, side: str, shared: tuple, rows: str, cols: str) -> float:
        """The cost of (inner sum, ``rows`` × ``cols``) @ ``shared`` (side "R") or
        ``shared`` @ (inner sum) (side "L")."""
        outer = shared[-1].cols if side == "R" else shared[0].rows
        return self.scale[rows] * self.scale[cols] * self.scale[outer]

    def prebuild(self, nodes: tuple) -> None:
        """Build the shared words and the words of a plan (before the traces, which may
        reuse them)."""
        for node in nodes:
            if isinstance(node, _Factor):
                self.word(node.shared)
                self.prebuild(node.inner)
            elif len(node.word) > 1 and not self.known(node.word):
                self.word(node.word)

    def _constant_plan(self, nodes: tuple, rows: str) -> bool:
        """Whether a plan is data only (words and coefficients): a constant."""
        return self.constants is not None and rows == "x" and all(
            isinstance(n, _Leaf) and self._data(n.word)
            and all(self._data(w) for traces, _ in n.coeffs for w in traces) for n in nodes)

    def emit(self, nodes: tuple, rows: str, size: str) -> list[str]:
        """The terms (expressions) of a plan's sum; ``size`` is the identity's size. The
        data-only words with data-only coefficients add up to one constant term."""
        data = [n for n in nodes if self._constant_plan((n,), rows)]
        out = [self.constants.combination(tuple(data))] if data else []
        for node in nodes:
            if node in data:
                continue
            if isinstance(node, _Leaf):
                self._pass(rows, node.word[-1].cols if node.word else rows)
                coeff = _sum([self.scalar_term(t, k) for t, k in node.coeffs])
                out.append(f"({coeff}) * "
                           + (self.term(node.word) if node.word else f"np.eye({size})"))
                continue
            if self._constant_plan(node.inner, node.rows):
                inner = self.constants.combination(node.inner)
            else:
                inner_size = size if node.side == "R" else _SIZE[node.rows]
                inner = self._new(_sum(self.emit(node.inner, node.rows, inner_size)), "r")
            shared = self.word(node.shared)
            self.cost += self._factor_product(node.side, node.shared, node.rows, node.cols)
            out.append(f"{inner} @ {shared}" if node.side == "R" else f"{shared} @ {inner}")
        return out

    def combination(self, nodes: tuple) -> str:
        """A constant sum of data words (named once)."""
        key = ("sum", nodes)
        if key not in self.names:
            self.names[key] = self._new(
                _sum(self.emit(nodes, "x", "Lambda.shape[0]")), "r")
        return self.names[key]


@dataclass(frozen=True)
class _Diag:
    """A diagonal letter of Λ's eigenbasis (a vector in the generated code): diag(c ∘ diag(W))
    (``weighted``: Dg's middle factor, Dg(Y) = U diag(c ∘ diag(UᵀYU)) Uᵀ) or diag(diag(W)) (Λ's
    eigenvalues, W = UᵀΛU), for a word ``inner`` of the eigenbasis path."""

    inner: tuple
    weighted: bool
    rows = "x"
    cols = "x"

    def transpose(self) -> "_Diag":
        """A diagonal matrix is its own transpose."""
        return self


_U, _UT = Mat("U"), Mat("U", T=True)
_S = _Diag((_UT, Mat("Lambda", symmetric=True), _U), False)


def _diagonal(word: tuple) -> bool:
    """Whether a (non-empty) word is a product of diagonal letters (a vector)."""
    return all(isinstance(a, _Diag) for a in word)


def _eigen_word(word: tuple) -> tuple:
    """``word`` with Λ = U S Uᵀ and Dg(Y) = U diag(c ∘ diag(Uᵀ Y U)) Uᵀ written out (inner words
    too), adjacent U Uᵀ and Uᵀ U cancelled (U is orthogonal): products with Λ and Dg become
    scalings in the eigenbasis, and a parameter letter X meets U as X U, Uᵀ X or Uᵀ X U."""
    out: list = []
    for a in word:
        if isinstance(a, Dg):
            inner = _eigen_word((_UT,) + tuple(a.inner) + (_U,))
            seg = (_U, _Diag(inner, True), _UT)
        elif a.name == LAMBDA.name:
            seg = (_U, _S, _UT)
        else:
            seg = (a,)
        for b in seg:
            if out and {b, out[-1]} == {_U, _UT}:
                out.pop()
            else:
                out.append(b)
    return tuple(out)


def _eigen_trace(word: tuple) -> tuple:
    """tr(word) in the eigenbasis: ``_eigen_word`` with U … Uᵀ at the ends cancelled
    (tr(U X Uᵀ) = tr(X))."""
    word = _eigen_word(word)
    while len(word) > 2 and {word[0], word[-1]} == {_U, _UT}:
        word = word[1:-1]
    return word


class _EigenPrinter(_Printer):
    """The printer of the eigenbasis path: words over parameter letters, U, Uᵀ and diagonal
    letters (``_Diag``, vectors in the code). A product with a diagonal letter is a scaling (one
    element-wise pass), diag(A B) = Σ_j A_ij B_ji costs a pass, and traces and diagonals are
    split where the products they need (shared with what is built already) cost least."""

    def letter(self, letter) -> str:
        if not isinstance(letter, _Diag) or letter in self.names or self._data((letter,)):
            return super().letter(letter)
        diag = self.diagonal(letter.inner)
        self.names[letter] = self._new(f"c * {diag}", "g") if letter.weighted else diag
        return self.names[letter]

    def _times(self, head: tuple, tail: tuple) -> str:
        """A product with a diagonal factor (a vector) is a scaling of rows or columns."""
        a, b = self.word(head), self.word(tail)
        if _diagonal(head) and not _diagonal(tail):
            return f"{a}.reshape((-1, 1)) * {b}"
        return f"{a} * {b}" if _diagonal(head) or _diagonal(tail) else f"{a} @ {b}"

    @classmethod
    def adopt(cls, printer: _Printer) -> "_EigenPrinter":
        """A copy of ``printer`` (and of its constants) as an eigenbasis printer."""
        new = printer.clone()
        new.__class__ = cls
        if new.constants is not None:
            new.constants.__class__ = cls
        return new

    def _factor(self, group: list, side: str, n: int, rows: str, cols: str, full: bool):
        word = group[0].word
        shared = word[len(word) - n:] if side == "R" else word[:n]
        return None if _diagonal(shared) else super()._factor(group, side, n, rows, cols, full)

    def diagonals(self, polys) -> None:
        """Build the diagonal letters of the words of ``polys`` (each is needed whatever the
        plans of the sums): the plans then see the products they built (such as X U)."""
        for poly in polys:
            for _, word in poly.terms:
                for letter in word:
                    if isinstance(letter, _Diag):
                        self.letter(letter)

    def _chain_estimator(self):
        """A function: word → the cost of building it from what is known and what earlier
        calls built (a sub-word shared by the words of a sum is counted once)."""
        memo: dict = {}

        def chain(word: tuple) -> float:
            cost = self._order(word, memo)[0] if len(word) > 1 else 0.0
            for w in list(_built(word, memo)):
                memo[w] = memo[transpose_word(w)] = (0.0, None)
            return cost
        return chain

    def term(self, word: tuple) -> str:
        if word and _diagonal(word):
            return f"np.diag({self.word(word)})"
        return super().term(word)

    def _cut_cost(self, word: tuple, cut: int) -> float:
        """A product with a diagonal factor costs one element-wise pass (none for two)."""
        head, tail = word[:cut], word[cut:]
        if _diagonal(head) or _diagonal(tail):
            both = _diagonal(head) and _diagonal(tail)
            return 0.0 if both else self._pass_cost(word[0].rows, word[-1].cols)
        return super()._cut_cost(word, cut)

    def _split(self, candidates) -> tuple:
        """The cheapest (head, tail) of ``candidates``: the products of the head, then those of
        the tail given the head's (its sub-words and their transposes are then known)."""
        best = None
        for head, tail in candidates:
            memo: dict = {}
            cost = self._order(head, memo)[0]
            after = dict.fromkeys(_built(head, memo), (0.0, None))
            after.update({transpose_word(w): v for w, v in after.items()})
            cost += self._order(tail, after)[0] if len(tail) > 1 else 0.0
            if best is None or cost < best[0]:
                best = cost, head, tail
        return best[1:]

    def _pair(self, head: tuple, tail: tuple, reduce: str) -> str:
        """Σ_j H_ij T_ji summed over i too (``reduce`` "": a trace) or per i (", axis=1": a
        diagonal), element-wise; a diagonal factor as a vector."""
        h, t = self.word(head), self.word(transpose_word(tail))
        if _diagonal(head) or _diagonal(tail):
            h = h if _diagonal(head) else f"np.diag({h})"
            t = t if _diagonal(tail) else f"np.diag({t})"
        else:
            self._pass(head[0].rows, head[-1].cols)
        return f"np.sum({h} * {t}{reduce})"

    def trace(self, word: tuple) -> str:
        key = ("trace", word)
        if key not in self.names:
            if _diagonal(word):
                expr = f"np.sum({self.word(word)})"
            elif len(word) == 1 or self.known(word):
                expr = f"np.trace({self.word(word)})"
            else:
                cands = _rotations(word) + _rotations(transpose_word(word))
                head, tail = self._split((w[:cut], w[cut:]) for w in cands
                                         for cut in range(1, len(w)))
                expr = self._pair(head, tail, "")
            self.names[key] = self._new(expr, "s")
        return self.names[key]

    def diagonal(self, word: tuple) -> str:
        """diag(word) (a vector): diagonal letters at the ends as factors, the rest split
        into H T with diag(H T)_i = Σ_j H_ij T_ji."""
        key = ("diagonal", word)
        if self._data(word):
            return self.constants.diagonal(word)
        if word and _diagonal(word):
            return self.word(word)
        if key not in self.names:
            ends = [i for i in (0, len(word) - 1) if word and isinstance(word[i], _Diag)]
            if not word:
                expr = "np.ones(U.shape[0])"
            elif ends:
                i = ends[0]
                rest = word[1:] if i == 0 else word[:-1]
                expr = f"{self.letter(word[i])} * {self.diagonal(rest)}"
            elif len(word) == 1 or self.known(word):
                expr = f"np.diag({self.word(word)}).copy()"
            else:
                head, tail = self._split((w[:cut], w[cut:]) for w in (word, transpose_word(word))
                                         for cut in range(1, len(w)))
                expr = self._pair(head, tail, ", axis=1")
            self.names[key] = self._new(expr, "v")
        return self.names[key]


def _built(word: tuple, memo: dict):
    """The words a chain order (``memo`` of ``_Printer._order``) builds for ``word``."""
    cut = memo.get(word, (0.0, None))[1]
    if cut is not None:
        yield word
        yield from _built(word[:cut], memo)
        yield from _built(word[cut:], memo)


CHUNK = 64      # terms per sum in generated code


def _chunks(terms: list) -> list[str]:
    """The sums of consecutive groups of at most ``CHUNK`` terms: Python's compiler recurses
    once per ``+`` of a chain (a 3-layer stack's sums exceeded its limit)."""
    return [" + ".join(terms[i:i + CHUNK]) for i in range(0, len(terms), CHUNK)]


def _sum(terms: list) -> str:
    """Σ terms as one expression: the ``_chunks`` parts, parenthesised, summed in turn."""
    if len(terms) <= CHUNK:
        return " + ".join(terms)
    return _sum([f"({part})" for part in _chunks(terms)])


def _affix(side: str, words: list) -> tuple:
    """(number of words, whether the common part holds a parameter letter, its length n): the
    rank of factoring ``words`` by their longest common prefix (side "L") or suffix ("R"),
    and n. A common part of data letters only is better left inside (a constant)."""
    words = [w if side == "L" else w[::-1] for w in words]
    n = 1
    while all(len(w) > n and w[n] == words[0][n] for w in words):
        n += 1
    while n > 1 and _is_data(words[0][n - 1]) and not all(map(_is_data, words[0][:n - 1])):
        n -= 1                         # data letters next to the inner sum stay inside it
    return len(words), not all(map(_is_data, words[0][:n])), n


_transposed = lru_cache(maxsize=1 << 16)(transpose_word)


def _rotations(word: tuple) -> list[tuple]:
    return [word[k:] + word[:k] for k in range(len(word))]


@dataclass
class _Polys:
    """The polynomials a flow needs, with one flat coefficient list."""

    coeffs: list
    source: str
    stacked: tuple | None = None    # (u's, Q's parameter names): the gradient by ``_stacked``


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


def _view_code(array: str, block) -> str:
    """``block`` of ``array`` (a parameter or its gradient) as a view: the whole array, one
    head (both contiguous) or a slice."""
    if block.row_part is None and block.col_part is None:
        return array if block.head is None else f"{array}[{block.head}]"
    return f"{array}{_index_code(block)}"


def _letter_code(block) -> str:
    """The letter of ``block`` from its parameter: a view when contiguous, else a contiguous
    copy of the slice (products are fastest on contiguous arrays)."""
    view = _view_code(f"P_{_ident(block.param)}", block)
    whole = block.row_part is None and block.col_part is None
    return view if whole else f"np.ascontiguousarray({view})"


def _target(block) -> str:
    """The name of ``block``'s part of the gradient (a view of ``out``, ``_outputs``)."""
    return f"D_{_ident(block.letter.name)}"


def _generate(der: Derivation) -> _Polys:
    model = der.model
    coeffs: list = []

    def k(expr) -> int:
        coeffs.append(expr)
        return len(coeffs) - 1

    scale = _scale(model.sizes())
    consts = _Printer(scale)
    found: dict = {}
    header = ["    n_x = Lambda.shape[0]", "    n_y = dims[0]", "    n_r = dims[1]",
              "    CONSTANTS", "    pos = 0"]
    for p in model.params:
        header += [f"    P_{_ident(p.name)} = theta[pos:pos + {_size_code(p)}].reshape({_shape_code(p)})",
                   f"    pos += {_size_code(p)}"]
    for b in model.blocks():
        header.append(f"    {b.letter.name} = {_letter_code(b)}")
    args = "theta, k, Lambda, Sigma_w, U, c, tasks, task_weights, dims, consts"

    def total(pr: _Printer, poly: TracePoly, eigen: bool) -> None:
        """Print the statements that leave ``poly``'s value in ``total``."""
        traces = (lambda tr: tuple(map(_eigen_trace, tr))) if eigen else (lambda tr: tr)
        groups = split_by_letters(poly, TASK_LETTERS)
        fixed = groups.pop(frozenset(), TracePoly())
        pr.lines.append(f"{pr.indent}total = 0.0 * theta[0]")   # θ's dtype (complex in hvp)
        pr.add_up("total", [pr.scalar_term(traces(tr), k(c)) for tr, c in fixed.terms.items()])
        for present, part in sorted(groups.items(), key=lambda g: sorted(g[0])):
            weight = pr.open_loops(sorted(present))
            pr.add_up("total", [pr.scalar_term(traces(tr), k(c))
                                for tr, c in part.terms.items()], weight)
            pr.close_loops()

    def loss_fn(name: str, poly: TracePoly, constants: _Printer, eigen: bool) -> tuple:
        """(the lines of the loss, their cost); ``eigen`` as for ``grad_fn``. With a product
        form (``_product_form``: L = F(M)), ``poly`` is F, printed after the statements that
        build M (a few products, not one per pair of heads)."""
        pr = (_EigenPrinter if eigen else _Printer)(scale, constants)
        if form is not None:
            _build_product(der, pr, *form[1:])
        total(pr, poly, eigen)
        return [f"def {name}({args}):"] + header + pr.lines + ["    return total", ""], pr.cost

    def vector_fn(name: str, polys: list, constants: _Printer, eigen: bool) -> tuple:
        """(the lines of a function returning the values of ``polys`` as a vector, their
        cost): one printer for them all, so each word and trace is computed once; the
        polynomials that are one up to a renaming of heads (``_by_heads``) as one loop over
        a table of (position, heads), its statements printed once."""
        pr = (_EigenPrinter if eigen else _Printer)(scale, constants)
        pr.lines.append(f"    out = np.empty({len(polys)}, dtype=theta.dtype)")
        for g, (template, slots, members) in enumerate(_by_heads(model, polys)):
            if len(members) == 1:
                total(pr, polys[members[0][0]], eigen)
                pr.lines.append(f"    out[{members[0][0]}] = total")
                continue
            heads = ", ".join(f"_h{j}" for j in range(len(members[0][1])))
            pr.lines += [f"    _laws{g} = {tuple((i, *hs) for i, hs in members)!r}",
                         f"    for _l in range({len(members)}):",
                         f"        _o, {heads} = _laws{g}[_l]"]
            pr.lines += [f"        {letter} = {_letter_code(block)}"
                         for letter, block in slots.items()]
            outside, pr.indent = dict(pr.names), "        "
            total(pr, template, eigen)
            pr.lines.append("        out[_o] = total")
            pr.names, pr.indent = outside, "    "     # the loop's values: one law's
        return [f"def {name}({args}):"] + header + pr.lines + ["    return out", ""], pr.cost

    def block_sums(pr: _Printer, pieces: list) -> list[list[str]]:
        """The terms of each (rows, MatPoly) of ``pieces``, factored (``_Printer.plan``):
        with the words without thin letters factored too or not, whichever costs less
        (counted on a trial copy of the printer, traces included)."""
        sums = []
        for rows, g in pieces:
            terms: dict = {}
            for (traces, word), c in g.terms.items():
                terms.setdefault(word, []).append((traces, k(c)))
            sums.append(({w: tuple(cs) for w, cs in terms.items()}, rows, g.cols))

        def build(printer: _Printer, full: bool) -> list[list[str]]:
            plans = [printer.plan(terms, rows, cols, full) for terms, rows, cols in sums]
            for plan in plans:               # open products first: traces may reuse them
                printer.prebuild(plan)
            return [printer.emit(plan, rows, _SIZE[rows])
                    for plan, (_, rows, _) in zip(plans, sums)]

        trials, built = {}, {}
        for full in (True, False):
            trials[full] = pr.clone()
            built[full] = build(trials[full], full)
        best = min(trials, key=lambda f: (trials[f].cost, not f))
        pr.take(trials[best])                  # the winning trial, not built a third time
        return built[best]

    def grad_fn(name: str, grads: dict, constants: _Printer, eigen: bool) -> tuple:
        """(the lines of the gradient, their cost); ``eigen``: on the eigenbasis path
        (``_eigen_word``), printed by an ``_EigenPrinter`` with ``constants`` as its own."""
        pr = (_EigenPrinter if eigen else _Printer)(scale, constants)
        split = {}     # letter -> (terms in the task W, the other terms): the mean is linear
        for n, g in grads.items():
            parts = split_by_letters(g, TASK_LETTERS)
            split[n] = tuple((_eigen_poly if eigen else lambda poly: poly)(
                parts.get(frozenset(key), g._canonical({}))) for key in ({W_TASK.name}, ()))
            if set(parts) - {frozenset({W_TASK.name}), frozenset()}:
                raise ValueError("a gradient holds one expectation over the task")
        blocks = list(model.blocks())
        if eigen:
            pr.diagonals(poly for parts in split.values() for poly in parts)
        init = _Printer(scale)
        init.lines = _outputs(model)
        chain = _chain_rule(der, form, pr, block_sums)
        if chain is not None:
            chain, found["stacked"] = chain
            return ([f"def {name}({args}):"] + header + pr.lines + init.lines + chain
                    + ["    return out", ""]), pr.cost
        fixed = block_sums(pr, [(b.letter.rows, split[b.letter.name][1]) for b in blocks])
        cut = len(pr.lines)                    # where the task loop (if any) starts
        for b, parts in zip(blocks, fixed):
            init.add_up(_target(b), parts, first=True)
        loop = _Printer(scale)
        if any(split[n][0].terms for n in split):
            weight = pr.open_loops([W_TASK.name])
            loop.indent = pr.indent
            sums = block_sums(pr, [(b.letter.rows, split[b.letter.name][0]) for b in blocks])
            for b, parts in zip(blocks, sums):
                loop.add_up(_target(b), parts, weight)
            pr.close_loops()
        return ([f"def {name}({args}):"] + header + pr.lines[:cut] + init.lines
                + pr.lines[cut:] + loop.lines + ["    return out", ""]), pr.cost

    def cheaper(fn, name: str, poly) -> list[str]:
        """The lines of ``fn`` (``loss_fn``/``grad_fn``/``vector_fn``) for ``poly``; with
        eigenbasis tasks (Dg letters) it is also tried on the eigenbasis path (Λ and Dg
        diagonal in U: scalings, not products), and the cheaper one is kept — above the sizes
        whose kernels ``loops.lower`` rewrites as scalar loops (it has no loop form for the
        path's vectors)."""
        nonlocal consts
        eigen = False
        if _has_dg(poly) and not _lowered(model):
            start, trials = len(coeffs), {}
            for path in (False, True):
                trial = _EigenPrinter.adopt(consts) if path else consts.clone()
                trials[path] = fn(name, poly, trial, path)[1]
                del coeffs[start:]
            eigen = trials[True] < trials[False]
            consts = _EigenPrinter.adopt(consts) if eigen else consts
        return fn(name, poly, consts, eigen)[0]

    form = _product_form(der)
    lines = cheaper(loss_fn, "loss", der.loss_poly if form is None else form[0])
    lines += cheaper(grad_fn, "grad", der.gradient_poly)
    lines += cheaper(vector_fn, "conserved", [c.quantity for c in der.conserved])
    lines += _observe_fn(len(der.conserved), args)
    names = consts.matrices or ["Lambda"]
    unpack = f"({', '.join(names)},) = consts"
    constants_fn = (["def constants(k, Lambda, Sigma_w, U, c):"] + consts.lines
                    + [f"    return ({', '.join(names)},)", ""])
    lines = ["import numpy as np", ""] + constants_fn + [
        line.replace("    CONSTANTS", "    " + unpack) for line in lines]
    source = "\n".join(lines) + "\n"
    return _Polys(coeffs, source + _trajectories(der, source, len(coeffs)),
                  found.get("stacked"))


def _by_heads(model, polys: list) -> list[tuple]:
    """``polys`` grouped by what they are up to a renaming of heads: in each, the letters of
    head h of a headed parameter (``Model.blocks``) renamed after h's rank among its heads
    (those of the polynomial's heads 0 and 2 become those of slots 0 and 1).

    Returns
    -------
    list of tuple
        (the polynomial in the slot letters, {slot letter name: its ``Block``, the head the
        name of the variable ``_h<slot>``}, [(position in ``polys``, heads)]) per group, in
        the order of their first member. A polynomial with task or Dg letters, or without
        heads, is a group of its own (its slot polynomial None).
    """
    blocks = {b.letter.name: b for b in model.blocks() if b.head is not None}
    groups: dict = {}
    for i, poly in enumerate(polys):
        letters = {a for traces in poly.terms for w in traces for a in w}
        names = sorted({a.name for a in letters if not isinstance(a, Dg)} & set(blocks))
        if not names or any(isinstance(a, Dg) or a.name in TASK_LETTERS for a in letters):
            groups[i] = (None, {}, [(i, ())])
            continue
        heads = sorted({blocks[n].head for n in names})
        template, slots = poly, {}
        for n in names:
            b = blocks[n]
            slot = heads.index(b.head)
            letter = f"H{slot}_{_ident(b.param)}{b.row_part or ''}{b.col_part or ''}"
            template = rename_letter(template, n, letter)
            slots[letter] = dataclasses.replace(b, head=f"_h{slot}")
        key = (frozenset(template.terms.items()), tuple(sorted(slots)))
        groups.setdefault(key, (template, slots, []))[2].append((i, tuple(heads)))
    return list(groups.values())


def _eigen_poly(poly):
    """A MatPoly's terms on the eigenbasis path (``_eigen_word``, ``_eigen_trace``): what
    ``block_sums`` reads of it (``terms``, ``cols``)."""
    terms: dict = {}
    for (traces, word), c in poly.terms.items():
        key = (tuple(map(_eigen_trace, traces)), _eigen_word(word))
        terms[key] = terms.get(key, 0) + c
    return types.SimpleNamespace(terms=terms, cols=poly.cols)


def _has_dg(poly) -> bool:
    """Whether a Dg letter occurs in a TracePoly, a list of them or a {name: MatPoly}
    (eigenbasis tasks)."""
    if isinstance(poly, list):
        return any(map(_has_dg, poly))
    words = ([w for tr in poly.terms for w in tr] if isinstance(poly, TracePoly) else
             [w for g in poly.values() for tr, word in g.terms for w in tr + (word,)])
    return any(isinstance(a, Dg) for w in words for a in w)


def _outputs(model) -> list[str]:
    """The flat gradient ``out`` (θ's layout), not initialised, and each parameter's block
    G_<param> as a view of it (the blocks are written in place, each first by an assignment:
    no copies at the end, no pass over zeros); a parameter whose blocks leave entries out
    (inert entries, e.g. FullLSA's x-rows of W_PV) is zeroed first."""
    out = ["    out = np.empty(theta.shape[0], dtype=theta.dtype)", "    pos = 0"]
    covered = _covered(model)
    for p in model.params:
        size = _size_code(p)
        if not covered[p.name]:
            out.append(f"    out[pos:pos + {size}] = 0.0")
        out += [f"    G_{_ident(p.name)} = out[pos:pos + {size}].reshape({_shape_code(p)})",
                f"    pos += {size}"]
    return out + [f"    {_target(b)} = {_view_code('G_' + _ident(b.param), b)}"
                  for b in model.blocks()]


def _covered(model) -> dict:
    """{parameter name: whether its blocks cover every entry} (at the model's sizes)."""
    sizes, masks = model.sizes(), {}
    for name, shape in model.shapes().items():
        masks[name] = np.zeros(shape, dtype=bool)
    for b in model.blocks():
        masks[b.param][b.index(sizes)] = True
    return {name: bool(mask.all()) for name, mask in masks.items()}


def _product_form(der: Derivation) -> tuple | None:
    """(F, M, heads) of a product-form model with scalar tasks (``Model.head_products``;
    ``theory/productform.py``: L = F(M), M = Σ_h u_h K_h, F derived once on the Merged model),
    or None (no product form, or eigenbasis tasks: Dg letters)."""
    heads = der.model.head_products()
    if heads is None or der.data.d_y != 1 or der.data.tasks == "diagonal":
        return None
    return (*product_loss(der), heads)


def _build_product(der: Derivation, pr: _Printer, M, heads) -> tuple:
    """Print the statements that build M = Σ_h u_h K_h (K_h = Q_h or W_K,hᵀ W_Q,h) into ``pr``.
    When the heads' u_h and Q_h are the heads of two parameters (``_stacked``), M = uᵀQ is one
    pass over Q's H·d² entries (Q flattened to H × d²).

    Returns
    -------
    tuple
        (``_stacked``'s tuple, or None; [(the head's letters, u_h's code, K_h's name)] when
        not stacked).
    """
    blocks = {b.letter.name: b for b in der.model.blocks()}
    stacked = None if _lowered(der.model) else _stacked(der.model, heads.heads, blocks)
    if stacked is not None:                  # (the loop form of small models has no batch)
        u, _, H, param, _ = stacked
        pr.lines.append(f"    {M.name} = np.dot(P_{u}.reshape(({H},)), {_flat(stacked)})"
                        f".reshape(({_SIZE[param.rows]}, {_SIZE[param.cols]}))")
        return stacked, []
    factors = []
    for letters in heads.heads:
        u, rest = f"{letters[0]}[0, 0]", letters[1:]
        K = rest[0] if len(rest) == 1 else pr._new(f"{rest[0]}.T @ {rest[1]}", "k")
        factors.append((letters, u, K))
    pr.lines.append(f"    {M.name} = " + _sum([f"{u} * {K}" for _, u, K in factors]))
    return None, factors


def _chain_rule(der: Derivation, form, pr: _Printer, block_sums) -> tuple | None:
    """The gradient of a product-form model with scalar tasks by the chain rule, or None
    (``form``: ``_product_form(der)``, computed once for the loss and the gradient):
    L = F(M), M = Σ_h u_h K_h with K_h = Q_h or W_K,hᵀ W_Q,h, so with
    G = ∇_M F (derived once, on the Merged model)

        ∂L/∂u_h = ⟨K_h, G⟩,  ∂L/∂Q_h = u_h G,  ∂L/∂W_K,h = u_h W_Q,h Gᵀ,  ∂L/∂W_Q,h = u_h W_K,h G.

    G costs what F's own gradient costs, whatever the number of heads. When the heads are
    stacked (``_build_product``), ∂L/∂u = Q G and ∂L/∂Q = u ⊗ G are one pass each over Q's
    H·d² entries. The statements that evaluate M and G go to ``pr``; returned: the lines that
    write the blocks (each once, in place: ``out`` is not initialised), and the names of u's
    and Q's parameters when stacked (else None)."""
    if form is None:
        return None
    F, M, heads = form
    G = F.diff(M)
    if set(split_by_letters(G, TASK_LETTERS)) - {frozenset()}:
        return None                          # finite task sets: the generic gradient
    stacked, factors = _build_product(der, pr, M, heads)
    grad = pr._new(_sum(block_sums(pr, [("x", G)])[0]), "r")
    if stacked is not None:
        u, Q, H, _, names = stacked
        return [f"    G_{u}.reshape(({H},))[:] = np.dot({_flat(stacked)}, {grad}.ravel())",
                f"    np.multiply({grad}, P_{u}, G_{Q})"], names
    blocks = {b.letter.name: b for b in der.model.blocks()}
    target = lambda name: _target(blocks[name])  # noqa: E731
    lines = []
    for letters, u, K in factors:
        lines.append(f"    {target(letters[0])}[0, 0] = np.dot({K}.ravel(), {grad}.ravel())")
        if len(letters) == 2:
            lines.append(f"    np.multiply({grad}, {u}, {target(letters[1])})")
        else:
            lines += [f"    np.multiply({letters[2]} @ {grad}.T, {u}, {target(letters[1])})",
                      f"    np.multiply({letters[1]} @ {grad}, {u}, {target(letters[2])})"]
    return lines, None


def _flat(stacked: tuple) -> str:
    """The code of the stacked heads' Q parameter (``_stacked``) flattened to H × d²."""
    _, Q, H, param, _ = stacked
    return f"P_{Q}.reshape(({H}, {_SIZE[param.rows]} * {_SIZE[param.cols]}))"


def _stacked(model, heads: tuple, blocks: dict) -> tuple | None:
    """(u's parameter, Q's parameter (identifiers), H, Q's ``Param``, (u's, Q's parameter
    names)) when head h's letters (u_h, Q_h) are head h of two headed parameters, whole, for
    every h of H ≥ 2; else None."""
    if len(heads) < 2 or any(len(letters) != 2 for letters in heads):
        return None
    params = {p.name: p for p in model.params}
    names = []
    for column in zip(*heads):
        found = [blocks[name] for name in column]
        param = params[found[0].param]
        if param.heads != len(heads) or any(
                (b.param, b.head, b.row_part, b.col_part) != (param.name, h, None, None)
                for h, b in enumerate(found)):
            return None
        names.append(param)
    return (_ident(names[0].name), _ident(names[1].name), len(heads), names[1],
            (names[0].name, names[1].name))


def _observe_fn(conserved: int, args: str) -> list[str]:
    """``observe(rows, …)``: the loss and the conserved quantities of each row of θ in one
    loop (compiled with the kernels, so recording a trajectory costs no Python per row);
    ``grad_rows(rows, …)``: the gradient at each row (an ensemble's drift in one call)."""
    call = args.replace("theta, ", "rows[i], ", 1)
    rows = args.replace("theta", "rows", 1)
    return [f"def observe({rows}):",
            f"    out = np.empty((rows.shape[0], {1 + conserved}))",
            "    for i in range(rows.shape[0]):",
            f"        out[i, 0] = loss({call})",
            f"        out[i, 1:] = conserved({call})",
            "    return out", "",
            f"def grad_rows({rows}):",
            "    out = np.empty_like(rows)",
            "    for i in range(rows.shape[0]):",
            f"        out[i] = grad({call})",
            "    return out", ""]


def _lowered(model) -> bool:
    """Whether a model is small enough for ``loops.lower`` (its kernels as scalar loops)."""
    return max(model.sizes().values()) <= loops.SMALL


def _trajectories(der: Derivation, source: str, n_coeffs: int) -> str:
    """The fixed-step and adaptive loops (``loops.fixed_step_source``, ``loops.adaptive_source``:
    ``integrate``'s compiled DOP853), emitted into every generated module
    (not passed the kernels as arguments) so that Numba caches it on disk with the kernels it
    calls. With a model small enough for ``loops.lower``, ``fixed_step`` calls the loop
    kernels (Numba) and ``fixed_step_arrays`` the array ones (NumPy: what runs until the
    Numba kernels are compiled)."""
    conserved, model = len(der.conserved), der.model
    helpers = {"_eigdiag": eigdiag}
    lowered = None
    if _lowered(model):
        lowered = loops.lower(source, _stand_ins(model, source, n_coeffs, helpers), helpers)
    if lowered is None:
        return (loops.fixed_step_source("fixed_step", conserved, RUNAWAY, loops=False)
                + "\n" + loops.adaptive_source("adaptive", loops=False))
    code, slots, side = lowered
    return (code + loops.fixed_step_source("fixed_step", conserved, RUNAWAY, True,
                                           (slots, side, side))
            + "\n" + loops.fixed_step_source("fixed_step_arrays", conserved, RUNAWAY, False)
            + "\n" + loops.adaptive_source("adaptive", True, (slots, side, side)))


def _stand_ins(model, source: str, n_coeffs: int, helpers: dict) -> dict:
    """Random arguments of the generated kernels at the model's sizes (what ``loops.lower``
    evaluates the statements on): θ, k, the data arrays, one task draw, and the constants the
    source's ``constants`` makes of them."""
    sizes = model.sizes()
    d, d_y = sizes["x"], sizes["y"]
    rng = np.random.default_rng(0)
    square = lambda: rng.standard_normal((d, d))  # noqa: E731
    args = {"theta": rng.standard_normal(sum(int(np.prod(s)) for s in model.shapes().values())),
            "k": rng.standard_normal(n_coeffs), "Lambda": square(), "Sigma_w": square(),
            "U": square(), "c": rng.standard_normal(d),
            "tasks": rng.standard_normal((1, d_y, d)), "task_weights": np.ones(1),
            "dims": np.array([d_y, sizes.get("r", 0)])}
    module = {"np": np, **helpers}
    exec(source, module)
    args["consts"] = module["constants"](*(args[n] for n in ("k", "Lambda", "Sigma_w", "U", "c")))
    return args


def _size_code(param) -> str:
    return " * ".join(_shape_code(param)[1:-1].split(", "))


_COMPILED: dict = {}
WAIT_EVALUATIONS = 20_000   # a fixed-step loop this long waits for the Numba kernels


def _key(source: str, base: str | None = None) -> str:
    """The kernel cache's key of ``source`` (run with the kernels of ``base``: ``_compile``)."""
    return _digest(source if base is None else f"{base}\n# with the kernels above\n{source}")


def _compile(source: str, backend: str, base: str | None = None) -> dict:
    """The generated functions for ``backend``, compiled once per process from ``source`` (held
    in memory, never read back from disk). Numba's machine code is cached in the private
    kernels folder (``kernelcache.py``) for every later process. With ``base`` (a flow's
    source: ``Extension``), the functions of ``source`` have the compiled functions of
    ``base`` among their globals (the same objects: compiled once for both) and are keyed by
    both sources."""
    digest = _key(source, base)
    if (digest, backend) not in _COMPILED:
        module = types.ModuleType(f"icldyn_kernel_{digest[:16]}_{backend}")
        sys.modules[module.__name__] = module       # Numba rebuilds cached code by module name
        namespace = module.__dict__
        shared = {} if base is None else _compile(base, backend)
        namespace.update(shared)
        namespace["_eigdiag"] = eigdiag if backend == "numpy" else _eigdiag_numba()
        exec(compile(source, f"<icldyn-generated-{digest[:8]}>", "exec"), namespace)
        clash = sorted(n for n, f in shared.items() if namespace[n] is not f)
        if clash:
            raise InputError("extension", f"its source defines {', '.join(clash)}, the flow's "
                             "own kernels; rename them")
        fns = {n: f for n, f in namespace.items() if isinstance(f, types.FunctionType)
               and n[0] != "_" and n not in shared}
        if backend == "numba":
            from .kernelcache import njit_cached    # imports Numba
            fns = {n: njit_cached(f, digest) for n, f in fns.items()}
            namespace.update(fns)                   # kernels call each other compiled
        _COMPILED[digest, backend] = fns
    return _COMPILED[digest, backend]


def warmup_child() -> None:
    """The entry of ``warmup``'s child process: compile the kernels of the source its parent
    sends, for the parent's argument types, into the kernel cache; tell the parent they are
    ready (``warmup.done``); then compile the kernels of the flow's extensions (``Extension``).

    Examples
    --------
    >>> import io, pickle
    >>> from unittest import mock
    >>> import numpy as np
    >>> from icldyn.numerics.compiled import warmup
    >>> from icldyn.numerics.compiled.codegen import _digest, warmup_child
    >>> source = "def fixed_step(x):\\n    return 2.0 * x\\n"
    >>> extra = "def twice(x):\\n    return 2.0 * fixed_step(x)\\n"        # calls the flow's
    >>> message = pickle.dumps((source, {"fixed_step": [(np.ones(2),)]},    # what the parent sends
    ...                         [(extra, {"twice": [(np.ones(2),)]})]))
    >>> with mock.patch("sys.stdin", io.TextIOWrapper(io.BytesIO(message))), \\
    ...         mock.patch.object(warmup, "done") as done:                 # (not our stdout)
    ...     warmup_child()
    >>> warmup.cached(_digest(source)), done.called   # (_digest: the cache key) code cached
    (True, True)
    """
    source, examples, extensions = warmup.receive()
    warmup.compile_all(_compile(source, "numba"), examples)
    warmup.done()
    for extra, extra_examples in extensions:
        warmup.compile_all(_compile(extra, "numba", source), extra_examples)


@dataclass(frozen=True)
class Extension:
    """Kernels compiled with a flow's generated source: plain (Numba-compatible) functions that
    call the flow's kernels by name (``grad``, ``grad_rows``, ``loss``, …) and are compiled in
    a module whose globals are those kernels, so that the flow's kernels are compiled once for
    both (and cached with them). ``CompiledFlow.extension`` returns them; a flow given them
    at ``compile_flow(…, extensions=…)`` has its warm-up child compile them too, after its own
    kernels (``warmup.py``).

    Parameters
    ----------
    source : str
        Python source of the functions: a module (it imports what it uses, e.g. NumPy as
        ``np``) whose names are not the flow's kernels.
    examples : callable
        ``examples(flow, data)`` -> {kernel name: [argument tuple, …]}: arguments of the types
        the kernels are called with (``data``: the flow's data arguments, as
        ``CompiledFlow.extension`` returns them); the warm-up child compiles each kernel for
        them, in this order.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> from icldyn.numerics.compiled.codegen import Extension
    >>> source = "def descent(theta, lr, *data):\\n    return theta - lr * grad(theta, *data)\\n"
    >>> ext = Extension(source, lambda flow, data: {"descent": [(np.zeros(flow.size), 0.1, *data)]})
    >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
    ...                     backend="numpy", extensions=[ext])
    >>> kernels, data = flow.extension(ext)
    >>> theta = flow.pack({"V": 0.5, "Q": 0.5})
    >>> bool(np.allclose(kernels["descent"](theta, 0.1, *data), theta - 0.1 * flow.grad(theta)))
    True
    """

    source: str
    examples: Callable


@lru_cache(maxsize=None)
def _eigdiag_numba():
    from .kernelcache import njit_cached
    return njit_cached(eigdiag, _digest(inspect.getsource(eigdiag)))


def _digest(source: str) -> str:
    """The kernel cache's key of generated ``source``: with this module's name, which the
    cached machine code refers to (for ``_eigdiag``), so code cached before a move of this
    module is not loaded (it could not be) but compiled afresh, and with the source of
    ``eigdiag``, whose machine code Numba links into the kernels that call it, so a change of
    it compiles them afresh too."""
    return hashlib.sha256(f"{__name__}\n{_helper_source()}\n{source}".encode()).hexdigest()


@lru_cache(maxsize=None)
def _helper_source() -> str:
    return inspect.getsource(eigdiag)


class CompiledFlow:
    """Gradient flow of a derivation, compiled. θ is a flat float64 vector (``pack``/``unpack``).

    ``loss(θ)``, ``grad(θ)`` (= ∂L/∂θ, so dθ/dt = −grad), ``conserved(θ)`` (one value per
    conserved quantity), ``gd_change(θ, lr)`` (the derived exact change of each conserved
    quantity under one GD step).

    With the numba backend a cold start does not wait for Numba: until a child process has
    compiled the kernels into the kernel cache (``warmup.py``), the same generated code runs
    with NumPy; ``compiled()`` waits for the compiled kernels. The child then compiles the
    kernels of the flow's ``extensions`` (``Extension``).

    Parameters
    ----------
    der : Derivation
        The derivation to compile.
    backend : str
        "numba" or "numpy" (``BACKENDS``).
    extensions : sequence of Extension
        Kernels compiled with the flow's (``extension``): the warm-up child compiles them too.

    Raises
    ------
    InputError
        For a backend not in ``BACKENDS``, or ``extensions`` that are not ``Extension``s.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> flow.size, flow.shapes
    (5, {'V': (1, 1), 'Q': (2, 2)})
    >>> theta = flow.pack({"V": 0.1, "Q": 0.1})
    >>> round(flow.loss(theta), 6), flow.grad(theta).shape
    (0.737594, (5,))
    >>> flow.conserved(theta)                                 # ‖V‖² − ‖Q‖²_F
    array([-0.01])
    >>> step = theta - 0.1 * flow.grad(theta)                # one GD step at lr = 0.1 ...
    >>> bool(np.allclose(flow.conserved(step) - flow.conserved(theta), flow.gd_change(theta, 0.1)))
    True
    """

    def __init__(self, der: Derivation, backend: str = "numba", extensions=()):
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise InputError("backend", f"must be one of {BACKENDS}, got {backend!r}")
        self.extensions = tuple(extensions)
        if not all(isinstance(e, Extension) for e in self.extensions):
            raise InputError("extensions", "must be a sequence of codegen.Extension")
        self.der, self.backend = der, backend
        self.model, self.data = der.model, der.data
        polys = _generate(der)
        self.source = polys.source
        self._coeffs = polys.coeffs
        self.shapes = self.model.shapes()
        self.size = sum(int(np.prod(s)) for s in self.shapes.values())
        self._stacked = polys.stacked and tuple(self._slices()[name] for name in polys.stacked)
        self._child = self._warmup = None
        cold = backend == "numba" and warmup.cached(_key(polys.source)) is False
        self._kernels = _compile(polys.source, "numpy" if cold else backend)  # NumPy: until
        self._set_data(self.data)                                             # the child is done
        if cold or (backend == "numba" and any(
                examples and warmup.cached(_key(e.source, self.source), list(examples)[-1])
                is False for e, examples in self._extension_examples())):
            key = _key("".join(e.source for e in self.extensions), polys.source)
            self._warmup = warmup.start(key, self._message, __name__, self)
            self._child = self._warmup if cold else None

    @property
    def _fns(self) -> dict:
        """The kernels: NumPy ones while a child process compiles the Numba ones (``warmup``),
        then the Numba ones."""
        if self._child is not None and warmup.ready(self._child):
            self._child = None
            self._kernels = _compile(self.source, "numba")     # loaded from the kernel cache
        return self._kernels

    def compiled(self) -> "CompiledFlow":
        """Wait for the Numba kernels (compiled by a child process after a cold start).

        Returns
        -------
        CompiledFlow
            self, its kernels compiled (with the numba backend).
        """
        if self._child is not None:
            warmup.ready(self._child, wait=True)
        self._fns                                             # noqa: B018 — switches
        return self

    def extension(self, extension: Extension) -> tuple[dict, tuple]:
        """The kernels of ``extension`` compiled with this flow's (which they call), for the
        flow's backend, and the flow's data arguments, which the flow's kernels take after θ
        (with the numba backend: after the warm-up child, which compiles the flow's
        ``extensions``; an extension it did not compile is compiled here, on its first call).

        Parameters
        ----------
        extension : Extension
            The source of the kernels.

        Returns
        -------
        tuple
            ({kernel name: function (Numba dispatcher with the numba backend)}, (k, Λ, Σ_w, U,
            c, tasks, task weights, dims, constants)).

        Raises
        ------
        InputError
            When ``extension`` is not an ``Extension``, or defines one of the flow's kernels.

        Examples
        --------
        >>> import numpy as np
        >>> from icldyn.theory import ICLData, derive, models
        >>> from icldyn.numerics import compile_flow
        >>> from icldyn.numerics.compiled.codegen import Extension
        >>> flow = compile_flow(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))),
        ...                     backend="numpy")
        >>> ext = Extension("def half_loss(theta, *data):\\n    return loss(theta, *data) / 2\\n",
        ...                 lambda flow, data: {})
        >>> kernels, data = flow.extension(ext)
        >>> theta = flow.pack({"V": 0.5, "Q": 0.5})
        >>> bool(kernels["half_loss"](theta, *data) == flow.loss(theta) / 2)
        True
        >>> flow.extension(Extension("def loss(theta):\\n    return 0.0\\n", lambda f, d: {}))
        Traceback (most recent call last):
            ...
        icldyn.theory.errors.InputError: extension: its source defines loss, the flow's own ...
        """
        if not isinstance(extension, Extension):
            raise InputError("extension", f"must be a codegen.Extension, got {extension!r}")
        if self._warmup is not None:
            self._warmup.wait()
        self.compiled()
        return _compile(extension.source, self.backend, self.source), self._data_args()

    def _extension_examples(self) -> list:
        """[(extension, its examples)] of the flow's ``extensions``."""
        return [(e, e.examples(self, self._data_args())) for e in self.extensions]

    def _message(self) -> tuple:
        """What the warm-up child compiles (``warmup_child``): the source, the examples of its
        kernels, and of each extension its source and examples."""
        return (self.source, self._examples(),
                [(e.source, examples) for e, examples in self._extension_examples()])

    def _examples(self) -> dict:
        """The argument tuples of each kernel (the types Numba compiles for): real ones, and
        the complex ones of ``hvp`` (the curvature measures use it)."""
        theta, *extra = self._args(np.zeros(self.size))
        scalar = (theta, *extra)
        out = {name: [scalar] for name in loops.KERNELS}
        data, grad_args = self._complex_args(theta, theta, 1.0)
        out["constants"] = [(self.k, self.Lambda, self.Sigma_w, self.U, self.c),
                            (self.k, *data)]
        out["grad"].append(grad_args)
        out["observe"] = out["grad_rows"] = [(theta[None, :].copy(), *extra)]
        out["fixed_step"] = [(theta, 0.0, 1, 1, False, *extra)]
        rows, tables = np.zeros((1, self.size)), (np.zeros((16, 16)), np.zeros(13),
                                                  np.zeros(13), np.zeros((4, 16)))
        out["adaptive"] = [(theta, theta.copy(), np.zeros(4), np.zeros(1), rows,
                            np.zeros((1, 1 + len(self.der.conserved))), 0, 1e-10, 1e-12,
                            *tables, *extra)]       # at t = t_end: returns at once
        return out

    def _set_data(self, data) -> None:
        arrays = data.arrays()
        d = data.d
        self.Lambda, self.Sigma_w, self.U, self.c = (       # C layout: the compiled types
            np.ascontiguousarray(arrays[name]) for name in ("Lambda", "Sigma_w", "U", "c"))
        # the tasks (or cubature nodes) W is averaged over
        self.tasks, self.task_weights = task_arrays(self.der.task_values().get(W_TASK.name),
                                                    data)
        sizes = self.model.sizes()
        self.dims = np.array([data.d_y, sizes.get("r", 0)], dtype=np.int64)
        scalars = [float(data.N), float(data.noise), float(d), float(data.d_y),
                         float(sizes.get("r", 0))]
        values = dict(zip(COEFF_SYMBOLS, map(sp.Float, scalars)))
        self.k = np.array([float(sp.sympify(c).xreplace(values)) for c in self._coeffs],
                          dtype=float)
        self.consts = self._constants(self.Lambda, self.Sigma_w, self.U, self.c)
        if not all(np.all(np.isfinite(a)) for a in (self.k, self.tasks, *self.consts)):
            raise data_overflow(data, "the products of the data the loss needs")

    def _constants(self, *data) -> tuple:
        """Products of data letters only, computed once per data set (overflow is checked
        by ``_set_data``)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return tuple(np.ascontiguousarray(a)
                         for a in self._fns["constants"](self.k, *data))

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

        Examples
        --------
        >>> import numpy as np
        >>> from icldyn.theory import ICLData, derive, models
        >>> from icldyn.numerics import compile_flow
        >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
        >>> flow = compile_flow(der, backend="numpy")
        >>> flow.pack({"V": 0.1, "Q": [[1.0, 2.0], [3.0, 4.0]]})     # V (1 x 1), then Q row by row
        array([0.1, 1. , 2. , 3. , 4. ])
        >>> flow.unpack(flow.pack({"V": 0.1, "Q": 0.5}))["Q"]
        array([[0.5, 0. ],
               [0. , 0.5]])
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
        return {name: theta[..., part].reshape(theta.shape[:-1] + self.shapes[name])
                for name, part in self._slices().items()}

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
        kernel, args = self._fns[name], self._args(theta)
        if self._child is None and self.backend == "numba":
            return kernel(*args)                    # compiled: no floating-point warnings
        with np.errstate(over="ignore", invalid="ignore"):    # overflow: see ``_finite``
            return kernel(*args)

    def _finite(self, value, theta):
        """``value`` if finite. A NaN or ∞ from finite θ means float64 overflowed: the data's
        scale is blamed when θ scaled to entries of at most 1 overflows too, else θ."""
        if self._all_finite(value, theta):
            return value
        top = float(np.abs(theta).max())
        if top <= 1 or not np.all(np.isfinite(self._eval("grad", theta / top))):
            raise data_overflow(self.data, "the loss or its gradient")
        raise InputError("theta", f"|θ| up to {top:.3g} overflows float64 in the loss or its "
                         "gradient; rescale the parameters")

    def _all_finite(self, value, theta) -> bool:
        """Whether every entry of ``value`` (the loss, or the gradient at ``theta``) is finite,
        from the largest and smallest entry of each part (one pass each, no temporary and no
        floating-point warning, unlike a sum, which can overflow). With stacked heads
        (``_Polys.stacked``: ∂L/∂Q_h = u_h G) the gradient's Q block enters by its head of
        largest |u_h| alone: |u_h G_ij| ≤ |u_h* G_ij| and rounding is monotone, and a NaN in u
        or G reaches that head; so the check reads d² of Q's H·d² entries."""
        if np.ndim(value) == 0:
            return math.isfinite(value)
        parts = (value,)
        if self._stacked and np.shape(value) == (self.size,):
            u, Q = self._stacked
            coeffs = np.asarray(theta)[u]
            heads = value[Q].reshape(coeffs.size, -1)
            parts = (value[:Q.start], value[Q.stop:], heads[np.argmax(np.abs(coeffs))])
        return all(math.isfinite(part.max()) and math.isfinite(part.min())
                   for part in parts if part.size)

    def _slices(self) -> dict:
        """{parameter name: its slice of θ}."""
        out, pos = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            out[name], pos = slice(pos, pos + n), pos + n
        return out

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
        return self._fns["grad"](*self._complex_args(theta, v, h)[1]).imag / h

    def _complex_args(self, theta, v, h: float) -> tuple:
        """(complex data arrays, the ``grad`` kernel's arguments at θ + i h v): numba's @
        needs one dtype, so the data and its constants are complex too."""
        z = np.asarray(theta, dtype=float) + 1j * h * np.asarray(v, dtype=float)
        data = [a.astype(complex) for a in (self.Lambda, self.Sigma_w, self.U, self.c)]
        return data, (z, self.k, *data, self.tasks.astype(complex), self.task_weights,
                      self.dims, self._constants(*data))

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

    def kernel_rhs(self):
        """``rhs`` for an integrator's many calls: the compiled gradient kernel called with the
        data bound once, without ``rhs``'s argument checks (θ must be a float64 vector of
        ``size``); a non-finite value still raises ``grad``'s clear error.

        Returns
        -------
        callable
            ``rhs(t, θ)`` = −∇L(θ).
        """
        data = self._data_args()

        def rhs(t, theta):
            with np.errstate(over="ignore", invalid="ignore"):       # NumPy kernels
                value = self._fns["grad"](theta, *data)
            return -(value if self._all_finite(value, theta) else self.grad(theta))
        return rhs

    def kernel_adaptive(self):
        """The compiled adaptive loop of ``integrate`` (``loops.adaptive_source``: SciPy's
        DOP853 stepped, interpolated at the requested times and recorded in one Numba loop)
        with the data bound; None while the kernels are NumPy's (the numpy backend, or a cold
        start whose Numba kernels are still being compiled: ``integrate`` then uses SciPy).

        Returns
        -------
        callable or None
            ``loop(theta, f, state, t_eval, out, seen, budget, rtol, atol, table, e3, e5,
            dense)`` → (status, evaluations, point).
        """
        fns, data = self._fns, self._data_args()
        if self.backend == "numpy" or self._child is not None:
            return None
        kernel = fns["adaptive"]
        return lambda *args: kernel(*args, *data)

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
        return self._fns["conserved"](*self._args(theta))

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
        return self._over_rows("observe", rows)

    def grad_rows(self, rows) -> np.ndarray:
        """The gradient at each row of θ (R, P) in one compiled loop.

        Parameters
        ----------
        rows : array_like (R, size)
            Rows of flat θ.

        Returns
        -------
        ndarray (R, size)
        """
        return self._over_rows("grad_rows", rows)

    def _over_rows(self, kernel: str, rows) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=float)
        if rows.ndim != 2 or rows.shape[1] != self.size:
            raise InputError("rows", f"must have shape (R, {self.size}), got {rows.shape}")
        with np.errstate(over="ignore", invalid="ignore"):    # overflow: see ``_finite``
            out = self._fns[kernel](rows, *self._data_args())
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
        times, in one compiled loop that records θ, the loss and the conserved quantities
        every ``every`` steps (``loops.fixed_step_source``; at small d with the loop kernels
        of ``loops.lower``). It stops at the first step whose θ is not finite or exceeds
        ``RUNAWAY`` in magnitude.

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
            (recorded rows (R ≤ steps // every + 1, size), the loss and the conserved
            quantities at them (R, 1 + number of conserved quantities), steps done).
        """
        theta, *extra = self._args(theta0)
        if steps * (4 if rk4 else 1) > WAIT_EVALUATIONS:
            self.compiled()
        fns = self._fns
        arrays = self.backend == "numpy" or self._child is not None      # NumPy kernels
        kernel = fns["fixed_step_arrays" if arrays and "fixed_step_arrays" in fns
                     else "fixed_step"]
        with np.errstate(over="ignore", invalid="ignore"):    # overflow: see ``_finite``
            return kernel(theta, float(h), int(steps), int(every), bool(rk4), *extra)


def task_arrays(task_set, data) -> tuple[np.ndarray, np.ndarray]:
    """(tasks (P, d_y, d), weights (P,)) of a ``TaskSet``; empty for None.

    Parameters
    ----------
    task_set : TaskSet or None
        Exact task matrices and weights (``ICLData.numeric_task_set()``).
    data : ICLData
        Gives d and d_y.

    Returns
    -------
    tuple of numpy.ndarray
        (tasks, weights) as float64; shapes (0, d_y, d) and (0,) for None.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData
    >>> from icldyn.numerics.compiled.codegen import task_arrays
    >>> data = ICLData(d=2, N=4, Lambda=np.eye(2), tasks=np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
    >>> tasks, weights = task_arrays(data.numeric_task_set(), data)
    >>> tasks.shape, weights                                  # two tasks, drawn uniformly
    ((2, 1, 2), array([0.5, 0.5]))
    >>> [a.shape for a in task_arrays(None, data)]           # Gaussian tasks: no set
    [(0, 1, 2), (0,)]
    """
    task_set = task_set or ()
    tasks = np.array([m.tolist() for m in task_set], dtype=float).reshape(
        len(task_set), data.d_y, data.d)
    return tasks, np.array(getattr(task_set, "weights", ()), dtype=float)


def compile_flow(der: Derivation, backend: str = "numba", extensions=()) -> CompiledFlow:
    """Compile a derivation's loss, gradient and conserved quantities for ``backend``.

    Parameters
    ----------
    der : Derivation
        From ``icldyn.theory.derive``.
    backend : str
        "numba" (compiled once, cached on disk) or "numpy".
    extensions : sequence of Extension
        Kernels to compile with the flow's (``CompiledFlow.extension``), e.g. the compiled SME
        loop (``noise.smeloop.SME``): with the numba backend its warm-up child compiles them.

    Returns
    -------
    CompiledFlow
        ``pack``/``unpack``, ``loss``, ``grad``, ``conserved``, ``gd_change``.

    Raises
    ------
    InputError
        When ``der`` is not a Derivation, ``backend`` not one of ``BACKENDS`` or
        ``extensions`` not ``Extension``s.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.numerics import compile_flow
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> flow = compile_flow(der, backend="numpy")
    >>> theta = flow.pack({"V": 0.1, "Q": 0.1})      # Q = 0.1 I
    >>> theta
    array([0.1, 0.1, 0. , 0. , 0.1])
    >>> round(float(flow.loss(theta)), 6)
    0.737594
    """
    if not isinstance(der, Derivation):
        raise InputError("der", f"must be a Derivation from icldyn.theory.derive, got {der!r}")
    return CompiledFlow(der, backend, extensions)
