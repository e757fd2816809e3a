"""Benchmarks, measured side by side in one run:
`python benchmarks/run.py [--only SECTION,...] [--out FILE] [--baseline FILE]`.

(a) compiled gradient (numba) vs hand-written NumPy of the same formula (docs/math.md §3.2, scalar
    tasks): Merged and SeparateKQ at d = 64, 256, 512, MultiHead(H = 1 → 16) at d = 256 and
    MultiHead(8) at d = 64, 512, FullLSA (its hand formula: ``hand_fulllsa_gradient``) at
    d = 64, 256, 512 (interleaved, medians);
(b) the expected learning curve by theory (exact GD, compiled) vs the same curve by
    `simulate_sgd` and by a plain PyTorch SGD loop, scaled to the seeds needed for 1 % accuracy;
(c) derivation time per model (incl. the symmetry search): cold (empty cache), from the disk
    cache (as a new process sees it) and from memory;
(d) numba vs numpy backend for 10⁵ GD steps at d = 16;
(e) growth of the compiled-gradient cost with d per model (fitted exponent, d = 16 → 64);
(f) finite task sets: compiled-gradient cost against the number of tasks P (MultiHead, vector
    outputs, d = 8), next to the Gaussian-task gradient of the same model;
(g) ICLData with a numeric Λ (float64 checks, exact rationals only on use) at d = 64, 256, 512,
    next to the same Λ given as exact rationals (d = 64: the exact path's cost);
(h) compiled-gradient cost per model against d = 8 → 512 and against the number of heads
    H = 1 → 16 (models without heads: H = 1), with the cold derivation (symmetry search
    included) at each H;
(i) the symmetry search (generators and proved laws) of MultiHead(H), H = 1 → 16, cold;
(j) FullLSA with eigenbasis tasks: task-cubature nodes and compiled-gradient cost, d = 2 → 16;
(l) whole trajectories compiled: per-step cost of GD and RK4 at d = 4 vs a hand Numba loop, and
    a 2 000-step curve vs SGD of the layer with 64 seeds × 64 prompts; ``integrate`` (compiled
    DOP853) vs SciPy's solve_ivp on the compiled gradient, per trajectory and per evaluation;
(m) a cold first learning curve per one-layer model (new process, empty cache).
Sections are selected by name (``--only``; ``--list`` names them). Times are CPU time
(``time.process_time``: the machine is shared) with BLAS and Numba pinned to one thread
(``ICLDYN_BENCH_THREADS`` to change); every timing is compared with the previous results file
and slow-downs ≥ 1.3x are printed. Writes JSON after each section (default benchmarks/results.json;
sections not run keep their previous entries).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

THREADS = os.environ.get("ICLDYN_BENCH_THREADS", "1")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")
for _var in THREAD_VARS:               # before NumPy and Numba load their thread pools
    os.environ[_var] = THREADS

import numpy as np  # noqa: E402

clock = time.process_time                 # CPU time of this process (all its threads)
SLOWDOWN = 1.3


def best_time(fn, repeat: int = 5, number: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = clock()
        for _ in range(number):
            fn()
        times.append((clock() - start) / number)
    return min(times)


def paired_times(fns: dict, repeat: int = 11, number: int = 1) -> dict:
    """{name: median CPU time per call} of the functions ``fns`` timed in turn, ``repeat``
    rounds of ``number`` calls each (interleaved: a shared machine's load hits all alike)."""
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = clock()
            for _ in range(number):
                fn()
            times[name].append((clock() - start) / number)
    return {name: float(np.median(t)) for name, t in times.items()}


def hand_gradient(Lam, Sw, n, sigma):
    """Hand-written NumPy of G = A M Λ − Λ Σ_w Λ, du = ⟨Q, G⟩, dQ = u G (the oracle formula)."""
    A = (n + 1) / n * Lam @ Sw @ Lam + (np.trace(Sw @ Lam) + sigma**2) / n * Lam
    B = Lam @ Sw @ Lam

    def grad(u, Q):
        G = A @ (u * Q) @ Lam - B
        return np.sum(Q * G), u * G
    return grad


def hand_multihead_gradient(Lam, Sw, n, sigma):
    """H heads, M = Σ_h u_h Q_h: one G (``hand_gradient``'s), du_h = ⟨Q_h, G⟩, dQ_h = u_h G.
    u (H,), Q (H, d, d)."""
    merged = hand_gradient(Lam, Sw, n, sigma)

    def grad(u, Q):
        _, G = merged(1.0, np.tensordot(u, Q, axes=1))
        return np.tensordot(Q, G, axes=2), u[:, None, None] * G
    return grad


def hand_separatekq_gradient(Lam, Sw, n, sigma):
    """H heads, M = Σ_h u_h W_K,hᵀ W_Q,h: one G, du_h = ⟨W_K,hᵀ W_Q,h, G⟩,
    dW_K,h = u_h W_Q,h Gᵀ, dW_Q,h = u_h W_K,h G. u (H,), W_K, W_Q (H, r, d)."""
    merged = hand_gradient(Lam, Sw, n, sigma)

    def grad(u, WK, WQ):
        K = [WK[h].T @ WQ[h] for h in range(len(u))]
        _, G = merged(1.0, sum(u[h] * K[h] for h in range(len(u))))
        return (np.array([np.sum(k * G) for k in K]),
                np.array([u[h] * (WQ[h] @ G.T) for h in range(len(u))]),
                np.array([u[h] * (WK[h] @ G) for h in range(len(u))]))
    return grad


def hand_fulllsa_gradient(Lam, n):
    """FullLSA with d_y = 1, Gaussian tasks w ~ N(0, I), no label noise: the expected loss
    worked out by hand (Wishart moments E[S B S] = N² ΛBΛ + N ΛBᵀΛ + N tr(BΛ) Λ, Gaussian
    moments of x_q to order 6) and differentiated by hand. With p = P₁ᵀ, a = P₂, Q = Q₁,
    q = Q₂ᵀ, v = Λp, r = Λq, A = (Q + Qᵀ)/2, C = (N² + N)Λ² + N tr(Λ) Λ, N ŷ − N y_q is
    T₁ + T₂ + T₅ (even in w) + T₃ + T₄ + T₆ (odd in w), T₁ = pᵀSQx, T₂ = (pᵀx)(xᵀQx),
    T₃ = (pᵀSw)(qᵀx), T₄ = a wᵀSQx, T₅ = a (wᵀSw)(qᵀx), T₆ = −N wᵀx, and 2N² L =
      (N² + N) vᵀQΛQᵀv + N tr(QΛQᵀΛ) pᵀv
      + pᵀv (tr(AΛ)² + 2 tr(AΛAΛ)) + 4 tr(AΛ) vᵀAv + 8 vᵀAΛAv
      + a² qᵀr ((N² + 2N) tr(Λ)² + (2N² + 4N) tr(Λ²))
      + 2N (tr(AΛ) vᵀQv + 2 vᵀQΛAv) + 2a (N² tr(Λ) vᵀQr + 2N vᵀΛQr)
      + 2aN tr(Λ) (tr(AΛ) vᵀq + 2 vᵀAr) + qᵀr pᵀCp
      + a² ((N² + N) tr(ΛQΛQᵀΛ) + N tr(QΛQᵀΛ) tr(Λ)) + N² tr(Λ)
      + 2a pᵀCQr − 2N² vᵀr − 2N² a tr(ΛQΛ).
    Three d×d products (Y = ΛQΛ, Z = ΛY); the rest are matrix-vector products and rank-one
    updates. Returns grad(W_PV, W_KQ) -> (∂L/∂W_PV, ∂L/∂W_KQ), both (d+1, d+1)."""
    N, d = n, Lam.shape[0]
    tL, L2 = np.trace(Lam), Lam @ Lam
    C = (N * N + N) * L2 + N * tL * Lam
    c5 = (N * N + 2 * N) * tL**2 + (2 * N * N + 4 * N) * np.sum(Lam * Lam)

    def grad(W_PV, W_KQ):
        p, a, Q, q = W_PV[d, :d], W_PV[d, d], W_KQ[:d, :d], W_KQ[d, :d]
        Y = Lam @ (Q @ Lam)
        Z = Lam @ Y
        v, r = Lam @ p, Lam @ q
        Lv, Cp = Lam @ v, C @ p
        Qv, Qtv, Qr, Qtr = Q @ v, Q.T @ v, Q @ r, Q.T @ r
        Av, Ar = (Qv + Qtv) / 2, (Qr + Qtr) / 2
        g, f1, f2 = Lam @ Av, Lam @ Qv, Lam @ Qtv
        S1, Sq, vq, h = p @ v, q @ r, v @ q, v @ Av
        tA, tB, tZ = np.sum(Q * Lam), np.sum(Q * Y), np.sum(Q * Z)
        TAA = (np.sum(Q.T * Y) + tB) / 2                       # tr(AΛAΛ)
        G = ((2 * N * S1 + 2 * S1 + 2 * a * a * N * tL) * Y + 2 * S1 * Y.T
             + 2 * a * a * (N * N + N) * Z - 2 * N * N * a * L2
             + (2 * S1 * tA + 4 * h + 2 * N * h + 2 * a * N * tL * vq) * Lam)
        G += np.outer(v, 2 * (N * N + N) * f2 + (4 + 2 * N) * tA * v + 8 * g + 2 * N * f1
                      + 4 * N * f2 + 2 * a * N * tL * (N + 1) * r)
        G += np.outer(8 * g + 2 * N * f2 + 2 * a * N * tL * r, v)
        G += np.outer(4 * a * N * Lv + 2 * a * Cp, r)
        Ag = (Q @ g + Q.T @ g) / 2
        dv = (2 * (N * N + N) * (Q @ f2) + 8 * tA * Av + 16 * Ag
              + 2 * N * (2 * tA * Av + 2 * (Q @ g) + Q @ f2 + Q.T @ f2)
              + 2 * a * (N * N * tL * Qr + 2 * N * Lam @ Qr) + 4 * a * N * tL * Ar)
        dp = (Lam @ dv + (2 * N * tB + 2 * (tA**2 + 2 * TAA)) * v + 2 * a * N * tL * tA * r
              + 2 * Sq * Cp + 2 * a * C @ Qr - 2 * N * N * Lam @ r)
        dq = (2 * a * a * c5 * r + 2 * a * Lam @ (N * N * tL * Qtv + 2 * N * Q.T @ Lv)
              + 2 * a * N * tL * (tA * v + 2 * g) + 2 * (p @ Cp) * r + 2 * a * Lam @ (Q.T @ Cp)
              - 2 * N * N * Lv)
        da = (2 * a * Sq * c5 + 2 * (N * N * tL * v @ Qr + 2 * N * Lv @ Qr)
              + 2 * N * tL * (tA * vq + 2 * v @ Ar)
              + 2 * a * ((N * N + N) * tZ + N * tB * tL) + 2 * Cp @ Qr
              - 2 * N * N * np.sum(Q * L2))
        g_pv, g_kq = np.zeros((d + 1, d + 1)), np.zeros((d + 1, d + 1))
        g_pv[d, :d], g_pv[d, d], g_kq[:d, :d], g_kq[d, :d] = dp, da, G, dq
        return g_pv / (2 * N * N), g_kq / (2 * N * N)
    return grad


def _gradient_data(d: int, plain: bool = False):
    """Λ random SPD; Σ_w = I + 0.1·11ᵀ and σ = 0.1, or (``plain``) Σ_w = I and σ = 0."""
    from icldyn.theory import ICLData
    rng = np.random.default_rng(0)
    X = rng.standard_normal((d, d))
    Lam = X @ X.T / d + np.eye(d)
    if plain:
        return ICLData(d=d, N=20, Lambda=Lam)
    return ICLData(d=d, N=20, Lambda=Lam, Sigma_w=np.eye(d) + 0.1 * np.ones((d, d)), noise=0.1)


def hand_reference(hand_name: str, data, params: dict) -> tuple:
    """(the hand gradient function of ``hand_name`` set up for ``data``, its arguments at the
    parameters ``params``)."""
    d, arrays = data.d, data.arrays()
    Lam, Sw = (np.asarray(arrays[name], float) for name in ("Lambda", "Sigma_w"))
    if hand_name == "hand_fulllsa_gradient":
        return hand_fulllsa_gradient(Lam, float(data.N)), (params["W_PV"], params["W_KQ"])
    hand = globals()[hand_name](Lam, Sw, float(data.N), float(data.noise))
    u = params["V"].reshape(-1)
    factors = (params["Q"].reshape(-1, d, d),) if "Q" in params else (params["W_K"],
                                                                      params["W_Q"])
    if hand_name == "hand_gradient":
        u, factors = u[0], (factors[0][0],)
    return hand, (u, *factors)


def bench_gradient(model, hand_name: str) -> dict:
    """The compiled gradient (numba) of a model against its hand-written NumPy reference at the
    same θ (checked equal), side by side (interleaved; medians)."""
    from icldyn.numerics import compile_flow
    from icldyn.theory import derive
    d = model.d
    data = _gradient_data(d, plain=hand_name == "hand_fulllsa_gradient")
    flow = compile_flow(derive(model, data), backend="numba").compiled()
    theta = np.random.default_rng(1).standard_normal(flow.size) / d
    hand, args = hand_reference(hand_name, data, flow.unpack(theta))
    mine = flow.grad(theta)
    ref = np.concatenate([np.ravel(g) for g in hand(*args)])
    assert np.allclose(mine, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max()), model
    t = paired_times({"gen": lambda: flow.grad(theta), "hand": lambda: hand(*args)},
                     number=max(1, 2000 // d))
    t_gen, t_hand = t["gen"], t["hand"]
    return {"model": repr(model), "d": d, "compiled_s": t_gen, "hand_numpy_s": t_hand,
            "ratio": t_gen / t_hand}


def bench_gradients() -> list[dict]:
    from icldyn.theory import models
    cases = [(models.Merged(d), "hand_gradient") for d in (64, 256, 512)]
    cases += [(models.SeparateKQ(d, heads=2, rank=d // 2), "hand_separatekq_gradient")
              for d in (64, 256, 512)]
    cases += [(models.MultiHead(256, heads=heads), "hand_multihead_gradient")
              for heads in (1, 2, 4, 8, 16)]
    cases += [(models.MultiHead(d, heads=8), "hand_multihead_gradient") for d in (64, 512)]
    cases += [(models.FullLSA(d), "hand_fulllsa_gradient") for d in (64, 256, 512)]
    rows = []
    for model, hand in cases:
        rows.append(bench_gradient(model, hand))
    return rows


CURVE = dict(d=4, N=16, spectrum=(2.0, 1.0, 0.5, 0.25), lr=0.02, batch=64, steps=2000,
             seeds=32, validation=1024)


def bench_curve() -> dict:
    """The expected learning curve: theory (compiled kernels from the cache, exact GD) vs
    simulate_sgd and a plain PyTorch SGD loop over the same seeds; the simulations' cost is
    scaled to the number of seeds that gives 1 % relative standard error (cost ∝ seeds)."""
    from icldyn.numerics import compile_flow, gradient_descent, simulate_sgd
    from icldyn.theory import ICLData, derive, models
    c = CURVE
    data = ICLData(d=c["d"], N=c["N"], Lambda=np.diag(c["spectrum"]))
    model = models.Merged(c["d"])
    init = {"V": 0.1, "Q": 0.1}
    flow = compile_flow(derive(model, data), backend="numba").compiled()
    gradient_descent(flow, flow.pack(init), lr=c["lr"], steps=10)          # warm
    t_theory = best_time(lambda: gradient_descent(flow, flow.pack(init), lr=c["lr"],
                                                  steps=c["steps"], every=10), repeat=3)
    theory = gradient_descent(flow, flow.pack(init), lr=c["lr"], steps=c["steps"])
    start = clock()
    sim = simulate_sgd(model, data, init, lr=c["lr"], batch=c["batch"], steps=c["steps"],
                       seeds=c["seeds"], seed=0)
    t_sim = clock() - start
    rel_se = float(np.median(sim.loss_se / sim.loss))
    seeds_1pct = int(np.ceil(c["seeds"] * (rel_se / 0.01) ** 2))
    out = {"theory_s": t_theory, "simulation_s": t_sim, "seeds": c["seeds"],
           "simulation_median_relative_se": rel_se, "seeds_for_1pct": seeds_1pct,
           "simulation_1pct_s": t_sim * seeds_1pct / c["seeds"],
           "final_theory": float(theory.loss[-1]), "final_sgd": float(sim.loss[-1])}
    out["ratio_simulation"] = out["simulation_1pct_s"] / t_theory
    start = clock()
    val = simulate_sgd(model, data, init, lr=c["lr"], batch=c["batch"], steps=c["steps"],
                       seeds=c["seeds"], seed=0, record_every=10, validation=c["validation"])
    t_val = clock() - start
    rel_val = float(np.median(val.val_loss_se / val.val_loss))
    out["validation"] = {"prompts": c["validation"], "simulation_s": t_val,
                         "median_relative_se": rel_val,
                         "seeds_for_1pct": int(np.ceil(c["seeds"] * (rel_val / 0.01) ** 2))}
    out["validation"]["simulation_1pct_s"] = t_val * out["validation"]["seeds_for_1pct"] \
        / c["seeds"]
    t_torch = torch_sgd_time(c)
    if t_torch is not None:
        out["torch_s"] = t_torch
        out["torch_1pct_s"] = t_torch * seeds_1pct / c["seeds"]
        out["ratio_torch"] = out["torch_1pct_s"] / t_theory
    return out


def torch_sgd_time(c: dict) -> float | None:
    """A plain PyTorch SGD loop of the same layer (ŷ = u y_ctxᵀ X Q x_q / N, vectorised over
    seeds, autograd gradients, float64, CPU); None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(int(THREADS))
    torch.manual_seed(0)
    S, B, N, d = c["seeds"], c["batch"], c["N"], c["d"]
    sd = torch.tensor(np.sqrt(c["spectrum"]), dtype=torch.float64)
    u = torch.full((S, 1, 1), 0.1, dtype=torch.float64, requires_grad=True)
    Q = (0.1 * torch.eye(d, dtype=torch.float64)).repeat(S, 1, 1).requires_grad_(True)
    opt = torch.optim.SGD([u, Q], lr=c["lr"])
    start = clock()
    for _ in range(c["steps"]):
        x = torch.randn(S, B, N + 1, d, dtype=torch.float64) * sd
        w = torch.randn(S, 1, d, 1, dtype=torch.float64)
        y = (x @ w)[..., 0]
        X, xq, Y, yq = x[:, :, :N], x[:, :, N], y[:, :, :N], y[:, :, N]
        h = torch.einsum("sbn,sbni->sbi", Y, X) / N                     # y_ctxᵀ X / N
        pred = u[:, :, 0] * torch.einsum("sbi,sij,sbj->sb", h, Q, xq)
        loss = 0.5 * ((pred - yq) ** 2).mean(dim=1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clock() - start


COST_MODELS = ("Merged", "MultiHead", "SeparateKQ", "FullLSA")


def cost_model(name: str, d: int, heads: int = 2):
    """The models of (e) and (h): H heads where the model has them (SeparateKQ of rank 2)."""
    from icldyn.theory import models
    return {"Merged": lambda: models.Merged(d),
            "MultiHead": lambda: models.MultiHead(d, heads=heads),
            "SeparateKQ": lambda: models.SeparateKQ(d, heads=heads, rank=2),
            "FullLSA": lambda: models.FullLSA(d)}[name]()


def grad_time(model, d: int, backend: str = "numba") -> float:
    """CPU time of one compiled gradient at d, after a warm-up call."""
    from icldyn.numerics import compile_flow
    from icldyn.theory import ICLData, derive
    data = ICLData(d=d, N=20, Lambda=np.diag(np.linspace(1.0, 2.0, d)))
    flow = compile_flow(derive(model, data), backend).compiled()
    theta = 0.1 * np.random.default_rng(0).standard_normal(flow.size)
    flow.grad(theta)
    return best_time(lambda: flow.grad(theta), repeat=3, number=max(1, 4000 // d**2 + 1))


def hand_gd_loop():
    """A hand Numba loop of exact GD on the Merged model (``hand_gradient``'s formula), the
    reference of the compiled trajectories' per-step cost."""
    import numba

    @numba.njit(cache=False)
    def loop(A, B, Lam, u, Q, lr, steps):
        for _ in range(steps):
            G = A @ (u * Q) @ Lam - B
            du = np.sum(Q * G)
            Q = Q - lr * u * G
            u = u - lr * du
        return u, Q
    return loop


def bench_trajectories(rounds: int = 7) -> dict:
    """Per-step cost of compiled GD and RK4 at d = 4 (the whole loop compiled) against a hand
    Numba loop of the same GD; a 2 000-step curve recorded at every step (loss and conserved
    quantities in one compiled loop) against SGD of the layer with 64 seeds × 64 prompts.
    The loops are timed in ``rounds`` interleaved rounds (a shared machine's load falls on all
    alike), medians reported, with the load average of the run."""
    from icldyn.numerics import compile_flow, gradient_descent, rk4, simulate_sgd
    from icldyn.theory import ICLData, derive, models
    c = CURVE
    d, lr = c["d"], c["lr"]
    data = ICLData(d=d, N=c["N"], Lambda=np.diag(c["spectrum"]))
    model = models.Merged(d)
    flow = compile_flow(derive(model, data), backend="numba").compiled()
    init = flow.pack({"V": 0.1, "Q": 0.1})
    steps, curve_steps = 20_000, 2000
    Lam = np.diag(c["spectrum"])
    A = (c["N"] + 1) / c["N"] * Lam @ Lam + np.trace(Lam) / c["N"] * Lam
    loop = hand_gd_loop()
    mine = gradient_descent(flow, init, lr=lr, steps=100, every=100).theta[-1]
    u, Q = loop(A, Lam @ Lam, Lam, 0.1, 0.1 * np.eye(d), lr, 100)
    assert np.allclose(mine, np.concatenate([[u], Q.ravel()]), rtol=1e-9, atol=1e-13)
    runs = {"gd": lambda: gradient_descent(flow, init, lr=lr, steps=steps, every=steps),
            "rk4": lambda: rk4(flow, init, t_end=steps * lr, dt=lr, every=steps),
            "hand": lambda: loop(A, Lam @ Lam, Lam, 0.1, 0.1 * np.eye(d), lr, steps),
            "curve": lambda: gradient_descent(flow, init, lr=lr, steps=curve_steps, every=1)}
    for run in runs.values():
        run()                                                    # warm
    start = clock()
    simulate_sgd(model, data, {"V": 0.1, "Q": 0.1}, lr=lr, batch=64, steps=curve_steps,
                 seeds=64, seed=0)
    t_sgd = clock() - start
    t = paired_times(runs, repeat=rounds)
    t_gd, t_rk4, t_hand = t["gd"] / steps, t["rk4"] / steps, t["hand"] / steps
    return {"gd_step_s": t_gd, "rk4_step_s": t_rk4, "hand_numba_gd_step_s": t_hand,
            "gd_ratio": t_gd / t_hand, "rk4_per_gradient_ratio": t_rk4 / 4 / t_hand,
            "curve_s": t["curve"], "sgd_64x64_s": t_sgd, "curve_ratio": t_sgd / t["curve"],
            "integrate": bench_integrate(data, rounds),
            "rounds": rounds, "load_average": list(os.getloadavg())}


def bench_integrate(data, rounds: int) -> list[dict]:
    """``integrate`` (DOP853, rtol 1e-10, t_end = 40, 401 rows) at d = 4, Merged and
    MultiHead(2): the compiled loop against SciPy's solve_ivp calling the compiled gradient
    (the path ``integrate`` takes without the Numba loop), interleaved rounds, medians; per
    trajectory and per gradient evaluation (both do the same evaluations)."""
    from icldyn.numerics import compile_flow, integrate
    from icldyn.theory import derive, models
    rows = []
    for model in (models.Merged(4), models.MultiHead(4, heads=2)):
        flow = compile_flow(derive(model, data), backend="numba").compiled()
        theta0 = 0.1 + 0.01 * np.random.default_rng(0).standard_normal(flow.size)

        def scipy_path():
            flow.kernel_adaptive = lambda: None        # what integrate does without the loop
            try:
                return integrate(flow, theta0, t_end=40.0)
            finally:
                del flow.kernel_adaptive
        runs = {"compiled": lambda: integrate(flow, theta0, t_end=40.0), "scipy": scipy_path}
        nfev = {name: run().info["nfev"] for name, run in runs.items()}      # and warm
        t = paired_times(runs, repeat=rounds)
        rows.append({"model": repr(model), "nfev": nfev["compiled"], "scipy_nfev": nfev["scipy"],
                     "compiled_s": t["compiled"], "scipy_s": t["scipy"],
                     "compiled_per_eval_s": t["compiled"] / nfev["compiled"],
                     "scipy_per_eval_s": t["scipy"] / nfev["scipy"],
                     "ratio": t["scipy"] / t["compiled"]})
    return rows


COLD = """
import sys, time
start = time.process_time()
import numpy as np
from icldyn.numerics import compile_flow, gradient_descent
from icldyn.theory import ICLData, derive, models
model = eval(sys.argv[1], vars(models))
flow = compile_flow(derive(model, ICLData(d=4, N=16, Lambda=np.diag([2.0, 1.0, 0.5, 0.25]))))
gradient_descent(flow, 0.1 * np.ones(flow.size), lr=0.02, steps=2000, every=10)
print(time.process_time() - start)
"""


def bench_cold() -> list[dict]:
    """A cold first learning curve per one-layer model: a new process with an empty cache
    imports, derives, compiles (numba backend) and runs 2 000 GD steps; CPU time of that
    process (wall time is inflated by the load of a shared machine)."""
    import subprocess
    import sys
    import tempfile
    rows = []
    for model in ("Merged(4)", "MultiHead(4, heads=2)", "SeparateKQ(4, heads=2, rank=2)",
                  "FullLSA(4)"):
        env = {**os.environ, "ICLDYN_CACHE_DIR": tempfile.mkdtemp(prefix="icldyn-cold-")}
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD, model], env=env, check=True,
                             capture_output=True, text=True)
        rows.append({"model": model, "cpu_s": float(out.stdout.split()[-1]),
                     "wall_s": time.perf_counter() - start})
    return rows


def bench_cost_exponents() -> list[dict]:
    """Compiled-gradient time per model at d = 8 → 512 and the fitted exponent of d
    (d = 64 → 512)."""
    rows = []
    ds = (8, 16, 32, 64, 128, 256, 512)
    for name in COST_MODELS:
        times = [grad_time(cost_model(name, d), d) for d in ds]
        exponent = float(np.polyfit(np.log(ds[3:]), np.log(times[3:]), 1)[0])
        rows.append({"model": name, "d": list(ds), "grad_s": times, "exponent": exponent})
    return rows


def bench_heads() -> list[dict]:
    """Per model against the number of heads H = 1 → 16 at d = 16: the cold derivation
    (empty cache; loss, gradient, symmetry search and proved laws, symbolic Λ) and the
    compiled gradient (NumPy backend: Numba's compile time grows with H, > 1 min at H = 8).
    Models without heads have H = 1 only."""
    import sympy as sp

    from icldyn.theory import ICLData, cache, derive
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    symbolic = ICLData(d=16, N=N, Lambda="full", Sigma_w="full", noise=sigma)
    rows = []
    with _private_cache():
        for name in COST_MODELS:
            Hs = (1, 2, 4, 8, 16) if name in ("MultiHead", "SeparateKQ") else (1,)
            row = {"model": name, "H": list(Hs), "derive_cold_s": [], "grad_s": []}
            for H in Hs:
                cache.clear_cache()
                start = clock()
                derive(cost_model(name, 16, H), symbolic).conservation_laws()
                row["derive_cold_s"].append(clock() - start)
                row["grad_s"].append(grad_time(cost_model(name, 16, H), 16, "numpy"))
            rows.append(row)
    return rows


def bench_symmetry() -> list[dict]:
    """The symmetry search of MultiHead(H) (generators, then the proved laws), cold, d = 2,
    symbolic data: polynomial in H (each class of letter content is solved once per renamed
    form)."""
    import sympy as sp

    from icldyn.theory import ICLData, cache, derive, models
    from icldyn.theory.symmetry import find_symmetries
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    data = ICLData(d=2, N=N, Lambda="full", Sigma_w="full", noise=sigma)
    rows = []
    with _private_cache():
        for H in (1, 2, 4, 8, 16):
            cache.clear_cache()
            der = derive(models.MultiHead(2, heads=H), data)
            start = clock()
            find_symmetries(der)
            search = clock() - start
            laws = der.conservation_laws()
            rows.append({"H": H, "search_s": search, "laws_s": clock() - start - search,
                         "laws": len(laws), "proved": sum(law.proved for law in laws)})
    return rows


def bench_cubature() -> list[dict]:
    """FullLSA with the paper's eigenbasis tasks (loss quartic in δ): nodes of the exact task
    cubature (2d² + 1; the product rule it replaced had 3^d) and the compiled gradient."""
    from icldyn.numerics import compile_flow
    from icldyn.theory import ICLData, derive, models
    rows = []
    for d in (2, 4, 8, 16):
        data = ICLData(d=d, N=8, Lambda=np.diag(np.linspace(1.0, 2.0, d)), d_y=d,
                       tasks="diagonal", noise=0.1)
        start = clock()
        flow = compile_flow(derive(models.FullLSA(d, d_y=d), data), "numba")
        theta = 0.1 * np.random.default_rng(0).standard_normal(flow.size)
        flow.grad(theta)
        first = clock() - start
        flow.compiled()                   # the gradient timed: Numba's, not the NumPy stand-in
        rows.append({"d": d, "nodes": len(flow.tasks), "product_rule_nodes": 3**d,
                     "compile_and_first_grad_s": first,
                     "grad_s": best_time(lambda: flow.grad(theta), repeat=3)})
    return rows


class _private_cache:
    """A fresh derivation-cache folder for cold timings (the user's cache is left alone)."""

    def __enter__(self):
        import tempfile

        from icldyn.theory import cache
        self.old = os.environ.get(cache.ENV)
        self.parent = tempfile.mkdtemp(prefix="icldyn-bench-")
        os.environ[cache.ENV] = os.path.join(self.parent, "cache")   # created marked on use
        return self

    def __exit__(self, *exc):
        import shutil

        from icldyn.theory import cache
        cache.clear_memory()
        shutil.rmtree(self.parent, ignore_errors=True)
        if self.old is None:
            os.environ.pop(cache.ENV, None)
        else:
            os.environ[cache.ENV] = self.old


MEMORY_GB = float(os.environ.get("ICLDYN_BENCH_MEMORY_GB", "16"))


def capped(fn, limit_gb: float = MEMORY_GB) -> dict:
    """``fn()`` (a dict of timings) run in a forked child whose address space is capped at
    ``limit_gb``: a job that needs more is reported ({"exceeded_memory_gb": limit}) instead
    of the kernel's out-of-memory killer ending the whole run (the 2-layer stack's covariance
    with the query among the keys passed 23 GB on 2026-12-03)."""
    import multiprocessing
    import resource
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child():
        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            send.send(fn())
        except MemoryError:
            send.send({"exceeded_memory_gb": limit_gb})

    process = context.Process(target=child)
    process.start()
    send.close()                            # the child's end only: EOF when it dies
    try:
        result = receive.recv()
    except EOFError:
        result = None
    process.join()
    return result if result is not None else {"failed_exit_code": process.exitcode}


def bench_derivation() -> list[dict]:
    """Derivation incl. the symmetry search: cold (empty cache), from the disk cache (memory
    layer cleared, as in a new process) and from memory; one-layer models and stacks (targets
    of the depth issue: 2 layers < 60 s, 3 layers < 10 min cold, symbolic Λ)."""
    import sympy as sp

    from icldyn.theory import ICLData, cache, derive, models
    rows = []
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    with _private_cache():
        for model in (models.Merged(3), models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 2),
                      models.FullLSA(3), models.Stack([models.Merged(3)] * 2),
                      models.Stack([models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 1)]),
                      models.Stack([models.Merged(3)] * 3)):
            data = ICLData(d=3, N=N, Lambda="full", Sigma_w="full", noise=sigma)
            times = []
            for clear in (cache.clear_cache, cache.clear_memory, lambda: None):
                clear()
                start = clock()
                derive(model, data).conservation_laws()
                times.append(clock() - start)
            rows.append({"model": repr(model), "cold_s": times[0], "disk_s": times[1],
                         "memory_s": times[2]})
    return rows


def bench_engine() -> list[dict]:
    """The exact expectation engine (issue 16): CPU time of the gradient covariance cold (empty
    cache, d = 2, symbolic N, Λ, Σ_w, σ; targets FullLSA < 15 s, MultiHead(2) < 1 s; before the
    integer-coded engine: 6.4 s, SeparateKQ(2, 2) 15.9 s, FullLSA ≈ 170 s) and of stack losses
    (moments of order 10 and 14), with the number of Isserlis pairings enumerated; the 2-layer
    stack's covariance by the two stages of theory/wishart.py (Isserlis pairings conditional on
    the context, then the Wishart recursion); the 3-layer one, refused (degree 12 in S), with
    the pairings the direct route would need (counted). Each job runs in a child capped at
    ``MEMORY_GB`` of address space; the two-stage route stops at its memory budget
    (``theory/memory.py``: 85 % of that cap) with an InputError, recorded as "refused"."""
    import sympy as sp

    from icldyn.theory import ICLData, InputError, cache, derive, gaussian, models
    from icldyn.theory.covariance import covariance_cost
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    data = ICLData(d=2, N=N, Lambda="full", Sigma_w="full", noise=sigma)
    jobs = [(m, "gradient covariance", lambda der: der.gradient_covariance())
            for m in (models.Merged(2), models.MultiHead(2, heads=2), models.SeparateKQ(2, 2, 2),
                      models.FullLSA(2))]
    jobs += [(models.Stack([models.Merged(2)] * layers), "loss", lambda der: der.loss_poly)
             for layers in (2, 3)]
    jobs += [(models.Stack([models.Merged(2)] * 2, query_in_keys=keys),
              "gradient covariance (two stages: theory/wishart.py)",
              lambda der: der.gradient_covariance()) for keys in (False, True)]
    def cold(model, fn):
        cache.clear_cache()
        pairings, start = gaussian.STATS["pairings"], clock()
        try:
            fn(derive(model, data))
        except InputError as exc:             # e.g. past the memory budget (theory/memory.py)
            return {"refused_after_s": clock() - start, "refused": str(exc)}
        return {"cold_s": clock() - start, "pairings": gaussian.STATS["pairings"] - pairings}

    rows = []
    with _private_cache():
        for model, what, fn in jobs:
            rows.append({"model": repr(model), "quantity": what,
                         **capped(lambda: cold(model, fn))})
        stack = models.Stack([models.Merged(2)] * 3)     # refused: counted, not enumerated
        start = clock()
        rows.append({"model": repr(stack), "quantity": "gradient covariance (refused)",
                     "pairings": covariance_cost(derive(stack, data)), "count_s": clock() - start})
    return rows


def bench_backends() -> dict:
    from icldyn.numerics import compile_flow, gradient_descent
    from icldyn.theory import ICLData, derive, models
    d = 16
    data = ICLData(d=d, N=20, Lambda=np.eye(d))
    der = derive(models.Merged(d), data)
    out = {}
    for backend in ("numba", "numpy"):
        flow = compile_flow(der, backend=backend).compiled()
        theta = flow.pack({"V": 0.1, "Q": 0.1})
        gradient_descent(flow, theta, lr=0.01, steps=10, every=10)
        steps = 100_000 if backend == "numba" else 10_000
        start = clock()
        gradient_descent(flow, theta, lr=0.01, steps=steps, every=steps)
        out[backend] = (clock() - start) * 100_000 / steps
    return {"numba_s_per_1e5": out["numba"], "numpy_s_per_1e5": out["numpy"],
            "speedup": out["numpy"] / out["numba"]}


def bench_task_sets() -> dict:
    from icldyn.numerics import compile_flow
    from icldyn.theory import ICLData, derive, models
    d = 8
    model = models.MultiHead(d, heads=2, d_y=2)
    Lam = np.diag(np.linspace(1.0, 0.2, d))
    rng = np.random.default_rng(0)
    theta = None
    out = {"P": [], "grad_s": []}
    for P in (0, 1, 8, 64, 512):
        tasks = "gaussian" if P == 0 else rng.standard_normal((P, 2, d))
        flow = compile_flow(derive(model, ICLData(d=d, N=16, Lambda=Lam, d_y=2,
                                                  tasks=tasks))).compiled()
        theta = 0.1 * rng.standard_normal(flow.size) if theta is None else theta
        flow.grad(theta)
        out["P"].append(P)
        out["grad_s"].append(best_time(lambda: flow.grad(theta), number=20))
    return out


def bench_data() -> dict:
    import sympy as sp

    from icldyn.theory import ICLData
    rows = []
    for d in (64, 256, 512):
        X = np.random.default_rng(d).standard_normal((d, d))
        Lam = X @ X.T / d + np.eye(d)
        rows.append({"d": d, "numeric_s": best_time(lambda: ICLData(d=d, N=20, Lambda=Lam),
                                                    repeat=3)})
    d, Lam = 64, X[:64, :64] @ X[:64, :64].T / 64 + np.eye(64)
    exact = sp.Matrix(d, d, [sp.Rational(v) for v in Lam.ravel()])
    numeric = best_time(lambda: ICLData(d=d, N=20, Lambda=Lam), repeat=3)
    return {"rows": rows, "exact_d64_s": best_time(lambda: ICLData(d=d, N=20, Lambda=exact),
                                                    repeat=1), "numeric_d64_s": numeric}


def print_cost_exponents(rows) -> None:
    for row in rows:
        cost = ", ".join(f"{d}: {t * 1e6:.0f}" for d, t in zip(row["d"], row["grad_s"]))
        print(f"(e) {row['model']}: compiled gradient µs by d {{{cost}}} ~ "
              f"d^{row['exponent']:.2f} (d = 64 → 512)")


def print_heads(rows) -> None:
    for row in rows:
        cost = ", ".join(f"{H}: {t:.2f} s / {g * 1e6:.0f} µs" for H, t, g in
                         zip(row["H"], row["derive_cold_s"], row["grad_s"]))
        note = "" if len(row["H"]) > 1 else " (no heads: H = 1)"
        print(f"(h) {row['model']}{note}, d = 16, cold derivation / NumPy gradient by H: "
              f"{{{cost}}}")


def print_curve(c) -> None:
    print(f"(b) learning curve ({CURVE['steps']} steps): theory {c['theory_s'] * 1e3:.1f} ms; "
          f"simulate_sgd {c['simulation_s']:.2f} s for {c['seeds']} seeds (median relative SE "
          f"{c['simulation_median_relative_se']:.1%}), {c['seeds_for_1pct']} seeds for 1 % → "
          f"{c['simulation_1pct_s']:.0f} s = {c['ratio_simulation']:.0f}x theory")
    v = c["validation"]
    print(f"(b) with a held-out set of {v['prompts']} prompts per seed (every 10 steps): median "
          f"relative SE {v['median_relative_se']:.2%}, {v['seeds_for_1pct']} seeds for 1 % "
          f"(vs {c['seeds_for_1pct']}) → {v['simulation_1pct_s']:.1f} s")
    if "torch_s" in c:
        print(f"(b) plain PyTorch SGD loop: {c['torch_s']:.2f} s for {c['seeds']} seeds → "
              f"{c['torch_1pct_s']:.0f} s for 1 % = {c['ratio_torch']:.0f}x theory")


def print_derivation(rows) -> None:
    for row in rows:
        print(f"(c) {row['model']}: derive + symmetries cold {row['cold_s']:.2f} s, "
              f"disk cache {row['disk_s']:.2f} s, memory {row['memory_s']:.3f} s")


def print_engine(rows) -> None:
    for row in rows:
        if "cold_s" not in row and "count_s" not in row:      # past the memory cap, or died
            print(f"(k) {row['model']}: {row['quantity']} not measured: "
                  + ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("model", "quantity")))
            continue
        cost = (f"cold {row['cold_s']:.2f} s CPU" if "cold_s" in row
                else f"counted in {row['count_s']:.2f} s CPU")
        print(f"(k) {row['model']}: {row['quantity']} {cost}, {row['pairings']} Isserlis pairings")


def print_backends(b) -> None:
    print(f"(d) 1e5 GD steps at d = 16: numba {b['numba_s_per_1e5']:.2f} s, numpy "
          f"{b['numpy_s_per_1e5']:.2f} s, speed-up {b['speedup']:.1f}x")


def print_task_sets(t) -> None:
    cost = ", ".join(f"P = {P}: {g * 1e6:.0f} µs ({g / t['grad_s'][0]:.1f}x)"
                     for P, g in zip(t["P"][1:], t["grad_s"][1:]))
    print(f"(f) gradient with a finite task set (MultiHead(2), d = 8, d_y = 2) vs Gaussian tasks "
          f"{t['grad_s'][0] * 1e6:.0f} µs: {cost}")


def print_data(g) -> None:
    print("(g) ICLData with a numeric Λ: " + ", ".join(
        f"d = {r['d']}: {r['numeric_s'] * 1e3:.1f} ms" for r in g["rows"])
        + f"; exact rationals at d = 64: {g['exact_d64_s']:.2f} s = "
        f"{g['exact_d64_s'] / g['numeric_d64_s']:.0f}x")


def print_symmetry(rows) -> None:
    for row in rows:
        print(f"(i) MultiHead(H = {row['H']}) symmetry search cold: {row['search_s']:.2f} s, "
              f"laws {row['laws_s']:.2f} s ({row['proved']}/{row['laws']} proved)")


def print_cubature(rows) -> None:
    for row in rows:
        print(f"(j) FullLSA, eigenbasis tasks, d = {row['d']}: {row['nodes']} cubature nodes "
              f"(product rule: {row['product_rule_nodes']}), compile + first gradient "
              f"{row['compile_and_first_grad_s']:.2f} s, gradient {row['grad_s'] * 1e3:.2f} ms")


# name: (what it measures, function, printer), in run order
def print_gradients(rows) -> None:
    for row in rows:
        print(f"(a) {row['model']}: compiled/hand NumPy = {row['ratio']:.2f} "
              f"({row['compiled_s'] * 1e6:.1f} µs vs {row['hand_numpy_s'] * 1e6:.1f} µs)")


def print_trajectories(r) -> None:
    print(f"(l) per step at d = 4: compiled GD {r['gd_step_s'] * 1e6:.2f} µs vs hand Numba loop "
          f"{r['hand_numba_gd_step_s'] * 1e6:.2f} µs = {r['gd_ratio']:.2f}x; RK4 per gradient "
          f"{r['rk4_per_gradient_ratio']:.2f}x; 2 000-step curve recorded at every step "
          f"{r['curve_s'] * 1e3:.1f} ms vs SGD 64 seeds × 64 prompts {r['sgd_64x64_s']:.1f} s "
          f"= {r['curve_ratio']:.0f}x (medians of {r['rounds']} interleaved rounds; load "
          f"{r['load_average'][0]:.1f})")
    for row in r.get("integrate", []):
        print(f"(l) integrate {row['model']}, DOP853 to t = 40 ({row['nfev']} evaluations): "
              f"compiled loop {row['compiled_s'] * 1e3:.2f} ms "
              f"({row['compiled_per_eval_s'] * 1e6:.2f} µs/evaluation) vs SciPy's solve_ivp "
              f"{row['scipy_s'] * 1e3:.1f} ms ({row['scipy_per_eval_s'] * 1e6:.1f} µs) "
              f"= {row['ratio']:.1f}x")


def print_cold(rows) -> None:
    for row in rows:
        print(f"(m) cold first curve {row['model']} (new process, empty cache, import + derive + "
              f"compile + 2 000 GD steps): {row['cpu_s']:.2f} s CPU ({row['wall_s']:.1f} s wall)")


SECTIONS = {
    "gradient": ("(a) compiled vs hand NumPy, every product-form model", bench_gradients,
                 print_gradients),
    "trajectories": ("(l) compiled trajectories vs a hand Numba loop and SGD",
                     bench_trajectories, print_trajectories),
    "cold": ("(m) cold first learning curve per model", bench_cold, print_cold),
    "cost_exponents": ("(e) gradient cost vs d = 8 → 512", bench_cost_exponents,
                       print_cost_exponents),
    "heads": ("(h) derivation and gradient cost vs H = 1 → 16", bench_heads, print_heads),
    "curve": ("(b) theory vs simulated learning curves", bench_curve, print_curve),
    "derivation": ("(c) derivation cold / disk / memory", bench_derivation, print_derivation),
    "engine": ("(k) expectation engine cold: covariances, stack losses", bench_engine,
               print_engine),
    "symmetry": ("(i) MultiHead(H) symmetry search", bench_symmetry, print_symmetry),
    "backends": ("(d) numba vs numpy", bench_backends, print_backends),
    "task_sets": ("(f) finite task sets", bench_task_sets, print_task_sets),
    "data": ("(g) numeric ICLData", bench_data, print_data),
    "cubature": ("(j) FullLSA eigenbasis-task cubature", bench_cubature, print_cubature),
}


def timings(obj, path: str = "") -> dict:
    """{path: seconds} of every timing (a key ending in ``_s``) in a results tree; rows of a
    list are named by their ``model``/``d``/``H``, and a list of times by the axis list beside
    it (``d``, ``H`` or ``P``)."""
    out = {}
    if isinstance(obj, dict):
        axes = {k: v for k, v in obj.items() if k in ("d", "H", "P") and isinstance(v, list)}
        for key, value in obj.items():
            where = f"{path}/{key}"
            if key.endswith("_s") and isinstance(value, (int, float)):
                out[where] = float(value)
            elif key.endswith("_s") and isinstance(value, list):
                axis = next((a for a, v in axes.items() if len(v) == len(value)), None)
                for i, t in enumerate(value):
                    out[f"{where}[{axis}={axes[axis][i]}]" if axis else f"{where}[{i}]"] = t
            else:
                out.update(timings(value, where))
    elif isinstance(obj, list):
        for i, row in enumerate(obj):
            name = ",".join(f"{k}={row[k]}" for k in ("model", "d", "H")
                            if isinstance(row, dict) and not isinstance(row.get(k, []), list))
            out.update(timings(row, f"{path}[{name or i}]"))
    return out


def regressions(new: dict, old: dict, factor: float = SLOWDOWN) -> list[tuple]:
    """(path, old s, new s) of the timings present in both with new ≥ factor · old."""
    before, after = timings(old), timings(new)
    return [(k, before[k], after[k]) for k in sorted(after)
            if k in before and before[k] > 0 and after[k] >= factor * before[k]]


def thread_report() -> str:
    import numba
    pinned = ", ".join(f"{v}={os.environ[v]}" for v in THREAD_VARS)
    return f"threads pinned: {pinned}; numba uses {numba.get_num_threads()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    parser.add_argument("--baseline", default=None,
                        help="previous results to compare with (default: the --out file)")
    parser.add_argument("--only", default=None,
                        help="comma-separated sections to run (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="name the sections and exit")
    args = parser.parse_args()
    if args.list:
        for name, (what, _, _) in SECTIONS.items():
            print(f"{name:15s} {what}")
        return
    chosen = list(SECTIONS) if args.only is None else [s.strip() for s in args.only.split(",")]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    baseline_path = Path(args.baseline or args.out)
    baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() else {}
    print(thread_report() + "; times are CPU seconds (time.process_time)")
    results = {k: v for k, v in baseline.items() if k not in chosen and k in SECTIONS}
    from icldyn.numerics.experiments.runfolder import provenance as versions
    provenance = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_at_start": os.getloadavg()[0],
                  **versions()}
    total, done = clock(), []                 # the file is rewritten after each section: a run
    for name in chosen:                       # stopped midway keeps the sections it finished
        print(f"{name}: {SECTIONS[name][0]}", flush=True)
        start = clock()
        results[name] = SECTIONS[name][1]()
        SECTIONS[name][2](results[name])
        print(f"    [{name}: {clock() - start:.1f} s]", flush=True)
        done.append(name)
        results["meta"] = {"clock": "process_time", "threads": THREADS,
                           "sections": done, "total_s": clock() - total, **provenance}
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    slow = regressions({k: results[k] for k in chosen}, baseline)
    old_clock = baseline.get("meta", {}).get("clock", "wall clock")
    print(f"regression check against {baseline_path} ({old_clock}): "
          + (f"{len(slow)} timing(s) ≥ {SLOWDOWN}x slower" if slow else "no slow-down ≥ 1.3x"))
    for path, before, after in slow:
        print(f"  SLOWER {after / before:.2f}x  {path}: {before:.3g} s → {after:.3g} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
