"""The ``icldyn`` command: the main job end to end, ``derive``, and clear errors."""

import json

import numpy as np
import pytest

from icldyn.numerics.experiments.cli import main


@pytest.mark.slow
def test_main_job_on_the_embedded_default(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out)]) == 0
    for name in ("report.md", "results.json", "arrays.npz", "loss.png", "modes.png",
                 "conserved.png", "measures.png"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "results.json").read_text())
    assert res["provenance"]["versions"]["sympy"] and res["config"]["seed"] == 0
    stages = res["stages"]
    # stages come in the order of Λ's eigenvalues and are well separated (plateaus between)
    t_flow = [s["t_half_exact_flow"] for s in stages]
    assert all(b > 3 * a for a, b in zip(t_flow, t_flow[1:])), t_flow
    for s in stages:   # the derived prediction and SGD both land near the exact stage time
        assert abs(s["t_half_predicted"] / s["t_half_exact_flow"] - 1) < 0.35
        assert abs(s["t_half_sgd"] / s["t_half_exact_flow"] - 1) < 0.1
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
    assert main(["derive", "--model", "Nope"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_risks_table(tmp_path, capsys):
    """`icldyn risks`: the derived risk next to Monte Carlo of the learned algorithm, OLS and
    Bayes ridge, with config and provenance in the run folder; a rank-1 SeparateKQ head."""
    out = tmp_path / "risks"
    assert main(["risks", "--model", "SeparateKQ", "--rank", "1", "--N", "2,8",
                 "--prompts", "4000", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["N"] == [2, 8] and res["provenance"]["versions"]["numpy"]
    for row in res["rows"]:
        mean, se = row["learned_mc"]
        assert abs(mean - row["theory"]) < 4 * se
    assert (out / "risks.csv").read_text().count("\n") == 3
    assert "Bayes ridge" in capsys.readouterr().out
    assert main(["risks", "--model", "Nope", "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err


def test_critical_sets_table(tmp_path, capsys):
    """`icldyn critical-sets`: MultiHead(2) with the paper's tasks, the one-mode-per-head
    minimum Σ s/(N+2) first; a refused setting exits 2 with the reason."""
    out = tmp_path / "cs"
    assert main(["critical-sets", "--model", "MultiHead", "--heads", "2", "--tasks", "diagonal",
                 "--spectrum", "2/1", "--N", "4", "--out", str(out)]) == 0
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
