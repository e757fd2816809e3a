"""The ``icldyn`` command: the main job end to end, ``derive``, and clear errors."""

import json

import numpy as np
import pytest

from conftest import progress_is_sensible
from icldyn.numerics.experiments.cli import main


@pytest.mark.slow
def test_main_job_on_the_embedded_default(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--pdf"]) == 0
    for name in ("report.md", "results.json", "arrays.npz", "loss.png", "modes.png",
                 "conserved.png", "measures.png", "loss.pdf", "measures.pdf"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    assert res["provenance"]["versions"]["sympy"] and res["config"]["seed"] == 0
    stages = res["stages"]
    # stages come in the order of Λ's eigenvalues and are well separated (plateaus between)
    t_flow = [s["t_half_exact_flow"] for s in stages]
    assert all(b > 3 * a for a, b in zip(t_flow, t_flow[1:])), t_flow
    for s in stages:   # the derived prediction and SGD both land near the exact stage time
        assert abs(s["t_half_predicted"] / s["t_half_exact_flow"] - 1) < 0.35
        # SGD's modes are recorded every η·record_every = 0.5 in t (linear interpolation
        # between records across a stage's steep rise)
        grid = res["config"]["lr"] * res["config"]["record_every"]
        assert abs(s["t_half_sgd"] - s["t_half_exact_flow"]) < 0.1 * s["t_half_exact_flow"] + grid
    assert res["agreement"]["max_rel_dev"] < 0.05
    # the measures read the stages: Q's numerical rank steps up once per stage, inside it
    edges = [0.0] + t_flow + [np.inf]
    for k, step in enumerate(res["measures"]["Q"]["rank_step_times"]):
        assert edges[k] < step < edges[k + 2], (k, step, t_flow)
    erank = res["measures"]["Q"]
    assert erank["effective_rank_initial"] > 3.9 and erank["effective_rank_min"] < 2
    assert res["fixed_point"]["grad_norm"] < 1e-3
    cons = res["conserved"]
    assert cons["proved"] and cons["flow_max_drift"] < 1e-9 and cons["gd_step_error_max"] < 1e-12
    # SGD's drift of C is the gradient noise: predicted from the derived covariance within 4 SE
    # (seeds) plus 5 % for evaluating Σ along the GD path at 24 points (trapezoid rule)
    assert abs(cons["sgd_predicted_noise_change"]) > 100 * abs(cons["gd_total_change"])
    assert abs(cons["sgd_mean_total_change"] - cons["sgd_predicted_total_change"]) < (
        4 * cons["sgd_total_change_se"] + 0.05 * abs(cons["sgd_predicted_total_change"]))
    agr = res["agreement"]
    assert abs(agr["late_rel_dev"]) < 5 * agr["late_rel_dev_se"] + 0.02
    # SGD beyond the mean: the SME with the derived covariance against SGD's held-out loss
    # (each block's z uses both ensembles' SEs; 21 geometric blocks), and its band has width
    sme = res["sme"]
    assert len(sme["block_z"]) > 15 and sme["max_abs_z"] < 4, sme["block_z"]
    assert abs(sme["late_sme"] - sme["late_sgd"]) < 4 * np.hypot(sme["late_sme_se"],
                                                                  sme["late_sgd_se"])
    assert res["cpu_timings"]["sme_s"] > 0 and "SME" in (out / "report.md").read_text()
    arrays = np.load(out / "arrays.npz")
    assert arrays["modes_flow"].shape[1] == 4
    assert "\\begin{align*}" in (out / "report.md").read_text()
    assert res["simulation_resumed_from"] is None
    # --resume reuses the finished SGD ensemble and reproduces the report's numbers
    assert main(["run", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["simulation_resumed_from"] == "stages/simulation.npz"
    assert again["loss"] == res["loss"] and again["stages"] == res["stages"]


def test_saved_simulation_is_reused_only_for_the_same_config(tmp_path):
    from icldyn.numerics.experiments.mainjob import RunConfig, load_simulation, save_simulation
    from icldyn.numerics.simulation.sgd import SimResult
    config = RunConfig()
    sim = SimResult(np.arange(3.0), np.ones(3), np.ones((3, 2)), np.arange(3),
                    {"V": np.zeros((2, 3, 1, 1))})
    assert load_simulation(tmp_path, config) is None
    save_simulation(tmp_path, config, sim)
    back = load_simulation(tmp_path, config)
    assert np.array_equal(back.loss, sim.loss) and np.array_equal(back.params["V"],
                                                                  sim.params["V"])
    assert load_simulation(tmp_path, RunConfig(seed=1)) is None


def test_run_rejects_bad_input_with_a_clear_message(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "x"), "--lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert "lr" in err and "positive" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_derive_writes_latex(tmp_path, capsys):
    target = tmp_path / "merged.tex"
    assert main(["derive", "--model", "Merged", "--cov", "full", "--latex", str(target)]) == 0
    tex = target.read_text()
    assert "\\operatorname{tr}" in tex and "\\frac{dQ}{dt}" in tex
    assert _exit_code(["derive", "--model", "Nope"]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "invalid choice" in err and "Merged" in err


def test_risks_table(tmp_path, capsys, progress_calls):
    """`icldyn risks`: the derived risk next to Monte Carlo of the learned algorithm, OLS and
    Bayes ridge, with config and provenance in the run folder; a rank-1 SeparateKQ head;
    progress counted over the context lengths."""
    out = tmp_path / "risks"
    assert main(["risks", "--model", "SeparateKQ", "--rank", "1", "--N", "2,8",
                 "--prompts", "4000", "--out", str(out)]) == 0
    assert progress_calls == [("in-context risks", k, 2) for k in range(3)]
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["N"] == [2, 8] and res["provenance"]["versions"]["numpy"]
    for row in res["rows"]:
        mean, se = row["learned_mc"]
        assert abs(mean - row["theory"]) < 4 * se
    assert (out / "risks.csv").read_text().count("\n") == 3
    assert "Bayes ridge" in capsys.readouterr().out
    assert _exit_code(["risks", "--model", "Nope", "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err


def test_critical_sets_table(tmp_path, capsys, progress_calls):
    """`icldyn critical-sets`: MultiHead(2) with the paper's tasks, the one-mode-per-head
    minimum Σ s/(N+2) first; a refused setting exits 2 with the reason; progress in two
    stages (derivation, critical sets)."""
    out = tmp_path / "cs"
    assert main(["critical-sets", "--model", "MultiHead", "--heads", "2", "--tasks", "diagonal",
                 "--spectrum", "2/1", "--N", "4", "--out", str(out)]) == 0
    progress_is_sensible(progress_calls, stage_count=2)
    assert progress_calls[-1] == ("critical sets", 1, 1)
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["tasks"] == "diagonal" and res["provenance"]["versions"]["numpy"]
    first = res["sets"][0]
    assert first["loss"] == pytest.approx(3 / 6, rel=1e-12) and first["hessian_index"] == 0
    assert first["kind"] == "minimum" and first["evidence"]
    assert first["algorithm"].startswith("ŷ = Ŵ x_q")             # a gradient step
    assert all(r["algorithm"] is None for r in res["sets"] if r["kind"] != "minimum")
    assert all(r["kind"] == "strict saddle" for r in res["sets"] if r["hessian_index"])
    assert (out / "critical_sets.csv").read_text().count("\n") == 1 + len(res["sets"])
    printed = capsys.readouterr().out
    assert "origin" in printed and "learned algorithm: ŷ" in printed
    assert main(["critical-sets", "--model", "Merged", "--d", "3", "--d-y", "2",
                 "--tasks", "diagonal", "--out", str(out)]) == 2
    assert "need d_y = d" in capsys.readouterr().err


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None)
                  for p in folder.rglob("*"))


@pytest.mark.parametrize("command", [["run"], ["risks", "--N", "2"], ["critical-sets"]])
def test_an_existing_run_folder_is_refused_before_any_work(command, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.json").write_text('{"from": "another run"}')
    before = _tree(out)
    assert main(command + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "--overwrite" in err[0]
    assert _tree(out) == before


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for argv, option in ((["run", "--out", str(a_file)], "--out"),
                         (["run", "--out", str(a_file / "sub")], "--out"),
                         (["derive", "--all", "--out", str(a_file)], "--out"),
                         (["derive", "--latex", str(tmp_path)], "--latex"),
                         (["derive", "--latex", str(a_file / "x.tex")], "--latex"),
                         (["critical-sets", "--out", str(a_file)], "--out")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and option in err[0], (argv, err)
    assert a_file.read_text() == "x"


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:                     # argparse's usage errors
        return exc.code


@pytest.mark.parametrize("argv, option", [
    (["--model", "Foo"], "--model"), (["--tasks", "finite"], "--tasks"),
    (["--d", "x"], "--d"), (["--d", "0"], "d"), (["--spectrum", "1/2"], "spectrum"),
    (["--spectrum", "1/0/1/1"], "spectrum"), (["--N", "-3"], "N"), (["--seeds", "1"], "seeds"),
    (["--replicas", "1"], "replicas"), (["--layers", "0"], "layers"),
    (["--validation", "0"], "validation"), (["--lr", "x"], "--lr"),
    (["--t-end", "10.01"], "t_end"), (["--backend", "jax"], "--backend")])
def test_run_options_are_checked_before_any_work(argv, option, tmp_path, capsys):
    """A bad `icldyn run` option: exit code 2, one line naming the option, no run folder."""
    out = tmp_path / "run"
    assert _exit_code(["run", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "Traceback" not in err[0], err
    assert not out.exists()


def test_help_names_every_command_option_default_and_choice(capsys):
    from icldyn.theory.models import MODELS
    assert _exit_code(["--help"]) == 0
    overview = capsys.readouterr().out
    for command in ("run", "derive", "sweep", "risks", "task-diversity", "critical-sets",
                    "cache", "grok", "icl-emergence"):
        assert f"\n  {command} " in overview, command
        assert _exit_code([command, "--help"]) == 0
        text = capsys.readouterr().out
        # every option but the flags and --help states its default
        options = [line.split()[0] for line in text.split("options:")[1].splitlines()
                   if line.startswith("  -")]
        helps = text.split("options:")[1].split("\n  -")[1:]
        for name, body in zip(options, helps):
            flag = any(word in body for word in ("show this help", "store_true")) or \
                body.split()[0] in ("-resume", "-overwrite", "-pdf", "-all", "-negate-readout",
                                    "-no-query-in-keys", "-parameterizations")
            assert flag or "default" in body, (command, name, body)
    assert _exit_code(["derive", "--help"]) == 0
    derive_help = capsys.readouterr().out
    assert all(word in derive_help for word in ["--N", "--heads", "--rank", *MODELS])
    assert _exit_code(["run", "--help"]) == 0
    run_help = capsys.readouterr().out
    assert all(word in run_help for word in ["--d", "--spectrum", "--model", "--tasks", "--N",
                                             "--layers", "--pdf", *MODELS])


def test_figures_also_as_pdf(tmp_path):
    import matplotlib.pyplot as plt

    from icldyn.numerics.experiments.runfolder import figures_also_as_pdf, save_figure
    fig = plt.figure()
    save_figure(fig, tmp_path / "a.png")
    with figures_also_as_pdf():
        save_figure(fig, tmp_path / "b.png")
    plt.close(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.pdf", "b.png"]
    assert (tmp_path / "b.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow
def test_main_job_on_a_two_layer_stack(tmp_path):
    """`icldyn run --layers 2`: the report of a residual stack of two Merged layers, read
    through the model contract (mode gains off the attention weights; no mode reduction and,
    by default for stacks, no SME). Short settings and the NumPy backend (Numba's compile of a
    stack's complex-step Hessian products takes minutes) keep it within ~3 min."""
    out = tmp_path / "stack"
    assert main(["run", "--layers", "2", "--t-end", "60", "--seeds", "4", "--batch", "64",
                 "--validation", "64", "--backend", "numpy", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"].startswith("Stack") and res["sme"] is None
    assert {"0.V", "0.Q", "1.V", "1.Q"} <= set(res["matrices"])
    assert res["loss"]["final_flow"] < 0.5 * res["loss"]["initial"]
    t_flow = [s["t_half_exact_flow"] for s in res["stages"]]
    assert t_flow[0] < t_flow[1], t_flow        # the larger eigenvalue is learned first
    for s in res["stages"]:
        if np.isfinite(s["t_half_exact_flow"]):
            assert abs(s["t_half_sgd"] / s["t_half_exact_flow"] - 1) < 0.2, s
    text = (out / "report.md").read_text()
    assert "no single-head eigenmode reduction" in text and "0.V" in text
