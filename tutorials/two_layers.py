# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Two layers: two steps of gradient descent in context
#
# Ahn, Cheng, Daneshmand and Sra (*Transformers learn to implement preconditioned gradient
# descent for in-context learning*, NeurIPS 2023) stack $L$ linear-attention layers with the
# query masked from the keys and a negated readout, and show that the optimum runs $L$ steps of
# (preconditioned) gradient descent on the context's least squares. With $\Lambda = I$ one step
# reaches the risk $\tfrac12 d(d+1)/(N+d+1)$ (our $\tfrac12\mathbb E\lVert\hat y - y\rVert^2$)
# at step size $a = -N/(N+d+1)$.
#
# Here, with `models.Stack` ([Parameterizations](../concepts/parameterizations.md#stacks-of-layers)):
#
# 1. the one-layer optimum from the derived stack loss equals that published number;
# 2. two layers do better, and their optimum is a local minimum of the *whole* stack
#    (gradient zero, Hessian positive semi-definite with only the two rescaling directions
#    flat);
# 3. the derived loss there is the risk of the algorithm "two GD steps on the context with these
#    step sizes", run directly on sampled prompts (Monte Carlo, written here from the
#    algorithm's description, not from the package);
# 4. staged learning in depth: the seed paper's eigenbasis tasks through two layers, stage
#    times per mode and layer against one layer's exact flow and the paper's decoupled times.

# %%
import numpy as np

from icldyn.numerics import compile_flow
from icldyn.theory import ICLData, derive, models
from icldyn.theory.gdsteps import minimal_steps, step_size_loss

d, N = 3, 8
data = ICLData(d=d, N=N, Lambda=np.eye(d))
ahn = dict(query_in_keys=False, negate_readout=True)
one = derive(models.Stack([models.Merged(d)], **ahn), data)
two = derive(models.Stack([models.Merged(d)] * 2, **ahn), data)

# %% [markdown]
# ## 1. One layer: the published optimum
#
# On the set $Q_\ell = q_\ell I$, $V_\ell = u_\ell$ the loss depends on the step sizes
# $a_\ell = u_\ell q_\ell$ only; `step_size_loss` extracts that polynomial (exact in $N$ and
# $d$) from the derived loss, `minimal_steps` minimises it.

# %%
loss1 = step_size_loss(one)
print("one layer, L(a) =", loss1.expr)
(best1,) = minimal_steps(loss1)
print(f"best step {float(best1.steps[0]):.6f} (published {-N / (N + d + 1):.6f}), "
      f"loss {float(best1.loss):.6f} (published {d * (d + 1) / (2 * (N + d + 1)):.6f})")
assert abs(float(best1.loss) - d * (d + 1) / (2 * (N + d + 1))) < 1e-12
assert abs(float(best1.steps[0]) + N / (N + d + 1)) < 1e-12

# %% [markdown]
# ## 2. Two layers: lower, and a minimum of the whole stack

# %%
best2 = minimal_steps(step_size_loss(two))[0]
steps = [float(a) for a in best2.steps]
print(f"two layers: steps {np.round(steps, 6)}, loss {float(best2.loss):.6f} "
      f"(one layer {float(best1.loss):.6f})")
assert best2.loss < best1.loss

flow = compile_flow(two, backend="numpy")
theta = flow.pack({k: np.array(np.array(v.tolist(), dtype=float)) if hasattr(v, "tolist")
                   else float(v) for k, v in best2.params.items()})
H = np.array([flow.hvp(theta, e) for e in np.eye(flow.size)])
eigs = np.linalg.eigvalsh((H + H.T) / 2)
flat = np.sum(np.abs(eigs) <= 1e-9 * eigs.max())
print(f"|∇L| = {np.abs(flow.grad(theta)).max():.1e}; Hessian: min eigenvalue {eigs.min():.1e}, "
      f"{flat} flat directions (the two layers' rescalings)")
assert np.abs(flow.grad(theta)).max() < 1e-12 and flat == 2 and eigs.min() > -1e-9 * eigs.max()

# %% [markdown]
# ## 3. The algorithm, run directly
#
# Layer $\ell$ with step $a_\ell$ adds $(a_\ell/N)\sum_j y_jx_j^\top x$ to the label slot of
# every token $x$ (context and query; the query's label starts at 0 and is not a key), and the
# readout is minus the query's label. Written on sampled prompts:

# %%
rng = np.random.default_rng(0)
prompts = 200_000
X = rng.standard_normal((prompts, N, d))
xq = rng.standard_normal((prompts, d))
w = rng.standard_normal((prompts, d))
y, yq = np.einsum("pnd,pd->pn", X, w), np.einsum("pd,pd->p", xq, w)
labels, query = y.copy(), np.zeros(prompts)
for a in steps:
    g = np.einsum("pn,pnd->pd", labels, X) / N            # (1/N) Σ_j y_j x_j (current labels)
    labels, query = labels + a * np.einsum("pnd,pd->pn", X, g), query + a * np.einsum(
        "pd,pd->p", xq, g)
risk = 0.5 * (-query - yq) ** 2
print(f"Monte Carlo risk of the two-step algorithm {risk.mean():.5f} ± "
      f"{risk.std() / np.sqrt(prompts):.5f}; derived {float(best2.loss):.5f}")
assert abs(risk.mean() - float(best2.loss)) < 4 * risk.std() / np.sqrt(prompts)

# %% [markdown]
# ## 4. Staged learning in depth
#
# The seed paper's setting (tutorial [Staged learning](staged_learning.md)): vector tasks in
# $\Lambda$'s eigenbasis, $s = (2, 1, \tfrac12)$, $N = 16$, now through one and two Merged
# layers with the conventions above, from the small start $V_\ell = -\varepsilon I$,
# $Q_\ell = \varepsilon I$. In layer $\ell$ mode $\alpha$ is learned when
# $a^{(\ell)}_\alpha = V^{(\ell)}_{\alpha\alpha} Q^{(\ell)}_{\alpha\alpha}$ reaches half its
# final value. The paper's decoupled stage time for one layer is
# $(\tau_\alpha/2)\ln(1/(s^\infty_\alpha\varepsilon^2) - 1)$ with $\tau_\alpha = 1/s_\alpha^2$.

# %%
from icldyn.numerics import integrate  # noqa: E402

s_eig, N_eig, eps = np.array([2.0, 1.0, 0.5]), 16, 1e-3
eig = ICLData(d=3, N=N_eig, Lambda=np.diag(s_eig), d_y=3, tasks="diagonal")
t_grid = np.linspace(0.0, 60.0, 6001)
stage, final = {}, {}
for L in (1, 2):
    stack = derive(models.Stack([models.Merged(3, d_y=3)] * L, **ahn), eig)
    flow_L = compile_flow(stack, backend="numpy")
    start = {f"{l}.{n}": v * eps * np.eye(3) for l in range(L) for n, v in (("V", -1), ("Q", 1))}
    run = integrate(flow_L, flow_L.pack(start), t_end=t_grid[-1], t_eval=t_grid)
    final[L] = run.loss[-1]
    p = run.params(flow_L)
    for l in range(L):
        a_l = np.einsum("tii->ti", p[f"{l}.V"]) * np.einsum("tii->ti", p[f"{l}.Q"])
        stage[L, l] = np.array([t_grid[np.argmax(np.abs(a_l[:, k]) >= abs(a_l[-1, k]) / 2)]
                                for k in range(3)])
s_inf = ((N_eig + 1) * s_eig + s_eig.sum()) / N_eig
decoupled = np.log(1 / (s_inf * eps**2) - 1) / (2 * s_eig**2)
print("decoupled one-layer stage times:", np.round(decoupled, 2))
for (L, l), times in stage.items():
    print(f"{L} layer(s), layer {l}: modes learned at t =", np.round(times, 2))
print(f"loss at t = 60: one layer {final[1]:.4f}, two layers {final[2]:.4f}")

# %% [markdown]
# In every layer the modes are learned in the order of $s_\alpha$. The first mode is learned in
# both layers of the stack at one layer's time (within 25 %), and the paper's decoupled time
# predicts one layer's first stage within 2 %. Then the layers part: the last layer learns
# mode 2 at one layer's time (within 25 %), while the first layer learns it only much later,
# next to mode 3 — the stack's layers do not learn in lockstep. Two layers end far below one.

# %%
for times in stage.values():
    assert np.all(np.diff(times) > 0)
    assert abs(times[0] / stage[1, 0][0] - 1) < 0.25
assert abs(stage[1, 0][0] / decoupled[0] - 1) < 0.02
assert abs(stage[2, 1][1] / stage[1, 0][1] - 1) < 0.25 and stage[2, 0][1] > 2 * stage[2, 1][1]
assert final[2] < 0.5 * final[1]
