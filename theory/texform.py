"""Paper-ready LaTeX of derived expressions: terms grouped by monomial, coefficients factored,
long equations broken into lines.

``group(expr, variables)`` rewrites a SymPy expression that is a polynomial in the
*variables* (the parameters' letters, probe matrices, task draws: every matrix letter except
the data's Λ and Σ_w, plus any scalar symbols named) as a ``Grouped`` sum

    expr = Σ_t c_t · (m_t1 + m_t2 + …),

c_t a coefficient free of the variables (rational in N, σ, η, d, traces of Λ and Σ_w, …) in
the shortest of its expanded and factored forms, and m_t monomials: products of traces and
scalars times one matrix word. Terms of one monomial are merged, monomials with equal
coefficients share them. In the monomials a run of equal factors is a power (Λ Λ Q = Λ² Q) and
a 1×1 letter (V with d_y = 1) is a scalar (tr(V Vᵀ) = V²); exact rationals with more than 12
digits (from float inputs: 0.1 is 3602879701896397/2⁵⁵) are shown as the nearest rational with
denominator ≤ 10⁶ when that is within 10⁻¹² relative, else as a 6-digit decimal.
``Grouped.to_sympy()`` is the grouped sum as a SymPy expression (equal to ``expr`` up to that
rounding: tests/test_latex.py compares them at random rational points).

``Equation``/``align`` print a block of equations as an ``align*`` environment whose lines fit
a page (``LINE_WIDTH``, estimated from the LaTeX source): a line is broken between terms,
a group too wide for a line is split into its terms, and a term still too wide is broken
between its factors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp
from sympy.printing.latex import LatexPrinter

DATA_LETTERS = frozenset({"Lambda", "Sigma_w"})
LINE_WIDTH = 430.0          # pt of a display line (a 10 pt article's 500 pt text width, less margin)
MAX_DIGITS = 12             # longer rationals are shown rounded
MAX_DENOMINATOR = 10 ** 6


class PaperPrinter(LatexPrinter):
    r"""SymPy's LaTeX with paper notation: tr(X) with plain parentheses, Xᵀ as X^⊤, I for the
    identity, and a stack's layer letters ``V__2`` as V^{(2)}.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import PaperPrinter
    >>> Q, L = sp.MatrixSymbol("Q", 2, 2), sp.MatrixSymbol("Lambda", 2, 2)
    >>> PaperPrinter().doprint(sp.Trace(L * Q.T))
    '\\operatorname{tr}(\\Lambda Q^{\\top})'
    """

    def __init__(self):
        super().__init__({"mat_symbol_style": "plain"})

    def _print_Trace(self, expr):
        return r"\operatorname{tr}(%s)" % self._print(expr.arg)

    def _print_Identity(self, expr):
        return "I"

    def _layered(self, name: str, printed) -> str:
        base, sep, layer = name.rpartition("__")
        if sep and layer.isdigit():
            return printed(base) + f"^{{({layer})}}"
        return printed(name)

    def _print_Symbol(self, expr, style="plain"):
        return self._layered(expr.name, lambda n: super(PaperPrinter, self)._print_Symbol(
            sp.Symbol(n)))

    def _print_MatrixSymbol(self, expr):
        return self._layered(expr.name, lambda n: super(PaperPrinter, self)._print_MatrixSymbol(
            sp.MatrixSymbol(n, *expr.shape)))

    def _print_Transpose(self, expr):
        inner = self._print(expr.arg)
        if isinstance(expr.arg, sp.MatrixSymbol):
            if inner.endswith(")}"):               # V^{(2)} -> V^{(2)\top}
                return inner[:-1] + r"\top}"
            return inner + r"^{\top}"
        return r"\left(%s\right)^{\top}" % inner


def tex(expr) -> str:
    r"""LaTeX of ``expr`` in the paper notation of ``PaperPrinter``.

    Parameters
    ----------
    expr : sympy.Basic
        A scalar or matrix expression.

    Returns
    -------
    str

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import tex
    >>> Q, L = sp.MatrixSymbol("Q", 2, 2), sp.MatrixSymbol("Lambda", 2, 2)
    >>> tex(sp.Trace(L * Q * L * Q.T))
    '\\operatorname{tr}(\\Lambda Q \\Lambda Q^{\\top})'
    >>> tex(Q.T * L + sp.Identity(2))
    'I + Q^{\\top} \\Lambda'
    """
    return PaperPrinter().doprint(expr)


# --- grouping ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Term:
    """coeff · (monomials[0] + monomials[1] + …).

    Parameters
    ----------
    coeff : sympy.Expr
        A coefficient free of the variables (in its shortest expanded or factored form).
    monomials : tuple of sympy.Expr or sympy.MatrixExpr
        The monomials sharing it: products of traces and scalars times one matrix word.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import Term
    >>> N, u, q = sp.symbols("N u q", positive=True)
    >>> t = Term((N + 1) / N, (u**2, q**2))
    >>> t.to_sympy()
    (N + 1)*(q**2 + u**2)/N
    """

    coeff: sp.Expr
    monomials: tuple

    def to_sympy(self):
        """The term as one SymPy expression, coeff · (m₁ + m₂ + …).

        Returns
        -------
        sympy.Expr or sympy.MatrixExpr
        """
        total = self.monomials[0] if len(self.monomials) == 1 else (
            sp.MatAdd(*self.monomials) if _is_matrix(self.monomials[0]) else
            sp.Add(*self.monomials))
        return self.coeff * total

    def split(self) -> list:
        """The term as several: one per monomial, else one per summand of the coefficient
        (each factored); [] when it is one already.

        Returns
        -------
        list of Term
            Summing to this term; empty when it cannot be split.
        """
        if len(self.monomials) > 1:
            return [Term(self.coeff, (m,)) for m in self.monomials]
        parts = sp.Add.make_args(sp.expand(self.coeff))
        if len(parts) > 1:
            return [Term(_nice_coefficient(p), self.monomials) for p in parts]
        return []


@dataclass(frozen=True)
class Grouped:
    """A sum of ``Term``s (see the module docstring).

    Parameters
    ----------
    terms : tuple of Term
        Ordered by degree in the variables, then by LaTeX (as ``group`` makes them).

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import group
    >>> N, u = sp.symbols("N u", positive=True)
    >>> g = group(u**2 / 2 + u**2 / (2 * N) + u / N + u, ["u"])
    >>> len(g.terms), [t.monomials for t in g.terms]
    (2, [(u,), (u**2,)])
    """

    terms: tuple

    def to_sympy(self):
        """The grouped sum as one SymPy expression (equal to the expression grouped, up to the
        rounding of long rationals).

        Returns
        -------
        sympy.Expr or sympy.MatrixExpr
            0 for no terms.
        """
        parts = [t.to_sympy() for t in self.terms]
        if not parts:
            return sp.Integer(0)
        return sp.MatAdd(*parts) if _is_matrix(parts[0]) else sp.Add(*parts)


def _is_matrix(e) -> bool:
    return isinstance(e, sp.MatrixExpr)


def group(expr, variables=()) -> Grouped:
    """``expr`` as a sum of coefficients times monomials in the variables.

    Parameters
    ----------
    expr : sympy Expr or MatrixExpr
        A sum of products of numbers, scalar symbols, traces, task means and matrix words.
    variables : iterable of str
        Names of scalar symbols that belong to the monomials (matrix letters other than Λ
        and Σ_w always do).

    Returns
    -------
    Grouped
        Terms ordered by degree in the variables, then by their LaTeX.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import group
    >>> N, eta, u = sp.symbols("N eta u", positive=True)
    >>> expanded = -eta**2 - 2 * eta**2 / N - eta**2 / N**2 + u**2 * (1 + 1 / N) / 2
    >>> [(t.coeff, t.monomials) for t in group(expanded, ["u"]).terms]
    [(-eta**2*(N + 1)**2/N**2, (1,)), ((N + 1)/(2*N), (u**2,))]
    """
    names = frozenset(variables) | {s.name for s in expr.free_symbols
                                    if isinstance(s, sp.MatrixSymbol) and s.shape == (1, 1)}
    by_monomial: dict = {}
    for scalars, matrices in _expand(expr):
        coeff, mono = [], []
        for f in scalars:
            f = _normal_scalar(f)
            (mono if _holds_variables(f, names) else coeff).append(f)
        word = _normal_word(matrices)
        if word.get("scalar") is not None:
            mono.append(word["scalar"])
        key = (tuple(sorted(mono, key=sp.default_sort_key)), word["matrix"])
        by_monomial[key] = by_monomial.get(key, 0) + sp.Mul(*coeff)
    by_coeff: dict = {}
    for (mono, matrix), coeff in by_monomial.items():
        coeff = _shorten(sp.expand(coeff))
        if coeff == 0:
            continue
        scalar = sp.Mul(*mono)
        monomial = scalar if matrix is None else (
            matrix if scalar == 1 else sp.MatMul(scalar, matrix))
        shared = _nice_coefficient(coeff)
        if abs(shared) == 1:                     # ±1: nothing to share
            by_coeff[(shared, monomial)] = [monomial]
        else:
            by_coeff.setdefault(shared, []).append(monomial)
    terms = []
    for key, monos in by_coeff.items():
        coeff = key[0] if isinstance(key, tuple) else key
        monos = sorted(monos, key=lambda m: (_degree(m, names), tex(m)))
        terms.append(Term(coeff, tuple(monos)))
    terms.sort(key=lambda t: (_degree(t.monomials[0], names), tex(t.monomials[0])))
    return Grouped(tuple(terms))


FACTORED_PREFERENCE = 1.15     # a factored coefficient may be this much wider and still win


def _nice_coefficient(c) -> sp.Expr:
    """``c`` factored when that is not much wider than expanded and brings in no new integer
    multiplier ≥ 10 (factoring 1/200 + tr(Λ)/2 gives (100 tr(Λ) + 1)/200: not shorter to
    read)."""
    c = sp.expand(c)
    if not c.free_symbols:
        return c
    factored = sp.factor(c)
    if _multipliers(factored) - _multipliers(c):
        return c
    return factored if width(tex(factored)) <= FACTORED_PREFERENCE * width(tex(c)) else c


def _multipliers(e) -> set:
    """Integer multipliers ≥ 10 of the terms of the sums in ``e``."""
    out = set()
    for add in e.atoms(sp.Add) | ({e} if isinstance(e, sp.Add) else set()):
        for term in add.args:
            k = term.as_coeff_Mul()[0]
            if k.is_Rational and abs(k.p) >= 10:
                out.add(abs(k.p))
    return out


def partial_fractions(e) -> sp.Expr:
    """The narrowest (in LaTeX) partial-fraction form of a rational function ``e`` over one
    of its symbols (e.g. a minimum loss as a sum over modes).

    Parameters
    ----------
    e : sympy.Expr
        A rational function of its symbols.

    Returns
    -------
    sympy.Expr
        Of ``together(e)`` and ``apart(e, s)`` for each free symbol s, the one of least
        ``width``; equal to ``e``.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import partial_fractions
    >>> N, s1, s2 = sp.symbols("N s_1 s_2", positive=True)
    >>> loss = sp.together(s1 / (N * s1 + 1) + s2 / (N * s2 + 1))
    >>> loss
    (s_1*(N*s_2 + 1) + s_2*(N*s_1 + 1))/((N*s_1 + 1)*(N*s_2 + 1))
    >>> partial_fractions(loss)               # a sum over the modes is narrower
    s_1/(N*s_1 + 1) + s_2/(N*s_2 + 1)
    """
    e = sp.together(e)
    forms = [e] + [sp.apart(e, s) for s in sorted(e.free_symbols, key=str)]
    return min(forms, key=lambda f: width(tex(f)))


def _shorten(c) -> sp.Expr:
    """Rationals of more than MAX_DIGITS digits replaced as the module docstring says."""
    long = {r: _short_rational(r) for r in c.atoms(sp.Rational)
            if len(str(r)) > MAX_DIGITS and not r.is_Integer}
    return c.xreplace(long) if long else c


def _short_rational(r: sp.Rational):
    f = Fraction(int(r.p), int(r.q)).limit_denominator(MAX_DENOMINATOR)
    if abs(f - Fraction(int(r.p), int(r.q))) <= Fraction(1, 10 ** 12) * abs(f):
        return sp.Rational(f.numerator, f.denominator)
    return sp.Float(r, 6)


def short_numbers(text: str) -> str:
    """``text`` with each long fraction written ``p/q`` (as ``str`` and ``repr`` print an
    exact SymPy rational: 0.1 from a float is 3602879701896397/36028797018963968) rounded as
    ``group`` rounds coefficients; the rest of the text is kept.

    A fraction is an optional minus sign, digits, a slash and digits, not part of a longer
    number or name (no letter, digit, underscore or decimal point touching it); it is replaced
    when it has more than ``MAX_DIGITS`` characters, by the rational with denominator at most
    ``MAX_DENOMINATOR`` nearest to it when that is within 10⁻¹² of it (relative), else by
    SymPy's 6-significant-digit float. LaTeX's ``\\frac{p}{q}`` is not a fraction here: print
    with ``str``/``repr``, or round the expression first (``group``).

    Parameters
    ----------
    text : str
        Plain text, e.g. the ``repr`` of an ``ICLData`` built from floats.

    Returns
    -------
    str
        ``text`` with its long fractions replaced; short ones (such as 1/3) unchanged.

    Examples
    --------
    >>> from icldyn.theory import ICLData
    >>> from icldyn.theory.texform import short_numbers
    >>> repr(ICLData(d=1, N=4, noise=0.1))                  # 0.1 kept exact: its binary value
    "ICLData(d=1, N=4, d_y=1, tasks='gaussian', noise=3602879701896397/36028797018963968)"
    >>> short_numbers(repr(ICLData(d=1, N=4, noise=0.1)))
    "ICLData(d=1, N=4, d_y=1, tasks='gaussian', noise=1/10)"
    >>> short_numbers("1/1000003 is short; -8895999182988127/72057594037927936 has no p/q near")
    '1/1000003 is short; -0.123457 has no p/q near'
    >>> short_numbers("2.5/10000000000000 and x_1/100000000000003 are not fractions")
    '2.5/10000000000000 and x_1/100000000000003 are not fractions'
    """
    return re.sub(r"(?<![\w.])(-?\d+)/(\d+)(?![\w.])", lambda m: str(_short_rational(sp.Rational(
        int(m.group(1)), int(m.group(2))))) if len(m.group(0)) > MAX_DIGITS else m.group(0),
        text)


def _holds_variables(f, names: frozenset) -> bool:
    for s in f.free_symbols:
        if isinstance(s, sp.MatrixSymbol):
            if s.name not in DATA_LETTERS:
                return True
        elif s.name in names:
            return True
    return False


def _degree(e, names: frozenset) -> int:
    """How many variable letters ``e`` multiplies (powers counted)."""
    if isinstance(e, (sp.Pow, sp.MatPow)) and e.exp.is_Integer and e.exp > 0:
        return _degree(e.base, names) * int(e.exp)
    if isinstance(e, sp.MatrixSymbol):
        return int(e.name not in DATA_LETTERS)
    if isinstance(e, sp.Symbol):
        return int(e.name in names)
    return sum(_degree(a, names) for a in e.args)


def _expand(e) -> list:
    """[(scalar factors, matrix factors)] whose sum of products is ``e``: sums distributed,
    task means and sums over tasks split term by term (they are linear), with their
    matrix-free factors taken outside."""
    if isinstance(e, (sp.Add, sp.MatAdd)):
        return [t for a in e.args for t in _expand(a)]
    if isinstance(e, (sp.Mul, sp.MatMul)):
        out = [((), ())]
        for a in e.args:
            out = [(s1 + s2, m1 + m2) for s1, m1 in out for s2, m2 in _expand(a)]
        return out
    if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp > 1 and \
            isinstance(e.base, sp.Add):
        return _expand(sp.Mul(*[e.base] * int(e.exp), evaluate=False))
    if _is_linear_mean(e):
        out = []
        for scalars, matrices in _expand(e.args[0]):
            inside = [f for f in scalars if _has_matrix(f)]
            outside = [f for f in scalars if not _has_matrix(f)]
            body = sp.Mul(*inside) * (sp.MatMul(*matrices) if matrices else 1)
            out.append((tuple(outside), (e.func(body, *e.args[1:]),)) if matrices
                       else (tuple(outside) + (e.func(body, *e.args[1:]),), ()))
        return out
    if _is_matrix(e) and not isinstance(e, sp.Trace):
        return [((), (e,))]
    return [((e,), ())]


def _is_linear_mean(e) -> bool:
    """A sum over tasks or a task expectation (linear in its first argument)."""
    return isinstance(e, sp.Sum) or (isinstance(e, sp.core.function.AppliedUndef)
                                     and len(e.args) == 1) or type(e).__name__ == "TaskMean"


def _has_matrix(f) -> bool:
    return any(isinstance(s, sp.MatrixSymbol) for s in f.free_symbols)


def _letter(f):
    """The scalar a 1×1 letter is (V with d_y = 1), else None."""
    base = f.arg if isinstance(f, sp.Transpose) else f
    if isinstance(base, sp.MatrixSymbol) and base.shape == (1, 1):
        return sp.Symbol(base.name)
    return None


def _normal_word(matrices) -> dict:
    """{"scalar": the word's scalar letters' product (or None), "matrix": the rest as a
    MatMul with runs as powers (None if nothing is left)}; a 1×1 word is a trace."""
    flat = []
    for m in matrices:
        flat += list(m.args) if isinstance(m, sp.MatMul) else [m]
    scalar, rest = sp.Integer(1), []
    for m in flat:
        s = _letter(m)
        if s is not None:
            scalar *= s
        elif isinstance(m, sp.Identity):
            continue
        elif not _is_matrix(m):
            scalar *= m
        else:
            rest.append(m)
    shape = (matrices[0].shape[0], matrices[-1].shape[1]) if matrices else None
    if rest and shape == (1, 1):
        scalar, rest = scalar * sp.Trace(_powers(rest)), []
    return {"scalar": None if scalar == 1 else scalar,
            "matrix": _powers(rest) if rest else (
                sp.Identity(shape[0]) if shape is not None and shape != (1, 1) else None)}


def _powers(factors) -> sp.MatrixExpr:
    """The product of ``factors`` with runs of equal factors as powers."""
    runs = []
    for f in factors:
        if runs and runs[-1][0] == f:
            runs[-1][1] += 1
        else:
            runs.append([f, 1])
    parts = [f if k == 1 else sp.MatPow(f, k) for f, k in runs]
    return parts[0] if len(parts) == 1 else sp.MatMul(*parts)


def _normal_scalar(f):
    """A scalar factor with its traces normalised (scalar letters out, runs as powers)."""
    if isinstance(f, sp.Pow):
        return _normal_scalar(f.base) ** f.exp
    if isinstance(f, sp.Trace):
        word = _normal_word([f.arg])
        scalar = word["scalar"] if word["scalar"] is not None else sp.Integer(1)
        if word["matrix"] is None:
            return scalar
        return scalar * sp.Trace(word["matrix"])
    if _is_linear_mean(f):
        return f.func(_normal_scalar(f.args[0]) if not _is_matrix(f.args[0]) else f.args[0],
                      *f.args[1:])
    if isinstance(f, sp.Mul):
        return sp.Mul(*map(_normal_scalar, f.args))
    return f


# --- equations and line breaking --------------------------------------------------------------

@dataclass
class Equation:
    r"""One equation of an ``align`` block: ``lhs = rhs`` then ``tail`` (LaTeX after it on the
    last line, e.g. ``, \qquad \dot C = 0``). ``rhs`` is a Grouped sum, a SymPy expression
    (grouped with ``variables``, or printed term by term if not ``grouped``) or LaTeX.

    Parameters
    ----------
    lhs : str
        LaTeX of the left-hand side.
    rhs : Grouped, sympy.Basic or str
        The right-hand side.
    tail : str
        LaTeX appended to the last line ("" by default).
    variables : tuple of str
        Scalar symbols that belong to the monomials, passed to ``group``.
    grouped : bool
        Whether to group a SymPy ``rhs`` (True; expressions with exp, log, roots or
        non-integer powers are printed term by term anyway).

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import Equation, align
    >>> u, N = sp.symbols("u N", positive=True)
    >>> print(align([Equation(r"\dot u", -u * (1 + 1 / N) + 1 / N, variables=("u",))]))
    \begin{align*}
    \dot u &= \frac{1}{N} - \left(1 + \frac{1}{N}\right) u
    \end{align*}
    """

    lhs: str
    rhs: object
    tail: str = ""
    variables: tuple = ()
    grouped: bool = True

    def pieces(self) -> list:
        """[(LaTeX of a term with its sign, its Term or None)].

        Returns
        -------
        list of tuple
            One (signed LaTeX, Term) per term of the grouped right-hand side (Term None when the
            right-hand side was not grouped, or was LaTeX: then one piece).
        """
        rhs = self.rhs
        if isinstance(rhs, str):
            return [(rhs, None)]
        if not isinstance(rhs, Grouped):
            if not self.grouped or not _is_polynomial_like(rhs):
                return [(p, None) for p in _signed(list(map(tex, sp.Add.make_args(rhs))))]
            rhs = group(rhs, self.variables)
        if not rhs.terms:
            return [("0", None)]
        return [(s, t) for s, t in zip(_signed([_term_tex(t) for t in rhs.terms]), rhs.terms)]


def _is_polynomial_like(e) -> bool:
    """False for expressions grouping does not apply to (exp, log, roots: closed forms)."""
    if e.has(sp.exp, sp.log, sp.asinh, sp.atanh, sp.atan, sp.acosh):
        return False
    return all(p.exp.is_Integer for p in e.atoms(sp.Pow))


def _signed(parts: list) -> list:
    return [p if p.startswith("-") else "+ " + p for p in parts]


def _term_tex(term: Term) -> str:
    """``coeff (m1 + m2)`` with the sign first."""
    coeff = term.coeff
    sign = "-" if coeff.could_extract_minus_sign() else ""
    if sign:
        coeff = -coeff
    monos = _signed([_monomial_tex(m) for m in term.monomials])
    monos[0] = monos[0].removeprefix("+ ")
    body = " ".join(monos)
    if len(term.monomials) > 1:
        body = r"\left(%s\right)" % body
    if coeff == 1:
        text = body if body != "1" else "1"
    elif term.monomials[0] == 1 and len(term.monomials) == 1:
        text = tex(coeff)
    else:
        c = tex(coeff)
        text = (r"\left(%s\right) " % c if isinstance(coeff, sp.Add) else c + " ") + body
    return (sign + " " + text) if sign else text


def _monomial_tex(m) -> str:
    """A monomial: its scalar factors, then its matrix word (no parentheses around it)."""
    if isinstance(m, sp.MatMul) and not _is_matrix(m.args[0]):
        scalar, matrices = m.as_coeff_matrices()
        flat = [f for x in matrices for f in (x.args if isinstance(x, sp.MatMul) else (x,))]
        return tex(scalar) + " " + tex(sp.MatMul(*flat))
    return tex(m)


_SCRIPT = re.compile(r"[_^]\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}|[_^](\\[A-Za-z]+|.)")
_FRAC = re.compile(r"\\frac\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}"
                   r"\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")


def width(latex: str) -> float:
    r"""Estimated printed width (pt, 10 pt type) of display-maths ``latex``: a character or
    symbol 6.2 pt, scripts at 70 %, a fraction as wide as its wider part, a binary operator
    with its spacing 13 pt.

    Parameters
    ----------
    latex : str
        Display-maths LaTeX.

    Returns
    -------
    float
        The width in pt (an estimate from the source, not a typesetting).

    Examples
    --------
    >>> from icldyn.theory.texform import width
    >>> width("a + b"), width(r"\frac{1}{N}") < width(r"\frac{1}{N} + \frac{1}{N}")
    (25.4, True)
    """
    s = latex
    for _ in range(4):
        s = _FRAC.sub(lambda m: "#" * round(max(width(m.group(1)), width(m.group(2))) / 6.2 + 1),
                      s)
    scripts = 0.0
    for m in _SCRIPT.finditer(s):
        scripts += 0.7 * width(m.group(1) if m.group(1) is not None else m.group(2))
    s = _SCRIPT.sub("", s)
    s = re.sub(r"\\(left|right|bigl|bigr|Bigl|Bigr|biggl|biggr)\b", "", s)
    s = s.replace(r"\operatorname{tr}", "tr").replace(r"\!", "")
    quads = 10 * s.count(r"\quad") + 10 * s.count(r"\qquad")
    s = re.sub(r"\\q?quad", "", s)
    s = re.sub(r"\\mathrm\{([^{}]*)\}|\\text\{([^{}]*)\}",
               lambda m: m.group(1) or m.group(2) or "", s)
    ops = len(re.findall(r"(?<![{(^_])\s[-+=]\s|\\times|\\cdot", s))
    s = re.sub(r"\\[A-Za-z]+", "#", s)
    s = re.sub(r"[\s{}]|\\[,;:!]", "", s)
    s = re.sub(r"[-+=]", "", s) if ops else s
    return 6.2 * len(s) + 13.0 * ops + scripts + quads


def align(equations, line_width: float = LINE_WIDTH) -> str:
    r"""An ``align*`` block of ``equations`` whose lines fit ``line_width``.

    Lines are filled term by term within ``line_width`` less the widest left-hand side; a
    term too wide is split into its monomials or summands, and a product still too wide is
    broken between its factors. Continuation lines start with ``&\quad``.

    Parameters
    ----------
    equations : sequence of Equation
    line_width : float
        The width of a display line in pt (``LINE_WIDTH``).

    Returns
    -------
    str
        LaTeX from ``\begin{align*}`` to ``\end{align*}``.

    Examples
    --------
    >>> import sympy as sp
    >>> from icldyn.theory.texform import Equation, align
    >>> xs = sp.symbols("x0:12")
    >>> loss = Equation("L", sum(x**2 for x in xs), variables=tuple(map(str, xs)))
    >>> print(align([loss], line_width=120))
    \begin{align*}
    L &= x_{0}^{2} + x_{10}^{2} + x_{11}^{2} + x_{1}^{2} \\
    &\quad + x_{2}^{2} + x_{3}^{2} + x_{4}^{2} + x_{5}^{2} \\
    &\quad + x_{6}^{2} + x_{7}^{2} + x_{8}^{2} + x_{9}^{2}
    \end{align*}
    """
    lhs_width = max([width(e.lhs) for e in equations] + [0.0])
    budget = max(line_width - lhs_width - 20.0, 120.0)
    rows = []
    for eq in equations:
        lines = _fill(eq.pieces(), budget)
        lines[-1] += eq.tail
        rows.append(rf"{eq.lhs} &= {lines[0]}")
        rows += [rf"&\quad {line}" for line in lines[1:]]
    return "\n".join([r"\begin{align*}", " \\\\\n".join(rows), r"\end{align*}"])


def _fill(pieces, budget: float) -> list:
    """Lines of terms (the first without its +) fitting ``budget``: too wide a term is split
    (``Term.split``) or, a product, broken between its factors."""
    lines, current = [], ""
    queue = list(pieces)
    while queue:
        text, term = queue.pop(0)
        if not current:
            text = text.removeprefix("+ ") if not lines else text
        candidate = (current + " " + text).strip()
        if width(candidate) <= budget:
            current = candidate
            continue
        if current:
            lines.append(current)
            current = ""
            queue.insert(0, (text, term))
            continue
        parts = term.split() if term is not None else []
        if parts:
            queue[:0] = list(zip(_signed([_term_tex(t) for t in parts]), parts))
            if not lines:
                queue[0] = (queue[0][0].removeprefix("+ "), queue[0][1])
            continue
        lines += _break_product(text, budget)
    if current or not lines:
        lines.append(current)
    return lines


def _break_product(text: str, budget: float) -> list:
    """One term too wide for a line, broken at spaces between its top-level factors."""
    chunks, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if text.startswith(r"\left", i):
            depth += 1
        if text.startswith(r"\right", i):
            depth -= 1
        if ch == " " and depth == 0 and text.startswith(r"\operatorname", i + 1):
            chunks.append(text[start:i])
            start = i + 1
    chunks.append(text[start:])
    lines, current = [], ""
    for c in chunks:
        if current and width(current + " " + c) > budget:
            lines.append(current)
            current = r"\qquad \times " + c
        else:
            current = (current + " " + c).strip()
    lines.append(current)
    return lines
