# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Staged learning in the seed paper's setting
#
# Mainali and Teixeira (arXiv:2504.12916) train the Merged model on vector tasks that share the
# input covariance's eigenbasis, $W = U\,\mathrm{diag}(\delta)\,U^\top$, and describe the
# dynamics mode by mode: from a small start each eigenmode $\alpha$ of $\Lambda$ leaves the
# saddle at the origin at its own rate, on the time scale $\tau_\alpha = 1/(\eta P s_\alpha^2)$
# (learning rate $\eta$, $P$ tasks per step; in our flow time $t = \eta\times$steps with one
# expected task, $\tau_\alpha = 1/s_\alpha^2$), and settles at
# $a_\alpha = p_\alpha q_\alpha \to 1/s^\infty_\alpha$, $s^\infty_\alpha = ((N+1)s_\alpha + \operatorname{tr}S)/N$.
# The modes are learned one after the other, in the order of $s_\alpha$, with plateaus between.
#
# Those per-mode equations are a large-$N$ decoupling. Here we derive the **exact** dynamics
# for finite $N$, integrate them, and check the paper's numbers against them:
#
# 1. the escape rates $1/\tau_\alpha = s_\alpha^2$ (exact: the saddle's growth rates are these);
# 2. the order of the stages and the plateaus;
# 3. the paper's fixed points $1/s^\infty_\alpha$: off by $O(1/N)$ — the exact-vs-decoupled gap.
#
# Maths: [§3.3](../math.md#s3-3).

# %%
import numpy as np
import sympy as sp

from icldyn.numerics import compile_flow, integrate
from icldyn.theory import ICLData, derive, models
from icldyn.theory.data import N_SYM
from icldyn.theory.solutions import mode_reduction

s = np.array([2.0, 1.0, 0.5])          # Λ's eigenvalues (Λ diagonal: U = I)
d, N, eps = len(s), 16, 1e-3           # d = d_y = 3, context length, initial scale

data = ICLData(d=d, N=N, Lambda=np.diag(s), d_y=d, tasks="diagonal")
der = derive(models.Merged(d, d_y=d), data)
flow = compile_flow(der, backend="numpy")

# %% [markdown]
# ## The exact flow from a small balanced start
#
# $V = Q = \varepsilon I$: every conserved quantity is zero and every mode starts at
# $a_\alpha = \varepsilon^2$. We follow $a_\alpha(t) = V_{\alpha\alpha}Q_{\alpha\alpha}$ (the flow
# keeps $V$, $Q$ diagonal in $\Lambda$'s eigenbasis).

# %%
t = np.linspace(0.0, 100.0, 10001)
traj = integrate(flow, {"V": eps, "Q": eps}, t_end=t[-1], t_eval=t)
params = traj.params(flow)
a = np.einsum("tii->ti", params["V"]) * np.einsum("tii->ti", params["Q"])


def crossing(y, level):
    """First time y reaches level (linear interpolation between samples)."""
    i = int(np.argmax(y >= level))
    return t[i - 1] + (level - y[i - 1]) * (t[i] - t[i - 1]) / (y[i] - y[i - 1])


half_times = np.array([crossing(a[:, k], a[-1, k] / 2) for k in range(d)])
print("modes learned at t =", np.round(half_times, 3), "; final a =", np.round(a[-1], 5))

# %% [markdown]
# **The stages come in the order of $s_\alpha$**, and between two of them the loss sits on a
# plateau: at the (geometric) midpoint between consecutive stage times it moves more than 20
# times slower than during the stages on either side.

# %%
assert np.all(np.diff(half_times) > 0), "modes must be learned in the order of s"
rate = np.abs(np.gradient(traj.loss, t))
stage_rates = [rate[np.searchsorted(t, h)] for h in half_times]
plateau_rates = [rate[np.searchsorted(t, np.sqrt(h0 * h1))] for h0, h1 in
                 zip(half_times[:-1], half_times[1:])]
print("|dL/dt| during stages:", np.round(stage_rates, 4), " on plateaus:",
      np.round(plateau_rates, 6))
for k, plateau in enumerate(plateau_rates):      # 20× slower than the stages on either side
    assert plateau < 0.05 * min(stage_rates[k], stage_rates[k + 1])

# %% [markdown]
# ## 1. The escape rates are the paper's 1/τ_α = s_α²
#
# Early on, each $a_\alpha$ grows as $e^{2s_\alpha^2 t}$ (both $p_\alpha$ and $q_\alpha$ grow
# at $s_\alpha^2$). We read the rate off the integrated trajectory over the first
# $0.5$ time units and compare.

# %%
early = np.searchsorted(t, 0.5)
measured_rates = np.log(a[early] / a[0]) / t[early] / 2
print("measured growth rates:", measured_rates, " paper 1/τ_α = s²:", s**2)
np.testing.assert_allclose(measured_rates, s**2, rtol=1e-3)

# %% [markdown]
# The paper's escape time, the time for a logistic mode to climb from $\varepsilon^2$ to half
# its fixed point, is $(\tau_\alpha/2)\ln(a^\infty_\alpha/\varepsilon^2 - 1)$. It is right for
# the first stage and late for the next ones: the exact modes feel each other at order $1/N$.

# %%
s_inf = ((N + 1) * s + s.sum()) / N
paper_times = (1 / s**2) / 2 * np.log(1 / (s_inf * eps**2) - 1)
print("paper stage times:", np.round(paper_times, 3), " exact:", np.round(half_times, 3))
assert abs(half_times[0] / paper_times[0] - 1) < 0.02

# %% [markdown]
# ## 2. The fixed points: the paper's 1/s^∞_α against the exact ones
#
# The exact fixed point of the reduced flow (all modes learned) is found from the derived
# polynomial; the paper's decoupled value $1/s^\infty_\alpha$ differs from it by $O(1/N)$. We
# measure the gap at growing $N$ with one derivation in which $N$ stays a symbol.

# %%
exact_now = np.array([float(x) for x in mode_reduction(der).exact_fixed_point()])
np.testing.assert_allclose(a[-1], exact_now, rtol=1e-4)     # the flow ends there

symbolic = derive(models.Merged(d, d_y=d),
                  ICLData(d=d, N=N_SYM, Lambda=sp.diag(2, 1, sp.Rational(1, 2)), d_y=d,
                          tasks="diagonal"))
reduction = mode_reduction(symbolic)
gaps = {}
for n in (16, 64, 256, 1024):
    exact = np.array([float(x) for x in reduction.exact_fixed_point(n)])
    paper = n / ((n + 1) * s + s.sum())
    gaps[n] = np.max(np.abs(paper / exact - 1))
    print(f"N = {n:4d}: exact a* = {np.round(exact, 5)}, paper 1/s∞ = {np.round(paper, 5)}, "
          f"max relative gap {gaps[n]:.4f}, N × gap = {n * gaps[n]:.3f}")

# %% [markdown]
# The gap falls like $1/N$: $N\times$gap settles to a constant (within 5 % from $N = 256$ to
# $1024$).

# %%
assert gaps[16] > gaps[64] > gaps[256] > gaps[1024]
assert abs(1024 * gaps[1024] / (256 * gaps[256]) - 1) < 0.05
