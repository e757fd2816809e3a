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
from ...theory.solutions import mode_reduction, single_head
from ..compiled.codegen import BACKENDS, compile_flow
from ..compiled.integrate import gradient_descent, integrate
from ..measures.gains import mode_gains
from ..measures.trajectory import trajectory_measures
from ..noise.covariance import compile_covariance
from ..noise.sme import PathNoise, simulate_sme
from ..noise.smeloop import SME
from ..simulation.sgd import (SimResult, block_stats, block_z_scores, check_prompt_memory,
                              simulate_sgd)


@dataclass
class RunConfig:
    """The main job's settings (the defaults are the embedded preset; ``validate`` checks
    them, naming the setting and the fix).

    Parameters
    ----------
    model : str
        The attention layer, one of ``MODEL_NAMES`` (one head, rank 1 where it has them).
    layers : int
        A residual stack of this many layers of ``model`` (1: the layer itself).
    tasks : {"diagonal", "gaussian"}
        Vector tasks in Λ's eigenbasis with d_y = d (the paper's), or scalar tasks w ~ N(0, I).
    d, N : int
        Input dimension and context length.
    spectrum : tuple of float
        Λ's d eigenvalues; Λ = U diag(spectrum) Uᵀ with U a random rotation (``Lambda()``).
    rotation_seed : int
        Seed of U.
    noise : float
        Label-noise standard deviation σ.
    init_scale : float
        ε of the initialisation: every parameter matrix starts as ε I.
    lr : float
        Learning rate η (the flow's time is t = η × steps).
    t_end : float
        Horizon in flow time; t_end/η steps, a multiple of ``record_every``.
    batch, seeds, validation : int
        Prompts per SGD step, SGD runs (≥ 2), held-out prompts per seed.
    replicas : int
        SME replicas (≥ 2).
    sme : bool or None
        Whether to derive the gradient covariance and run the SME (None: for one layer only).
    seed : int
        Seed of SGD and the SME.
    record_every : int
        Record the parameters every this many steps.
    backend : str
        The compiled code, one of ``BACKENDS``.
    extra : dict
        Free-form settings carried into the report's config.

    Examples
    --------
    >>> from icldyn.numerics.experiments.mainjob import RunConfig
    >>> config = RunConfig()                       # the embedded preset of ``icldyn run``
    >>> config.model, config.d, config.N, config.steps
    ('Merged', 4, 16, 5000)
    >>> small = RunConfig(d=1, N=4, spectrum=(1.0,), lr=0.1, t_end=6.0, record_every=6)
    >>> small.validate(); small.Lambda()
    array([[1.]])
    >>> RunConfig(lr=0.3).validate()
    Traceback (most recent call last):
        ...
    icldyn.theory.errors.InputError: t_end: t_end / lr must be a whole number of steps ...
    """
    model: str = "Merged"
    layers: int = 1
    tasks: str = "diagonal"
    d: int = 4
    N: int = 16
    spectrum: tuple = (2.0, 1.0, 0.5, 0.25)
    rotation_seed: int = 0
    noise: float = 0.0
    init_scale: float = 0.01
    lr: float = 0.05
    t_end: float = 250.0
    batch: int = 128
    seeds: int = 8
    validation: int = 256
    replicas: int = 64
    sme: bool | None = None       # None: for a single layer only (see ``with_sme``)
    seed: int = 0
    record_every: int = 10
    backend: str = "numba"
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Check every setting; the first that is wrong raises, naming it and the fix.

        Raises
        ------
        InputError
            For an unknown model, task law or backend, a spectrum not of d positive eigenvalues,
            a count or scale that is not positive (seeds and replicas ≥ 2), prompts that would
            not fit in memory, or t_end/lr not a whole number of steps divisible by
            ``record_every``.
        """
        if self.model not in MODEL_NAMES:
            raise InputError("model", f"unknown model {self.model!r}; choose from "
                             f"{', '.join(MODEL_NAMES)}")
        if self.tasks not in TASKS:
            raise InputError("tasks", f"must be one of {', '.join(TASKS)}, got {self.tasks!r}")
        check_int("layers", self.layers)
        for name in ("seeds", "replicas"):
            check_int(name, getattr(self, name), minimum=2)
        if len(self.spectrum) != self.d:
            raise InputError("spectrum", f"needs d = {self.d} eigenvalues, got {len(self.spectrum)}")
        if min(self.spectrum) <= 0:
            raise InputError("spectrum", "eigenvalues of Λ must be positive")
        for name in ("init_scale", "lr", "t_end"):
            check_real(name, getattr(self, name))
        check_real("noise", self.noise, allow_zero=True)
        for name in ("d", "N", "batch", "seeds", "record_every", "validation", "replicas"):
            check_int(name, getattr(self, name))
        check_int("seed", self.seed, minimum=0)
        check_int("rotation_seed", self.rotation_seed, minimum=0)
        if self.backend not in BACKENDS:
            raise InputError("backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        check_prompt_memory(self.N, self.d, self.d, self.seeds * max(self.batch,
                                                                       self.validation))
        steps = self.t_end / self.lr
        if abs(steps - round(steps)) > 1e-9 or round(steps) % self.record_every:
            raise InputError("t_end", "t_end / lr must be a whole number of steps divisible "
                             f"by record_every={self.record_every}")

    @property
    def with_sme(self) -> bool:
        """Whether the run derives the gradient covariance and runs the SME: ``sme`` when set,
        else only for one layer (a stack's exact covariance is derived by the two stages of
        ``theory.wishart``: two Merged layers take ≈ 13 min of CPU and ≈ 11 GB cold, so a
        stack runs the SME only when asked; three layers are refused)."""
        return self.sme if self.sme is not None else self.layers == 1

    @property
    def steps(self) -> int:
        return int(round(self.t_end / self.lr))

    def Lambda(self) -> np.ndarray:
        """Λ = U diag(spectrum) Uᵀ with U the Q factor of a standard normal d × d matrix drawn with
        ``rotation_seed`` (a random rotation: Λ is not diagonal in the coordinates).

        Returns
        -------
        numpy.ndarray
            (d, d), symmetric positive definite.
        """
        rng = np.random.default_rng(self.rotation_seed)
        U, _ = np.linalg.qr(rng.standard_normal((self.d, self.d)))
        return U @ np.diag(self.spectrum) @ U.T


MODEL_NAMES = tuple(sorted(models.MODELS))
TASKS = ("diagonal", "gaussian")


def _build_model(config: "RunConfig") -> models.Model:
    """``config.layers`` layers of ``config.model`` (one head, rank 1 where it has them);
    d_y = d for the paper's eigenbasis tasks, else 1."""
    layer = models.MODELS[config.model](config.d, d_y=config.d if config.tasks == "diagonal"
                                        else 1)
    return layer if config.layers == 1 else models.Stack([layer] * config.layers)


def _initial_params(model: models.Model, scale: float) -> dict:
    """Every parameter matrix ``scale`` times the (rectangular) identity, every head alike."""
    return {name: scale * np.broadcast_to(np.eye(*shape[-2:]), shape).copy()
            for name, shape in model.shapes().items()}


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


NOISE_POINTS = 48


def _quadratic_form(f, size: int) -> np.ndarray:
    """K with f(θ) = θᵀKθ, by polarisation: K_ii = f(e_i), K_ij = (f(e_i + e_j) − f(e_i) −
    f(e_j))/2; an InputError when f is not such a form (checked at a random θ)."""
    unit = np.eye(size)
    diag = np.array([f(e) for e in unit])
    K = np.diag(diag)
    for i in range(size):
        for j in range(i + 1, size):
            K[i, j] = K[j, i] = (f(unit[i] + unit[j]) - diag[i] - diag[j]) / 2
    theta = np.random.default_rng(0).standard_normal(size)
    if not np.isclose(f(theta), theta @ K @ theta, rtol=1e-9, atol=1e-12):
        raise InputError("model", "its conserved quantity is not a quadratic form θᵀKθ: "
                         "the SGD drift prediction needs one")
    return K


def _noise_steps(n_steps: int, points: int = NOISE_POINTS) -> np.ndarray:
    """The steps at which Σ is evaluated along the GD path: 0 and ``points`` geometrically
    spaced ones up to ``n_steps`` (the stages are spaced geometrically in t)."""
    return np.unique(np.r_[0, np.geomspace(1, n_steps, points).astype(int)])


def _predicted_sgd_drift(flow, gd, noise: PathNoise, lr: float, batch: int) -> dict:
    """SGD's expected change of the first conserved quantity C predicted by the derived
    gradient covariance.

    With θ_{n+1} = θ_n − η ĝ_n, C = θᵀKθ (``_quadratic_form``) and ⟨∇C, ∇L⟩ = 0, the
    first-order terms vanish in expectation and E[ΔC | θ] = η² (∇Lᵀ K ∇L + tr(K Σ(θ))/B),
    Σ the exact single-prompt covariance. The first term is GD's own change; the second, the
    noise's, is evaluated along the GD path at ``noise.steps`` (``_noise_steps``) and summed
    over steps by the trapezoid rule (the linear interpolation ``noise`` uses). Returns the
    noise part, the GD part and their sum (the predicted mean total change along SGD)."""
    K = _quadratic_form(lambda theta: flow.conserved(theta)[0], flow.size)
    per_step = np.einsum("pq,kqp->k", K, noise.matrices)
    noise_change = lr ** 2 / batch * float(trapezoid(per_step, noise.steps))
    gd_change = float(gd.conserved[-1, 0] - gd.conserved[0, 0])
    return {"noise": noise_change, "gd": gd_change, "total": gd_change + noise_change,
            "steps": noise.steps.tolist(), "rate_per_step": (lr ** 2 / batch * per_step).tolist()}


SME_BLOCKS = 24


def _sme_against_sgd(sme, sim: SimResult, population: np.ndarray, config: RunConfig) -> dict:
    """The SME ensemble's population loss against SGD's per-seed validation loss at the
    recorded steps. Blocks of records are spaced geometrically in t (the stages are); in each
    block, z = (SGD mean − SME mean) / √(SE²_SGD + SE²_SME), the SEs across seeds and
    replicas of per-seed block means. The late window is the last ``LATE_STEPS`` steps; there
    ``population`` (records, seeds), the derived loss L(θ) at SGD's own parameters, is also
    given: it lacks the validation set's sampling noise."""
    sgd, pred = sim.val_losses[1:], sme.losses[1:]          # record 0: the common start
    t = sme.t[1:]
    edges = np.unique(np.geomspace(1, len(t), SME_BLOCKS + 1).astype(int)) - 1
    edges[-1] = len(t)
    z = []
    for i, j in zip(edges[:-1], edges[1:]):
        (m_sgd, se_sgd), (m_sme, se_sme) = (block_stats(a[i:j], j - i) for a in (sgd, pred))
        z.append((m_sgd[0] - m_sme[0]) / np.hypot(se_sgd[0], se_sme[0]))
    z = np.array(z)
    late = max(1, min(LATE_STEPS, config.steps) // config.record_every)
    (sgd_late, sgd_late_se), (sme_late, sme_late_se), (pop_late, pop_late_se) = (
        block_stats(a[-late:], late) for a in (sgd, pred, population[1:]))
    quart = lambda a: np.quantile(a, [0.25, 0.75], axis=1)  # noqa: E731
    results = {"replicas": config.replicas, "validation": config.validation,
               "noise_points": NOISE_POINTS,
               "block_t_edges": [float(t[edges[0]])] + [float(t[j - 1]) for j in edges[1:]],
               "block_z": z.tolist(), "max_abs_z": float(np.abs(z).max()),
               "mean_z": float(z.mean()),
               "late_sgd": float(sgd_late[0]), "late_sgd_se": float(sgd_late_se[0]),
               "late_sme": float(sme_late[0]), "late_sme_se": float(sme_late_se[0]),
               "late_sgd_population": float(pop_late[0]),
               "late_sgd_population_se": float(pop_late_se[0])}
    arrays = {"t_records": sme.t, "loss_sme": sme.loss, "loss_sme_quartiles": quart(sme.losses),
              "loss_sgd_val": sim.val_loss, "loss_sgd_val_se": sim.val_loss_se,
              "loss_sgd_population_quartiles": quart(population)}
    return {"results": results, "arrays": arrays}


def _sgd_beyond_mean(config: RunConfig, flow, gd, sim: SimResult, population: np.ndarray,
                    clock: "_Clock", tell) -> dict:
    """The derived gradient covariance along the GD path and the conserved quantity's SGD
    drift it predicts (``_predicted_sgd_drift``); the SME ensemble with Σ at the replicas' mean
    (``simulate_sme(refresh=…)``, twice as many steps as ``_noise_steps``) against SGD
    (``_sme_against_sgd``): {"sme": results, "conserved": entries, "arrays": arrays}."""
    clock.start()
    cov = compile_covariance(flow)
    noise = PathNoise.along(cov, gd.theta, _noise_steps(config.steps))
    drift = _predicted_sgd_drift(flow, gd, noise, config.lr, config.batch)
    tell("gradient covariance", 1, 1)
    clock.lap("covariance")
    clock.start()
    sme = simulate_sme(flow, gd.theta[0], config.lr, config.batch, config.steps,
                       replicas=config.replicas, seed=config.seed,
                       record_every=config.record_every, covariance=cov,
                       refresh=_noise_steps(config.steps, 2 * NOISE_POINTS),
                       progress=lambda n: tell("SME ensemble", n, config.steps))
    clock.lap("sme")
    beyond = _sme_against_sgd(sme, sim, population, config)
    c_end = sme.conserved[-1, :, 0]
    conserved = {"sgd_predicted_total_change": drift["total"],
                 "sgd_predicted_noise_change": drift["noise"],
                 "sme_mean_total_change": float(c_end.mean() - sme.conserved[0, 0, 0]),
                 "sme_total_change_se": float(c_end.std(ddof=1) / np.sqrt(config.replicas))}
    arrays = {**beyond["arrays"], "t_conserved_noise": np.array(drift["steps"]) * config.lr,
              "conserved_noise_rate": np.array(drift["rate_per_step"])}
    return {"sme": beyond["results"], "conserved": conserved, "arrays": arrays}


SIMULATION_STAGE = "simulation.npz"


def save_simulation(stages: Path, config: RunConfig, sim: SimResult) -> None:
    """The finished SGD ensemble with its config, so that ``--resume`` need not redo it.

    Parameters
    ----------
    stages : path-like
        The run's stage folder; the ensemble is written there atomically
        (``SIMULATION_STAGE``, an ``.npz`` with the config as JSON).
    config : RunConfig
        The settings the ensemble was made with.
    sim : SimResult

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics import simulate_sgd
    >>> from icldyn.numerics.experiments.mainjob import RunConfig, load_simulation, save_simulation
    >>> config = RunConfig(d=1, N=4, spectrum=(1.0,), lr=0.1, t_end=2.0, seeds=2, record_every=10)
    >>> sim = simulate_sgd(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1)),
    ...                    {"V": 0.1, "Q": 0.1}, lr=0.1, batch=8, steps=20, seeds=2,
    ...                    record_every=10)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> save_simulation(tmp.name, config, sim)
    >>> bool(np.array_equal(load_simulation(tmp.name, config).losses, sim.losses))
    True
    >>> tmp.cleanup()
    """
    arrays = {"config": np.array(json.dumps(asdict(config), sort_keys=True)), "loss": sim.loss,
              "loss_se": sim.loss_se, "losses": sim.losses, "steps": sim.steps,
              **{f"param_{k}": v for k, v in sim.params.items()},
              **({} if sim.val_losses is None else {"val_losses": sim.val_losses})}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(Path(stages) / SIMULATION_STAGE, buf.getvalue())


def load_simulation(stages: Path, config: RunConfig) -> SimResult | None:
    """The saved ensemble if it was made with this very config, else None. Its
    ``info["resumed_from"]`` is the file's path relative to the run folder (the parent of
    ``stages``), which stays true when the folder is moved or swapped in.

    Parameters
    ----------
    stages : path-like
        The stage folder ``save_simulation`` wrote to.
    config : RunConfig
        Must equal the saved config exactly (compared as sorted JSON).

    Returns
    -------
    SimResult or None
        None also for an unreadable file (with a RuntimeWarning: it is recomputed).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, models
    >>> from icldyn.numerics import simulate_sgd
    >>> from icldyn.numerics.experiments.mainjob import RunConfig, load_simulation, save_simulation
    >>> config = RunConfig(d=1, N=4, spectrum=(1.0,), lr=0.1, t_end=2.0, seeds=2, record_every=10)
    >>> sim = simulate_sgd(models.Merged(1), ICLData(d=1, N=4, Lambda=np.eye(1)),
    ...                    {"V": 0.1, "Q": 0.1}, lr=0.1, batch=8, steps=20, seeds=2,
    ...                    record_every=10)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> stages = Path(tmp.name) / "stages"
    >>> stages.mkdir()
    >>> load_simulation(stages, config) is None                  # nothing saved yet
    True
    >>> save_simulation(stages, config, sim)
    >>> load_simulation(stages, config).info["resumed_from"]     # relative to the run folder
    'stages/simulation.npz'
    >>> other = RunConfig(d=1, N=4, spectrum=(1.0,), lr=0.1, t_end=2.0, seeds=2,
    ...                   record_every=10, seed=1)
    >>> load_simulation(stages, other) is None                   # made with another config
    True
    >>> tmp.cleanup()
    """
    path = Path(stages) / SIMULATION_STAGE
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["config"]) != json.dumps(asdict(config), sort_keys=True):
                return None
            params = {k[len("param_"):]: z[k] for k in z.files if k.startswith("param_")}
            return SimResult(z["loss"], z["loss_se"], z["losses"], z["steps"], params,
                             {"resumed_from": str(path.relative_to(path.parent.parent))},
                             z["val_losses"] if "val_losses" in z.files else None)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring the unreadable saved simulation {path} ({type(exc).__name__}: "
                      f"{exc}); recomputing it", RuntimeWarning, stacklevel=2)
        return None


class _Clock:
    """Wall and CPU seconds (all threads, ``time.process_time``) of each stage of a run: on a
    loaded machine the CPU time estimates the idle wall time."""

    def __init__(self):
        self.wall, self.cpu = {}, {}

    def start(self) -> None:
        self._at = (time.perf_counter(), time.process_time())

    def lap(self, stage: str) -> None:
        self.wall[f"{stage}_s"] = time.perf_counter() - self._at[0]
        self.cpu[f"{stage}_s"] = time.process_time() - self._at[1]


def run(config: RunConfig, progress=None, stages: Path | None = None,
        resume: bool = False) -> dict:
    """Everything the report shows, as arrays and numbers. ``progress(stage, done, total)``.
    Finished expensive stages (the SGD ensemble) are saved in ``stages``; with ``resume`` a
    saved stage made with the same config is reused instead of recomputed.

    The stages: derive the model's loss and flow on the data; simulate SGD on the actual
    network (while Numba compiles the flow's kernels in a child process); integrate the exact
    gradient flow and run expected (exact-gradient) GD at η; with
    ``config.with_sme``, derive the gradient covariance, predict SGD's drift of the conserved
    quantity and run the SME; then the measures and the agreement statistics.

    Parameters
    ----------
    config : RunConfig
        Validated first.
    progress : callable, optional
        Called as ``progress(stage, done, total)``.
    stages : path-like, optional
        Folder for finished stages (none saved when omitted).
    resume : bool
        Reuse a saved SGD ensemble made with the same config.

    Returns
    -------
    dict
        "results": JSON-ready numbers (loss, agreement of SGD with expected GD as block z-scores
        and the late relative deviation, SME, learning stages, fixed point, measures, conserved
        quantity, timings); "arrays": the curves the figures plot; "derivation": the
        Derivation; "reduction": the eigenmode reduction (None unless one merged head with
        diagonal tasks).

    Examples
    --------
    >>> from icldyn.numerics.experiments.mainjob import RunConfig, run
    >>> config = RunConfig(d=1, N=4, spectrum=(1.0,), init_scale=0.1, lr=0.1, t_end=6.0, batch=8,
    ...                    seeds=2, validation=8, replicas=2, record_every=6, backend="numpy")
    >>> outcome = run(config)
    >>> results = outcome["results"]
    >>> {k: round(v, 4) for k, v in results["loss"].items() if k != "final_sgd_se"}
    {'initial': 0.4901, 'final_flow': 0.1667, 'final_gd': 0.1667, 'final_sgd': 0.2026}
    >>> stage = results["stages"][0]                    # the one mode: its learning time
    >>> round(stage["t_half_predicted"], 3), round(stage["t_half_exact_flow"], 3)
    (2.092, 2.092)
    >>> sorted(outcome["arrays"])[:4]
    ['Q_effective_rank', 'Q_numerical_rank', 'Q_overlap_with_final', 'Q_stable_rank']
    """
    config.validate()
    tell = progress or (lambda *a: None)
    clock = _Clock()
    clock.start()
    d = config.d
    model = _build_model(config)
    data = ICLData(d=d, N=config.N, Lambda=config.Lambda(), d_y=model.d_y, tasks=config.tasks,
                   noise=config.noise)
    der = derive(model, data)
    reduction = (mode_reduction(der) if config.tasks == "diagonal" and single_head(model)
                 else None)
    tell("derive", 1, 1)
    clock.lap("derive")

    pending = compile_flow(der, backend=config.backend,   # Numba compiles in a child process,
                           extensions=[SME] if config.with_sme else [])     # the SME loop too
    init = _initial_params(model, config.init_scale)

    clock.start()
    sim = load_simulation(stages, config) if resume and stages is not None else None
    if sim is None:
        sim = simulate_sgd(model, data, init, lr=config.lr, batch=config.batch,
                           steps=config.steps, seeds=config.seeds, seed=config.seed,
                           record_every=config.record_every, validation=config.validation,
                           progress=lambda n: tell("SGD simulation", n, config.steps))
        if stages is not None:
            save_simulation(stages, config, sim)
    clock.lap("simulation")

    clock.start()
    flow = pending.compiled()                       # the same kernels on a cold run and on resume
    theta0 = flow.pack(init)
    t_eval = np.unique(np.r_[np.linspace(0.0, config.t_end, 501),
                             np.geomspace(config.lr, config.t_end, 400)])
    traj = integrate(flow, theta0, t_end=config.t_end, t_eval=t_eval)
    tell("integrate", 1, 1)
    gd = gradient_descent(flow, theta0, lr=config.lr, steps=config.steps)
    tell("gradient descent", 1, 1)
    clock.lap("theory")

    U = np.array(data.eigenbasis().tolist(), dtype=float)
    gains = lambda theta: mode_gains(model, flow.unpack(theta), flow.Lambda, U)  # noqa: E731
    a_flow = gains(traj.theta)
    sim_theta = sim.theta()
    a_sim = gains(sim_theta.reshape(-1, flow.size)).reshape(sim_theta.shape[:2] + (d,)).mean(
        axis=0)
    a_final = a_flow[-1]
    s_modes = np.einsum("ia,ij,ja->a", U, flow.Lambda, U)
    a_star = (np.array([float(a) for a in reduction.exact_fixed_point()]) if reduction
              else a_final)
    t_sim = sim.steps * config.lr
    stages = []
    for k in range(d):
        stage = {"mode": k + 1, "s": float(s_modes[k]), "a_final_exact_flow": float(a_final[k]),
                 "t_half_exact_flow": _crossing(traj.t, a_flow[:, k], a_star[k] / 2),
                 "t_half_sgd": _crossing(t_sim, a_sim[:, k], a_star[k] / 2)}
        if reduction:
            stage.update({
                "saddle_growth_rate": float(reduction.saddle_growth_rates()[k]),
                "a_star_decoupled": float(reduction.fixed_point(k)),
                "a_star_exact": float(a_star[k]),
                "a_star_paper_large_N": float(config.N / ((config.N + 1) * reduction.s[k]
                                                          + sum(reduction.s))),
                "t_half_predicted": float(reduction.half_time(
                    k, sp.nsimplify(config.init_scale) ** 2))})
        stages.append(stage)
    short = reduction and _short_horizon(config.t_end, a_final / a_star,
                                         [st["t_half_predicted"] for st in stages])
    if short:
        warnings.warn(short, RuntimeWarning, stacklevel=2)

    observed = flow.observe(sim_theta.reshape(-1, flow.size)).reshape(sim_theta.shape[:2] + (-1,))
    beyond = (_sgd_beyond_mean(config, flow, gd, sim, observed[..., 0].T, clock, tell)
              if config.with_sme else {"sme": None, "conserved": {}, "arrays": {}})

    clock.start()
    pick = np.unique(np.r_[np.linspace(0, len(traj.t) - 1, 150).astype(int), len(traj.t) - 1])
    lens = trajectory_measures(flow, traj.t[pick], traj.theta[pick])
    tell("measures", 1, 1)
    clock.lap("measures")

    block = config.steps // 30
    z = block_z_scores(sim.losses[:-1], gd.loss[:-1], block=block)
    n = (config.steps // block) * block
    block_rel_dev = block_stats(sim.losses[:n], block)[0] / gd.loss[:n].reshape(-1, block).mean(
        axis=1) - 1
    late = min(LATE_STEPS, config.steps)
    late_mean, late_se = block_stats(sim.losses[-late - 1:-1], late)
    late_gd = float(gd.loss[-late - 1:-1].mean())
    c_gd = gd.conserved[:, 0]
    c_sgd = observed[..., 1]                                       # (seeds, records)
    matrices = [name for name in lens if name not in ("t", "top_hessian")]
    derived_steps = np.array([flow.gd_change(row, config.lr)[0] for row in gd.theta[:-1]])
    grad_final = flow.grad(traj.theta[-1])
    results = {
        "config": asdict(config), "model": repr(model), "matrices": matrices,
        "timings": clock.wall,
        "cpu_timings": clock.cpu,
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
        "sme": beyond["sme"],
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
               for name in matrices}},
        "conserved": {
            "name": der.conserved[0].name, "proved": der.conserved[0].proved,
            "initial": float(traj.conserved[0, 0]),
            "flow_max_drift": float(np.abs(traj.conserved[:, 0] - traj.conserved[0, 0]).max()),
            "gd_total_change": float(c_gd[-1] - c_gd[0]),
            "gd_step_error_max": float(np.abs(np.diff(c_gd) - derived_steps).max()),
            "sgd_mean_total_change": float(c_sgd[:, -1].mean() - c_sgd[0, 0]),
            "sgd_total_change_se": float(c_sgd[:, -1].std(ddof=1) / np.sqrt(config.seeds)),
            **beyond["conserved"],
        },
    }
    arrays = {"t_flow": traj.t, "loss_flow": traj.loss, "t_gd": gd.t, "loss_gd": gd.loss,
              "loss_sgd": sim.loss, "loss_sgd_se": sim.loss_se, "losses_sgd": sim.losses, "t_sgd_steps": gd.t,
              "modes_flow": a_flow, "modes_sgd": a_sim, "t_modes_sgd": t_sim,
              **beyond["arrays"],
              "conserved_flow": traj.conserved[:, 0], "conserved_gd": c_gd,
              "conserved_sgd": c_sgd.mean(axis=0),
              "conserved_gd_derived": c_gd[0] + np.r_[0.0, np.cumsum(derived_steps)],
              "t_lens": lens["t"], "top_hessian": lens["top_hessian"],
              **{f"{name}_{key}": lens[name][key] for name in matrices
                 for key in ("effective_rank", "stable_rank", "numerical_rank",
                             "overlap_with_final")}}
    return {"results": results, "arrays": arrays, "derivation": der, "reduction": reduction}
