"""Parameterizations θ → (W_PV, W_KQ) of linear self-attention (MATH.md §2).

One head computes f(Z) = Z + W_PV (Z Zᵀ/N) W_KQ Z and predicts ŷ, the y-rows of the query
column:

    ŷ = (1/N)[P₁(S_xx + x_q x_qᵀ)Q₁x_q + P₁S_xyQ₂x_q + P₂S_yxQ₁x_q + P₂S_yyQ₂x_q]

where [P₁ P₂] are the y-rows of W_PV and [Q₁; Q₂] the x-columns of W_KQ; several heads add up.
A model states three things:

* ``params``: its parameter arrays (``Param``: spaces of rows and columns, optional heads);
* ``blocks``: the matrix letters the loss sees, each a (head, row part, column part) slice of a
  parameter; entries of a parameter outside every block are *inert* (no gradient);
* ``prediction()``: ŷ as a sum of ``VecTerm``s (what the expectation engine consumes) and
  ``layer()``: per head, which products of letters fill which blocks of W_PV and W_KQ (what the
  simulator of the actual layer consumes).

Spaces: "x" (d), "y" (d_y), "r" (key/query rank), "z" = x ⊕ y (token space, D = d + d_y).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import sympy as sp

from .data import N_SYM, W_TASK, eps, x
from .errors import check_int
from .gaussian import QUERY, RandVec, Segment
from .words import Mat, transpose_word


@dataclass(frozen=True)
class VecTerm:
    """coeff · Σ_{labels} (word · vec) · Π segments: one additive piece of a vector-valued
    random polynomial (``word`` is a tuple of letters, ``vec`` the random vector it acts on)."""

    coeff: sp.Expr
    labels: tuple
    word: tuple
    vec: RandVec
    segments: tuple = ()


@dataclass(frozen=True)
class Param:
    """A parameter array of shape (heads, rows, cols), or (rows, cols) when heads is None."""

    name: str
    rows: str
    cols: str
    heads: int | None = None

    def shape(self, sizes: dict) -> tuple:
        core = (sizes[self.rows], sizes[self.cols])
        return core if self.heads is None else (self.heads,) + core


@dataclass(frozen=True)
class Block:
    """Letter ``letter`` = param[head][row part, col part] (parts: None for all, or "x"/"y" of
    a "z" space)."""

    letter: Mat
    param: str
    head: int | None = None
    row_part: str | None = None
    col_part: str | None = None

    def index(self, sizes: dict) -> tuple:
        """The (head,) row, column slices of this block inside its parameter array."""
        parts = (_part(self.row_part, sizes), _part(self.col_part, sizes))
        return parts if self.head is None else (self.head,) + parts


def _part(part: str | None, sizes: dict) -> slice:
    if part is None:
        return slice(None)
    return slice(0, sizes["x"]) if part == "x" else slice(sizes["x"], None)


# --- building ŷ -----------------------------------------------------------------------------

def token_part(part: str, label: str) -> list[tuple]:
    """The x- or y-part of a context token as (word, vector) pieces: x_i, or y_i = W x_i + ε_i."""
    if part == "x":
        return [((), x(label))]
    return [((W_TASK,), x(label)), ((), eps(label))]


def sandwich(left: tuple, a: str, b: str, right: tuple, label: str, coeff) -> list[VecTerm]:
    """coeff · left · S_ab · right · x_q with S_ab = Σ_i a_i b_iᵀ (a, b ∈ {"x", "y"})."""
    return [VecTerm(coeff, (label,), left + wa, va,
                    (Segment(vb, transpose_word(wb) + right, x(QUERY)),))
            for wa, va in token_part(a, label) for wb, vb in token_part(b, label)]


def target() -> list[VecTerm]:
    """The query label y_q = W x_q + ε_q."""
    return [VecTerm(sp.Integer(1), (), (W_TASK,), x(QUERY)),
            VecTerm(sp.Integer(1), (), (), eps(QUERY))]


# --- models -----------------------------------------------------------------------------------

class Model:
    """Base class: subclasses define ``params``, ``blocks``, ``prediction``, ``layer``."""

    name = "model"

    def __init__(self, d: int, d_y: int = 1):
        self.d, self.d_y = check_int("d", d), check_int("d_y", d_y)

    params: tuple = ()

    def sizes(self) -> dict:
        return {"x": self.d, "y": self.d_y, "z": self.d + self.d_y}

    def shapes(self) -> dict:
        return {p.name: p.shape(self.sizes()) for p in self.params}

    def blocks(self) -> list[Block]:
        raise NotImplementedError

    def letters(self) -> dict:
        return {b.letter.name: b.letter for b in self.blocks()}

    def prediction(self) -> list[VecTerm]:
        raise NotImplementedError

    def layer(self) -> list[dict]:
        """Per head: {"W_PV" | "W_KQ": [(row space, col space, word of letters)]}."""
        raise NotImplementedError

    def key(self) -> tuple:
        """What the structural derivation depends on (dimensions stay symbolic)."""
        return (self.name,)

    def with_outputs(self, d_y: int) -> "Model":
        """The same parameterization with d_y outputs."""
        out = copy.copy(self)
        out.d_y = check_int("d_y", d_y)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, d_y={self.d_y})"


def _heads(H) -> int:
    return check_int("heads", H)


class MultiHead(Model):
    """H merged heads: ŷ = Σ_h V_h S_yx Q_h x_q / N; params V (H, d_y, d_y), Q (H, d, d)."""

    name = "MultiHead"

    def __init__(self, d: int, heads: int = 1, d_y: int = 1):
        super().__init__(d, d_y)
        self.heads = _heads(heads)
        self.params = (Param("V", "y", "y", self.heads), Param("Q", "x", "x", self.heads))

    def _letters(self, h):
        return Mat(f"V{h}", rows="y", cols="y"), Mat(f"Q{h}", rows="x", cols="x")

    def blocks(self) -> list[Block]:
        return [Block(letter, p.name, h) for h in range(self.heads)
                for letter, p in zip(self._letters(h), self.params)]

    def prediction(self) -> list[VecTerm]:
        out = []
        for h in range(self.heads):
            V, Q = self._letters(h)
            out += sandwich((V,), "y", "x", (Q,), "i", 1 / N_SYM)
        return out

    def layer(self) -> list[dict]:
        return [{"W_PV": [("y", "y", (V,))], "W_KQ": [("x", "x", (Q,))]}
                for V, Q in map(self._letters, range(self.heads))]

    def key(self) -> tuple:
        return (self.name, self.heads)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, heads={self.heads}, d_y={self.d_y})"


class Merged(MultiHead):
    """The seed paper's reduced model: ŷ = V S_yx Q x_q / N (V = P₂, Q = Q₁; u = V when d_y = 1).

    Parameters: V (d_y × d_y), Q (d × d)."""

    name = "Merged"

    def __init__(self, d: int, d_y: int = 1):
        super().__init__(d, heads=1, d_y=d_y)
        self.params = (Param("V", "y", "y"), Param("Q", "x", "x"))

    def _letters(self, h):
        return Mat("V", rows="y", cols="y"), Mat("Q", rows="x", cols="x")

    def blocks(self) -> list[Block]:
        return [Block(letter, letter.name) for letter in self._letters(0)]

    def key(self) -> tuple:
        return (self.name,)

    def __repr__(self) -> str:
        return Model.__repr__(self)


class SeparateKQ(MultiHead):
    """H heads with factorised key-query matrices Q_h = W_K,hᵀ W_Q,h of rank ≤ r:
    ŷ = Σ_h V_h S_yx W_K,hᵀ W_Q,h x_q / N; params V (H, d_y, d_y), W_K, W_Q (H, r, d)."""

    name = "SeparateKQ"

    def __init__(self, d: int, heads: int = 1, rank: int = 1, d_y: int = 1):
        super().__init__(d, heads=heads, d_y=d_y)
        self.rank = check_int("rank", rank)
        self.params = (Param("V", "y", "y", self.heads), Param("W_K", "r", "x", self.heads),
                       Param("W_Q", "r", "x", self.heads))

    def sizes(self) -> dict:
        return {**super().sizes(), "r": self.rank}

    def _factors(self, h):
        return (Mat(f"V{h}", rows="y", cols="y"), Mat(f"WK{h}", rows="r", cols="x"),
                Mat(f"WQ{h}", rows="r", cols="x"))

    def blocks(self) -> list[Block]:
        return [Block(letter, p.name, h) for h in range(self.heads)
                for letter, p in zip(self._factors(h), self.params)]

    def prediction(self) -> list[VecTerm]:
        out = []
        for h in range(self.heads):
            V, K, Q = self._factors(h)
            out += sandwich((V,), "y", "x", (K.transpose(), Q), "i", 1 / N_SYM)
        return out

    def layer(self) -> list[dict]:
        return [{"W_PV": [("y", "y", (V,))], "W_KQ": [("x", "x", (K.transpose(), Q))]}
                for V, K, Q in map(self._factors, range(self.heads))]

    def key(self) -> tuple:
        return (self.name, self.heads)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(d={self.d}, heads={self.heads}, rank={self.rank}, "
                f"d_y={self.d_y})")


class FullLSA(Model):
    """All entries of W_PV and W_KQ ((d + d_y) × (d + d_y) each); the loss sees the blocks
    P₁ = W_PV[y, x], P₂ = W_PV[y, y], Q₁ = W_KQ[x, x], Q₂ = W_KQ[y, x]; the rest is inert."""

    name = "FullLSA"
    params = (Param("W_PV", "z", "z"), Param("W_KQ", "z", "z"))
    P1, P2 = Mat("P1", rows="y", cols="x"), Mat("P2", rows="y", cols="y")
    Q1, Q2 = Mat("Q1", rows="x", cols="x"), Mat("Q2", rows="y", cols="x")

    def blocks(self) -> list[Block]:
        return [Block(self.P1, "W_PV", None, "y", "x"), Block(self.P2, "W_PV", None, "y", "y"),
                Block(self.Q1, "W_KQ", None, "x", "x"), Block(self.Q2, "W_KQ", None, "y", "x")]

    def prediction(self) -> list[VecTerm]:
        P1, P2, Q1, Q2 = self.P1, self.P2, self.Q1, self.Q2
        c = 1 / N_SYM
        query = VecTerm(c, (), (P1,), x(QUERY), (Segment(x(QUERY), (Q1,), x(QUERY)),))
        return ([query] + sandwich((P1,), "x", "x", (Q1,), "i", c)
                + sandwich((P1,), "x", "y", (Q2,), "i", c)
                + sandwich((P2,), "y", "x", (Q1,), "i", c)
                + sandwich((P2,), "y", "y", (Q2,), "i", c))

    def layer(self) -> list[dict]:
        return [{"W_PV": [("y", "x", (self.P1,)), ("y", "y", (self.P2,))],
                 "W_KQ": [("x", "x", (self.Q1,)), ("y", "x", (self.Q2,))]}]


MODELS = {cls.name: cls for cls in (Merged, MultiHead, SeparateKQ, FullLSA)}
