"""Tables of critical sets, for documents (LaTeX ``tabular``) and notebooks (HTML, and LaTeX
for MathJax): ``CriticalSets`` is the list ``Derivation.fixed_points()`` returns."""

from __future__ import annotations

import html

COLUMNS = ("critical set", "L", "Hessian index", "kind", "learned algorithm")


def _set_cells(fp, math=lambda s: f"${s}$") -> tuple:
    """(name, loss, Hessian index, kind, learned algorithm) of one FixedPointSet as text;
    ``math`` wraps the few mathematical symbols (the statistics S_yx, …, and k)."""
    kind = fp.kind + (f" ({math(f'k = {fp.escape.order}')})" if fp.escape else "")
    index = "" if fp.hessian_index is None else str(fp.hessian_index)
    return (fp.name, _loss_text(fp.loss), index, kind, _algorithm_text(fp.algorithm, math))


def _loss_text(loss) -> str:
    try:
        return f"{float(loss):.6f}"
    except TypeError:                     # symbolic data: the loss is an expression
        return str(loss)


def _algorithm_text(algorithm, math=lambda s: f"${s}$") -> str:
    """A minimum's learned algorithm in a table cell: a gradient step through the cross
    moments it uses, or the statistics that make it non-linear in the context."""
    if algorithm is None:
        return ""
    used = ", ".join(math(f"S_{{{s[2:]}}}") for s in algorithm.statistics)
    if set(algorithm.statistics) <= {"S_yx", "S_xy"}:
        return f"gradient step via {used}"
    return f"non-linear: uses {used}"


def _escape(text: str) -> str:
    """Text-mode LaTeX of a set's name (its braces and underscores escaped)."""
    return text.translate({ord(c): "\\" + c for c in "_{}"})


def sets_tabular(sets) -> str:
    r"""A LaTeX ``tabular`` of the sets (columns W and K wrap: the documents' preamble,
    ``latex.PREAMBLE``, defines them).

    Parameters
    ----------
    sets : iterable of FixedPointSet

    Returns
    -------
    str
        One row per set: name, loss, Hessian index, kind (with the escape order k of a
        degenerate saddle), learned algorithm.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.display import sets_tabular
    >>> sets = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))).fixed_points()
    >>> print(sets_tabular(sets))
    \begin{tabular}{WrrKK}
    critical set & $L$ & Hessian index & kind & learned algorithm \\ \hline
    global minimum & 0.166667 & 0 & minimum & gradient step via $S_{yx}$ \\
    saddle set & 0.500000 & 1 & strict saddle &  \\
    \end{tabular}
    """
    rows = [r"\begin{tabular}{WrrKK}",
            r"critical set & $L$ & Hessian index & kind & learned algorithm \\ \hline"]
    for fp in sets:
        name, *rest = _set_cells(fp)
        rows.append(" & ".join([_escape(name)] + rest) + r" \\")
    rows.append(r"\end{tabular}")
    return "\n".join(rows)


class CriticalSets(list):
    """A list of FixedPointSet that shows as a table in notebooks (``_repr_html_``,
    ``_repr_latex_``; the columns of ``COLUMNS``). Built like a list, from the sets.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> sets = derive(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1))).fixed_points()
    >>> type(sets).__name__, [fp.name for fp in sets]
    ('CriticalSets', ['global minimum', 'saddle set'])
    >>> sets._repr_html_().count("<tr>")            # a header row and one row per set
    3
    """

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(
            f"<td>{html.escape(c)}</td>" for c in _set_cells(fp, math=lambda s: s)) + "</tr>"
            for fp in self)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_latex_(self) -> str:
        rows = [r" & ".join(rf"\text{{{_escape(c)}}}" for c in COLUMNS)]
        for fp in self:
            name, loss, index, kind, alg = _set_cells(fp, math=lambda s: f"${s}$")
            rows.append(" & ".join([rf"\text{{{_escape(name)}}}", loss, index,
                                    rf"\text{{{kind}}}", rf"\text{{{alg}}}"]))
        return "$$\\begin{array}{lrrll}\n" + " \\\\\n".join(rows) + "\n\\end{array}$$"
