"""Pretraining on a task set, read on the task family: the gradient-flow learning curve and
finite pretraining data.

* ``learning_curve``: the exact gradient flow of the Merged model (d_y = 1) on the finite-set
  loss from a small balanced start, with the derived Gaussian-task (family) loss along the same
  trajectory: train falls monotonically; the family loss falls with it until the flow starts
  fitting the particular tasks (memorisation) and then rises to its value at M*(T).
* ``least_squares_pretraining``: training on n fixed prompts has no expectation to derive, so
  it is numerical: the layer trained to convergence on the prompts is the minimum-norm least
  squares M in ŷ = S_yx M x_q / N = ⟨M, S_xy x_qᵀ⟩ / N (linear in M; gradient flow from M = 0
  converges to that minimum-norm solution), and its test error is the derived family loss at M:
  exact conditional on the prompts. With d² features the interpolation peak sits at n = d²
  (τ = n/d² = 1): double descent.
"""

from __future__ import annotations

import numpy as np

from ...theory import ICLData
from ...theory.errors import InputError, check_int, check_real
from ..compiled.integrate import integrate
from ..simulation.sgd import PromptSampler
from .taskdiversity import TaskDiversity

__all__ = ["learning_curve", "prompt_features", "least_squares_pretraining", "tau_sweep"]


def learning_curve(setting: TaskDiversity, tasks, t_end: float, init_scale: float = 1e-3,
                   points: int = 400) -> dict:
    """Gradient flow on the loss of ``tasks`` from u = ε√d, Q = ε I (balanced, ε =
    ``init_scale``), to ``t_end``. Losses are the package's ½E(ŷ − y_q)².

    Parameters
    ----------
    setting : TaskDiversity
        The Merged model (d_y = 1) on the task family.
    tasks : numpy.ndarray (P, 1, d)
        The pretraining task set.
    t_end : float
        Flow time to integrate to (> 0).
    init_scale : float
        ε of the balanced start (> 0).
    points : int
        Recorded times, evenly spaced on [0, t_end].

    Returns
    -------
    dict
        ``t``, ``train`` (the set's loss), ``test`` (the family's loss at the same θ),
        ``t_test_min`` / ``test_min`` (where the family loss is lowest: memorisation sets in
        after it), ``train_at_test_min``, and the fitted ``final`` (``setting.fit(tasks)``) for
        reference.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.pretraining import learning_curve
    >>> from icldyn.numerics.experiments.taskdiversity import TaskDiversity, draw_task_set
    >>> setting = TaskDiversity(d=2, N=4, Lambda=np.eye(2), noise=0.5, backend="numpy")
    >>> curve = learning_curve(setting, draw_task_set(1, 2, seed=0), t_end=1000.0, points=41)
    >>> bool(np.all(np.diff(curve["train"]) <= 1e-12))        # the training loss only falls
    True
    >>> print(f"train {curve['train'][-1]:.4f}, test {curve['test'][-1]:.4f}")   # memorised
    train 0.1367, test 0.9084
    >>> print(f"{curve['final']['test']:.4f}")                 # the flow ends at M*(T)
    0.9084
    """
    t_end = check_real("t_end", t_end)
    eps = check_real("init_scale", init_scale)
    fit = setting.fit(tasks)
    flow = setting.set_flow(tasks)
    theta0 = flow.pack({"V": eps * np.sqrt(setting.d), "Q": eps})
    traj = integrate(flow, theta0, t_end=t_end, t_eval=np.linspace(0.0, t_end, points))
    test = np.array([setting.family_flow.loss(th) for th in traj.theta])
    k = int(np.argmin(test))
    return {"t": traj.t, "train": traj.loss, "test": test, "t_test_min": float(traj.t[k]),
            "test_min": float(test[k]), "train_at_test_min": float(traj.loss[k]), "final": fit}


def prompt_features(X: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """h = vec(S_xy x_qᵀ) / N per prompt, so that ŷ = S_yx M x_q / N = ⟨h, vec M⟩.

    Parameters
    ----------
    X : numpy.ndarray (p, N, d)
        Context inputs of p prompts.
    y : numpy.ndarray (p, N)
        Context labels.
    xq : numpy.ndarray (p, d)
        Query inputs.

    Returns
    -------
    numpy.ndarray (p, d²)

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.pretraining import prompt_features
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 5))    # 3 prompts, N = 5
    >>> xq = rng.standard_normal((3, 2))
    >>> h = prompt_features(X, y, xq)                         # (prompts, d²)
    >>> M = np.array([[1.0, 2.0], [0.0, 3.0]])
    >>> bool(np.allclose(h @ M.ravel(), np.einsum("pn,pni,ij,pj->p", y, X, M, xq) / 5))
    True
    """
    N = X.shape[-2]
    return np.einsum("pni,pn,pj->pij", X, y, xq).reshape(len(X), -1) / N


def least_squares_pretraining(setting: TaskDiversity, n: int, seed, tasks=None) -> np.ndarray:
    """The minimum-norm least-squares M on ``n`` prompts (tasks from the family, or uniform
    over ``tasks``), i.e. the Merged layer trained to convergence from M = 0 on those prompts.

    Parameters
    ----------
    setting : TaskDiversity
        The Merged model (d_y = 1) on the task family.
    n : int
        Number of pretraining prompts.
    seed : int or sequence of int
        Seed of the prompts (anything ``numpy.random.default_rng`` takes).
    tasks : numpy.ndarray (P, 1, d), optional
        A finite task set to draw from instead of the family.

    Returns
    -------
    numpy.ndarray (d, d)
        M.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.pretraining import least_squares_pretraining
    >>> from icldyn.numerics.experiments.taskdiversity import TaskDiversity
    >>> setting = TaskDiversity(d=2, N=4, Lambda=np.eye(2), noise=0.5, backend="numpy")
    >>> M_star, best = setting.family_minimum()               # infinitely many prompts
    >>> for n in (2, 4, 64):                                  # d² = 4: the interpolation peak
    ...     M = least_squares_pretraining(setting, n, seed=0)
    ...     print(n, f"{setting.family_flow.loss(setting.theta(M)) - best:.3g}")
    2 1.67
    4 7.52e+03
    64 0.0191
    """
    n = check_int("n", n)
    data = setting.family if tasks is None else ICLData(
        d=setting.d, N=setting.N, Lambda=setting.family.Lambda, tasks=tasks,
        noise=setting.family.noise)
    X, Y, xq, yq = PromptSampler(data).prompts(np.random.default_rng(seed), (n,))
    H = prompt_features(X, Y[..., 0], xq)
    m = np.linalg.lstsq(H, yq[:, 0], rcond=None)[0]
    return m.reshape(setting.d, setting.d)


def tau_sweep(setting: TaskDiversity, taus, seeds: int, seed: int = 0, tasks=None) -> list[dict]:
    """For each τ: n = round(τ d²) prompts, ``seeds`` independent prompt sets; the exact family
    loss at the least-squares M (mean, SE over seeds), next to the family minimum (τ = ∞).

    Parameters
    ----------
    setting : TaskDiversity
        The Merged model (d_y = 1) on the task family.
    taus : iterable of float
        τ = n/d² values (at least one).
    seeds : int
        Independent prompt sets per τ (≥ 2).
    seed : int
        Base seed (each set is seeded by (seed, n, s)).
    tasks : numpy.ndarray (P, 1, d), optional
        A finite task set to pretrain on instead of the family.

    Returns
    -------
    list of dict
        Per τ: ``tau``, ``n``, ``test`` and ``test_se`` (family loss ½E(ŷ − y_q)²),
        ``family_min``.

    Raises
    ------
    InputError
        When ``taus`` is empty.

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.numerics.experiments.pretraining import tau_sweep
    >>> from icldyn.numerics.experiments.taskdiversity import TaskDiversity
    >>> setting = TaskDiversity(d=2, N=4, Lambda=np.eye(2), noise=0.5, backend="numpy")
    >>> for row in tau_sweep(setting, taus=[0.5, 1.0, 16.0], seeds=4):
    ...     print(row["tau"], row["n"], f"{row['test']:.3g} ± {row['test_se']:.2g}",
    ...           f"(P → ∞: {row['family_min']:.3f})")
    0.5 2 16.6 ± 15 (P → ∞: 0.573)
    1.0 4 8.95e+03 ± 8e+03 (P → ∞: 0.573)
    16.0 64 0.708 ± 0.048 (P → ∞: 0.573)
    """
    seeds = check_int("seeds", seeds, minimum=2)
    rows = []
    for tau in taus:
        n = max(1, round(check_real("tau", tau) * setting.d ** 2))
        losses = np.array([setting.family_flow.loss(setting.theta(
            least_squares_pretraining(setting, n, (seed, n, s), tasks))) for s in range(seeds)])
        rows.append({"tau": tau, "n": n, "test": float(losses.mean()),
                     "test_se": float(losses.std(ddof=1) / np.sqrt(seeds)),
                     "family_min": setting.family_minimum()[1]})
    if not rows:
        raise InputError("taus", "give at least one τ")
    return rows
