# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # SGD beyond its mean: gradient noise, the SME and the batch size
#
# The derived flow is the *mean* of SGD. Its fluctuations come from the covariance
# $\Sigma(\theta)$ of one prompt's gradient, which the package derives exactly; a batch of $B$
# prompts divides it by $B$ ([Noise and SME](../concepts/noise.md)). Two things SGD does that
# gradient descent does not, reproduced here from $L$, $\nabla L$ and $\Sigma$ alone and checked
# against SGD ensembles of the actual network:
#
# 1. **the conserved quantity drifts**: $C = \operatorname{tr}(VV^\top) - \operatorname{tr}(QQ^\top)$
#    is exactly conserved by the Merged model's flow, and GD changes it only by tiny derived
#    $\eta^2$ terms, but under SGD it random-walks, pushed by the noise, in proportion to $1/B$;
# 2. **the loss sits above GD's**, by an amount and a spread across seeds that the stochastic
#    modified equation (SME, Li, Tai and E 2017) predicts.
#
# For the first there is an exact statement. One SGD step $\theta\to\theta-\eta\hat g$
# changes the quadratic $C$ by exactly $-\eta\nabla C\cdot\hat g + \tfrac12\eta^2\hat
# g^\top H_C\hat g$; since $\nabla C\cdot\nabla L\equiv 0$, its expectation is
#
# $$
# \mathbb E[\Delta C] = \tfrac12\eta^2\,\nabla L^\top H_C\nabla L
# + \frac{\eta^2}{2B}\operatorname{tr}\big(H_C\,\Sigma(\theta)\big),
# $$
#
# GD's own change plus the noise's push.
#
# The numbers reproduced are measured on SGD of the actual layer (`simulate_sgd`, no derived
# formula).

# %%
import numpy as np

from icldyn.numerics import compile_flow, gradient_descent, simulate_sgd
from icldyn.numerics.noise.covariance import compile_covariance
from icldyn.numerics.noise.sme import simulate_sme
from icldyn.theory import ICLData, derive, models

data = ICLData(d=2, N=4, Lambda=np.array([[1.0, 0.3], [0.3, 0.6]]), noise=0.25)
model = models.Merged(2)
flow = compile_flow(derive(model, data), backend="numpy")
cov = compile_covariance(flow)               # Σ(θ): exact single-prompt gradient covariance

init = {"V": 0.5, "Q": [[0.55, 0.1], [-0.05, 0.45]]}
theta0 = flow.pack(init)
lr, steps, seeds = 0.02, 200, 256
print("Σ(θ₀) =\n", np.round(cov.matrix(theta0), 4))

# %% [markdown]
# ## The drift of the conserved quantity, predicted
#
# $H_C$ is the (constant) Hessian of the quadratic $C$, read off `flow.conserved` exactly. We sum
# the per-step expectation along the GD path (first order in the fluctuations).

# %%
def C(theta):
    return flow.conserved(theta)[0]


E, zero = np.eye(flow.size), np.zeros(flow.size)
H_C = np.array([[C(E[i] + E[j]) - C(E[i]) - C(E[j]) + C(zero) for j in range(flow.size)]
                for i in range(flow.size)])
gd = gradient_descent(flow, theta0, lr=lr, steps=steps)
gd_change = gd.conserved[-1, 0] - gd.conserved[0, 0]
noise_push = sum(0.5 * np.trace(H_C @ cov.matrix(th)) for th in gd.theta[:-1])
print(f"GD's own change of C over {steps} steps: {gd_change:+.2e}")

# %% [markdown]
# ## Against SGD ensembles at two batch sizes, and the SME

# %%
def iqr(x):
    return np.subtract(*np.quantile(x, [0.75, 0.25]))


results = {}
for B in (16, 64):
    sim = simulate_sgd(model, data, init, lr=lr, batch=B, steps=steps, seeds=seeds, seed=2,
                       record_every=steps)
    theta_sgd = sim.theta()[:, -1]                     # each seed's final parameters
    dC = np.array([C(th) for th in theta_sgd]) - C(theta0)
    loss = np.array([flow.loss(th) for th in theta_sgd])   # population loss of each seed
    sme = simulate_sme(flow, init, lr, B, steps, replicas=seeds, seed=1, record_every=steps)
    dC_sme, loss_sme = sme.conserved[-1][:, 0] - C(theta0), sme.losses[-1]
    predicted = gd_change + lr**2 / B * noise_push
    results[B] = dict(dC=dC, loss=loss, dC_sme=dC_sme, loss_sme=loss_sme, predicted=predicted)
    se = dC.std(ddof=1) / np.sqrt(seeds)
    print(f"B = {B:3d}: ΔC  SGD {dC.mean():+.5f} ± {se:.5f} | predicted {predicted:+.5f} | "
          f"SME {dC_sme.mean():+.5f}")
    print(f"         L   SGD {loss.mean():.5f} (IQR {iqr(loss):.5f}) | SME {loss_sme.mean():.5f} "
          f"(IQR {iqr(loss_sme):.5f}) | GD {gd.loss[-1]:.5f}")

# %% [markdown]
# Asserted:
#
# - SGD's mean drift of $C$ equals the prediction ($|z| < 4$) at both batch sizes, and it is
#   the noise's: far larger than GD's own change;
# - the noise part scales as $1/B$: four times smaller at $B = 64$ than at $B = 16$;
# - the SME ensemble reproduces SGD's mean drift of $C$ and its mean loss, which lies
#   significantly above GD's ($|z| < 4$ between SME and SGD; SGD above GD by more than 5
#   standard errors at $B = 16$).

# %%
def z(a, b):
    return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


for B, r in results.items():
    se = r["dC"].std(ddof=1) / np.sqrt(seeds)
    assert abs(r["dC"].mean() - r["predicted"]) < 4 * se, B
    assert abs(r["dC"].mean() - gd_change) > 10 * se, B
    assert abs(z(r["dC_sme"], r["dC"])) < 4 and abs(z(r["loss_sme"], r["loss"])) < 4, B
noise = {B: r["dC"] - gd_change for B, r in results.items()}
ratio = noise[16].mean() / noise[64].mean()
ratio_se = abs(ratio) * np.hypot(*(noise[B].std(ddof=1) / np.sqrt(seeds) / abs(noise[B].mean())
                                   for B in (16, 64)))
print(f"noise drift at B = 16 over B = 64: {ratio:.2f} ± {ratio_se:.2f} (1/B predicts 4)")
assert abs(ratio - 4) < 4 * ratio_se
loss16 = results[16]["loss"]
assert (loss16.mean() - gd.loss[-1]) / (loss16.std(ddof=1) / np.sqrt(seeds)) > 5
