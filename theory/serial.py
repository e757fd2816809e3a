"""A data-only serialisation of derived objects, for the on-disk cache.

Loading never runs code: the data is JSON, and every node is rebuilt by a constructor chosen
from a fixed table by its tag — anything else is refused with a ``ValueError``. It covers what
the derivations store:

- ``None``, bools, ints, strings, tuples, lists and dicts (keys of any covered type);
- the letters ``Mat`` and ``Dg``, ``TracePoly`` and ``MatPoly``;
- SymPy coefficients built from ``Integer``, ``Rational``, ``Symbol`` (with its assumptions),
  ``Add``, ``Mul`` and ``Pow`` — not ``sympify``/``srepr``, which evaluate Python.

Each node is a JSON list ``[tag, *fields]``. A value that occurs more than once (a SymPy
subexpression, or one tuple or letter object) is written once, as ``["def", node]`` where it
first occurs, and after that as ``["ref", k]``: the k-th defined node, counting each when its
node is complete (post-order, the order in which both writing and reading finish them).
"""

from __future__ import annotations

import sympy as sp
from sympy.core.assumptions import _assume_defined

from .words import Dg, Mat, MatPoly, TracePoly

__all__ = ["to_data", "from_data"]

_ASSUMPTIONS = frozenset(_assume_defined)


def to_data(value):
    """``value`` as nested lists, strings, bools and None (for ``json.dumps``). Equal SymPy
    subexpressions, and repeated occurrences of one tuple or letter object, are written once
    and referred to after that (a derived polynomial repeats few distinct coefficients and
    traces many times).

    Parameters
    ----------
    value : object
        None, bools, strings, ints, SymPy objects, tuples, lists, dicts, matrix letters
        (``Mat``, ``Dg``) and trace or matrix polynomials, nested.

    Returns
    -------
    object
        JSON-ready data.

    Raises
    ------
    TypeError
        For a type outside that list.

    Examples
    --------
    >>> import json
    >>> import sympy as sp
    >>> from icldyn.theory.serial import from_data, to_data
    >>> value = {"loss": sp.Rational(1, 3) * sp.Symbol("N"), "shape": (2, 2)}
    >>> text = json.dumps(to_data(value))
    >>> from_data(json.loads(text)) == value
    True
    """
    return _encode(value, {})


def _encode(v, memo: dict):
    """``_node(v)``, the second and later occurrences of a shared value as references: tuples
    and letters by identity (all alive in the value being encoded, so their ids are not reused
    meanwhile), SymPy expressions by equality. ``memo[None]`` counts the defined nodes."""
    if isinstance(v, sp.Basic):
        key = v
    elif type(v) in (tuple, Mat, Dg):
        key = ("id", id(v))
    else:
        return _node(v, memo)
    ref = memo.get(key)
    if ref is not None:
        return ref
    node = ["def", _expr_node(v, memo) if isinstance(v, sp.Basic) else _node(v, memo)]
    index = memo.get(None, 0)
    memo[key], memo[None] = ["ref", index], index + 1     # one list for every reference
    return node


def from_data(data):
    """The value ``to_data`` encoded as ``data`` (as ``json.loads`` returns it).

    Parameters
    ----------
    data : object
        Output of ``to_data`` after a JSON round trip.

    Returns
    -------
    object

    Raises
    ------
    ValueError
        For anything ``to_data`` did not produce.

    Examples
    --------
    >>> import json
    >>> from icldyn.theory.serial import from_data, to_data
    >>> from icldyn.theory.words import Mat, TracePoly
    >>> p = TracePoly.trace(Mat("Q"), Mat("L", symmetric=True))
    >>> from_data(json.loads(json.dumps(to_data(p)))) == p
    True
    >>> from_data({"eval": "__import__('os')"})        # data only: nothing is evaluated
    Traceback (most recent call last):
        ...
    ValueError: not a serialised derivation (TypeError: unknown node ...)
    """
    try:
        return _decode(data, [])
    except (TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
        raise ValueError(f"not a serialised derivation ({type(exc).__name__}: {exc})") from None


def _node(v, memo: dict):
    if v is None or isinstance(v, (bool, str)):
        return ["v", v]
    if type(v) is int:
        return ["int", str(v)]
    if type(v) in (tuple, list):
        return [type(v).__name__, [_encode(a, memo) for a in v]]
    if type(v) is dict:
        return ["dict", [[_encode(k, memo), _encode(a, memo)] for k, a in v.items()]]
    if type(v) is Mat:
        return ["Mat", v.name, v.T, v.symmetric, v.rows, v.cols]
    if type(v) is Dg:
        return ["Dg", _encode(v.inner, memo)]
    if type(v) is TracePoly:
        return ["TracePoly", _encode(v.terms, memo)]
    if type(v) is MatPoly:
        return ["MatPoly", v.rows, v.cols, _encode(v.terms, memo)]
    raise TypeError(f"cannot serialise {type(v).__name__} as data")


def _expr_node(e: sp.Basic, memo: dict):
    if isinstance(e, sp.Integer):
        return ["Integer", str(e.p)]
    if isinstance(e, sp.Rational):
        return ["Rational", str(e.p), str(e.q)]
    if type(e) is sp.Symbol:
        return ["Symbol", e.name, {k: bool(a) for k, a in e._assumptions_orig.items()}]
    if isinstance(e, (sp.Add, sp.Mul, sp.Pow)):
        return [type(e).__name__, [_encode(a, memo) for a in e.args]]
    raise TypeError(f"cannot serialise the SymPy node {type(e).__name__} as data")


def _string(v) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _integer(text) -> int:
    if not isinstance(text, str) or not text.lstrip("-").isdigit():
        raise TypeError(f"expected an integer literal, got {text!r}")
    return int(text)


def _symbol(name, assumptions) -> sp.Symbol:
    if not isinstance(assumptions, dict) or not set(assumptions) <= _ASSUMPTIONS or \
            not all(isinstance(a, bool) for a in assumptions.values()):
        raise TypeError(f"bad assumptions {assumptions!r}")
    return sp.Symbol(_string(name), **assumptions)


def _expr(node, table: list) -> sp.Expr:
    value = _decode(node, table)
    if not isinstance(value, sp.Expr):
        raise TypeError(f"expected a SymPy expression, got {type(value).__name__}")
    return value


def _pairs(table: list, items):
    return {_decode(k, table): _decode(a, table) for k, a in items}


def _bool(v) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected a bool, got {v!r}")
    return v


def _plain(table: list, v):
    if v is not None and not isinstance(v, (bool, str)):
        raise TypeError(f"expected None, a bool or a string, got {type(v).__name__}")
    return v


def _exactly(n: int, items: list) -> list:
    if not isinstance(items, list) or len(items) != n:
        raise TypeError(f"expected {n} arguments")
    return items


def _dg(table: list, inner) -> Dg:
    word = _decode(inner, table)
    if not isinstance(word, tuple) or not all(isinstance(a, (Mat, Dg)) for a in word):
        raise TypeError("Dg needs a word of letters")
    return Dg(word)


def _trace_poly(table: list, terms) -> TracePoly:
    return TracePoly._canonical(_decode(terms, table))


def _mat_poly(table: list, rows, cols, terms) -> MatPoly:
    return MatPoly(_string(rows), _string(cols))._canonical(_decode(terms, table))


def _define(table: list, node):
    value = _decode(node, table)
    table.append(value)
    return value


def _reference(table: list, index):
    if type(index) is not int or not 0 <= index < len(table):
        raise TypeError(f"no defined node {index!r}")
    return table[index]


_DECODERS = {       # tag -> (table of defined nodes, *fields) ↦ value
    "def": _define,
    "ref": _reference,
    "v": _plain,
    "int": lambda table, text: _integer(text),
    "tuple": lambda table, items: tuple(_decode(a, table) for a in items),
    "list": lambda table, items: [_decode(a, table) for a in items],
    "dict": _pairs,
    "Mat": lambda table, name, T, sym, rows, cols: Mat(_string(name), _bool(T), _bool(sym),
                                                      _string(rows), _string(cols)),
    "Dg": _dg,
    "TracePoly": _trace_poly,
    "MatPoly": _mat_poly,
    "Integer": lambda table, p: sp.Integer(_integer(p)),
    "Rational": lambda table, p, q: sp.Rational(_integer(p), _integer(q)),
    "Symbol": lambda table, name, assumptions: _symbol(name, assumptions),
    "Add": lambda table, args: sp.Add(*[_expr(a, table) for a in args]),
    "Mul": lambda table, args: sp.Mul(*[_expr(a, table) for a in args]),
    "Pow": lambda table, args: sp.Pow(*[_expr(a, table) for a in _exactly(2, args)]),
}


def _decode(node, table: list):
    """The value of ``node``; ``table`` holds the nodes defined so far (``["def", …]``)."""
    if not isinstance(node, list) or not node or not isinstance(node[0], str) \
            or node[0] not in _DECODERS:
        raise TypeError(f"unknown node {str(node)[:60]!r}")
    return _DECODERS[node[0]](table, *node[1:])
