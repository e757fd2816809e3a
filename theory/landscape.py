"""Critical sets and what every enumeration of them shares: the result type
(``FixedPointSet``), the exact Hessian index of the full loss (``HessianIndex``), a model's
parameters from values of its letters (``critical_params``), and the structure check that
refuses a model no enumeration knows (``require_structure``).

The enumerations themselves are ``scalarsets`` (scalar tasks), ``vectorsets`` (vector and
eigenbasis tasks) behind the front door ``fixedpoints.fixed_points``; ``criticality`` decides
each set's kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import mpmath
import numpy as np
import sympy as sp

from .algorithm import LearnedAlgorithm
from .derive import Derivation
from .errors import InputError
from .polyeval import PolyFunction
from .words import entry_symbol

__all__ = ["DPS", "Extras", "FixedPointSet", "certified", "critical_set", "critical_params",
           "entry_symbols", "HessianIndex", "index_counter", "zero_params", "with_loss_gaps",
           "to_mp", "require_structure"]

if TYPE_CHECKING:
    from .criticality import Escape

INDEX_TOL = 1e-12
DPS = 40        # digits for the singular-mode reduction (exact gradients vanish to ~1e-35)


TYPED = ("M", "loss_gap", "letters")     # former info keys, now fields of FixedPointSet


class Extras(dict):
    """``FixedPointSet.info``: model-specific extras; the former keys "M", "loss_gap" and
    "letters" still read the set's typed fields (a KeyError where the field is None).

    Parameters
    ----------
    owner : FixedPointSet
        The set whose typed fields the former keys read.
    items : iterable or dict
        The extras.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> fp = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))).fixed_points()[0]
    >>> dict(fp.info)                             # the model-specific extras
    {'M_star': Matrix([[2/3]])}
    >>> fp.info["M"] == fp.M                      # a former key reads the typed field
    True
    """

    def __init__(self, owner: "FixedPointSet", items=()):
        super().__init__(items)
        self._owner = owner

    def __missing__(self, key):
        value = getattr(self._owner, key) if key in TYPED else None
        if value is None:
            raise KeyError(key)
        return value


@dataclass
class FixedPointSet:
    """A critical set.

    Attributes
    ----------
    name : str
        What the set is ("global minimum", "saddle set", "modes {1, 2} learned" …).
    equations : list
        SymPy equations defining the set.
    point : dict
        A representative: the model's parameters (sympy Matrix, or Array for stacked heads).
    loss : sympy number or expression
        The loss on the set.
    hessian_index : int or None
        Negative eigenvalues of the full model's Hessian at ``point`` (None: symbolic data).
    info : dict
        Model-specific extras (e.g. "M_star", "growth_direction", "learned", "groups",
        "escape": a point of lower loss found by the restricted descent).
    kind : str
        "minimum", "strict saddle", "degenerate saddle" or "unresolved"
        (``criticality.KINDS``), proved by ``evidence`` (a sentence).
    evidence : str
    escape : criticality.Escape or None
        For a degenerate saddle, the certificate (direction, order, coefficient, a point of
        lower loss).
    algorithm : algorithm.LearnedAlgorithm or None
        For a minimum, its learned algorithm (the predictor, the context statistics it uses
        and, for a gradient step, its preconditioner).
    loss_gap : sympy number or None
        The loss above the lowest set of the enumeration, where it is reported.
    M : sympy Matrix or None
        The learned matrix where the model has one (scalar tasks: ŷ = S_yx M x_q / N).
    letters : dict or None
        ``point`` per letter (block) of the model: {letter name: sympy Matrix}.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> der = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1)))
    >>> minimum, saddle = der.fixed_points()
    >>> minimum.name, minimum.kind, minimum.loss, minimum.M       # M* = N / (N + 2) for λ = 1
    ('global minimum', 'minimum', 1/6, Matrix([[2/3]]))
    >>> saddle.name, saddle.kind, saddle.hessian_index, saddle.loss
    ('saddle set', 'strict saddle', 1, 1/2)
    """

    name: str
    equations: list
    point: dict
    loss: object
    hessian_index: int | None
    info: dict = field(default_factory=dict)
    kind: str = "unresolved"
    evidence: str = ""
    escape: Escape | None = None
    loss_gap: object = None
    M: sp.Matrix | None = None
    letters: dict | None = None
    algorithm: LearnedAlgorithm | None = None

    def __post_init__(self):
        self.info = Extras(self, self.info)


CONVEX = ("L = F(M), F a convex quadratic in the learned matrix M (an expected squared error of "
          "a prediction linear in M); the set attains ∇F(M) = 0, F's minimum over all M: a "
          "global minimum")


def certified(fp: FixedPointSet, evidence: str) -> FixedPointSet:
    """``fp`` marked a minimum by a global argument.

    Parameters
    ----------
    fp : FixedPointSet
        The set (changed in place).
    evidence : str
        The argument, one sentence.

    Returns
    -------
    FixedPointSet
        ``fp``.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.landscape import certified
    >>> fp = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))).fixed_points()[0]
    >>> certified(fp, "the loss is a convex quadratic in M = uQ").kind, fp.evidence
    ('minimum', 'the loss is a convex quadratic in M = uQ')
    """
    fp.kind, fp.evidence = "minimum", evidence
    return fp


def critical_set(der: Derivation, index, name, equations, letters: dict, loss,
                 info: dict) -> FixedPointSet:
    """A FixedPointSet from its point given per letter (block), with its Hessian index
    (``index``: ``index_counter(der)``); ``info``'s "M" and "loss_gap" become the typed
    fields, the rest its extras.

    Parameters
    ----------
    der : Derivation
        The derivation the set belongs to.
    index : callable
        ``index_counter(der)``.
    name : str
        The set's name.
    equations : object
        The equations defining the set (kept for display).
    letters : dict
        {letter name: sympy Matrix}, a value per letter (block).
    loss : sympy.Expr
        The loss on the set.
    info : dict
        Extras ("M", "loss_gap" become typed fields).

    Returns
    -------
    FixedPointSet

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.landscape import critical_set, index_counter
    >>> der = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1)))
    >>> zero = {"V": sp.zeros(1, 1), "Q": sp.zeros(1, 1)}
    >>> fp = critical_set(der, index_counter(der), "origin", [], zero, der.loss_value(zero), {})
    >>> fp.loss, fp.hessian_index, fp.kind
    (1/2, 1, 'unresolved')
    """
    extras = dict(info)
    M, gap = extras.pop("M", None), extras.pop("loss_gap", None)
    return FixedPointSet(name, equations, critical_params(der, letters), loss, index(letters),
                         extras, loss_gap=gap, M=M, letters=letters)


def critical_params(der: Derivation, letters: dict) -> dict:
    """The model's parameters (sympy Matrix, or Array for stacked heads) from letter values;
    entries no letter covers (inert) are zero.

    Parameters
    ----------
    der : Derivation
        The derivation the set belongs to.
    letters : dict
        {letter name: sympy Matrix}, a value per letter (block).

    Returns
    -------
    dict
        {parameter name: sympy Matrix or Array}.

    Raises
    ------
    InputError
        When a letter (block) of the model has no value in ``letters``.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.landscape import critical_params
    >>> der = derive(models.MultiHead(1, heads=2), ICLData(d=1, N=4))
    >>> one = sp.Matrix([[1]])
    >>> critical_params(der, {"V0": 2 * one, "Q0": 3 * one, "V1": 0 * one, "Q1": 0 * one})
    {'V': [[[2]], [[0]]], 'Q': [[[3]], [[0]]]}
    """
    blocks = der.model.blocks()
    missing = [b.letter.name for b in blocks if b.letter.name not in letters]
    if missing:
        raise InputError("letters", f"no value for {', '.join(missing)}; give one per letter of "
                         f"{der.model!r}: {', '.join(b.letter.name for b in blocks)}")
    sizes, params = der.model.sizes(), {}
    for p in der.model.params:
        params[p.name] = np.zeros(p.shape(sizes), dtype=object)
        params[p.name][...] = sp.Integer(0)
    for b in blocks:
        block = params[b.param][b.index(sizes)]
        value = letters[b.letter.name]
        for i in range(value.rows):
            for j in range(value.cols):
                block[i, j] = value[i, j]
    return {n: sp.Matrix(v.tolist()) if v.ndim == 2 else sp.Array(v.tolist())
            for n, v in params.items()}


def entry_symbols(name: str, rows: int, cols: int) -> sp.Matrix:
    """A rows × cols Matrix of one ``entry_symbol`` per entry.

    Parameters
    ----------
    name : str
        The letter's name.
    rows, cols : int
        The shape.

    Returns
    -------
    sympy.Matrix

    Examples
    --------
    >>> from icldyn.theory.landscape import entry_symbols
    >>> entry_symbols("Q", 2, 2)
    Matrix([
    [Q_0_0, Q_0_1],
    [Q_1_0, Q_1_1]])
    """
    return sp.Matrix(rows, cols, lambda i, j: entry_symbol(name, i, j))


def _explicit_parameters(der: Derivation) -> tuple[dict, list]:
    """Letter name -> sympy Matrix of fresh entry symbols, and the flat symbol list."""
    sizes, values, flat = der.model.sizes(), {}, []
    for name, letter in der.letters.items():
        m = entry_symbols(name, sizes[letter.rows], sizes[letter.cols])
        values[name] = m
        flat += list(m)
    return values, flat


class HessianIndex:
    """The full loss explicit in every parameter entry (built once, as a ``PolyFunction``): at
    points (letter -> Matrix), the number of negative Hessian eigenvalues (calling it), and the
    loss and the largest gradient entry at DPS digits (``loss``, ``gradient_size``).

    Parameters
    ----------
    der : Derivation
        With numeric data.

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.landscape import HessianIndex
    >>> index = HessianIndex(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))))
    >>> origin = {"V": sp.zeros(1, 1), "Q": sp.zeros(1, 1)}
    >>> index(origin), float(index.loss(origin)), float(index.gradient_size(origin))
    (1, 0.5, 0.0)
    """

    digits = DPS

    def __init__(self, der: Derivation):
        params, flat = _explicit_parameters(der)
        vals = der.values(zero_params(der))
        vals.update(params)
        self.params = params
        self.L = PolyFunction(sp.expand(der.loss_poly.evaluate(vals)), flat, DPS)

    def _args(self, point: dict, digits: int) -> list:
        return [to_mp(point[n][k], digits) for n, m in self.params.items() for k in range(len(m))]

    def flat(self, point: dict) -> list:
        """The entries of ``point`` in this function's variable order.

        Parameters
        ----------
        point : dict
            {letter name: sympy Matrix}, a value per letter.

        Returns
        -------
        list of mpmath.mpf
        """
        return self._args(point, DPS)

    def letters(self, flat: list) -> dict:
        """Letter values from entries in the variable order (the inverse of ``flat``).

        Parameters
        ----------
        flat : list
            One value per variable.

        Returns
        -------
        dict
            {letter name: sympy Matrix of DPS-digit Floats}.
        """
        out, k = {}, 0
        for n, m in self.params.items():
            out[n] = sp.Matrix(m.rows, m.cols, [sp.Float(v, DPS) for v in flat[k:k + len(m)]])
            k += len(m)
        return out

    def __call__(self, point: dict) -> int:
        """Negative eigenvalues below −INDEX_TOL × the largest |eigenvalue| (float64: the
        Hessian's rounding error, ~1e-16 of its norm, is far below that threshold)."""
        eigs = np.linalg.eigvalsh(self.L.floats().hessian(
            [float(v) for v in self._args(point, 17)]))
        scale = max([1.0] + [abs(e) for e in eigs])
        return int(sum(1 for e in eigs if e < -INDEX_TOL * scale))

    def loss(self, point: dict) -> sp.Float:
        """The loss at ``point``, at DPS digits.

        Parameters
        ----------
        point : dict
            {letter name: sympy Matrix}, a value per letter.

        Returns
        -------
        sympy.Float
        """
        with mpmath.workdps(DPS):
            return sp.Float(self.L.value(self._args(point, DPS)), DPS)

    def gradient_size(self, point: dict) -> mpmath.mpf:
        """The largest |gradient entry| at ``point``, at DPS digits (≈ 0 at a critical point).

        Parameters
        ----------
        point : dict
            {letter name: sympy Matrix}, a value per letter.

        Returns
        -------
        mpmath.mpf
        """
        with mpmath.workdps(DPS):
            return max([abs(g) for g in self.L.gradient(self._args(point, DPS))] + [0])


def index_counter(der: Derivation):
    """The Hessian-index counter of ``der`` (None for every point when the data are symbolic).

    Parameters
    ----------
    der : Derivation
        The derivation the set belongs to.

    Returns
    -------
    callable
        point ↦ number of negative Hessian eigenvalues (a ``HessianIndex``), or ↦ None.

    Examples
    --------
    >>> import numpy as np
    >>> import sympy as sp
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.landscape import index_counter
    >>> origin = {"V": sp.zeros(1, 1), "Q": sp.zeros(1, 1)}
    >>> index_counter(derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))))(origin)
    1
    >>> print(index_counter(derive(models.Merged(1), ICLData(d=1, N=4)))(origin))     # symbolic Λ
    None
    """
    return HessianIndex(der) if der.data.is_numeric() else (lambda point: None)


def zero_params(der: Derivation) -> dict:
    """The model's parameters, all zero.

    Parameters
    ----------
    der : Derivation
        The derivation the set belongs to.

    Returns
    -------
    dict
        {parameter name: sympy zero Matrix or Array}.

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.landscape import zero_params
    >>> zero_params(derive(models.MultiHead(1, heads=2), ICLData(d=1, N=4)))
    {'V': [[[0]], [[0]]], 'Q': [[[0]], [[0]]]}
    """
    shapes = der.model.shapes()
    return {name: sp.zeros(*shape) if len(shape) == 2 else sp.Array.zeros(*shape)
            for name, shape in shapes.items()}


def with_loss_gaps(sets: list) -> list:
    """Sorted by loss, each with its ``loss_gap`` above the lowest (symbolic losses cannot be
    ordered: ``sets`` unchanged).

    Parameters
    ----------
    sets : list of FixedPointSet

    Returns
    -------
    list of FixedPointSet

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.landscape import with_loss_gaps
    >>> sets = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))).fixed_points()
    >>> [(fp.name, fp.loss_gap) for fp in with_loss_gaps(list(reversed(sets)))]
    [('global minimum', 0), ('saddle set', 1/3)]
    """
    if not all(sp.sympify(fp.loss).is_number for fp in sets):
        return sets
    best = min(fp.loss for fp in sets)
    for fp in sets:
        fp.loss_gap = fp.loss - best
    return sorted(sets, key=lambda fp: fp.loss)


def to_mp(value, digits: int = DPS) -> mpmath.mpf:
    """A SymPy number as an mpmath number with ``digits`` significant digits (whatever the
    caller's mpmath precision; arithmetic on it rounds to the caller's).

    Parameters
    ----------
    value : sympy number or number
    digits : int

    Returns
    -------
    mpmath.mpf

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.landscape import to_mp
    >>> to_mp(sp.Rational(1, 3), digits=20)
    mpf('0.33333333333333333')
    """
    with mpmath.workdps(digits):
        return mpmath.mpf(str(sp.N(value, digits)))


def require_structure(model) -> None:
    """Refuse (``InputError``) a model that states neither structure critical sets use.

    Parameters
    ----------
    model : Model

    Raises
    ------
    InputError
        If ``model`` has neither ``head_products()`` nor ``signal_paths()``.

    Examples
    --------
    >>> from icldyn.theory import models
    >>> from icldyn.theory.landscape import require_structure
    >>> require_structure(models.Merged(2))
    >>> require_structure(models.Stack([models.Merged(1), models.Merged(1)]))
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: model: critical sets of Stack([Merged(d=1, d_y=1), Merged(d=1,
    d_y=1)], query_in_keys=True, negate_readout=False) cannot be enumerated: it states neither
    head_products() (ŷ = Σ_h V_h S_yx K_h x_q / N) nor signal_paths() (for a stack of Merged layers
    see theory.gdsteps)
    """
    if model.head_products() is None and model.signal_paths() is None:
        raise InputError("model", f"critical sets of {model!r} cannot be enumerated: it states "
                         "neither head_products() (ŷ = Σ_h V_h S_yx K_h x_q / N) nor "
                         "signal_paths() (for a stack of Merged layers see theory.gdsteps)")
