"""Parameterizations θ → (W_PV, W_KQ) of linear self-attention (docs/math.md §2).

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

import numpy as np

from .data import N_SYM, x
from .errors import InputError, check_int
from .gaussian import QUERY, Segment
from .params import as_arrays
from .terms import VecTerm, attend, input_tokens, negate, sandwich, target, token_part
from .words import Mat

__all__ = ["Model", "Merged", "MultiHead", "SeparateKQ", "FullLSA", "Stack", "Param", "Block",
           "HeadProducts", "VecTerm", "MODELS", "sandwich", "target", "token_part"]


@dataclass(frozen=True)
class Param:
    """A parameter array of shape (heads, rows, cols), or (rows, cols) when heads is None.

    Parameters
    ----------
    name : str
        The parameter's name (a key of ``params`` dicts).
    rows, cols : str
        Spaces of its rows and columns: "x", "y", "r" or "z".
    heads : int, optional
        A leading axis of heads.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> model = models.SeparateKQ(3, heads=2, rank=1)
    >>> [(p.name, p.shape(model.sizes())) for p in model.params]
    [('V', (2, 1, 1)), ('W_K', (2, 1, 3)), ('W_Q', (2, 1, 3))]
    """

    name: str
    rows: str
    cols: str
    heads: int | None = None

    def shape(self, sizes: dict) -> tuple:
        """The array shape of this parameter.

        Parameters
        ----------
        sizes : dict
            Space name ("x", "y", "r", "z") → its dimension (``Model.sizes()``).

        Returns
        -------
        tuple of int
            (rows, cols), or (heads, rows, cols).
        """
        core = (sizes[self.rows], sizes[self.cols])
        return core if self.heads is None else (self.heads,) + core


@dataclass(frozen=True)
class Block:
    """Letter ``letter`` = ``param[head][row part, col part]``.

    Parameters
    ----------
    letter : Mat
        The matrix letter the loss sees.
    param : str
        The parameter it is cut from.
    head : int, optional
        Its head (parameters with a heads axis).
    row_part, col_part : str, optional
        None for all rows / columns, or "x" / "y" of a "z" space.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> model = models.FullLSA(2)                   # D = 3: x-rows/cols 0..1, y-row/col 2
    >>> [(b.letter.name, b.param, b.row_part, b.col_part) for b in model.blocks()]
    [('P1', 'W_PV', 'y', 'x'), ('P2', 'W_PV', 'y', 'y'), ('Q1', 'W_KQ', 'x', 'x'), ('Q2', 'W_KQ',
    'y', 'x')]
    >>> model.blocks()[1].index(model.sizes())      # P₂ = W_PV[y, y]
    (slice(2, None, None), slice(2, None, None))
    """

    letter: Mat
    param: str
    head: int | None = None
    row_part: str | None = None
    col_part: str | None = None

    def index(self, sizes: dict) -> tuple:
        """Where this block sits inside its parameter array.

        Parameters
        ----------
        sizes : dict
            Space name ("x", "y", "r", "z") → its dimension (``Model.sizes()``).

        Returns
        -------
        tuple
            (head,) row slice, column slice.
        """
        parts = (_part(self.row_part, sizes), _part(self.col_part, sizes))
        return parts if self.head is None else (self.head,) + parts


@dataclass(frozen=True)
class HeadProducts:
    """Optional structure: ŷ = Σ_h V_h S_yx K_h x_q / N, so for scalar tasks (V_h = u_h)
    ŷ = S_yx M x_q / N with M = Σ_h u_h K_h.

    Parameters
    ----------
    heads : tuple
        ``heads[h]`` names head h's letters: its value letter V_h (y × y) first, then its
        key-query factors — one x × x letter K_h (``rank`` None), or W_K,h, W_Q,h (r × x
        each) with K_h = W_K,hᵀ W_Q,h of rank ≤ ``rank``.
    rank : int, optional
        The key-query rank of factorised heads.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> models.SeparateKQ(2, heads=2, rank=1).head_products()
    HeadProducts(heads=(('V0', 'WK0', 'WQ0'), ('V1', 'WK1', 'WQ1')), rank=1)
    >>> print(models.FullLSA(2).head_products())
    None
    """

    heads: tuple
    rank: int | None = None


def _part(part: str | None, sizes: dict) -> slice:
    if part is None:
        return slice(None)
    return slice(0, sizes["x"]) if part == "x" else slice(sizes["x"], None)


# --- models -----------------------------------------------------------------------------------

class Model:
    """The model contract: what every analysis may ask of a parameterization.

    Subclasses define ``params`` (parameter arrays), ``blocks()`` (the matrix letters the loss
    sees, as slices of the parameters), ``prediction()`` (ŷ as vector terms, for the expectation
    engine) and ``layer()`` (per head, which words of letters fill which blocks of W_PV and
    W_KQ, for the simulator of the actual network). Inside a ``Stack`` every block of W_PV and
    W_KQ can matter: ``stack_blocks()`` and ``stack_layer()`` give them all (by default
    ``blocks()`` and ``layer()``, which suffice when ``layer()`` names every non-zero entry), and
    ``stack_cost`` is None when the expectation engine can derive a stack of such layers (else
    the reason it cannot). A one-layer model reads ŷ from the query with the query among the
    keys and without negation (``query_in_keys``, ``negate_readout``).

    Optional structures an analysis may use (each None by default, and the analysis then
    refuses with an ``InputError`` naming the model): ``product_model()`` (L = F(M)),
    ``head_products()`` (ŷ = Σ_h V_h S_yx K_h x_q / N), ``signal_paths()`` (separate
    invariant paths), ``symmetry_parts()``, ``chain_rule_latex()``. A parameterization
    written on this contract gets loss, gradient, flow, conserved quantities, compiled flow
    and simulation with no edit elsewhere (``tests/test_contract.py`` defines two).

    Parameters
    ----------
    d : int
        Input dimension.
    d_y : int
        Output dimension.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import models
    >>> model = models.Merged(2)
    >>> model.sizes(), model.shapes()
    ({'x': 2, 'y': 1, 'z': 3}, {'V': (1, 1), 'Q': (2, 2)})
    >>> weights = model.attention_weights({"V": 2.0, "Q": np.eye(2)})    # [layer][head]
    >>> [(W_PV.shape, W_KQ.shape) for W_PV, W_KQ in weights[0]]
    [((3, 3), (3, 3))]
    >>> model.with_outputs(3)
    Merged(d=2, d_y=3)
    """

    name = "model"
    stack_cost: str | None = None
    query_in_keys = True
    negate_readout = False

    def __init__(self, d: int, d_y: int = 1):
        self.d, self.d_y = check_int("d", d), check_int("d_y", d_y)

    params: tuple = ()

    def sizes(self) -> dict:
        """The sizes of the model's spaces.

        Returns
        -------
        dict
            {space: size}: "x" (d), "y" (d_y), "z" (d + d_y), and "r" where there is a rank.
        """
        return {"x": self.d, "y": self.d_y, "z": self.d + self.d_y}

    def shapes(self) -> dict:
        """The shapes of the parameter arrays.

        Returns
        -------
        dict
            {parameter name: array shape}, in the model's parameter order.
        """
        return {p.name: p.shape(self.sizes()) for p in self.params}

    def blocks(self) -> list[Block]:
        """The letters the loss sees (contract: every model defines it).

        Returns
        -------
        list of Block
            The matrix letters the loss sees, each a slice of a parameter.
        """
        raise NotImplementedError

    def letters(self) -> dict:
        """The letters by name.

        Returns
        -------
        dict
            {letter name: Mat} of ``blocks()``.
        """
        return {b.letter.name: b.letter for b in self.blocks()}

    def prediction(self) -> list[VecTerm]:
        """ŷ for the expectation engine (contract: every model defines it).

        Returns
        -------
        list of VecTerm
            ŷ as a sum of vector terms (what the expectation engine consumes).
        """
        raise NotImplementedError

    def layer(self) -> list[dict]:
        """The actual layer (contract: every model defines it).

        Returns
        -------
        list of dict
            Per head: {"W_PV" | "W_KQ": [(row space, col space, word of letters)]}, the
            actual layer the simulator runs.
        """
        raise NotImplementedError

    def stack_blocks(self) -> list[Block]:
        """The blocks a layer of this model has inside a stack (default: ``blocks()``).

        Returns
        -------
        list of Block
        """
        return self.blocks()

    def stack_layer(self) -> list[dict]:
        """``layer()`` inside a stack: every non-zero entry of W_PV and W_KQ (default:
        ``layer()``).

        Returns
        -------
        list of dict
            Per head, as ``layer()``.
        """
        return self.layer()

    def stack_layers(self) -> list[list[dict]]:
        """``layer()`` of every layer, first to last (one layer here).

        Returns
        -------
        list of list of dict
            Per layer, per head, as ``layer()``.
        """
        return [self.layer()]

    def attention_weights(self, params: dict) -> list[list[tuple]]:
        """The actual attention weights of the network at ``params``.

        Parameters
        ----------
        params : dict
            {parameter name: array} (a scalar for a square block means that multiple of I).

        Returns
        -------
        list
            ``[[(W_PV, W_KQ) per head] per layer]``, NumPy D × D arrays, D = d + d_y.
        """
        letters = _letter_arrays(self, params)
        return [[tuple(w) for w in zip(*fill_weights(spec, letters, self.d, self.d_y))]
                for spec in self.stack_layers()]

    def product_model(self) -> "Model | None":
        """Optional structure for analyses of F(M).

        Returns
        -------
        Model or None
            The Merged model whose loss F(M), M = the learned matrix, this model's loss
            factors through (or reduces to on an invariant set); None when there is none.
        """
        return None

    def symmetry_parts(self) -> list[tuple] | None:
        """Optional structure for the symmetry search.

        Returns
        -------
        list or None
            Sub-models whose symmetries act on this model's letters, as
            [(sub-model, {its letter: this model's letter})]; None (the default) means
            search this model's own ŷ.
        """
        return None

    def head_products(self) -> HeadProducts | None:
        """Optional structure for critical sets and reductions: ŷ = Σ_h V_h S_yx K_h x_q / N.

        Returns
        -------
        HeadProducts or None
            The letters of each head and the key-query rank; None when ŷ is not of that form.
        """
        return None

    def signal_paths(self) -> tuple | None:
        """Optional structure for critical sets: separate paths of the signal to ŷ.

        Returns
        -------
        tuple or None
            The (value letter, key-query letter) pairs through which the signal reaches ŷ on
            separate invariant sets (FullLSA: P₂S_yxQ₁x_q/N and P₁S_xyQ₂x_q/N), first the
            Merged-like path; None when there are none.
        """
        return None

    def chain_rule_latex(self) -> str:
        """The chain rule of a product-form model's learned matrix, for its gradient noise.

        Returns
        -------
        str
            δM[A] in LaTeX: M's change along probes A of the parameters.

        Raises
        ------
        InputError
            Unless the model overrides it (the base class states no chain rule).
        """
        raise InputError("model", f"{self!r} states no chain rule δM[A] of its product form "
                         "(chain_rule_latex)")

    def key(self) -> tuple:
        """The structural identity of the model.

        Returns
        -------
        tuple
            What the structural derivation depends on (dimensions stay symbolic): the
            derivation cache's key, so a user-written model with options must include them.
        """
        return (self.name,)

    def with_outputs(self, d_y: int) -> "Model":
        """The same parameterization with another output dimension.

        Parameters
        ----------
        d_y : int
            Output dimension.

        Returns
        -------
        Model
        """
        out = copy.copy(self)
        out.d_y = check_int("d_y", d_y)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, d_y={self.d_y})"


def _letter_arrays(model: Model, params: dict) -> dict:
    """{letter name: float array} cut from ``params`` (``params.as_arrays``'s broadcasting)."""
    arrays, sizes = as_arrays(model.shapes(), params), model.sizes()
    return {b.letter.name: arrays[b.param][b.index(sizes)] for b in model.blocks()}


def word_value(letters: dict, word: tuple) -> np.ndarray:
    """The product of a word's letter values (any leading axes; transposes applied).

    Parameters
    ----------
    letters : dict
        {letter name: array (…, rows, cols)}.
    word : tuple of Mat
        A non-empty word, read as a matrix product.

    Returns
    -------
    numpy.ndarray
        (…, rows of the first letter, cols of the last).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory.models import word_value
    >>> from icldyn.theory.words import Mat
    >>> W_K, W_Q = np.array([[1.0, 2.0]]), np.array([[3.0, 0.0]])            # rank-1 factors
    >>> word = (Mat("WK", T=True, rows="r"), Mat("WQ", rows="r"))           # K = W_Kᵀ W_Q
    >>> word_value({"WK": W_K, "WQ": W_Q}, word)
    array([[3., 0.],
           [6., 0.]])
    """
    out = None
    for letter in word:
        m = letters[letter.name]
        m = m.swapaxes(-1, -2) if letter.T else m
        out = m if out is None else out @ m
    return out


def fill_weights(spec: list[dict], letters: dict, d: int, d_y: int) -> tuple:
    """(W_PV, W_KQ) of one layer, each (…, H, D, D), from its ``layer()`` spec and letter values
    with any leading axes (…); entries the spec does not name are zero.

    D = d + d_y: rows and columns 0..d-1 are the x-space, d..D-1 the y-space; each entry
    (rows, cols, word) of a head adds the word's value to that block.

    Parameters
    ----------
    spec : list of dict
        Per head {"W_PV" | "W_KQ": [(row space, col space, word)]}, as ``Model.layer()``.
    letters : dict
        {letter name: array (…, rows, cols)}.
    d, d_y : int
        Input and output dimension.

    Returns
    -------
    tuple of numpy.ndarray
        (W_PV, W_KQ).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import models
    >>> from icldyn.theory.models import fill_weights
    >>> model = models.Merged(2)
    >>> letters = {"V": np.array([[2.0]]), "Q": np.eye(2)}
    >>> W_PV, W_KQ = fill_weights(model.layer(), letters, d=2, d_y=1)
    >>> W_PV[0]                 # head 0: V in the y-block
    array([[0., 0., 0.],
           [0., 0., 0.],
           [0., 0., 2.]])
    >>> W_KQ[0]                 # Q in the x-block
    array([[1., 0., 0.],
           [0., 1., 0.],
           [0., 0., 0.]])
    """
    lead = np.shape(next(iter(letters.values())))[:-2] if letters else ()
    space = {"x": slice(0, d), "y": slice(d, d + d_y)}
    out = {w: np.zeros(lead + (len(spec), d + d_y, d + d_y)) for w in ("W_PV", "W_KQ")}
    for h, head in enumerate(spec):
        for wname, entries in head.items():
            for rows, cols, word in entries:
                out[wname][..., h, space[rows], space[cols]] += word_value(letters, word)
    return out["W_PV"], out["W_KQ"]


def _heads(H) -> int:
    return check_int("heads", H)


class MultiHead(Model):
    """H merged heads: ŷ = Σ_h V_h S_yx Q_h x_q / N; params V (H, d_y, d_y), Q (H, d, d).

    Parameters
    ----------
    d : int
        Input dimension.
    heads : int
        Number of heads H.
    d_y : int
        Output dimension.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> models.MultiHead(2, heads=3).shapes()
    {'V': (3, 1, 1), 'Q': (3, 2, 2)}
    """

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

    def product_model(self) -> "Model":
        """L = F(Σ_h V_h ⊗ Q_h): the Merged model's loss of the summed product.

        Returns
        -------
        Model
            The Merged model of the same d and d_y.
        """
        return Merged(self.d, d_y=self.d_y)

    def head_products(self) -> HeadProducts:
        return HeadProducts(tuple((V.name, Q.name) for V, Q in map(self._letters,
                                                                   range(self.heads))))

    def chain_rule_latex(self) -> str:
        return r"\delta M[A] = \sum_h \left(A_{V_h} Q_h + u_h A_{Q_h}\right)"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, heads={self.heads}, d_y={self.d_y})"


class Merged(MultiHead):
    """The seed paper's reduced model: ŷ = V S_yx Q x_q / N (V = P₂, Q = Q₁; u = V when d_y = 1);
    params V (d_y × d_y), Q (d × d).

    Parameters
    ----------
    d : int
        Input dimension.
    d_y : int
        Output dimension.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> models.Merged(2).shapes()
    {'V': (1, 1), 'Q': (2, 2)}
    """

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

    def product_model(self) -> "Model":
        return self

    def __repr__(self) -> str:
        return Model.__repr__(self)


class SeparateKQ(MultiHead):
    """H heads with factorised key-query matrices Q_h = W_K,hᵀ W_Q,h of rank ≤ r:
    ŷ = Σ_h V_h S_yx W_K,hᵀ W_Q,h x_q / N; params V (H, d_y, d_y), W_K, W_Q (H, r, d).

    Parameters
    ----------
    d : int
        Input dimension.
    heads : int
        Number of heads H.
    rank : int
        Key-query rank r.
    d_y : int
        Output dimension.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> models.SeparateKQ(3, heads=2, rank=1).shapes()
    {'V': (2, 1, 1), 'W_K': (2, 1, 3), 'W_Q': (2, 1, 3)}
    """

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

    def head_products(self) -> HeadProducts:
        return HeadProducts(tuple(tuple(f.name for f in self._factors(h))
                                  for h in range(self.heads)), self.rank)

    def chain_rule_latex(self) -> str:
        return (r"\delta M[A] = \sum_h \left(A_{V_h} W_{K,h}^\top W_{Q,h} + u_h "
                r"(A_{W_{K,h}}^\top W_{Q,h} + W_{K,h}^\top A_{W_{Q,h}})\right)")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(d={self.d}, heads={self.heads}, rank={self.rank}, "
                f"d_y={self.d_y})")


class FullLSA(Model):
    """All entries of W_PV and W_KQ ((d + d_y) × (d + d_y) each); the loss sees the blocks
    P₁ = W_PV[y, x], P₂ = W_PV[y, y], Q₁ = W_KQ[x, x], Q₂ = W_KQ[y, x]; the rest is inert.

    Parameters
    ----------
    d : int
        Input dimension.
    d_y : int
        Output dimension.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> models.FullLSA(2).shapes()            # D = d + d_y = 3
    {'W_PV': (3, 3), 'W_KQ': (3, 3)}
    """

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

    # inside a stack every block is live: the other four blocks of W_PV and W_KQ
    Pxx, Pxy = Mat("Pxx", rows="x", cols="x"), Mat("Pxy", rows="x", cols="y")
    Qxy, Qyy = Mat("Qxy", rows="x", cols="y"), Mat("Qyy", rows="y", cols="y")
    stack_cost = ("every block of W_PV and W_KQ is live in a stack: two full layers at d = 2 "
                  "give ŷ of 92 620 vector terms, ~4e9 loss monomials, beyond the engine")

    def product_model(self) -> "Model":
        """On the invariant set P₁ = 0, Q₂ = 0 the loss is the Merged model's F(P₂ Q₁).

        Returns
        -------
        Model
            The Merged model of the same d and d_y.
        """
        return Merged(self.d, d_y=self.d_y)

    def signal_paths(self) -> tuple:
        """P₂S_yxQ₁x_q/N (on P₁ = 0, Q₂ = 0) and P₁S_xyQ₂x_q/N (on P₂ = 0, Q₁ = 0).

        Returns
        -------
        tuple
            ((P2, Q1), (P1, Q2)) letter names, the Merged-like path first.
        """
        return (self.P2.name, self.Q1.name), (self.P1.name, self.Q2.name)

    def stack_blocks(self) -> list[Block]:
        """Every block of W_PV and W_KQ, the inert ones too (a stack feeds them signal).

        Returns
        -------
        list of Block
        """
        return self.blocks() + [Block(self.Pxx, "W_PV", None, "x", "x"),
                                Block(self.Pxy, "W_PV", None, "x", "y"),
                                Block(self.Qxy, "W_KQ", None, "x", "y"),
                                Block(self.Qyy, "W_KQ", None, "y", "y")]

    def stack_layer(self) -> list[dict]:
        """The whole layer, every block of W_PV and W_KQ.

        Returns
        -------
        list of dict
            One head: {"W_PV" | "W_KQ": [(row part, col part, (letter,))]}.
        """
        blocks = {"W_PV": [], "W_KQ": []}
        for b in self.stack_blocks():
            blocks[b.param].append((b.row_part, b.col_part, (b.letter,)))
        return [blocks]

    def layer(self) -> list[dict]:
        return [{"W_PV": [("y", "x", (self.P1,)), ("y", "y", (self.P2,))],
                 "W_KQ": [("x", "x", (self.Q1,)), ("y", "x", (self.Q2,))]}]

    def attention_weights(self, params: dict) -> list[list[tuple]]:
        """``[[(W_PV, W_KQ)]]``: the parameters themselves (inert entries included).

        Parameters
        ----------
        params : dict
            {"W_PV": array, "W_KQ": array} (D × D, D = d + d_y).

        Returns
        -------
        list
            ``[[(W_PV, W_KQ)]]``, NumPy arrays.
        """
        arrays = as_arrays(self.shapes(), params)
        return [[(arrays["W_PV"], arrays["W_KQ"])]]


class Stack(Model):
    """L attention layers applied in turn to the whole token matrix, with residual connections:

        Z⁽ˡ⁾ = Z⁽ˡ⁻¹⁾ + Σ_h W_PV,h⁽ˡ⁾ (Z⁽ˡ⁻¹⁾ M Z⁽ˡ⁻¹⁾ᵀ / N) W_KQ,h⁽ˡ⁾ Z⁽ˡ⁻¹⁾,

    ŷ = the y-rows of the query column of Z⁽ᴸ⁾ (its negative with ``negate_readout``, the
    readout of Ahn et al. 2023). M = diag(1, …, 1, m) is the key mask: m = 1 puts the query
    among the keys (the one-layer convention of this package), m = 0 (``query_in_keys=False``)
    sums over the N context tokens only (Ahn et al.). The 1/N stays; a convention without it is
    the same model with every W_PV,h⁽ˡ⁾ scaled by N.

    Parameters
    ----------
    layers : list of Model
        Each layer's parameterization (Merged, MultiHead, SeparateKQ, FullLSA or a user-written
        model), all with the same d and d_y (and the same rank r where they have one). A stack
        with a FullLSA layer has weights and can be simulated, but its loss cannot be derived
        (``stack_cost``).
    query_in_keys : bool
        Whether the query token is among the keys of every layer.
    negate_readout : bool
        Read ŷ as minus the query's y-rows.

    Raises
    ------
    InputError
        When ``layers`` is not a non-empty list of models, holds a Stack, mixes (d, d_y) or
        key-query ranks, or a flag is not a bool.

    Notes
    -----
    Parameters of layer l are named ``"l.name"`` (``"0.V"``, ``"1.Q"`` …); its letters carry
    the superscript l + 1 (``V__1`` prints as V¹ …).

    Examples
    --------
    >>> from icldyn.theory import models
    >>> models.Stack([models.Merged(2), models.Merged(2)], query_in_keys=False,
    ...              negate_readout=True).shapes()          # Ahn et al.'s two layers
    {'0.V': (1, 1), '0.Q': (2, 2), '1.V': (1, 1), '1.Q': (2, 2)}
    """

    name = "Stack"

    def __init__(self, layers, query_in_keys: bool = True, negate_readout: bool = False):
        layers = list(layers) if isinstance(layers, (list, tuple)) else None
        if not layers or not all(isinstance(m, Model) for m in layers):
            raise InputError("layers", "must be a non-empty list of models, e.g. "
                             "[models.Merged(d), models.Merged(d)]")
        for l, m in enumerate(layers):
            if isinstance(m, Stack):
                raise InputError("layers", f"layer {l} is itself a Stack: list its layers")
            if (m.d, m.d_y) != (layers[0].d, layers[0].d_y):
                raise InputError("layers", f"layer {l} has (d, d_y) = ({m.d}, {m.d_y}), layer 0 "
                                 f"({layers[0].d}, {layers[0].d_y}); use one d and d_y")
        ranks = {m.sizes()["r"] for m in layers if "r" in m.sizes()}
        if len(ranks) > 1:
            raise InputError("layers", f"key-query ranks {sorted(ranks)} differ; use one rank")
        for flag, value in (("query_in_keys", query_in_keys), ("negate_readout", negate_readout)):
            if not isinstance(value, bool):
                raise InputError(flag, f"must be True or False, got {value!r}")
        super().__init__(layers[0].d, layers[0].d_y)
        self.layers = tuple(layers)
        self.query_in_keys, self.negate_readout = query_in_keys, negate_readout
        self.params = tuple(Param(f"{l}.{p.name}", p.rows, p.cols, p.heads)
                            for l, m in enumerate(layers) for p in m.params)

    @staticmethod
    def _letter(letter: Mat, l: int) -> Mat:
        return Mat(f"{letter.name}__{l + 1}", letter.T, letter.symmetric, letter.rows,
                   letter.cols)

    def sizes(self) -> dict:
        out = {}
        for m in self.layers:
            out.update(m.sizes())
        return out

    def blocks(self) -> list[Block]:
        return [Block(self._letter(b.letter, l), f"{l}.{b.param}", b.head, b.row_part,
                      b.col_part) for l, m in enumerate(self.layers) for b in m.stack_blocks()]

    def stack_layers(self) -> list[list[dict]]:
        """Each layer's ``stack_layer()`` with its letters renamed apart (layer index, dot).

        Returns
        -------
        list of list of dict
            Per layer, per head, as ``layer()``.
        """
        return [[{w: [(rows, cols, tuple(self._letter(t, l) for t in word))
                      for rows, cols, word in entries] for w, entries in head.items()}
                 for head in m.stack_layer()] for l, m in enumerate(self.layers)]

    def layer(self) -> list[dict]:
        """Not defined for a stack, whose map is several layers (``stack_layers()`` gives them).

        Returns
        -------
        list of dict
            Never: a stack has no single layer.

        Raises
        ------
        InputError
            Always; use ``stack_layers()``.
        """
        raise InputError("model", "a Stack has several layers: use stack_layers()")

    def symmetry_parts(self) -> list[tuple]:
        """Each layer with its letters renamed: a symmetry of a layer whose ``layer()`` is its
        whole map leaves Z ↦ f(Z) unchanged, hence the whole stack (each lifted law is still
        proved on the stack's own derived polynomials).

        Returns
        -------
        list of tuple
            [(layer model, {its letter name: the stack's letter name})].
        """
        return [(m, {n: self._letter(letter, l).name for n, letter in m.letters().items()})
                for l, m in enumerate(self.layers)]

    def prediction(self) -> list[VecTerm]:
        """ŷ of the stack as a sum of vector terms: the query token's y-rows after the layers
        act in turn on the residual stream (the context is updated by all but the last;
        negated with ``negate_readout``), each layer's letters carrying its superscript.

        Returns
        -------
        list of VecTerm
            ŷ as a sum of vector terms (what the expectation engine consumes).

        Raises
        ------
        InputError
            When a layer cannot be derived inside a stack (``stack_cost``, e.g. FullLSA).
        """
        for l, m in enumerate(self.layers):
            if m.stack_cost is not None:
                raise InputError("model", f"the loss of a stack with layer {l} = {m!r} cannot be "
                                 f"derived: {m.stack_cost}; simulate it (simulate_sgd), or use "
                                 "Merged, MultiHead or SeparateKQ layers")
        context, query = input_tokens()
        specs = self.stack_layers()
        for l, spec in enumerate(specs):
            context, query = attend(spec, context, query, self.query_in_keys,
                                    update_context=l < len(specs) - 1)
        return negate(query["y"]) if self.negate_readout else query["y"]

    def key(self) -> tuple:
        return (self.name, tuple(m.key() for m in self.layers), self.query_in_keys,
                self.negate_readout)

    def with_outputs(self, d_y: int) -> "Stack":
        return Stack([m.with_outputs(d_y) for m in self.layers], self.query_in_keys,
                     self.negate_readout)

    def __repr__(self) -> str:
        return (f"Stack([{', '.join(map(repr, self.layers))}], query_in_keys="
                f"{self.query_in_keys}, negate_readout={self.negate_readout})")


MODELS = {cls.name: cls for cls in (Merged, MultiHead, SeparateKQ, FullLSA)}
