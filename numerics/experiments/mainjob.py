"""The main job (``icldyn run``): the seed paper's setting derived, integrated, simulated and
reported.

Embedded default: vector tasks diagonal in Λ's eigenbasis (d = d_y = 4), Λ with the spread
spectrum (2, 1, 1/2, 1/4) in a rotated (non-diagonal) basis, N = 16, noiseless labels, small
balanced initialisation V = Q = ε I. Theory (exact gradient flow and exact expected GD) is set
against SGD on the actual layer; eigenmodes a_α = (UᵀVU)_αα (UᵀQU)_αα show the learning stages,
whose half-times are predicted by the derived decoupled per-mode equations.
"""

from __future__ import annotations

import io
import json
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import sympy as sp
from scipy.integrate import trapezoid

from ...files import write_atomic
from ...theory import ICLData, derive, models
from ...theory.errors import InputError, check_int, check_real
from ...theory.solutions import mode_reduction
from ..compiled.codegen import BACKENDS, compile_flow
from ..compiled.integrate import gradient_descent, integrate
from ..measures.trajectory import trajectory_measures
from ..noise.covariance import compile_covariance
from ..simulation.sgd import (SimResult, block_stats, block_z_scores, check_prompt_memory,
                              simulate_sgd)


@dataclass
class RunConfig:
    d: int = 4
    N: int = 16
    spectrum: tuple = (2.0, 1.0, 0.5, 0.25)
    rotation_seed: int = 0
    noise: float = 0.0
    init_scale: float = 0.01
    lr: float = 0.025
    t_end: float = 250.0
    batch: int = 128
    seeds: int = 16
    seed: int = 0
    record_every: int = 10
    backend: str = "numba"
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if len(self.spectrum) != self.d:
            raise InputError("spectrum", f"needs d = {self.d} eigenvalues, got {len(self.spectrum)}")
        if min(self.spectrum) <= 0:
            raise InputError("spectrum", "eigenvalues of Λ must be positive")
        for name in ("init_scale", "lr", "t_end"):
            check_real(name, getattr(self, name))
        check_real("noise", self.noise, allow_zero=True)
        for name in ("d", "N", "batch", "seeds", "record_every"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=0)
        check_int("rotation_seed", self.rotation_seed, minimum=0)
        if self.backend not in BACKENDS:
            raise InputError("backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        check_prompt_memory(self.N, self.d, self.d, self.seeds * self.batch)
        steps = self.t_end / self.lr
        if abs(steps - round(steps)) > 1e-9 or round(steps) % self.record_every:
            raise InputError("t_end", "t_end / lr must be a whole number of steps divisible "
                             f"by record_every={self.record_every}")

    @property
    def steps(self) -> int:
        return int(round(self.t_end / self.lr))

    def Lambda(self) -> np.ndarray:
        rng = np.random.default_rng(self.rotation_seed)
        U, _ = np.linalg.qr(rng.standard_normal((self.d, self.d)))
        return U @ np.diag(self.spectrum) @ U.T


def _modes(flow, theta: np.ndarray) -> np.ndarray:
    """a_α = (UᵀVU)_αα (UᵀQU)_αα for each row of θ (any leading shape)."""
    p = flow.unpack(theta)
    U = flow.U
    diag = lambda M: np.einsum("ak,...ab,bk->...k", U, M, U)  # noqa: E731
    return diag(p["V"]) * diag(p["Q"])


def _crossing(t: np.ndarray, y: np.ndarray, level: float) -> float:
    """First time y reaches ``level`` (linear interpolation), NaN if it never does."""
    above = np.nonzero(y >= level)[0]
    if len(above) == 0:
        return float("nan")
    i = above[0]
    if i == 0:
        return float(t[0])
    return float(t[i - 1] + (level - y[i - 1]) * (t[i] - t[i - 1]) / (y[i] - y[i - 1]))


REACHED = 0.95
LATE_STEPS = 500     # the last steps whose mean SGD loss the summary sets against expected GD


def _short_horizon(t_end: float, reached: np.ndarray, predicted: list) -> str | None:
    """A warning when the exact flow at t_end is not yet within 5 % of the fixed point in every
    mode (``reached`` = a_α(t_end)/a*_α): later stages are cut off, and a mode that never
    reaches half its fixed-point value has no stage time (NaN)."""
    if np.all(np.abs(reached - 1) <= 1 - REACHED):
        return None
    return (f"t_end = {t_end:g} is too short: the exact flow ends at "
            f"{', '.join(f'{r:.1%}' for r in reached)} of the fixed-point modes a*, so late "
            f"stages are cut off (a mode below a*/2 has stage time NaN); the predicted "
            f"half-times reach {max(predicted):.3g}: raise --t-end well beyond that")


NOISE_POINTS = 24


def predicted_sgd_drift(flow, gd, lr: float, batch: int, points: int = NOISE_POINTS) -> dict:
    """SGD's expected change of C = ‖V‖² − ‖Q‖² predicted by the derived gradient covariance.

    With θ_{n+1} = θ_n − η ĝ_n, C = θᵀKθ (K = +1 on V, −1 on Q) and ⟨∇C, ∇L⟩ = 0, the
    first-order terms vanish in expectation and E[ΔC | θ] = η² (∇Lᵀ K ∇L + tr(K Σ(θ))/B),
    Σ the exact single-prompt covariance. The first term is GD's own change; the second, the
    noise's, is evaluated along the GD path at ``points`` steps spaced geometrically (the
    stages are) and summed over steps by the trapezoid rule. Returns the noise part, the GD
    part and their sum (the predicted mean total change along SGD)."""
    K = np.sign(flow.pack({"V": np.ones(flow.shapes["V"]), "Q": -np.ones(flow.shapes["Q"])}))
    n_steps = len(gd.theta) - 1
    at = np.unique(np.r_[0, np.geomspace(1, n_steps, points).astype(int)])
    cov = compile_covariance(flow)
    per_step = np.array([np.sum(K * np.diag(cov.matrix(gd.theta[n]))) for n in at])
    noise = lr ** 2 / batch * float(trapezoid(per_step, at))
    gd_change = float(gd.conserved[-1, 0] - gd.conserved[0, 0])
    return {"noise": noise, "gd": gd_change, "total": gd_change + noise,
            "steps": at.tolist(), "rate_per_step": (lr ** 2 / batch * per_step).tolist()}


SIMULATION_STAGE = "simulation.npz"


def save_simulation(stages: Path, config: RunConfig, sim: SimResult) -> None:
    """The finished SGD ensemble with its config, so that ``--resume`` need not redo it."""
    arrays = {"config": np.array(json.dumps(asdict(config), sort_keys=True)), "loss": sim.loss,
              "loss_se": sim.loss_se, "losses": sim.losses, "steps": sim.steps,
              **{f"param_{k}": v for k, v in sim.params.items()}}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(Path(stages) / SIMULATION_STAGE, buf.getvalue())


def load_simulation(stages: Path, config: RunConfig) -> SimResult | None:
    """The saved ensemble if it was made with this very config, else None. Its
    ``info["resumed_from"]`` is the file's path relative to the run folder (the parent of
    ``stages``), which stays true when the folder is moved or swapped in."""
    path = Path(stages) / SIMULATION_STAGE
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["config"]) != json.dumps(asdict(config), sort_keys=True):
                return None
            params = {k[len("param_"):]: z[k] for k in z.files if k.startswith("param_")}
            return SimResult(z["loss"], z["loss_se"], z["losses"], z["steps"], params,
                             {"resumed_from": str(path.relative_to(path.parent.parent))})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring the unreadable saved simulation {path} ({type(exc).__name__}: "
                      f"{exc}); recomputing it", RuntimeWarning, stacklevel=2)
        return None


def run(config: RunConfig, progress=None, stages: Path | None = None,
        resume: bool = False) -> dict:
    """Everything the report shows, as arrays and numbers. ``progress(stage, done, total)``.
    Finished expensive stages (the SGD ensemble) are saved in ``stages``; with ``resume`` a
    saved stage made with the same config is reused instead of recomputed."""
    config.validate()
    tell = progress or (lambda *a: None)
    timings = {}
    t0 = time.perf_counter()
    d = config.d
    data = ICLData(d=d, N=config.N, Lambda=config.Lambda(), d_y=d, tasks="diagonal",
                   noise=config.noise)
    model = models.Merged(d, d_y=d)
    der = derive(model, data)
    reduction = mode_reduction(der)
    tell("derive", 1, 1)
    timings["derive_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    flow = compile_flow(der, backend=config.backend)
    init = {"V": config.init_scale * np.eye(d), "Q": config.init_scale * np.eye(d)}
    theta0 = flow.pack(init)
    t_eval = np.unique(np.r_[np.linspace(0.0, config.t_end, 501),
                             np.geomspace(config.lr, config.t_end, 400)])
    traj = integrate(flow, theta0, t_end=config.t_end, t_eval=t_eval)
    tell("integrate", 1, 1)
    gd = gradient_descent(flow, theta0, lr=config.lr, steps=config.steps)
    tell("gradient descent", 1, 1)
    timings["theory_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sim = load_simulation(stages, config) if resume and stages is not None else None
    if sim is None:
        sim = simulate_sgd(model, data, init, lr=config.lr, batch=config.batch,
                           steps=config.steps, seeds=config.seeds, seed=config.seed,
                           record_every=config.record_every,
                           progress=lambda n: tell("SGD simulation", n, config.steps))
        if stages is not None:
            save_simulation(stages, config, sim)
    timings["simulation_s"] = time.perf_counter() - t0

    a0 = sp.nsimplify(config.init_scale) ** 2
    a_flow = _modes(flow, traj.theta)
    sim_theta = sim.theta()
    a_sim = _modes(flow, sim_theta).mean(axis=0)
    a_final = a_flow[-1]
    a_star = np.array([float(a) for a in reduction.exact_fixed_point()])
    t_sim = sim.steps * config.lr
    stages = []
    for k in range(d):
        predicted = float(reduction.half_time(k, a0))
        stages.append({
            "mode": k + 1, "s": float(reduction.s[k]),
            "saddle_growth_rate": float(reduction.saddle_growth_rates()[k]),
            "a_star_decoupled": float(reduction.fixed_point(k)),
            "a_star_exact": float(a_star[k]),
            "a_final_exact_flow": float(a_final[k]),
            "a_star_paper_large_N": float(config.N / ((config.N + 1) * reduction.s[k]
                                                      + sum(reduction.s))),
            "t_half_predicted": predicted,
            "t_half_exact_flow": _crossing(traj.t, a_flow[:, k], a_star[k] / 2),
            "t_half_sgd": _crossing(t_sim, a_sim[:, k], a_star[k] / 2),
        })
    short = _short_horizon(config.t_end, a_final / a_star, [st["t_half_predicted"]
                                                             for st in stages])
    if short:
        warnings.warn(short, RuntimeWarning, stacklevel=2)

    t0 = time.perf_counter()
    drift = predicted_sgd_drift(flow, gd, config.lr, config.batch)
    tell("noise prediction", 1, 1)
    timings["noise_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pick = np.unique(np.r_[np.linspace(0, len(traj.t) - 1, 150).astype(int), len(traj.t) - 1])
    lens = trajectory_measures(flow, traj.t[pick], traj.theta[pick])
    tell("measures", 1, 1)
    timings["measures_s"] = time.perf_counter() - t0

    block = config.steps // 30
    z = block_z_scores(sim.losses[:-1], gd.loss[:-1], block=block)
    n = (config.steps // block) * block
    block_rel_dev = block_stats(sim.losses[:n], block)[0] / gd.loss[:n].reshape(-1, block).mean(
        axis=1) - 1
    late = min(LATE_STEPS, config.steps)
    late_mean, late_se = block_stats(sim.losses[-late - 1:-1], late)
    late_gd = float(gd.loss[-late - 1:-1].mean())
    c_gd = gd.conserved[:, 0]
    c_sgd = (np.sum(sim.params["V"] ** 2, axis=(2, 3))
             - np.sum(sim.params["Q"] ** 2, axis=(2, 3)))          # (seeds, records)
    derived_steps = np.array([flow.gd_change(row, config.lr)[0] for row in gd.theta[:-1]])
    grad_final = flow.grad(traj.theta[-1])
    results = {
        "config": asdict(config),
        "timings": timings,
        "simulation_resumed_from": sim.info.get("resumed_from"),
        "loss": {"initial": float(traj.loss[0]), "final_flow": float(traj.loss[-1]),
                 "final_gd": float(gd.loss[-1]), "final_sgd": float(sim.loss[-1]),
                 "final_sgd_se": float(sim.loss_se[-1])},
        "agreement": {"block_z": z.tolist(), "max_abs_z": float(np.abs(z).max()),
                      "mean_z": float(z.mean()),
                      "max_rel_dev": float(np.abs(block_rel_dev).max()),
                      "late_steps": late, "late_sgd": float(late_mean[0]),
                      "late_sgd_se": float(late_se[0]), "late_gd": late_gd,
                      "late_rel_dev": float(late_mean[0] / late_gd - 1),
                      "late_rel_dev_se": float(late_se[0] / late_gd)},
        "stages": stages,
        "fixed_point": {"grad_norm": float(np.linalg.norm(grad_final)),
                        "modes": a_star.tolist(), "modes_at_t_end": a_final.tolist()},
        "warnings": [short] if short else [],
        "measures": {
            "top_hessian": {"initial": float(lens["top_hessian"][0]),
                            "max": float(lens["top_hessian"].max()),
                            "final": float(lens["top_hessian"][-1])},
            **{name: {"rank_step_times": lens[name]["rank_step_times"],
                      "lock_times": lens[name]["lock_times"], "rank_tol": lens[name]["rank_tol"],
                      "effective_rank_initial": float(lens[name]["effective_rank"][0]),
                      "effective_rank_min": float(lens[name]["effective_rank"].min()),
                      "effective_rank_final": float(lens[name]["effective_rank"][-1])}
               for name in ("V", "Q")}},
        "conserved": {
            "name": der.conserved[0].name, "proved": der.conserved[0].proved,
            "initial": float(traj.conserved[0, 0]),
            "flow_max_drift": float(np.abs(traj.conserved[:, 0] - traj.conserved[0, 0]).max()),
            "gd_total_change": float(c_gd[-1] - c_gd[0]),
            "gd_step_error_max": float(np.abs(np.diff(c_gd) - derived_steps).max()),
            "sgd_mean_total_change": float(c_sgd[:, -1].mean() - c_sgd[0, 0]),
            "sgd_total_change_se": float(c_sgd[:, -1].std(ddof=1) / np.sqrt(config.seeds)),
            "sgd_predicted_total_change": drift["total"],
            "sgd_predicted_noise_change": drift["noise"],
        },
    }
    arrays = {"t_flow": traj.t, "loss_flow": traj.loss, "t_gd": gd.t, "loss_gd": gd.loss,
              "loss_sgd": sim.loss, "loss_sgd_se": sim.loss_se, "losses_sgd": sim.losses, "t_sgd_steps": gd.t,
              "modes_flow": a_flow, "modes_sgd": a_sim, "t_modes_sgd": t_sim,
              "conserved_flow": traj.conserved[:, 0], "conserved_gd": c_gd,
              "conserved_sgd": c_sgd.mean(axis=0),
              "t_conserved_noise": np.array(drift["steps"]) * config.lr,
              "conserved_noise_rate": np.array(drift["rate_per_step"]),
              "conserved_gd_derived": c_gd[0] + np.r_[0.0, np.cumsum(derived_steps)],
              "t_lens": lens["t"], "top_hessian": lens["top_hessian"],
              **{f"{name}_{key}": lens[name][key] for name in ("V", "Q")
                 for key in ("effective_rank", "stable_rank", "numerical_rank",
                             "overlap_with_final")}}
    return {"results": results, "arrays": arrays, "derivation": der, "reduction": reduction}
