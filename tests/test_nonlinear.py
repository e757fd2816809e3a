"""Non-linear experiments (PyTorch): the model's tracked matrices, the Fourier measure, and the
quick presets reproducing their phenomena. Skipped cleanly without torch."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
# One thread: these models are too small for torch's threads to pay; with two threads on a
# 2-core machine (and a second pytest worker) the quick ICL runs took ~3× the CPU time.
torch.set_num_threads(1)

from icldyn.numerics.experiments.cli import main  # noqa: E402
from icldyn.numerics.nonlinear.grok import fourier_sparsity  # noqa: E402
from icldyn.numerics.nonlinear.transformer import (Transformer, TransformerConfig,  # noqa: E402
                                                   top_hessian_eigenvalue)


def test_tracked_matrices_have_transformer_lens_shapes():
    model = Transformer(TransformerConfig(d_vocab=11, n_ctx=5, d_model=8, n_heads=2, d_head=4,
                                          n_layers=2, d_mlp=16))
    tracked = model.tracked()
    assert tracked["L1H1_QK"].shape == (8, 8) and tracked["L0H0_OV"].shape == (8, 8)
    assert tracked["W_E"].shape == (11, 8) and tracked["W_U"].shape == (8, 11)
    assert tracked["L0_W_in"].dtype == np.float64
    a = model.blocks[1].attn
    np.testing.assert_allclose(tracked["L1H0_QK"], (a.W_Q[0] @ a.W_K[0].T).detach().double())
    assert model(torch.zeros(3, 5, dtype=torch.long)).shape == (3, 5, 11)


def test_attention_is_causal():
    model = Transformer(TransformerConfig(d_vocab=7, n_ctx=6, d_model=8, n_heads=2, d_head=4))
    x = torch.randint(0, 7, (1, 6))
    y = x.clone()
    y[0, 4:] = (y[0, 4:] + 1) % 7
    np.testing.assert_allclose(model(x)[0, :4].detach(), model(y)[0, :4].detach(), atol=1e-6)


def test_fourier_sparsity_known_answers():
    p = 31
    k = np.arange(p)
    single = np.stack([np.cos(2 * np.pi * 3 * k / p), np.sin(2 * np.pi * 3 * k / p)], axis=1)
    assert fourier_sparsity(single, p) == pytest.approx(1.0)
    noise = np.random.default_rng(0).standard_normal((p, 64))
    assert fourier_sparsity(noise, p) < 0.4


def test_autograd_hessian_top_eigenvalue_on_a_quadratic():
    lin = torch.nn.Linear(3, 1, bias=False)
    A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    top = top_hessian_eigenvalue(lin, lambda m: 0.5 * m.weight[0] @ A @ m.weight[0])
    assert top == pytest.approx(float(np.linalg.eigvalsh(A.numpy())[-1]), rel=1e-4)


@pytest.mark.slow
def test_icl_emergence_quick_preset(tmp_path):
    """Seeds 1 and 2 (seed 0 is the tutorial tutorials/nonlinear_measures.py, which asserts
    the same and more on it): every 2-layer model learns in context, no 1-layer model does;
    the paper's subspace reading holds in at least one of them (with seed 0: two of three);
    curvature is recorded."""
    assert main(["icl-emergence", "--preset", "quick", "--out", str(tmp_path),
                 "--seeds", "1,2"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    runs = {(r["n_layers"], r["seed"]): r for r in res["runs"]}
    for seed in (1, 2):
        two, one = runs[2, seed], runs[1, seed]
        assert two["emergence_step"] is not None          # the 2-layer model learns in context
        assert one["emergence_step"] is None              # the 1-layer model cannot
        assert two["final_icl_loss"] < 0.5 < 1.5 < one["final_icl_loss"]
        for r in (one, two):
            curv = r["curvature"]
            assert len(curv["steps"]) >= 10 and all(np.isfinite(curv["top_hessian"]))
            assert curv["top_hessian"][-1] > 10 * curv["top_hessian"][0]   # sharpening
    readings = [r for r in res["readings"]["runs"] if r["n_layers"] == 2]
    assert sum(r["subspace_falls_before_loss"] for r in readings) >= 1
    for name in ("icl_emergence.png", "singular_values.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    for run in ("1layer_seed1", "2layer_seed2"):
        for name in ("checkpoints.npz", "metrics.csv", "results.json"):
            assert (tmp_path / run / name).stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["config"]["preset"] == "quick"

    # --resume after an interruption: the unfinished run (no results.json) is trained again,
    # the finished one is read back, and the readings come out the same
    kept = (tmp_path / "2layer_seed1" / "checkpoints.npz").stat().st_mtime_ns
    (tmp_path / "1layer_seed1" / "results.json").unlink()
    assert main(["icl-emergence", "--preset", "quick", "--out", str(tmp_path), "--seeds",
                 "1,2", "--resume"]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "2layer_seed1" / "checkpoints.npz").stat().st_mtime_ns == kept
    assert (tmp_path / "1layer_seed1" / "results.json").exists()
    for a, b in zip(again["readings"]["runs"], res["readings"]["runs"]):   # float32 reruns
        assert a.keys() == b.keys()                                         # agree to ~1e-8
        for key in a:
            assert a[key] == (pytest.approx(b[key], rel=1e-5) if isinstance(b[key], float)
                              else b[key]), key
    assert again["emergence_step"] == res["emergence_step"]


@pytest.mark.slow
def test_grokking_quick_preset(tmp_path):
    assert main(["grok", "--preset", "quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    mem, gen = res["memorization_step"], res["generalization_step"]
    assert mem is not None and gen is not None and gen > 5 * mem      # delayed generalisation
    assert res["final_train_acc"] > 0.99 and res["final_test_acc"] > 0.99
    assert res["weight_norm"]["final"] < res["weight_norm"]["max"]     # rises, then falls
    assert res["fourier_sparsity"]["final"] > res["fourier_sparsity"]["initial"]
    for name in ("grokking.png", "metrics.csv", "checkpoints.npz", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    curv = res["curvature"]                       # top Hessian eigenvalue over checkpoints
    assert len(curv["steps"]) >= 3 and all(np.isfinite(curv["top_hessian"]))
