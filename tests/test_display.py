"""Notebook display: a Derivation shows its equations, a list of critical sets a table, a
trajectory a short summary whose numbers are the trajectory's own."""

import html
import re

import numpy as np
import sympy as sp

from icldyn.numerics import compile_flow, gradient_descent
from icldyn.theory import ICLData, derive, models

DATA = ICLData(d=2, N=4, Lambda=sp.diag(2, 1), noise=sp.Rational(1, 10))


def test_derivation_shows_its_equations():
    der = derive(models.Merged(2), DATA)
    shown = der._repr_latex_()
    assert shown.startswith("$$\\begin{aligned}") and shown.endswith("\\end{aligned}$$")
    body = der.to_latex().split("\n", 1)[1]
    assert shown[2:-2] == body.replace("{align*}", "{aligned}")
    assert "%" not in shown                   # the comment line would hide the maths


def test_critical_sets_show_as_a_table():
    """One row per set, in order, with the set's loss, index and kind."""
    sets = derive(models.Merged(2), DATA).fixed_points()
    assert isinstance(sets, list)
    table = sets._repr_html_()
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert len(rows) == len(sets)
    for fp, row in zip(sets, rows):
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        assert cells[0] == fp.name and float(cells[1]) == round(float(fp.loss), 6)
        assert cells[2] == str(fp.hessian_index) and cells[3].startswith(fp.kind)
    latex = sets._repr_latex_()
    assert latex.count("\\\\") == len(sets) and "\\begin{array}" in latex


def test_trajectory_summary_is_its_own_numbers():
    flow = compile_flow(derive(models.Merged(2), DATA), backend="numpy")
    theta = flow.pack({"V": 0.3, "Q": np.array([[0.2, 0.1], [0.0, 0.3]])})
    traj = gradient_descent(flow, theta, lr=0.05, steps=40)
    s = traj.summary()
    assert s["method"] == "gd" and s["rows"] == len(traj.loss) and s["paths"] == 1
    assert s["loss"] == (traj.loss[0], traj.loss[-1]) and s["min_loss"] == traj.loss.min()
    drift = np.abs(traj.conserved - traj.conserved[0]).max()
    assert s["conserved_drift"] == drift > 0          # GD changes C at O(η²)
    shown = traj._repr_html_()
    assert f"{traj.loss[-1]:.6g}" in shown and f"{drift:.3g}" in shown and "gd" in shown
