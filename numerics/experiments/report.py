"""Report of the main job: figures (matplotlib), ``report.md``, ``results.json``, ``arrays.npz``."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

from ...files import write_atomic  # noqa: E402
from .runfolder import provenance, save_figure, write_json  # noqa: E402
from ..simulation.sgd import block_stats  # noqa: E402


def _stage_time(stage: dict) -> float:
    """A stage's predicted half-time where the model has a mode reduction, else the flow's."""
    return stage.get("t_half_predicted", stage["t_half_exact_flow"])


def _stage_lines(ax, results: dict) -> None:
    for st in results["stages"]:
        ax.axvline(_stage_time(st), color="grey", ls=":", lw=0.8)


def _sme_curves(ax, arrays: dict, results: dict) -> None:
    """The SME's mean and interquartile band, SGD's held-out loss and its seeds' quartiles."""
    t_rec = arrays["t_records"][1:]
    low, high = arrays["loss_sme_quartiles"][:, 1:]
    ax.fill_between(t_rec, low, high, color="C2", alpha=0.3, lw=0,
                    label="theory: SME (derived Σ), interquartile band over replicas")
    ax.plot(t_rec, arrays["loss_sme"][1:], color="C2", lw=1.2,
            label=f"theory: SME mean over {results['sme']['replicas']} replicas")
    ax.plot(t_rec, arrays["loss_sgd_val"][1:], color="C1", lw=1.0,
            label=f"SGD: held-out loss ({results['sme']['validation']} prompts per seed), mean")
    for q, label in zip(arrays["loss_sgd_population_quartiles"],
                        ("SGD: quartiles over seeds of L(θ) at their parameters", None)):
        ax.plot(t_rec, q[1:], ":", color="C1", lw=0.8, label=label)


def _figure_loss(arrays: dict, results: dict):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cfg = results["config"]
    t = arrays["t_gd"]
    ax.plot(t[1:], arrays["loss_sgd"][1:], color="C1", lw=0.3, alpha=0.35,
            label="SGD on the layer: mean over seeds, each step")
    block = max(1, len(t) // 200)
    mean, se = block_stats(arrays["losses_sgd"], block)
    centre = np.arange(len(mean)) * block + (block - 1) / 2
    ax.errorbar(cfg["lr"] * centre, mean, yerr=2 * se, fmt="o", ms=2, color="C1", elinewidth=0.8,
                label="SGD: block means ± 2 SE")
    gd_block = arrays["loss_gd"][:len(mean) * block].reshape(-1, block).mean(axis=1)
    ax.plot(cfg["lr"] * centre, gd_block, "_", color="C0", ms=6,
            label="expected GD averaged over the same blocks")
    ax.plot(arrays["t_flow"][1:], arrays["loss_flow"][1:], color="k", lw=1.5,
            label="theory: gradient flow")
    ax.plot(t[1:], arrays["loss_gd"][1:], "--", color="C0", lw=1.2, label="theory: expected GD")
    if results["sme"] is not None:
        _sme_curves(ax, arrays, results)
    _stage_lines(ax, results)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t = learning rate × steps (dotted: stage half-times)")
    ax.set_ylabel("loss")
    ax.set_title(f"{results['model']}, {cfg['tasks']} tasks, d = {cfg['d']}, N = {cfg['N']} "
                 f"(η = {cfg['lr']}, B = {cfg['batch']}, {cfg['seeds']} seeds)")
    ax.legend(fontsize=8)
    return fig


def _figure_modes(arrays: dict, results: dict):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    a_star = np.array(results["fixed_point"]["modes"])
    for k, st in enumerate(results["stages"]):
        color = f"C{k}"
        ax.plot(arrays["t_flow"][1:], arrays["modes_flow"][1:, k] / a_star[k], color=color,
                label=f"mode {k + 1} (s = {st['s']:g}): exact flow")
        ax.plot(arrays["t_modes_sgd"][1:], arrays["modes_sgd"][1:, k] / a_star[k], ".", ms=2,
                color=color, alpha=0.6, label=f"mode {k + 1}: SGD mean over seeds")
        ax.axvline(_stage_time(st), color=color, ls="--", lw=0.8)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("t (dashed: half-times; dots: SGD mean)")
    ax.set_ylabel(r"$a_\alpha(t)/a_\alpha(\infty)$")
    ax.set_title("Stage-wise learning of Λ's eigenmodes")
    ax.legend(fontsize=8)
    return fig


def _figure_conserved(arrays: dict, results: dict):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    c0 = arrays["conserved_flow"][0]
    tiny = 1e-18
    ax.plot(arrays["t_flow"], np.abs(arrays["conserved_flow"] - c0) + tiny, "k",
            label="gradient flow (DOP853): |C(t) − C(0)|")
    ax.plot(arrays["t_gd"], np.abs(arrays["conserved_gd"] - c0) + tiny, "C0",
            label="GD: |C_n − C_0| measured")
    ax.plot(arrays["t_gd"], np.abs(arrays["conserved_gd_derived"] - c0) + tiny, "C3--",
            label="GD: Σ derived η²-changes")
    t_sgd = results["config"]["lr"] * np.unique(np.r_[np.arange(0, len(arrays["t_gd"]),
                                                                results["config"]["record_every"]),
                                                      len(arrays["t_gd"]) - 1])
    ax.plot(t_sgd[:len(arrays["conserved_sgd"])], np.abs(arrays["conserved_sgd"] - c0) + tiny,
            "C1", label="SGD: |mean over seeds of C_n − C_0| measured")
    cons = results["conserved"]
    if "sgd_predicted_total_change" in cons:
        ax.axhline(abs(cons["sgd_predicted_total_change"]), color="C1", ls=":",
                   label="SGD at t_end: predicted by the derived gradient covariance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t (log)")
    ax.set_ylabel("change of " + results["conserved"]["name"])
    ax.set_title("The conserved quantity along flow, GD and SGD")
    ax.legend(fontsize=8)
    return fig


def _figure_measures(arrays: dict, results: dict):
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    t = arrays["t_lens"]
    keep = t > 0
    (a, b), (c, e) = axes
    names = results["matrices"]
    for name, style in zip(names, ("-", "--", "-.", ":") * len(names)):
        a.plot(t[keep], arrays[f"{name}_effective_rank"][keep], style, color="C0",
               label=f"effective rank of {name}")
        a.step(t[keep], arrays[f"{name}_numerical_rank"][keep], style, color="C3", where="post",
               label=f"numerical rank of {name}")
        c.plot(t[keep], arrays[f"{name}_stable_rank"][keep], style, color="C2",
               label=f"stable rank of {name}")
    overlap = arrays[f"{names[-1]}_overlap_with_final"]
    for k in range(overlap.shape[1]):
        b.plot(t[keep], overlap[keep, k], label=f"top-{k + 1} subspace of {names[-1]}")
    e.plot(t[keep], arrays["top_hessian"][keep], color="k")
    for ax in axes.ravel():
        ax.set_xscale("log")
        _stage_lines(ax, results)
    a.set_ylabel("rank")
    a.legend(fontsize=7)
    b.set_ylabel("overlap with the final subspace")
    b.legend(fontsize=7)
    c.set_ylabel("stable rank ‖M‖²_F / ‖M‖²₂")
    c.legend(fontsize=7)
    e.set_ylabel("top Hessian eigenvalue")
    for ax in (c, e):
        ax.set_xlabel("t (dotted: stage half-times)")
    fig.suptitle("Macroscopic measures along the exact gradient flow")
    fig.tight_layout()
    return fig


FIGURES = {"loss.png": _figure_loss, "modes.png": _figure_modes, "conserved.png": _figure_conserved,
           "measures.png": _figure_measures}


def write_report(out: Path, outcome: dict) -> Path:
    """Write the run folder: figures, arrays, results.json (with provenance) and report.md.

    Parameters
    ----------
    out : path-like
        The folder (the staging folder of ``staged_folder`` in ``icldyn run``).
    outcome : dict
        What ``mainjob.run`` returns; ``outcome["results"]`` gains a "provenance" entry.

    Returns
    -------
    pathlib.Path
        The path of report.md.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.mainjob import RunConfig, run
    >>> from icldyn.numerics.experiments.report import write_report
    >>> config = RunConfig(d=1, N=4, spectrum=(1.0,), init_scale=0.1, lr=0.1, t_end=6.0, batch=8,
    ...                    seeds=2, validation=8, replicas=2, record_every=6, backend="numpy")
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_report(Path(tmp.name), run(config))
    >>> path.name
    'report.md'
    >>> sorted(p.name for p in path.parent.iterdir())
    ['arrays.npz', 'conserved.png', 'loss.png', 'measures.png', 'modes.png', 'report.md',
     'results.json']
    >>> tmp.cleanup()
    """
    out = Path(out)
    results, arrays = outcome["results"], outcome["arrays"]
    results["provenance"] = provenance()
    for name, make in FIGURES.items():
        fig = make(arrays, results)
        save_figure(fig, out / name)
        plt.close(fig)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_atomic(out / "arrays.npz", buf.getvalue())
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", markdown(outcome))
    return out / "report.md"


def _measures_text(res: dict) -> str:
    m = res["measures"]
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    parts = [f"Numerical rank of {name} (threshold {m[name]['rank_tol']:.3f}) steps up at t = "
             f"{fmt(m[name]['rank_step_times'])}; its effective rank is "
             f"{m[name]['effective_rank_initial']:.2f} at the start, minimum "
             f"{m[name]['effective_rank_min']:.2f}, final {m[name]['effective_rank_final']:.2f}; "
             f"its top-k subspaces lock in (overlap ≥ 0.9 with the final ones) at t = "
             f"{fmt(m[name]['lock_times'])}." for name in res["matrices"]]
    return " ".join(parts) + (
        f" Stage half-times from the exact flow: "
        f"{fmt(s['t_half_exact_flow'] for s in res['stages'])}. Top Hessian eigenvalue: "
        f"{m['top_hessian']['initial']:.3g} at the start, maximum {m['top_hessian']['max']:.3g}, "
        f"final {m['top_hessian']['final']:.3g} (the GD stability limit is 2/λ_max = "
        f"{2 / m['top_hessian']['max']:.3g}; η = {res['config']['lr']}).")


def _sme_text(res: dict) -> str:
    sme, cfg, cons, agr = res["sme"], res["config"], res["conserved"], res["agreement"]
    return (
        f"The SME dθ = −∇L dt + √(η/B) Σ^{{1/2}} dW with the derived single-prompt gradient "
        f"covariance Σ, integrated by Euler–Maruyama with dt = η (each step then has SGD's mean "
        f"and covariance), {sme['replicas']} replicas; Σ is evaluated at the replicas' mean θ, "
        f"recomputed at about {2 * sme['noise_points']} steps spaced geometrically in t and "
        f"held in between (mean-field noise; Σ along the GD path instead overpredicted the "
        f"late excess loss and the drift of C by a quarter: the replicas leave the GD path "
        f"along the conserved direction, which nothing restores). Against SGD's held-out loss "
        f"({sme['validation']} prompts per seed, drawn once, never trained on; "
        f"{cfg['seeds']} seeds), in {len(sme['block_z'])} blocks of recorded steps spaced "
        f"geometrically in t, z = (SGD − SME)/√(SE²+SE²): max |z| = {sme['max_abs_z']:.2f}, "
        f"mean z = {sme['mean_z']:.2f}. Over the last {agr['late_steps']} steps: SGD "
        f"{sme['late_sgd']:.5f} ± {sme['late_sgd_se']:.5f}, SME {sme['late_sme']:.5f} ± "
        f"{sme['late_sme_se']:.5f}, expected GD {agr['late_gd']:.5f}; the derived loss at "
        f"SGD's own parameters (no validation noise) {sme['late_sgd_population']:.5f} ± "
        f"{sme['late_sgd_population_se']:.5f}. Change of the conserved quantity: SGD "
        f"{cons['sgd_mean_total_change']:.3f} ± {cons['sgd_total_change_se']:.3f}, SME "
        f"{cons['sme_mean_total_change']:.3f} ± {cons['sme_total_change_se']:.3f}.")


def _reduction_lines(red, res: dict) -> list:
    """The eigenmode reduction of a single-head model (its derived per-mode equations)."""
    lines = [
        "On V = U diag(p) Uᵀ, Q = U diag(q) Uᵀ the derived loss is",
        "",
        f"$$L = {sp.latex(red.loss)}$$",
        "",
        "Dropping the cross-mode (order 1/N) terms gives, on the balanced set p_α = q_α, "
        "ȧ_α = f_α(a_α):",
        "",
    ]
    for k in range(len(red.s)):
        a, f = red.balanced_rate(k)
        lines.append(f"- mode {k + 1}: $\\dot a = {sp.latex(f)}$, "
                     f"$a^* = {sp.latex(red.fixed_point(k))}$")
    lines += [
        "",
        "| mode | s_α | saddle growth rate | predicted t½ (decoupled) | t½ exact flow | "
        "t½ SGD mean | a* decoupled | a* exact | a(t_end) exact flow | "
        "paper N/((N+1)s+tr S) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for st in res["stages"]:
        lines.append(
            f"| {st['mode']} | {st['s']:g} | {st['saddle_growth_rate']:.4g} | "
            f"{st['t_half_predicted']:.3f} | {st['t_half_exact_flow']:.3f} | "
            f"{st['t_half_sgd']:.3f} | {st['a_star_decoupled']:.4f} | {st['a_star_exact']:.4f} | "
            f"{st['a_final_exact_flow']:.4f} | {st['a_star_paper_large_N']:.4f} |")
    lines += [
        "",
        "The last column is the large-N fixed point a*_α ≈ N/((N+1)s_α + Σ_β s_β) of the "
        "seed paper, a formula not exact at finite N (compare the exact a*).",
        "",
        "Stage half-times are the times a mode reaches half its exact fixed-point value a* "
        "(the critical point of the reduced loss).",
    ]
    return lines


def _stage_table(res: dict) -> list:
    """Stage times of a model without a mode reduction: half of the flow's gain at t_end."""
    lines = ["This model has no single-head eigenmode reduction: a stage's half-time is when "
             "a_α reaches half its value at t_end along the exact flow.", "",
             "| mode | s_α | t½ exact flow | t½ SGD mean | a(t_end) exact flow |",
             "|---|---|---|---|---|"]
    lines += [f"| {st['mode']} | {st['s']:g} | {st['t_half_exact_flow']:.3f} | "
              f"{st['t_half_sgd']:.3f} | {st['a_final_exact_flow']:.4f} |"
              for st in res["stages"]]
    return lines


def markdown(outcome: dict) -> str:
    """The text of report.md: the setting, the derived equations, the eigenmode gains and
    learning stages, theory against SGD on the actual network, SGD beyond the mean (the SME),
    the conserved quantity, the measures along the exact flow and the provenance.

    Parameters
    ----------
    outcome : dict
        What ``mainjob.run`` returns.

    Returns
    -------
    str
        Markdown, maths in ``$``/``$$``.

    Examples
    --------
    >>> from icldyn.numerics.experiments.mainjob import RunConfig, run
    >>> from icldyn.numerics.experiments.report import markdown
    >>> config = RunConfig(d=1, N=4, spectrum=(1.0,), init_scale=0.1, lr=0.1, t_end=6.0, batch=8,
    ...                    seeds=2, validation=8, replicas=2, record_every=6, backend="numpy")
    >>> text = markdown(run(config))
    >>> print(text.splitlines()[0])
    # icl-dynamics: exact learning dynamics of in-context learning
    >>> for line in text.splitlines():
    ...     if line.startswith("## "):
    ...         print(line)
    ## Derived equations (exact for every finite N)
    ## Eigenmode gains and learning stages
    ## Theory against SGD on the actual network
    ## SGD beyond the mean: the stochastic modified equation
    ## Conserved quantity
    ## Macroscopic measures along the exact flow
    ## Provenance
    """
    res, der, red = outcome["results"], outcome["derivation"], outcome["reduction"]
    cfg, cons, agr = res["config"], res["conserved"], res["agreement"]
    lines = [
        "# icl-dynamics: exact learning dynamics of in-context learning",
        "",
        f"{res['model']} on {cfg['tasks']} tasks (diagonal: W = U diag(δ) Uᵀ sharing Λ's "
        f"eigenbasis, d_y = d); d = {cfg['d']}, N = {cfg['N']}, Λ spectrum "
        f"{tuple(cfg['spectrum'])} in a rotated basis (seed {cfg['rotation_seed']}), "
        f"σ = {cfg['noise']}, every parameter matrix {cfg['init_scale']}·I at the start.",
        "",
        "## Derived equations (exact for every finite N)",
        "",
        "Dg(Y) = U diag(c ∘ diag(UᵀYU)) Uᵀ is the eigenbasis-diagonal part (c: task-mode variances).",
        "",
        "$$", der.to_latex().split("\n", 1)[1], "$$",
        "",
        f"Conserved quantity: **{cons['name']}**; ⟨∇C, ∇L⟩ ≡ 0 verified on the derived "
        f"polynomials: **{cons['proved']}**.",
        "",
        "## Eigenmode gains and learning stages",
        "",
        "The learning stages are read off the gains a_α of the learned in-context map on Λ's "
        "eigenmodes (U Λ's eigenbasis, s_α its eigenvalues): with infinitely many context "
        "tokens each layer moves a token linearly, so a_α = u_αᵀŷ/s_α for the task W = u_α u_αᵀ "
        "and the query u_α (`numerics/gains.py`); for the Merged layer a_α = (UᵀVU)_αα "
        "(UᵀQU)_αα, the product of V's and Q's weights on mode α.",
        "",
        *(_reduction_lines(red, res) if red is not None else _stage_table(res)),
        "",
        f"At t_end the flow has ‖∇L‖ = {res['fixed_point']['grad_norm']:.2e}."
        + "".join(f" **Warning:** {w}." for w in res.get("warnings", [])),
        "",
        "![stages](modes.png)",
        "",
        "## Theory against SGD on the actual network",
        "",
        f"SGD: η = {cfg['lr']}, batch {cfg['batch']}, {cfg['seeds']} seeds (seed {cfg['seed']}), "
        f"{cfg['t_end'] / cfg['lr']:.0f} steps. Loss: initial {res['loss']['initial']:.4f}, final "
        f"flow {res['loss']['final_flow']:.5f}, expected GD {res['loss']['final_gd']:.5f}, SGD "
        f"{res['loss']['final_sgd']:.5f} ± {res['loss']['final_sgd_se']:.5f}.",
        "",
        f"Block z-scores (SGD mean over blocks of steps vs expected GD, SE across seeds): "
        f"max |z| = {agr['max_abs_z']:.2f}, mean z = {agr['mean_z']:.2f} over "
        f"{len(agr['block_z'])} blocks; largest relative deviation of a block mean "
        f"{agr['max_rel_dev']:.1%}. Expected GD ignores SGD's gradient noise, whose effects "
        "grow with η/B: a positive mean z at this η/B is that noise, not Monte-Carlo error.",
        "",
        "![loss](loss.png)",
        "",
        *(["## SGD beyond the mean: the stochastic modified equation", "", _sme_text(res), ""]
          if res["sme"] is not None else []),
        "## Conserved quantity",
        "",
        f"C(0) = {cons['initial']:.3e}; largest drift along the integrated flow "
        f"{cons['flow_max_drift']:.2e} (integrator tolerance); total change along GD "
        f"{cons['gd_total_change']:.3e}, equal step by step to the derived η² expression up to "
        f"{cons['gd_step_error_max']:.1e}; mean total change along SGD "
        f"{cons['sgd_mean_total_change']:.3e} ± {cons['sgd_total_change_se']:.1e} (SE over "
        f"seeds)" + (
            f", predicted {cons['sgd_predicted_total_change']:.3e} from E[ΔC | θ] = "
            f"η²(∇Lᵀ K ∇L + tr(K Σ(θ))/B) (C = θᵀKθ; Σ the derived single-prompt gradient "
            f"covariance, evaluated along the GD path), of which the noise term is "
            f"{cons['sgd_predicted_noise_change']:.3e}: SGD's drift is the gradient noise."
            if "sgd_predicted_total_change" in cons else
            " (the noise prediction was not run: --no-sme, the default for stacks)."),
        "",
        "![conserved](conserved.png)",
        "",
        "## Macroscopic measures along the exact flow",
        "",
        _measures_text(res),
        "",
        "![measures](measures.png)",
        "",
        "## Provenance",
        "",
        f"Timings (s, wall): {', '.join(f'{k} {v:.2f}' for k, v in res['timings'].items())}; "
        f"CPU (all threads; the idle wall time): "
        f"{', '.join(f'{k} {v:.2f}' for k, v in res['cpu_timings'].items())}, in all "
        f"{sum(res['cpu_timings'].values()):.1f} s. "
        f"Versions and git revision in `results.json`.",
        "",
    ]
    return "\n".join(lines)
