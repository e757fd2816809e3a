"""Vector terms: ŷ and the token streams of attention layers as sums of random vector pieces.

A ``VecTerm`` is coeff · Σ_{labels} (word · vec) · Π segments: a matrix word applied to a
Gaussian vector, times scalar bilinear forms (``Segment``) between Gaussian vectors, summed over
context labels. The expectation engine (``gaussian``) consumes products of two of them.

Tokens z = (x; y) are kept as streams, {"x": [VecTerm], "y": [VecTerm]}. An attention layer
with heads h updates every token t,

    z_t ← z_t + (1/N) Σ_h Σ_{j ∈ keys} W_PV,h z_j (z_jᵀ W_KQ,h z_t),

where the keys are the N context tokens and, when the query is among the keys, the query
token. ``attend`` applies this to the generic context token (free label ``TOKEN``) and to the
query; inner sums of each factor are renamed apart, so every label is summed exactly once. This
module knows no model: a layer is given by its blocks, per head {"W_PV" | "W_KQ": [(row part,
column part, word of letters)]}.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy as sp

from .data import N_SYM, W_TASK, eps, x
from .gaussian import QUERY, RandVec, Segment
from .words import transpose_word

TOKEN = "t"          # the free label of the generic context token's stream


@dataclass(frozen=True)
class VecTerm:
    """coeff · Σ_{labels} (word · vec) · Π segments: one additive piece of a vector-valued
    random polynomial (``word`` is a tuple of letters, ``vec`` the random vector it acts on)."""

    coeff: sp.Expr
    labels: tuple
    word: tuple
    vec: RandVec
    segments: tuple = ()


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


def negate(terms: list[VecTerm]) -> list[VecTerm]:
    """−Σ terms."""
    return [VecTerm(-t.coeff, t.labels, t.word, t.vec, t.segments) for t in terms]


# --- token streams ----------------------------------------------------------------------------

def input_tokens() -> tuple[dict, dict]:
    """(generic context token z_t = (x_t; W x_t + ε_t), query token (x_q; 0)) as streams."""
    context = {"x": [VecTerm(sp.Integer(1), (), w, v) for w, v in token_part("x", TOKEN)],
               "y": [VecTerm(sp.Integer(1), (), w, v) for w, v in token_part("y", TOKEN)]}
    query = {"x": [VecTerm(sp.Integer(1), (), (), x(QUERY))], "y": []}
    return context, query


class _Fresh:
    """Fresh context-label names c1, c2, … (never equal to ``TOKEN`` or to each other)."""

    def __init__(self):
        self.count = itertools.count(1)

    def __call__(self) -> str:
        return f"c{next(self.count)}"


def _rename(term: VecTerm, mapping: dict) -> VecTerm:
    def vec(v: RandVec) -> RandVec:
        return RandVec(v.var, mapping.get(v.sample, v.sample))

    return VecTerm(term.coeff, tuple(mapping.get(l, l) for l in term.labels), term.word,
                   vec(term.vec), tuple(Segment(vec(s.start), s.letters, vec(s.end))
                                        for s in term.segments))


def _apart(term: VecTerm, fresh: _Fresh, token: str | None = None) -> VecTerm:
    """The term with its summed labels renamed to fresh ones (and the free label ``TOKEN``
    renamed ``token`` when given)."""
    mapping = {l: fresh() for l in term.labels}
    if token is not None:
        mapping[TOKEN] = token
    return _rename(term, mapping)


def _attend_token(heads: list, keys: list, own: dict, coeff, fresh: _Fresh) -> dict:
    """One token's update Σ_h Σ_{keys} W_PV,h z_j (z_jᵀ W_KQ,h z_own) · coeff. ``keys``: list of
    (stream, label or None) — a context key is instantiated at a new summed label."""
    out = {part: list(terms) for part, terms in own.items()}
    for head in heads:
        for (a, b, w_pv), (b2, c, w_kq) in itertools.product(head["W_PV"], head["W_KQ"]):
            for stream, summed in keys:
                label = fresh() if summed else None
                for C, A, B in itertools.product(stream[b], stream[b2], own[c]):
                    C, A, B = _apart(C, fresh, label), _apart(A, fresh, label), _apart(B, fresh)
                    link = Segment(A.vec, transpose_word(A.word) + w_kq + B.word, B.vec)
                    out[a].append(VecTerm(
                        coeff * C.coeff * A.coeff * B.coeff,
                        ((label,) if summed else ()) + C.labels + A.labels + B.labels,
                        w_pv + C.word, C.vec, C.segments + A.segments + B.segments + (link,)))
    return out


def attend(heads: list, context: dict, query: dict, query_in_keys: bool = True,
           update_context: bool = True) -> tuple[dict | None, dict]:
    """Streams after one attention layer given by ``heads`` (per head {"W_PV" | "W_KQ":
    [(row part, column part, word)]}) with the 1/N normalisation; the context stream is skipped
    (None) when ``update_context`` is False (the last layer: only the query is read out)."""
    fresh = _Fresh()
    keys = [(context, True)] + ([(query, False)] if query_in_keys else [])
    coeff = 1 / N_SYM
    new_query = _attend_token(heads, keys, query, coeff, fresh)
    new_context = _attend_token(heads, keys, context, coeff, fresh) if update_context else None
    return new_context, new_query
