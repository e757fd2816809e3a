"""LaTeX export of derivations: an ``align*`` block (``Derivation.to_latex()``), a standalone
document (``to_latex(standalone=True)``, ``derivation_document``), in the notation of
docs/math.md and printed by ``texform`` (terms grouped by monomial, factored coefficients,
lines that fit the page)."""

from __future__ import annotations

import sympy as sp

from .derive import register_analysis
from .texform import Equation, align, short_numbers, tex
from .words import dim_symbol

# expanded forms longer than this many terms are left to the compact η² Σ k_b ‖G_b‖² form
MAX_EXPANDED_TERMS = 30
MAX_EXPANSION_COST = 20000     # gradient-term products (deep stacks: the compact form only)

PREAMBLE = [r"\documentclass[10pt]{article}", r"\usepackage[margin=2cm]{geometry}",
            r"\usepackage{amsmath,amssymb,array}", r"\allowdisplaybreaks",
            # table columns that wrap: critical-set names (W) and kinds/algorithms (K)
            r"\newcolumntype{W}{>{\raggedright\arraybackslash}p{5.0cm}}",
            r"\newcolumntype{K}{>{\raggedright\arraybackslash}p{2.9cm}}"]
NOTATION = (r"Notation: $\Lambda$ input covariance, $\Sigma_w$ task-row covariance, $\sigma$ "
            r"label noise, $N$ context length, $\mathcal{D}(Y) = U\,\mathrm{diag}(c\circ"
            r"\mathrm{diag}(U^\top Y U))\,U^\top$ the part of $Y$ diagonal in $\Lambda$'s "
            r"eigenbasis $U$ ($c$: task-mode variances). Every expectation is exact for "
            r"finite $N$.")


def _grad_tex(name: str) -> str:
    return rf"\frac{{\partial L}}{{\partial {_letter_tex(name)}}}"


def _letter_tex(name: str) -> str:
    return tex(sp.MatrixSymbol(name, 2, 2))


def derivation_latex(der, standalone: bool = False) -> str:
    r"""Loss, gradient flow, conserved quantities and their exact change under one GD step.

    Parameters
    ----------
    der : Derivation
    standalone : bool
        A whole document (compiles with pdflatex) instead of a commented ``align*`` block.

    Returns
    -------
    str

    Examples
    --------
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.latex import derivation_latex
    >>> der = derive(models.Merged(1), ICLData(d=1, N=4))
    >>> print(derivation_latex(der).splitlines()[0])
    % Merged on ICLData(d=1, N=4, d_y=1, tasks='gaussian', noise=0)
    >>> r"\documentclass" in derivation_latex(der, standalone=True)
    True
    """
    setting = "symbolic dimensions" if der.structural else short_numbers(repr(der.data))
    eqs = [Equation("L", der.loss)]
    for name, rhs in der.flow.items():
        eqs.append(Equation(rf"\frac{{d{_letter_tex(name)}}}{{dt}}", rhs))
    for i, c in enumerate(der.conserved):
        compact = " ".join(
            rf"{'+' if k > 0 else '-'} {'' if abs(k) == 1 else tex(abs(k))}"
            + (rf"\left\|{_grad_tex(L)}\right\|_F^2" if L == M else
               rf"\left\langle {_grad_tex(L)}, {_grad_tex(M)}\right\rangle")
            for k, L, M in c.terms).lstrip("+ ")
        eqs.append(Equation(rf"C_{{{i + 1}}}", c.expr,
                            rf", \qquad \frac{{dC_{{{i + 1}}}}}{{dt}} = 0"))
        eqs.append(Equation(rf"\Delta C_{{{i + 1}}}^{{\mathrm{{GD}}}}",
                            rf"\eta^{{2}}\left({compact}\right)"))
        if c.gd_change_cost <= MAX_EXPANSION_COST and \
                len(c.gd_change.terms) <= MAX_EXPANDED_TERMS:
            eqs.append(Equation("", c.gd_change_expr))
    for i, law in enumerate(der.conserved_matrices):
        name = rf"X_{{{i + 1}}}"
        eqs.append(Equation(name, law.expr))
        eqs.append(Equation(rf"\frac{{d{name}}}{{dt}}", "0", rf" \quad \text{{(a symmetric "
                            rf"matrix on the ${tex(dim_symbol(law.space))}$-dimensional "
                            rf"space)}}"))
        if law.gd_change_cost <= MAX_EXPANSION_COST and \
                len(law.gd_change.terms) <= MAX_EXPANDED_TERMS:
            eqs.append(Equation(rf"\Delta {name}^{{\mathrm{{GD}}}}", law.gd_change_expr))
    body = rf"% {der.model.name} on {setting}" + "\n" + align(eqs)
    if standalone:
        return derivation_document(f"{der.model.name} on {_text(setting)}",
                                   [("Loss, flow and conserved quantities", "", body)])
    return body


def _text(s: str) -> str:
    """Plain text safe in LaTeX's text mode."""
    return s.translate({ord(c): "\\" + c for c in "_{}&%#$"}).replace("=", "$=$")


def derivation_document(title: str, sections: list[tuple[str, str, object]]) -> str:
    r"""A standalone LaTeX document: ``sections`` are (heading, prose, derivation or LaTeX).

    Parameters
    ----------
    title : str
        The document's title.
    sections : list of tuple
        (heading, prose, body): body a Derivation (printed by its ``to_latex()``) or LaTeX.

    Returns
    -------
    str
        The document, from the preamble (``PREAMBLE``) to ``\end{document}``, with the notation
        paragraph first.

    Examples
    --------
    >>> from icldyn.theory.latex import derivation_document
    >>> body = r"\[ L^* = \tfrac{1}{6} \]"
    >>> doc = derivation_document("A note", [("Result", "The minimum loss at N = 4.", body)])
    >>> doc.startswith(r"\documentclass"), r"\section*{Result}" in doc, doc.rstrip()[-14:]
    (True, True, '\\end{document}')
    """
    out = PREAMBLE + [rf"\title{{{title}}}", r"\date{}", r"\begin{document}", r"\maketitle",
                      r"Generated by \texttt{icldyn}; do not edit by hand. " + NOTATION, ""]
    for heading, prose, body in sections:
        out += [rf"\section*{{{heading}}}", prose, ""]
        out.append(body if isinstance(body, str) else body.to_latex())
        out.append("")
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


register_analysis("to_latex", derivation_latex)
