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

The building blocks every derivation and analysis shares live here too, below ``derive``: the
residual ŷ − y_q (``residual``), the inner product ⟨a, b⟩ of two vector terms as one monomial
of the expectation engine (``inner_monomial``), the directional derivative of a sum of terms
when one letter moves (``vary``), and the learning-rate symbol η of the GD map (``ETA``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy as sp

from .data import N_SYM, W_TASK, eps, x
from .gaussian import QUERY, Monomial, RandVec, Segment
from .words import Mat, transpose_word

__all__ = ["VecTerm", "token_part", "sandwich", "target", "negate", "input_tokens", "attend",
           "residual", "inner_monomial", "vary"]

TOKEN = "t"          # the free label of the generic context token's stream
ETA = sp.Symbol("eta", positive=True)       # the learning rate of the GD map θ ← θ − η ∇L


@dataclass(frozen=True)
class VecTerm:
    """coeff · Σ_{labels} (word · vec) · Π segments: one additive piece of a vector-valued
    random polynomial (``word`` is a tuple of letters, ``vec`` the random vector it acts on).

    Attributes
    ----------
    coeff : sympy.Expr
        Scalar coefficient (e.g. 1/N per attention layer).
    labels : tuple of str
        The summation labels (context-token indices) the term sums over.
    word : tuple
        Matrix letters applied to ``vec``, left to right.
    vec : RandVec
        The random vector (x_i, ε_i or x_q) the word acts on.
    segments : tuple of Segment
        Scalar factors (a vector, a word, a vector) multiplying the term.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.data import x
    >>> from icldyn.theory.terms import VecTerm
    >>> from icldyn.theory.words import Mat
    >>> t = VecTerm(1 / sp.Symbol("N"), ("i",), (Mat("Q"),), x("i"))          # (1/N) Σ_i Q x_i
    >>> t.coeff, t.labels, t.vec.sample
    (1/N, ('i',), 'i')
    """

    coeff: sp.Expr
    labels: tuple
    word: tuple
    vec: RandVec
    segments: tuple = ()


def token_part(part: str, label: str) -> list[tuple]:
    """The x- or y-part of a context token as (word, vector) pieces: x_i, or y_i = W x_i + ε_i.

    Parameters
    ----------
    part : {"x", "y"}
        Which part of the token.
    label : str
        The token's summation label i.

    Returns
    -------
    list of tuple
        (word, random vector) pieces summing to the part.

    Examples
    --------
    >>> from icldyn.theory.terms import token_part
    >>> [(word, vec.var) for word, vec in token_part("y", "i")]          # y_i = W x_i + ε_i
    [((Mat(name='W', T=False, symmetric=False, rows='y', cols='x'),), 'x'), ((), 'eps')]
    >>> token_part("x", "i")
    [((), RandVec(var='x', sample='i'))]
    """
    if part == "x":
        return [((), x(label))]
    return [((W_TASK,), x(label)), ((), eps(label))]


def sandwich(left: tuple, a: str, b: str, right: tuple, label: str, coeff) -> list[VecTerm]:
    """coeff · left · S_ab · right · x_q with S_ab = Σ_i a_i b_iᵀ (a, b ∈ {"x", "y"}).

    Parameters
    ----------
    left, right : tuple
        Words of matrix letters on either side of S_ab.
    a, b : {"x", "y"}
        Token parts of S_ab's left and right factors.
    label : str
        The summation label i of the context sum.
    coeff : sympy.Expr
        Overall coefficient (1/N for one attention layer).

    Returns
    -------
    list of VecTerm

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.terms import sandwich
    >>> from icldyn.theory.words import Mat
    >>> V, Q = Mat("V", rows="y", cols="y"), Mat("Q")
    >>> pieces = sandwich((V,), "y", "x", (Q,), "i", 1 / sp.Symbol("N"))    # V S_yx Q x_q / N
    >>> [([m.name for m in p.word], p.vec.var) for p in pieces]            # V W x_i and V ε_i
    [(['V', 'W'], 'x'), (['V'], 'eps')]
    """
    return [VecTerm(coeff, (label,), left + wa, va,
                    (Segment(vb, transpose_word(wb) + right, x(QUERY)),))
            for wa, va in token_part(a, label) for wb, vb in token_part(b, label)]


def target() -> list[VecTerm]:
    """The query label y_q = W x_q + ε_q.

    Returns
    -------
    list of VecTerm
        W x_q and ε_q.

    Examples
    --------
    >>> from icldyn.theory.terms import target
    >>> [([m.name for m in t.word], t.vec) for t in target()]
    [(['W'], RandVec(var='x', sample='q')), ([], RandVec(var='eps', sample='q'))]
    """
    return [VecTerm(sp.Integer(1), (), (W_TASK,), x(QUERY)),
            VecTerm(sp.Integer(1), (), (), eps(QUERY))]


def negate(terms: list[VecTerm]) -> list[VecTerm]:
    """−Σ terms.

    Parameters
    ----------
    terms : list of VecTerm
        A vector polynomial Σ terms.

    Returns
    -------
    list of VecTerm

    Examples
    --------
    >>> from icldyn.theory.terms import negate, target
    >>> [t.coeff for t in negate(target())]
    [-1, -1]
    """
    return [VecTerm(-t.coeff, t.labels, t.word, t.vec, t.segments) for t in terms]


# --- token streams ----------------------------------------------------------------------------

def input_tokens() -> tuple[dict, dict]:
    """(generic context token z_t = (x_t; W x_t + ε_t), query token (x_q; 0)) as streams.

    Returns
    -------
    tuple of dict
        (context stream, query stream): part ("x" | "y") → list of VecTerm.

    Examples
    --------
    >>> from icldyn.theory.terms import input_tokens
    >>> context, query = input_tokens()
    >>> [(part, len(terms)) for part, terms in context.items()]   # x_t; y_t = W x_t + ε_t
    [('x', 1), ('y', 2)]
    >>> [(part, len(terms)) for part, terms in query.items()]     # x_q; its label is masked (0)
    [('x', 1), ('y', 0)]
    """
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
    (None) when ``update_context`` is False (the last layer: only the query is read out).

    Parameters
    ----------
    heads : list of dict
        Per head {"W_PV" | "W_KQ": [(row part, column part, word)]} (``Model.layer()``).
    context, query : dict
        The streams before the layer: part ("x" | "y") → list of VecTerm.
    query_in_keys : bool
        Key mask m = 1 (the query among the keys) or 0.
    update_context : bool
        Also update the generic context token.

    Returns
    -------
    tuple
        (context stream or None, query stream).

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.terms import attend, input_tokens
    >>> context, query = input_tokens()
    >>> _, out = attend(models.Merged(2).layer(), context, query, update_context=False)
    >>> len(out["y"]), len(models.Merged(2).prediction())           # the query's y-part is ŷ
    (2, 2)
    """
    fresh = _Fresh()
    keys = [(context, True)] + ([(query, False)] if query_in_keys else [])
    coeff = 1 / N_SYM
    new_query = _attend_token(heads, keys, query, coeff, fresh)
    new_context = _attend_token(heads, keys, context, coeff, fresh) if update_context else None
    return new_context, new_query


# --- building blocks of the derivation and the analyses -------------------------------------

def residual(model) -> list[VecTerm]:
    """ŷ − y_q as a list of vector terms (``model.prediction()`` minus the target); the loss is
    ½E‖ŷ − y_q‖².

    Parameters
    ----------
    model : Model

    Returns
    -------
    list of VecTerm

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.data import N_SYM
    >>> from icldyn.theory.gaussian import expect
    >>> from icldyn.theory.terms import inner_monomial, residual
    >>> model, data = models.Merged(2), ICLData(d=2, N=4)
    >>> r = residual(model)             # ŷ = V S_yx Q x_q / N (y = Wx + ε: two pieces) minus y_q
    >>> len(r)
    4
    >>> half = sp.Rational(1, 2)
    >>> loss = expect([inner_monomial(a, b, half) for a in r for b in r], data.law(), N_SYM)
    >>> loss == derive(model, data).loss_poly           # ½ E‖ŷ − y_q‖², as derive finds it
    True
    """
    minus_y = [VecTerm(-t.coeff, t.labels, t.word, t.vec, t.segments) for t in target()]
    return model.prediction() + minus_y


def inner_monomial(a: VecTerm, b: VecTerm, coeff) -> Monomial:
    """coeff · ⟨a, b⟩ with the summed labels of a and b renamed apart.

    Parameters
    ----------
    a, b : VecTerm
        The two vector terms.
    coeff : sympy.Expr
        Extra coefficient.

    Returns
    -------
    Monomial
        A scalar monomial of the expectation engine.

    Examples
    --------
    >>> from icldyn.theory.data import N_SYM, ICLData
    >>> from icldyn.theory.gaussian import expect
    >>> from icldyn.theory.terms import inner_monomial, target
    >>> y_q = target()                              # W x_q + ε_q
    >>> mono = [inner_monomial(a, b, 1) for a in y_q for b in y_q]
    >>> expect(mono, ICLData(d=2, N=4).law(), N_SYM).to_sympy()        # E‖y_q‖² = d_y (tr Λ + σ²)
    d_y*sigma**2 + d_y*Trace(Lambda)
    """
    ra, rb = {l: f"{l}1" for l in a.labels}, {l: f"{l}2" for l in b.labels}
    segs = [_relabel(s, ra) for s in a.segments] + [_relabel(s, rb) for s in b.segments]
    link = Segment(_relabel_vec(a.vec, ra), transpose_word(a.word) + b.word,
                   _relabel_vec(b.vec, rb))
    return Monomial(coeff * a.coeff * b.coeff, tuple(ra.values()) + tuple(rb.values()),
                    tuple([link] + segs))


def _relabel_vec(v, mapping):
    return type(v)(v.var, mapping.get(v.sample, v.sample))


def _relabel(seg: Segment, mapping) -> Segment:
    return Segment(_relabel_vec(seg.start, mapping), seg.letters, _relabel_vec(seg.end, mapping))


def vary(terms: list[VecTerm], name: str, replacement: tuple) -> list[VecTerm]:
    """Directional derivative of Σ terms when letter ``name`` moves by δL = ``replacement``
    (a word): one copy of each term per occurrence of L, with that occurrence replaced.

    Parameters
    ----------
    terms : list of VecTerm
        A vector polynomial Σ terms.
    name : str
        The letter L that moves.
    replacement : tuple
        The word δL.

    Returns
    -------
    list of VecTerm

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.terms import vary
    >>> from icldyn.theory.words import Mat
    >>> yhat = models.Merged(2).prediction()           # V Σ_i y_i (x_iᵀ Q x_q) / N
    >>> moved = vary(yhat, "Q", (Mat("A"), Mat("Q")))  # δQ = A Q
    >>> [[m.name for s in t.segments for m in s.letters] for t in moved]
    [['A', 'Q'], ['A', 'Q']]
    """
    out = []
    for t in terms:
        for w_new in _replace_each(t.word, name, replacement):
            out.append(VecTerm(t.coeff, t.labels, w_new, t.vec, t.segments))
        for i, seg in enumerate(t.segments):
            for w_new in _replace_each(seg.letters, name, replacement):
                segs = t.segments[:i] + (Segment(seg.start, w_new, seg.end),) + t.segments[i + 1:]
                out.append(VecTerm(t.coeff, t.labels, t.word, t.vec, segs))
    return out


def _replace_each(word: tuple, name: str, replacement: tuple):
    for p, letter in enumerate(word):
        if isinstance(letter, Mat) and letter.name == name:
            new = transpose_word(replacement) if letter.T else replacement
            yield word[:p] + new + word[p + 1:]
