"""Benchmarks, measured side by side in one run: `python benchmarks/run.py [--out FILE]`.

(a) compiled gradient (numba) vs hand-written NumPy of the same formula (MATH.md §3.2, scalar
    tasks), d = 8, 64, 256;
(b) the expected learning curve by theory (compile + GD) vs the same curve by `simulate_sgd` with
    enough seeds for ~1 % accuracy;
(c) derivation time per model (incl. the symmetry search): cold (empty cache), from the disk
    cache (as a new process sees it) and from memory;
(d) numba vs numpy backend for 10⁵ GD steps at d = 16;
(e) growth of the compiled-gradient cost with d (fitted exponent).
Prints ratios and writes JSON (default benchmarks/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


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


def bench_gradient(d: int) -> dict:
    from icldyn.numerics import compile_flow
    from icldyn.theory import ICLData, derive, models
    rng = np.random.default_rng(0)
    X = rng.standard_normal((d, d))
    Lam = X @ X.T / d + np.eye(d)
    data = ICLData(d=d, N=20, Lambda=Lam, Sigma_w=np.eye(d) + 0.1 * np.ones((d, d)), noise=0.1)
    flow = compile_flow(derive(models.Merged(d), data), backend="numba")
    Q = rng.standard_normal((d, d)) / d
    theta = flow.pack({"V": 0.7, "Q": Q})
    flow.grad(theta)
    hand = hand_gradient(Lam, np.array(data.Sigma_w.tolist(), float), 20, 0.1)
    number = max(1, 2000 // d)
    t_gen = best_time(lambda: flow.grad(theta), number=number)
    t_hand = best_time(lambda: hand(0.7, Q), number=number)
    return {"d": d, "compiled_s": t_gen, "hand_numpy_s": t_hand, "ratio": t_gen / t_hand}


def bench_curve() -> dict:
    from icldyn.numerics import compile_flow, gradient_descent, simulate_sgd
    from icldyn.theory import ICLData, derive, models
    data = ICLData(d=4, N=16, Lambda=np.diag([2.0, 1.0, 0.5, 0.25]))
    model = models.Merged(4)
    init = {"V": 0.1, "Q": 0.1}
    start = time.perf_counter()
    flow = compile_flow(derive(model, data), backend="numpy")
    theory = gradient_descent(flow, flow.pack(init), lr=0.02, steps=2000)
    t_theory = time.perf_counter() - start
    start = time.perf_counter()
    sim = simulate_sgd(model, data, init, lr=0.02, batch=64, steps=2000, seeds=32, seed=0)
    t_sim = time.perf_counter() - start
    rel_se = float(np.median(sim.loss_se / sim.loss))
    return {"theory_s": t_theory, "simulation_s": t_sim, "ratio": t_sim / t_theory,
            "simulation_median_relative_se": rel_se, "final_theory": float(theory.loss[-1]),
            "final_sgd": float(sim.loss[-1])}


def bench_derivation() -> list[dict]:
    """Derivation incl. the symmetry search: cold (empty cache), from the disk cache (memory
    layer cleared, as in a new process) and from memory."""
    import tempfile

    import sympy as sp

    from icldyn.theory import ICLData, cache, derive, models
    rows = []
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    os.environ[cache.ENV] = tempfile.mkdtemp(prefix="icldyn-bench-cache-")
    for model in (models.Merged(3), models.MultiHead(3, heads=2), models.SeparateKQ(3, 2, 2),
                  models.FullLSA(3)):
        data = ICLData(d=3, N=N, Lambda="full", Sigma_w="full", noise=sigma)
        times = []
        for clear in (cache.clear_cache, cache.clear_memory, lambda: None):
            clear()
            start = time.perf_counter()
            derive(model, data).conservation_laws()
            times.append(time.perf_counter() - start)
        rows.append({"model": repr(model), "cold_s": times[0], "disk_s": times[1],
                     "memory_s": times[2]})
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
        flow = compile_flow(der, backend=backend)
        theta = flow.pack({"V": 0.1, "Q": 0.1})
        gradient_descent(flow, theta, lr=0.01, steps=10, every=10)
        steps = 100_000 if backend == "numba" else 10_000
        start = time.perf_counter()
        gradient_descent(flow, theta, lr=0.01, steps=steps, every=steps)
        out[backend] = (time.perf_counter() - start) * 100_000 / steps
    return {"numba_s_per_1e5": out["numba"], "numpy_s_per_1e5": out["numpy"],
            "speedup": out["numpy"] / out["numba"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    results = {"gradient": [bench_gradient(d) for d in (8, 64, 256)]}
    for row in results["gradient"]:
        print(f"(a) d={row['d']:4d}: compiled/hand NumPy = {row['ratio']:.2f} "
              f"({row['compiled_s'] * 1e6:.1f} µs vs {row['hand_numpy_s'] * 1e6:.1f} µs)")
    ds = np.array([r["d"] for r in results["gradient"]], float)
    ts = np.array([r["compiled_s"] for r in results["gradient"]])
    results["growth_exponent"] = float(np.polyfit(np.log(ds[1:]), np.log(ts[1:]), 1)[0])
    print(f"(e) compiled gradient cost ~ d^{results['growth_exponent']:.2f} (d = 64 → 256)")
    results["curve"] = bench_curve()
    c = results["curve"]
    print(f"(b) learning curve: simulate_sgd / theory = {c['ratio']:.0f}x "
          f"({c['simulation_s']:.2f} s vs {c['theory_s']:.3f} s; SGD median relative SE "
          f"{c['simulation_median_relative_se']:.1%})")
    results["derivation"] = bench_derivation()
    for row in results["derivation"]:
        print(f"(c) {row['model']}: derive + symmetries cold {row['cold_s']:.2f} s, "
              f"disk cache {row['disk_s']:.2f} s, memory {row['memory_s']:.3f} s")
    results["backends"] = bench_backends()
    b = results["backends"]
    print(f"(d) 1e5 GD steps at d = 16: numba {b['numba_s_per_1e5']:.2f} s, numpy "
          f"{b['numpy_s_per_1e5']:.2f} s, speed-up {b['speedup']:.1f}x")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
