"""Parameterizations θ → (W_PV, W_KQ) of one linear self-attention layer (MATH.md §2).

The layer f(Z) = Z + W_PV (Z Zᵀ/N) W_KQ Z predicts ŷ, the y-rows of the query column:

    ŷ = (1/N)[P₁(S_xx + x_q x_qᵀ)Q₁x_q + P₁S_xyQ₂x_q + P₂S_yxQ₁x_q + P₂S_yyQ₂x_q]

where [P₁ P₂] are the y-rows of W_PV and [Q₁; Q₂] the x-columns of W_KQ. A model states two
things: its prediction as a sum of ``VecTerm``s (what the expectation engine consumes), and where
its parameters sit in W_PV and W_KQ (what the simulator of the actual layer consumes).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .data import N_SYM, W_TASK, eps, x
from .errors import InputError
from .gaussian import QUERY, RandVec, Segment
from .words import Mat


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
    """A parameter block: ``rows``/``cols`` are spaces ("x": d, "y": d_y)."""

    name: str
    rows: str
    cols: str

    @property
    def letter(self) -> Mat:
        return Mat(self.name, rows=self.rows, cols=self.cols)

    def shape(self, d: int, d_y: int) -> tuple:
        size = {"x": d, "y": d_y}
        return (size[self.rows], size[self.cols])


def sample_sum(label: str, vec_word: tuple, vec_var, seg_word: tuple, end: RandVec, coeff):
    """coeff · Σ_label (vec_word · v_label)(x_labelᵀ seg_word end): a column of S_·x · seg."""
    return VecTerm(coeff, (label,), vec_word, vec_var(label),
                   (Segment(x(label), seg_word, end),))


def s_yx(label: str, left: tuple, right: tuple, end: RandVec, coeff) -> list:
    """coeff · left · S_yx · right · end with S_yx = Σ_i (W x_i + ε_i) x_iᵀ."""
    return [sample_sum(label, left + (W_TASK,), x, right, end, coeff),
            sample_sum(label, left, eps, right, end, coeff)]


class Model:
    """Base class: ``params`` (ordered ``Param``s), ``prediction()``, ``embedding``."""

    name = "model"
    params: tuple = ()

    def __init__(self, d: int, d_y: int = 1):
        if not isinstance(d, int) or d < 1:
            raise InputError("d", f"must be a positive integer, got {d!r}")
        if not isinstance(d_y, int) or d_y < 1:
            raise InputError("d_y", f"must be a positive integer, got {d_y!r}")
        self.d, self.d_y = d, d_y

    def shapes(self) -> dict:
        return {p.name: p.shape(self.d, self.d_y) for p in self.params}

    def prediction(self) -> list[VecTerm]:
        raise NotImplementedError

    # where each parameter sits in the layer: {"W_PV": [(row block, col block, name)], ...}
    embedding: dict = {}

    def key(self) -> tuple:
        """What the structural derivation depends on (dimensions stay symbolic)."""
        return (self.name,)

    def scaling_symmetries(self) -> list[dict]:
        """Block rescalings θ_b → α^{k_b} θ_b that leave ŷ unchanged, as {name: k_b}."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, d_y={self.d_y})"


class Merged(Model):
    """The seed paper's reduced model: ŷ = V S_yx Q x_q / N (V = P₂, Q = Q₁; u = V when d_y = 1).

    Parameters: V (d_y × d_y), Q (d × d)."""

    name = "Merged"
    params = (Param("V", "y", "y"), Param("Q", "x", "x"))
    embedding = {"W_PV": [("y", "y", "V")], "W_KQ": [("x", "x", "Q")]}

    def prediction(self) -> list[VecTerm]:
        V, Q = (p.letter for p in self.params)
        return s_yx("i", (V,), (Q,), x(QUERY), 1 / N_SYM)

    def scaling_symmetries(self) -> list[dict]:
        return [{"V": 1, "Q": -1}]


MODELS = {cls.name: cls for cls in (Merged,)}


def target() -> list[VecTerm]:
    """The query label y_q = W x_q + ε_q."""
    return [VecTerm(sp.Integer(1), (), (W_TASK,), x(QUERY)),
            VecTerm(sp.Integer(1), (), (), eps(QUERY))]
