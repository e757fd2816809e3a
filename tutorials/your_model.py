# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Define your own model in one file
#
# A parameterization is a small class: which parameter arrays it has, which matrix *letters*
# (blocks of those arrays) the loss sees, $\hat y$ as vector terms for the expectation engine,
# and which products of letters fill $W_{PV}$ and $W_{KQ}$ for the simulator of the actual
# network (see [the model contract](../concepts/parameterizations.md#the-model-contract)).
# Nothing else: derivation, conserved quantities, compiled code, integration and SGD on the
# network follow.
#
# Our example: **tied keys and queries** of rank $r$, $W_{KQ}$'s $x$-block
# $Q = W_K^\top W_K$ with $W_K\in\mathbb R^{r\times d}$ (symmetric, positive semi-definite, rank
# $\le r$), one value weight $V$:
#
# $$\hat y = V\,S_{yx}\,W_K^\top W_K\,x_q/N .$$

# %%
import numpy as np
import sympy as sp

from icldyn.numerics import compile_flow, integrate, simulate_sgd
from icldyn.theory import ICLData, derive, models
from icldyn.theory.data import N_SYM
from icldyn.theory.models import Block, Model, Param, sandwich
from icldyn.theory.words import Mat


class TiedKQ(Model):
    """One head with tied keys and queries: ŷ = V S_yx W_Kᵀ W_K x_q / N.

    Parameters: V (d_y × d_y), W_K (r × d)."""

    name = "TiedKQ"                       # a name of its own: derivations are cached by key()
    V = Mat("V", rows="y", cols="y")      # letters: rows and columns live in spaces x, y, r
    K = Mat("WK", rows="r", cols="x")

    def __init__(self, d, rank=1, d_y=1):
        super().__init__(d, d_y)
        self.rank = rank
        self.params = (Param("V", "y", "y"), Param("W_K", "r", "x"))

    def sizes(self):
        return {**super().sizes(), "r": self.rank}

    def blocks(self):                     # each letter is a whole parameter here
        return [Block(self.V, "V"), Block(self.K, "W_K")]

    def prediction(self):                 # V S_yx (W_Kᵀ W_K) x_q, times 1/N
        return sandwich((self.V,), "y", "x", (self.K.transpose(), self.K), "i", 1 / N_SYM)

    def layer(self):                      # the same product, as blocks of W_PV and W_KQ
        return [{"W_PV": [("y", "y", (self.V,))],
                 "W_KQ": [("x", "x", (self.K.transpose(), self.K))]}]


# %% [markdown]
# ## Derive it
#
# `sandwich(left, rows, cols, right, index, coefficient)` builds the vector terms of
# $\text{left}\cdot(\sum_i y_ix_i^\top)\cdot\text{right}\cdot x_q$ for the engine. The derivation
# is exact for every $N$; the package also finds the model's symmetries and the conserved
# quantity they imply, and proves it.

# %%
d = 3
data = ICLData(d=d, N=8, Lambda=np.diag([2.0, 1.0, 0.5]), noise=0.25)
model = TiedKQ(d, rank=1)
der = derive(model, data)
print("L =", der.loss)
for law in der.conserved:
    print("conserved:", law.expr, "| proved:", law.proved)
assert [law.proved for law in der.conserved] == [True]

# %% [markdown]
# The rescaling $V\to\alpha^2V$, $W_K\to W_K/\alpha$ leaves $\hat y$ unchanged, so
# $\operatorname{tr}(VV^\top) - \tfrac12\operatorname{tr}(W_KW_K^\top)$ is conserved by
# gradient flow. Rotations $W_K\to RW_K$ ($R$ orthogonal) are symmetries too, but their
# generator is antisymmetric and conserves nothing.
#
# ## Check it against the actual network
#
# `simulate_sgd` builds the layer's weights from `layer()` and evaluates the batch loss on
# sampled prompts, using no derived formula. With a vanishing learning rate its first loss is
# a Monte-Carlo estimate of $L$ at the starting point.

# %%
rng = np.random.default_rng(0)
point = {"V": 0.7, "W_K": 0.6 * rng.standard_normal((1, d))}
flow = compile_flow(der, backend="numpy")
sim = simulate_sgd(model, data, point, lr=1e-12, batch=2000, steps=1, seeds=32, seed=1)
derived, mc, se = flow.loss(flow.pack(point)), sim.loss[0], sim.loss_se[0]
print(f"derived L = {derived:.5f}, Monte Carlo {mc:.5f} ± {se:.5f} (z = {(mc - derived) / se:.2f})")
assert abs(mc - derived) < 4 * se

# %% [markdown]
# ## Integrate it
#
# From a small random start the flow keeps the conserved quantity to the integrator's
# tolerance and ends at the best rank-one predictor. For $\Sigma_w = I$ and diagonal $\Lambda$
# the optimal learned matrix is positive definite, so tying keys and queries loses nothing:
# the end point has the loss of the global minimum of an untied rank-one head
# (`SeparateKQ(d, heads=1, rank=1)`, Eckart–Young in the whitened modes).

# %%
start = {"V": 0.01, "W_K": 0.01 * rng.standard_normal((1, d))}
traj = integrate(flow, start, t_end=200.0)
drift = np.ptp(traj.conserved)
untied = derive(models.SeparateKQ(d, heads=1, rank=1), data).fixed_points()[0]
print(f"conserved quantity moved by {drift:.1e}; final loss {traj.loss[-1]:.10f}, "
      f"untied rank-one minimum {float(untied.loss):.10f} ({untied.kind})")
assert drift < 1e-9
assert abs(traj.loss[-1] - float(untied.loss)) < 1e-8

# %% [markdown]
# ## Another convention, same recipe
#
# A codebase without the $1/N$ in the attention is the Merged model with coefficient 1
# ([Other conventions](../concepts/conventions.md)). Its loss at $(u, Q)$ is the Merged loss at
# $(Nu, Q)$:

# %%
class MergedNoScale(models.Merged):
    """ŷ = V S_yx Q x_q: the Merged model without the 1/N."""

    name = "MergedNoScale"

    def prediction(self):
        V, Q = self._letters(0)
        return sandwich((V,), "y", "x", (Q,), "i", sp.Integer(1))


ours = compile_flow(derive(models.Merged(d), data), backend="numpy")
theirs = compile_flow(derive(MergedNoScale(d), data), backend="numpy")
Q = rng.standard_normal((d, d))
for u in (0.02, -0.05):
    a = theirs.loss(theirs.pack({"V": u, "Q": Q}))
    b = ours.loss(ours.pack({"V": data.N * u, "Q": Q}))
    print(f"u = {u}: no-1/N loss {a:.12f}, Merged at N·u {b:.12f}")
    assert abs(a - b) < 1e-12 * max(1.0, abs(b))
