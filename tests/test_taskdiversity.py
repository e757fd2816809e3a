"""Task diversity: the Merged model pretrained on a finite task set, tested on the family.
M*(T) from the compiled gradient is critical and equals MATH.md §3.2's oracle with the set's
second moment; its derived test error equals Monte Carlo of the actual layer on fresh tasks;
P → ∞ recovers the Gaussian-task minimum; the Bayes-optimal predictors win on their own law."""

import numpy as np
import pytest
import sympy as sp

from icldyn.numerics import compile_flow
from icldyn.numerics.simulate import (PromptSampler, layer_loss_and_grad, layer_weights,
                                      letter_values)
from icldyn.numerics.taskdiversity import (TaskDiversity, baseline_risks, draw_task_set,
                                           quadratic_minimum, second_moment_set,
                                           task_count_sweep)
from icldyn.theory import ICLData, InputError, derive, models

LAM = np.array([[1.0, 0.2, 0.0], [0.2, 0.7, 0.1], [0.0, 0.1, 0.4]])
N, SIGMA = 5, 0.3


@pytest.fixture(scope="module")
def setting():
    return TaskDiversity(3, N, LAM, noise=SIGMA)


def test_set_minimum_is_critical_and_equals_the_second_moment_oracle(setting):
    tasks = draw_task_set(2, 3, 5)                          # P < d: Σ̂ singular
    fit = setting.fit(tasks)
    flow, M = fit["flow"], fit["M"]
    u = np.sqrt(np.linalg.norm(M))                          # a balanced point of the set uQ = M*
    g0 = np.linalg.norm(flow.grad(setting.theta(np.zeros((3, 3)))))
    assert np.linalg.norm(flow.grad(flow.pack({"V": u, "Q": M / u}))) < 1e-8 * g0
    S = np.einsum("kai,kaj->ij", tasks, tasks) / 2          # oracle (MATH.md §3.2), Σ_w = Σ̂
    A = (N + 1) / N * LAM @ S @ LAM + (np.trace(S @ LAM) + SIGMA**2) / N * LAM
    np.testing.assert_allclose(M, np.linalg.solve(A, LAM @ S), rtol=1e-7, atol=1e-9)
    assert fit["train"] < fit["test"] and fit["gap"] == pytest.approx(fit["test"] - fit["train"])


def test_second_moment_set_gives_the_same_loss_with_at_most_d_tasks(setting):
    tasks = draw_task_set(7, 3, 1)
    reduced = second_moment_set(tasks)
    assert reduced.shape == (3, 1, 3)
    full = compile_flow(derive(setting.model, ICLData(d=3, N=N, Lambda=LAM, tasks=tasks,
                                                      noise=SIGMA)))
    theta = full.pack({"V": 0.8, "Q": np.random.default_rng(2).standard_normal((3, 3))})
    small = setting.set_flow(tasks)
    assert small.loss(theta) == pytest.approx(full.loss(theta), rel=1e-12)
    np.testing.assert_allclose(quadratic_minimum(full), setting.fit(tasks)["M"], rtol=1e-7)
    with pytest.raises(InputError, match="tasks"):
        second_moment_set(np.ones((2, 2, 3)))


def test_quadratic_minimum_needs_the_merged_scalar_model():
    flow = compile_flow(derive(models.FullLSA(2), ICLData(d=2, N=3, Lambda=np.eye(2))))
    with pytest.raises(InputError, match="Merged"):
        quadratic_minimum(flow)


def _layer_risk(setting, data, M, prompts, seed):
    """½E(ŷ − y_q)² of the actual layer f(Z) (u = 1, Q = M) on prompts of ``data``:
    mean and standard error over 64 batches."""
    model = setting.model
    letters = letter_values(model, {"V": np.ones((1, 1, 1)), "Q": M[None]})
    W_PV, W_KQ = layer_weights(model, data, letters)
    rng, batches = np.random.default_rng(seed), 64
    X, Y, xq, yq = PromptSampler(data).prompts(rng, (batches, prompts // batches))
    loss = layer_loss_and_grad(np.repeat(W_PV, batches, 0), np.repeat(W_KQ, batches, 0),
                               X, Y, xq, yq, 3)[0]
    return loss.mean(), loss.std(ddof=1) / np.sqrt(batches)


def test_test_and_train_errors_equal_monte_carlo_of_the_layer(setting):
    tasks = draw_task_set(2, 3, 7)
    fit = setting.fit(tasks)
    on_set = ICLData(d=3, N=N, Lambda=LAM, tasks=tasks, noise=SIGMA)
    for data, exact in ((setting.family, fit["test"]), (on_set, fit["train"])):
        mean, se = _layer_risk(setting, data, fit["M"], 128_000, 3)
        assert abs(mean - exact) < 4 * se, (mean, exact, se)
    assert fit["test"] > 1.2 * fit["train"]               # two tasks: memorised, not learned


def test_many_tasks_recover_the_gaussian_task_minimum(setting):
    """The family loss at M*(T) exceeds the family minimum by O(d/P): P·gap stays bounded
    while the gap itself falls by two orders of magnitude from P = 10 to P = 1000."""
    M_fam, L_fam = setting.family_minimum()
    fam_grad = setting.family_flow.grad(setting.theta(M_fam))
    assert np.linalg.norm(fam_grad) < 1e-8 * np.linalg.norm(
        setting.family_flow.grad(setting.theta(np.zeros((3, 3)))))
    rows = task_count_sweep(setting, [10, 1000], draws=4, seed=0)
    excess = [r["test"] - L_fam for r in rows]
    assert all(e > 0 for e in excess) and excess[1] < excess[0] / 30, excess
    assert abs(rows[1]["train"] - L_fam) < 0.02 * L_fam
    assert rows[0]["family_min"] == L_fam


def test_bayes_optimal_predictors_win_on_their_own_task_law():
    """dMMSE (the set's posterior) beats ridge on the training tasks, ridge (the family's
    posterior) beats dMMSE on fresh tasks; the learned algorithm's Monte Carlo matches its exact
    risks."""
    setting = TaskDiversity(3, 8, np.eye(3), noise=0.2)
    tasks = draw_task_set(3, 3, 4)
    fit = setting.fit(tasks)
    mc = baseline_risks(setting, tasks, fit["M"], 20000, seed=1)
    assert mc["dmmse_train"][0] < mc["ridge_train"][0] - 4 * mc["ridge_train"][1]
    assert mc["ridge_test"][0] < mc["dmmse_test"][0] - 4 * mc["dmmse_test"][1]
    for where in ("test", "train"):
        mean, se = mc[f"learned_{where}"]
        assert abs(mean - fit[where]) < 4 * se
    with pytest.raises(InputError, match="prompts"):
        baseline_risks(setting, tasks, fit["M"], 1, seed=0)
