"""LaTeX export of a derivation: loss, gradient flow, conserved quantities and their GD change."""

from __future__ import annotations

import sympy as sp


def _tex(expr) -> str:
    return sp.latex(expr, mat_symbol_style="plain")


def derivation_latex(der) -> str:
    """A LaTeX fragment (align* blocks) in the package's notation (MATH.md)."""
    lines = [rf"% {der.model!r} on {der.data!r}",
             r"\begin{align*}", rf"L &= {_tex(der.loss)} \\"]
    for name, rhs in der.flow.items():
        lines.append(rf"\frac{{d{name}}}{{dt}} &= {_tex(rhs)} \\")
    for c in der.conserved:
        lines.append(rf"C &= {_tex(c.expr)}, \qquad \frac{{dC}}{{dt}} = 0 \\")
        lines.append(rf"\Delta C_{{\mathrm{{GD}}}} &= {_tex(c.gd_change_expr)} \\")
    lines[-1] = lines[-1].rstrip(" \\")
    lines.append(r"\end{align*}")
    return "\n".join(lines)
