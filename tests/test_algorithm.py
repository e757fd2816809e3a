"""The learned algorithm of every minimum (theory.algorithm,
numerics.experiments.risks.minima_risks): global and local minima of every model and task law,
the network's Monte-Carlo risk at each against its derived loss, next to OLS and the
Bayes-optimal predictor of the task law."""

import numpy as np
import pytest

from icldyn.numerics.experiments.risks import minima_risks
from icldyn.theory import ICLData, derive, models

L2 = np.array([[1.5, 0.3], [0.3, 0.7]])
U, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((2, 2)))
ROTATED = U @ np.diag([2.0, 1.0]) @ U.T
CASES = {
    "FullLSA, scalar: the rank-one mode is a local minimum":
        (models.FullLSA(2), ICLData(d=2, N=3, Lambda=L2, noise=0.2), 2),
    "SeparateKQ, one rank-1 head, eigenbasis tasks: mode {2} is a local minimum":
        (models.SeparateKQ(2, heads=1, rank=1, d_y=2),
         ICLData(d=2, N=4, Lambda=ROTATED, d_y=2, tasks="diagonal", noise=0.2), 2),
    "Merged, Gaussian task rows":
        (models.Merged(2, d_y=2), ICLData(d=2, N=4, Lambda=L2, d_y=2, noise=0.3), 1),
    "MultiHead, a finite task set":
        (models.MultiHead(2, heads=2),
         ICLData(d=2, N=3, Lambda=L2, tasks=np.array([[[1.0, 0.5]], [[-0.5, 1.0]],
                                                      [[0.2, -1.0]]]), noise=0.3), 1),
}


@pytest.mark.parametrize("case", CASES)
def test_every_minimum_has_its_learned_algorithm_next_to_ols_and_bayes(case):
    """One row per set of kind minimum (local ones included), in the sets' order; the network
    at the set's point (no derived formula) has the set's derived loss as its risk (within 4
    standard errors, 6000 prompts), and the Bayes-optimal predictor of the task law does no
    worse on the same prompts. For scalar tasks the algorithm is the gradient step
    ŷ = S_yx M x_q / N with the set's own M (FullLSA's local minimum through P₁ S_xy Q₂)."""
    model, data, count = CASES[case]
    der = derive(model, data)
    sets = der.fixed_points()
    minima = [fp for fp in sets if fp.kind == "minimum"]
    assert len(minima) == count and all(fp.algorithm is not None for fp in minima)
    assert all(fp.algorithm is None for fp in sets if fp.kind != "minimum")
    rows = minima_risks(der, prompts=6000, seed=1, sets=sets)
    assert [r["name"] for r in rows] == [fp.name for fp in minima]
    for row, fp in zip(rows, minima):
        mean, se = row["learned_mc"]
        assert abs(mean - row["theory"]) < 4 * se, row
        assert row["bayes_mc"][0] <= mean + 4 * se, row
        assert row["algorithm"] == fp.algorithm.description
        if data.d_y == 1:
            assert set(fp.algorithm.statistics) <= {"S_yx", "S_xy"}
            np.testing.assert_allclose(np.array(fp.algorithm.M, dtype=float),
                                       np.array(fp.info["M"], dtype=float), atol=1e-12)
    if isinstance(model, models.FullLSA):
        assert [fp.algorithm.statistics for fp in minima] == [("S_yx",), ("S_xy",)]
