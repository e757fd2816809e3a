# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Saddle-to-saddle learning with separate keys and queries
#
# Zhang, Singh, Latham and Saxe (*Training Dynamics of In-Context Learning in Linear
# Attention*, arXiv:2501.16265, 2025) find that linear attention with separate rank-one key and
# query heads learns **saddle to saddle**: from a small start the loss drops in steps, and on the
# $m$-th plateau the network implements **principal-component regression** in context on the
# top $m$ principal components of the inputs.
#
# Here: the critical sets of `SeparateKQ(3, heads=3, rank=1)` with their kinds, the trajectory
# from a small random start, and two checks:
#
# 1. the plateaus sit exactly at the losses of the *degenerate* saddles — origin, mode {1},
#    modes {1, 2} — in that order, then the minimum; never at a strict saddle;
# 2. on each plateau the learned matrix $M = \sum_h u_h W_{K,h}^\top W_{Q,h}$ is the
#    Zhang–Frei–Bartlett $\Gamma^*$ restricted to the learned modes,
#    $M_{\alpha\alpha} = N/((N+1)s_\alpha + \operatorname{tr}\Lambda)$ there and $0$ elsewhere:
#    principal-component regression.
#
# [Critical sets and their kinds](../concepts/critical-sets.md).

# %%
import numpy as np

from icldyn.numerics import compile_flow, gradient_descent
from icldyn.theory import ICLData, derive, models
from icldyn.theory.conventions import Conventions

# the authors' code (linattn-icl): nn.MSELoss (no ½, averaged over outputs), attention not
# divided by N (its default), the query among the keys
LINATTN_ICL = Conventions(half=False, mean_outputs=True, normalisation="none")

s = np.array([1.0, 0.5, 0.25])
d, N = len(s), 15
data = ICLData(d=d, N=N, Lambda=np.diag(s))          # scalar tasks w ~ N(0, I), no noise
der = derive(models.SeparateKQ(d, heads=3, rank=1), data)
sets = der.fixed_points()
print(f"{'critical set':32s} {'L':>9s} {'index':>5s}  kind")
for fp in sets:
    print(f"{fp.name:32s} {float(fp.loss):9.6f} {fp.hessian_index:5d}  {fp.kind}")

# %% [markdown]
# The strict saddles have a direction of negative curvature; the degenerate ones have none, yet
# the loss falls along a cubic escape (`fp.escape`) — these are where a small start lingers.
#
# ## The trajectory
#
# Gradient descent with $\eta = 0.5$ (the flow's critical points are its fixed
# points) from parameters of scale $10^{-2}$, for $4\times10^4$ steps (flow time $2\times10^4$).

# %%
flow = compile_flow(der, backend="numpy")
rng = np.random.default_rng(0)
theta0 = flow.pack({k: 1e-2 * rng.standard_normal(shape)
                    for k, shape in der.model.shapes().items()})
traj = gradient_descent(flow, theta0, lr=0.5, steps=40000, every=10)
params = traj.params(flow)
M = np.einsum("th,thri,thrj->tij", params["V"][..., 0, 0], params["W_K"], params["W_Q"])
speed = np.array([np.linalg.norm(flow.grad(th)) for th in traj.theta])


def plateau(level):
    """Indices where the loss is within 10⁻³ (relative) of ``level`` and the gradient small."""
    return np.nonzero((np.abs(traj.loss - level) < 1e-3 * level) & (speed < 1e-3))[0]


# %% [markdown]
# ## 1. Plateaus at the degenerate saddles, in order

# %%
visited = sorted((fp for fp in sets if fp.kind in ("degenerate saddle", "minimum")),
                 key=lambda fp: -float(fp.loss))
starts = []
for fp in visited:
    on = plateau(float(fp.loss))
    assert len(on), f"no plateau at {fp.name}"
    starts.append(traj.t[on[0]])
    print(f"plateau at {fp.name:32s} L = {float(fp.loss):.6f} from t = {traj.t[on[0]]:8.1f} "
          f"to {traj.t[on[-1]]:8.1f}  (linattn-icl's MSE: {LINATTN_ICL.loss(float(fp.loss)):.6f})")
assert starts == sorted(starts)
assert [fp.kind for fp in visited] == ["degenerate saddle"] * 3 + ["minimum"]
for fp in sets:
    if fp.kind == "strict saddle":
        assert not len(plateau(float(fp.loss))), f"plateau at the strict saddle {fp.name}"

# %% [markdown]
# (The last column is the same loss in the conventions of the authors' code, `nn.MSELoss`
# without the ½: `LINATTN_ICL.loss`, see [Other conventions](../concepts/conventions.md).)
#
# ## In their units
#
# Their attention has no $1/N$, so their value weights are ours divided by $N$; on
# `LINATTN_ICL.data(data)` (inputs scaled by $\sqrt N$, tasks by $1/\sqrt N$) our parameters
# *are* theirs, and our gradient descent with `LINATTN_ICL.lr(lr)` is theirs with `lr`, step
# for step. The end of our run in their units, and its loss computed both ways:

# %%
end = {k: v[-1] for k, v in params.items()}
theirs = LINATTN_ICL.to_theirs(der.model, end, N)
their_der = derive(der.model, LINATTN_ICL.data(data, der.model))
their_mse = LINATTN_ICL.loss(float(their_der.loss_value(theirs)))
print("their value weights:", np.round(theirs["V"].ravel(), 5), "ours:",
      np.round(end["V"].ravel(), 5))
print(f"their MSE at the end: {their_mse:.8f}; from ours: {LINATTN_ICL.loss(traj.loss[-1]):.8f}")
assert abs(their_mse - LINATTN_ICL.loss(traj.loss[-1])) < 1e-9
print(f"their --lr 0.001 is our lr {LINATTN_ICL.lr(0.001)} on LINATTN_ICL.data(data); their "
      f"6000 epochs are flow time {LINATTN_ICL.time(6000 * 0.001)}")
#
# ## 2. On each plateau: principal-component regression

# %%
gamma = N / ((N + 1) * s + s.sum())                  # ZFB's Γ* for diagonal Λ
for m, fp in enumerate(visited):
    on = plateau(float(fp.loss))
    Mi = M[on[len(on) // 2]]                         # the middle of the plateau
    expected = np.diag(np.where(np.arange(d) < m, gamma, 0.0))
    print(f"{fp.name:32s} diag M = {np.round(np.diag(Mi), 5)}, PCR on the top {m}: "
          f"{np.round(np.diag(expected), 5)}")
    np.testing.assert_allclose(Mi, expected, atol=1e-3 * gamma.max())
