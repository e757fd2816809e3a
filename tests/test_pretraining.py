"""Pretraining on a task set read on the family: the exact learning curve of the Merged model
and finite pretraining data (least squares on n prompts, double descent at τ = n/d² = 1)."""

import numpy as np
import pytest

from icldyn.numerics.experiments.pretraining import (learning_curve, least_squares_pretraining,
                                                     prompt_features, tau_sweep)
from icldyn.numerics.simulation.sgd import PromptSampler
from icldyn.numerics.experiments.taskdiversity import TaskDiversity, draw_task_set
from icldyn.theory import InputError


@pytest.fixture(scope="module")
def setting():
    return TaskDiversity(3, 4, np.diag([1.0, 0.7, 0.4]), noise=0.3)


def test_learning_curve_ends_at_the_set_minimum_and_train_never_rises(setting):
    tasks = draw_task_set(2, 3, 1)
    lc = learning_curve(setting, tasks, t_end=400.0, points=200)
    assert np.all(np.diff(lc["train"]) <= 1e-12)               # gradient flow on the set
    fit = lc["final"]
    assert lc["train"][-1] == pytest.approx(fit["train"], rel=1e-6)
    assert lc["test"][-1] == pytest.approx(fit["test"], rel=1e-6)
    assert lc["test_min"] <= lc["test"][-1] and lc["test"][-1] > setting.family_minimum()[1]
    with pytest.raises(InputError, match="t_end"):
        learning_curve(setting, tasks, t_end=-1.0)


def test_prompt_features_give_the_layer_prediction(setting):
    X, Y, xq, _ = PromptSampler(setting.family).prompts(np.random.default_rng(0), (5,))
    M = np.random.default_rng(1).standard_normal((3, 3))
    direct = np.einsum("pn,pni,ij,pj->p", Y[..., 0], X, M, xq) / setting.N
    np.testing.assert_allclose(prompt_features(X, Y[..., 0], xq) @ M.ravel(), direct,
                               rtol=1e-12)


def test_least_squares_pretraining_double_descent_and_large_tau_limit(setting):
    """Mean over prompt sets of the exact family loss at the least-squares M: a peak at
    τ = 1 (n = d² prompts interpolate the d² features) above τ = 0.5 and τ = 4, and the
    family minimum approached at τ = 100."""
    rows = tau_sweep(setting, [0.5, 1.0, 4.0, 100.0], seeds=8, seed=0)
    test = [r["test"] for r in rows]
    assert test[1] > 3 * max(test[0], test[2]), test
    fam = rows[0]["family_min"]
    assert test[3] > fam and test[3] - fam < 0.1 * fam, (test[3], fam)
    M = least_squares_pretraining(setting, 5, 0, tasks=draw_task_set(2, 3, 0))
    assert M.shape == (3, 3)
