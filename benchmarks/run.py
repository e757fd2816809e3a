"""Benchmarks, measured side by side in one run: `python benchmarks/run.py [--out FILE]`.

(a) compiled gradient (numba) vs hand-written NumPy of the same formula (docs/math.md §3.2, scalar
    tasks): Merged and SeparateKQ(2 heads, rank d/2) at d = 64, 256, 512, MultiHead(H) at
    d = 256 for H = 1 … 16 (BLAS pinned to one thread);
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
(h) whole trajectories compiled: per-step cost of GD and RK4 at d = 4 vs a hand Numba loop, and
    a 2 000-step curve vs SGD of the layer with 64 seeds × 64 prompts;
(i) a cold first learning curve per one-layer model (new process, empty cache).
`--sections ahi` runs some sections only.
Prints ratios and writes JSON (default benchmarks/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
for _name in THREADS:                  # pinned before NumPy loads its BLAS: ratios, not noise
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402


def best_time(fn, repeat: int = 5, number: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


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


def _gradient_data(d: int):
    from icldyn.theory import ICLData
    rng = np.random.default_rng(0)
    X = rng.standard_normal((d, d))
    Lam = X @ X.T / d + np.eye(d)
    return ICLData(d=d, N=20, Lambda=Lam, Sigma_w=np.eye(d) + 0.1 * np.ones((d, d)), noise=0.1)


def bench_gradient(model, hand_name: str) -> dict:
    """The compiled gradient (numba) of a product-form model against its hand-written NumPy
    reference at the same θ (checked equal), side by side."""
    from icldyn.numerics import compile_flow
    from icldyn.theory import derive
    d = model.d
    data = _gradient_data(d)
    flow = compile_flow(derive(model, data), backend="numba").compiled()
    theta = np.random.default_rng(1).standard_normal(flow.size) / d
    p = flow.unpack(theta)
    u = p["V"].reshape(-1)
    factors = (p["Q"].reshape(-1, d, d),) if "Q" in p else (p["W_K"], p["W_Q"])
    if hand_name == "hand_gradient":
        u, factors = u[0], (factors[0][0],)
    Lam, Sw = (np.array(m.tolist(), float) for m in (data.Lambda, data.Sigma_w))
    hand = globals()[hand_name](Lam, Sw, 20, 0.1)
    mine = flow.grad(theta)
    ref = np.concatenate([np.ravel(g) for g in hand(u, *factors)])
    assert np.allclose(mine, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max()), model
    number = max(1, 2000 // d)
    t_gen = best_time(lambda: flow.grad(theta), number=number)
    t_hand = best_time(lambda: hand(u, *factors), number=number)
    return {"model": repr(model), "d": d, "compiled_s": t_gen, "hand_numpy_s": t_hand,
            "ratio": t_gen / t_hand}


def bench_gradients() -> list[dict]:
    from icldyn.theory import models
    cases = [(models.Merged(d), "hand_gradient") for d in (64, 256, 512)]
    cases += [(models.SeparateKQ(d, heads=2, rank=d // 2), "hand_separatekq_gradient")
              for d in (64, 256, 512)]
    cases += [(models.MultiHead(256, heads=heads), "hand_multihead_gradient")
              for heads in (1, 2, 4, 8, 16)]
    rows = []
    for model, hand in cases:
        rows.append(row := bench_gradient(model, hand))
        print(f"(a) {row['model']}: compiled/hand NumPy = {row['ratio']:.2f} "
              f"({row['compiled_s'] * 1e6:.1f} µs vs {row['hand_numpy_s'] * 1e6:.1f} µs)",
              flush=True)
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
    start = time.perf_counter()
    sim = simulate_sgd(model, data, init, lr=c["lr"], batch=c["batch"], steps=c["steps"],
                       seeds=c["seeds"], seed=0)
    t_sim = time.perf_counter() - start
    rel_se = float(np.median(sim.loss_se / sim.loss))
    seeds_1pct = int(np.ceil(c["seeds"] * (rel_se / 0.01) ** 2))
    out = {"theory_s": t_theory, "simulation_s": t_sim, "seeds": c["seeds"],
           "simulation_median_relative_se": rel_se, "seeds_for_1pct": seeds_1pct,
           "simulation_1pct_s": t_sim * seeds_1pct / c["seeds"],
           "final_theory": float(theory.loss[-1]), "final_sgd": float(sim.loss[-1])}
    out["ratio_simulation"] = out["simulation_1pct_s"] / t_theory
    start = time.perf_counter()
    val = simulate_sgd(model, data, init, lr=c["lr"], batch=c["batch"], steps=c["steps"],
                       seeds=c["seeds"], seed=0, record_every=10, validation=c["validation"])
    t_val = time.perf_counter() - start
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
    torch.manual_seed(0)
    S, B, N, d = c["seeds"], c["batch"], c["N"], c["d"]
    sd = torch.tensor(np.sqrt(c["spectrum"]), dtype=torch.float64)
    u = torch.full((S, 1, 1), 0.1, dtype=torch.float64, requires_grad=True)
    Q = (0.1 * torch.eye(d, dtype=torch.float64)).repeat(S, 1, 1).requires_grad_(True)
    opt = torch.optim.SGD([u, Q], lr=c["lr"])
    start = time.perf_counter()
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
    return time.perf_counter() - start


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


def bench_trajectories() -> dict:
    """Per-step cost of compiled GD and RK4 at d = 4 (the whole loop compiled) against a hand
    Numba loop of the same GD; a 2 000-step curve recorded at every step (loss and conserved
    quantities in one compiled loop) against SGD of the layer with 64 seeds × 64 prompts."""
    from icldyn.numerics import compile_flow, gradient_descent, rk4, simulate_sgd
    from icldyn.theory import ICLData, derive, models
    c = CURVE
    d, lr = c["d"], c["lr"]
    data = ICLData(d=d, N=c["N"], Lambda=np.diag(c["spectrum"]))
    model = models.Merged(d)
    flow = compile_flow(derive(model, data), backend="numba").compiled()
    init = flow.pack({"V": 0.1, "Q": 0.1})
    steps = 20_000
    gradient_descent(flow, init, lr=lr, steps=10, every=10)
    rk4(flow, init, t_end=10 * lr, dt=lr, every=10)
    t_gd = best_time(lambda: gradient_descent(flow, init, lr=lr, steps=steps, every=steps),
                     repeat=3) / steps
    t_rk4 = best_time(lambda: rk4(flow, init, t_end=steps * lr, dt=lr, every=steps),
                      repeat=3) / steps
    Lam = np.diag(c["spectrum"])
    A = (c["N"] + 1) / c["N"] * Lam @ Lam + np.trace(Lam) / c["N"] * Lam
    loop = hand_gd_loop()
    loop(A, Lam @ Lam, Lam, 0.1, 0.1 * np.eye(d), lr, 10)
    t_hand = best_time(lambda: loop(A, Lam @ Lam, Lam, 0.1, 0.1 * np.eye(d), lr, steps),
                       repeat=3) / steps
    mine = gradient_descent(flow, init, lr=lr, steps=100, every=100).theta[-1]
    u, Q = loop(A, Lam @ Lam, Lam, 0.1, 0.1 * np.eye(d), lr, 100)
    assert np.allclose(mine, np.concatenate([[u], Q.ravel()]), rtol=1e-9, atol=1e-13)
    curve_steps = 2000
    t_curve = best_time(lambda: gradient_descent(flow, init, lr=lr, steps=curve_steps,
                                                 every=1), repeat=3)
    start = time.process_time()
    simulate_sgd(model, data, {"V": 0.1, "Q": 0.1}, lr=lr, batch=64, steps=curve_steps,
                 seeds=64, seed=0)
    t_sgd = time.process_time() - start
    return {"gd_step_s": t_gd, "rk4_step_s": t_rk4, "hand_numba_gd_step_s": t_hand,
            "gd_ratio": t_gd / t_hand, "rk4_per_gradient_ratio": t_rk4 / 4 / t_hand,
            "curve_s": t_curve, "sgd_64x64_s": t_sgd, "curve_ratio": t_sgd / t_curve}


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
    """Compiled-gradient time per model at d = 8, 16, 32, 64 and the fitted exponent of d."""
    from icldyn.numerics import compile_flow
    from icldyn.theory import ICLData, derive, models
    rows = []
    for make in (lambda d: models.Merged(d), lambda d: models.MultiHead(d, heads=2),
                 lambda d: models.SeparateKQ(d, heads=2, rank=2), lambda d: models.FullLSA(d)):
        times = []
        ds = (8, 16, 32, 64)
        for d in ds:
            model = make(d)
            flow = compile_flow(derive(model, ICLData(d=d, N=20, Lambda=np.eye(d))),
                                "numba").compiled()
            theta = 0.1 * np.random.default_rng(0).standard_normal(flow.size)
            flow.grad(theta)
            times.append(best_time(lambda: flow.grad(theta), number=max(1, 4000 // d**2 + 1)))
        exponent = float(np.polyfit(np.log(ds[1:]), np.log(times[1:]), 1)[0])
        rows.append({"model": type(model).__name__, "d": list(ds), "grad_s": times,
                     "exponent": exponent})
    return rows


def bench_derivation() -> list[dict]:
    """Derivation incl. the symmetry search: cold (empty cache), from the disk cache (memory
    layer cleared, as in a new process) and from memory; one-layer models and stacks (targets
    of the depth issue: 2 layers < 60 s, 3 layers < 10 min cold, symbolic Λ)."""
    import tempfile

    import sympy as sp

    from icldyn.theory import ICLData, cache, derive, models
    rows = []
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    os.environ[cache.ENV] = tempfile.mkdtemp(prefix="icldyn-bench-cache-")
    for model in (models.Merged(3), models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 2),
                  models.FullLSA(3), models.Stack([models.Merged(3)] * 2),
                  models.Stack([models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 1)]),
                  models.Stack([models.Merged(3)] * 3)):
        data = ICLData(d=3, N=N, Lambda="full", Sigma_w="full", noise=sigma)
        times = []
        for clear in (cache.clear_cache, cache.clear_memory, lambda: None):
            clear()
            start = time.perf_counter()
            derive(model, data).conservation_laws()
            times.append(time.perf_counter() - start)
        rows.append({"model": repr(model), "cold_s": times[0], "disk_s": times[1],
                     "memory_s": times[2]})
    for model in (models.Merged(2), models.SeparateKQ(2, 1, 1), models.MultiHead(2, heads=2)):
        data = ICLData(d=2, N=N, Lambda="full", Sigma_w="full", noise=sigma)
        cache.clear_cache()
        start = time.perf_counter()
        derive(model, data).gradient_covariance()
        rows.append({"model": repr(model), "gradient_covariance_cold_s":
                     time.perf_counter() - start})
    cache.clear_cache()
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
        start = time.perf_counter()
        gradient_descent(flow, theta, lr=0.01, steps=steps, every=steps)
        out[backend] = (time.perf_counter() - start) * 100_000 / steps
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    parser.add_argument("--sections", default="abcdefghi",
                        help="the sections to run, e.g. 'ahi' (default: all)")
    args = parser.parse_args()
    print("BLAS threads: " + ", ".join(f"{v}={os.environ.get(v)}" for v in THREADS))
    results = {}
    for key, run in SECTIONS.items():
        if key in args.sections:
            run(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


def _section_a(results: dict) -> None:
    results["gradient"] = bench_gradients()


def _section_e(results: dict) -> None:
    results["cost_exponents"] = bench_cost_exponents()
    for row in results["cost_exponents"]:
        print(f"(e) {row['model']}: compiled gradient cost ~ d^{row['exponent']:.2f} "
              f"(d = 16 → 64; {row['grad_s'][-1] * 1e6:.0f} µs at d = 64)")


def _section_b(results: dict) -> None:
    results["curve"] = c = bench_curve()
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


def _section_c(results: dict) -> None:
    results["derivation"] = bench_derivation()
    for row in results["derivation"]:
        if "cold_s" in row:
            print(f"(c) {row['model']}: derive + symmetries cold {row['cold_s']:.2f} s, "
                  f"disk cache {row['disk_s']:.2f} s, memory {row['memory_s']:.3f} s")
        else:
            print(f"(c) {row['model']}: gradient covariance cold "
                  f"{row['gradient_covariance_cold_s']:.1f} s")


def _section_d(results: dict) -> None:
    results["backends"] = bench_backends()
    b = results["backends"]
    print(f"(d) 1e5 GD steps at d = 16: numba {b['numba_s_per_1e5']:.2f} s, numpy "
          f"{b['numpy_s_per_1e5']:.2f} s, speed-up {b['speedup']:.1f}x")


def _section_f(results: dict) -> None:
    results["task_sets"] = t = bench_task_sets()
    cost = ", ".join(f"P = {P}: {g * 1e6:.0f} µs ({g / t['grad_s'][0]:.1f}x)"
                     for P, g in zip(t["P"][1:], t["grad_s"][1:]))
    print(f"(f) gradient with a finite task set (MultiHead(2), d = 8, d_y = 2) vs Gaussian tasks "
          f"{t['grad_s'][0] * 1e6:.0f} µs: {cost}")


def _section_g(results: dict) -> None:
    results["data"] = g = bench_data()
    print("(g) ICLData with a numeric Λ: " + ", ".join(
        f"d = {r['d']}: {r['numeric_s'] * 1e3:.1f} ms" for r in g["rows"])
        + f"; exact rationals at d = 64: {g['exact_d64_s']:.2f} s = "
        f"{g['exact_d64_s'] / g['numeric_d64_s']:.0f}x")


def _section_h(results: dict) -> None:
    results["trajectories"] = r = bench_trajectories()
    print(f"(h) per step at d = 4: compiled GD {r['gd_step_s'] * 1e6:.2f} µs vs hand Numba loop "
          f"{r['hand_numba_gd_step_s'] * 1e6:.2f} µs = {r['gd_ratio']:.2f}x; RK4 per gradient "
          f"{r['rk4_per_gradient_ratio']:.2f}x; 2 000-step curve recorded at every step "
          f"{r['curve_s'] * 1e3:.1f} ms vs SGD 64 seeds × 64 prompts {r['sgd_64x64_s']:.1f} s "
          f"(CPU) = {r['curve_ratio']:.0f}x")


def _section_i(results: dict) -> None:
    results["cold"] = rows = bench_cold()
    for row in rows:
        print(f"(i) cold first curve {row['model']} (new process, empty cache, import + derive + "
              f"compile + 2 000 GD steps): {row['cpu_s']:.2f} s CPU ({row['wall_s']:.1f} s wall)")


SECTIONS = {"a": _section_a, "e": _section_e, "b": _section_b, "c": _section_c,
            "d": _section_d, "f": _section_f, "g": _section_g, "h": _section_h,
            "i": _section_i}


if __name__ == "__main__":
    main()
