"""Grokking on modular addition (after Nanda et al. 2023).

Inputs (a, b, =) with a, b ∈ Z_p, target (a + b) mod p read at the last position; one layer
(attention with 4 heads + ReLU MLP, no LayerNorm, learned positions, untied embed/unembed);
full-batch AdamW with strong weight decay on a fraction of all p² pairs. Memorisation step:
first epoch with train accuracy ≥ 99 %; generalisation step: first epoch with test accuracy
≥ 99 %. The embedding's Fourier sparsity is the share of its power in the top-k frequencies of
the discrete Fourier transform over Z_p (k = 10 % of frequencies).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import require_torch
from .training import (Timer, analyse, curvature_summary, fall_step, first_step, load_run,
                       train, write_run)

PRESETS = {
    "quick": dict(p=31, train_fraction=0.5, d_model=64, d_head=16, d_mlp=256, lr=3e-3,
                  epochs=8000),
    "paper": dict(p=113, train_fraction=0.3, epochs=20000),
}


@dataclass
class GrokConfig:
    p: int = 59
    train_fraction: float = 0.4
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple = (0.9, 0.98)
    epochs: int = 8000
    eval_every: int = 10
    record_every: int = 100
    curvature_every: int = 10   # top Hessian eigenvalue of the training loss every 10 checkpoints
    stop_after_generalization: int = 500     # epochs kept after test accuracy ≥ 99 %
    seed: int = 0


def dataset(torch, cfg: GrokConfig):
    a, b = np.meshgrid(np.arange(cfg.p), np.arange(cfg.p), indexing="ij")
    tokens = np.stack([a.ravel(), b.ravel(), np.full(a.size, cfg.p)], axis=1)
    labels = (a.ravel() + b.ravel()) % cfg.p
    order = np.random.default_rng(cfg.seed).permutation(a.size)
    n_train = int(round(cfg.train_fraction * a.size))
    split = {"train": order[:n_train], "test": order[n_train:]}
    return {k: (torch.as_tensor(tokens[i]), torch.as_tensor(labels[i])) for k, i in split.items()}


def fourier_sparsity(W_E: np.ndarray, p: int, share: float = 0.1) -> float:
    """Share of the embedding's power (over the p number tokens) in its top ⌈share·p⌉ DFT
    frequencies (conjugate frequencies counted together)."""
    power = np.abs(np.fft.rfft(W_E[:p], axis=0)) ** 2            # (p//2+1, d_model)
    per_freq = power.sum(axis=1)
    per_freq[1:] *= 2
    k = max(1, int(np.ceil(share * len(per_freq))))
    return float(np.sort(per_freq)[::-1][:k].sum() / per_freq.sum())


def run_one(cfg: GrokConfig, progress=None) -> dict:
    torch = require_torch()
    from .transformer import Transformer, TransformerConfig, top_hessian_eigenvalue
    torch.manual_seed(cfg.seed)
    data = dataset(torch, cfg)
    model = Transformer(TransformerConfig(d_vocab=cfg.p + 1, n_ctx=3, d_model=cfg.d_model,
                                          n_heads=cfg.n_heads, d_head=cfg.d_head, n_layers=1,
                                          d_mlp=cfg.d_mlp, init_std=1 / np.sqrt(cfg.d_model)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            betas=cfg.betas)
    ce = torch.nn.functional.cross_entropy

    def logits(split):
        x, _ = data[split]
        return model(x)[:, -1, : cfg.p]

    def step(_):
        out = logits("train")
        loss = ce(out, data["train"][1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"train_loss": loss.item(),
                "train_acc": (out.argmax(-1) == data["train"][1]).double().mean().item()}

    def evaluate():
        with torch.no_grad():
            out = logits("test")
            return {"test_loss": ce(out, data["test"][1]).item(),
                    "test_acc": (out.argmax(-1) == data["test"][1]).double().mean().item(),
                    "fourier_sparsity": fourier_sparsity(model.W_E.detach().numpy(), cfg.p)}

    def stop(record):
        g = first_step(record.steps, record.metrics["test_acc"], above=0.99)
        return g is not None and record.steps[-1] >= g + cfg.stop_after_generalization

    with Timer() as timer:
        record = train(model, step, cfg.epochs, cfg.record_every, eval_every=cfg.eval_every,
                       eval_fn=evaluate, stop=stop, progress=progress,
                       curvature=lambda: top_hessian_eigenvalue(
                           model, lambda m: ce(m(data["train"][0])[:, -1, : cfg.p],
                                               data["train"][1]), seed=cfg.seed),
                       curvature_every=cfg.curvature_every)
    analysis = analyse(record, k=8)
    m = record.metrics
    memorization = first_step(record.steps, m["train_acc"], above=0.99)
    generalization = first_step(record.steps, m["test_acc"], above=0.99)
    ov = [n for n in analysis if n.endswith("_OV")]
    ov_fall = [fall_step(record.checkpoint_steps, analysis[n]["subspace_distance"], level=0.1)
               for n in ov]
    norms = np.array(m["weight_norm"])
    result = {
        "seed": cfg.seed, "p": cfg.p, "memorization_step": memorization,
        "generalization_step": generalization, "final_train_acc": m["train_acc"][-1],
        "final_test_acc": m["test_acc"][-1], "epochs_run": record.steps[-1] + 1,
        "weight_norm": {"initial": float(norms[0]), "max": float(norms.max()),
                        "max_step": int(record.steps[int(norms.argmax())]),
                        "final": float(norms[-1])},
        "fourier_sparsity": {"initial": m["fourier_sparsity"][0],
                             "final": m["fourier_sparsity"][-1]},
        "ov_subspace_fall_steps": ov_fall,        # distance to the final subspace < 0.1 for good
        "curvature": curvature_summary(record),
        "seconds": timer.seconds,
    }
    if generalization is not None and memorization is not None:
        falls = [s for s in ov_fall if s is not None]
        result["ov_distance_falls_late"] = bool(falls) and \
            np.median(falls) > (memorization + generalization) / 2
    return {"config": cfg, "record": record, "analysis": analysis, "result": result}


def figures(r: dict) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rec, res, an = r["record"], r["result"], r["analysis"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (a, b), (c, e) = axes
    a.plot(rec.steps, rec.metrics["train_acc"], label="train accuracy")
    a.plot(rec.steps, rec.metrics["test_acc"], label="test accuracy")
    b.semilogy(rec.steps, rec.metrics["train_loss"], label="train loss")
    b.semilogy(rec.steps, rec.metrics["test_loss"], label="test loss")
    c.plot(rec.steps, rec.metrics["weight_norm"], color="k", label="weight norm")
    c2 = c.twinx()
    c2.plot(rec.steps, rec.metrics["fourier_sparsity"], color="C2", label="Fourier sparsity")
    for name in ("W_E", "W_U", "L0H0_QK", "L0H0_OV"):
        e.plot(rec.checkpoint_steps, an[name]["subspace_distance"], label=name)
    e.set_ylabel("top-8 subspace distance to final")
    for ax in axes.ravel():
        for step, style in ((res["memorization_step"], "--"), (res["generalization_step"], ":")):
            if step is not None:
                ax.axvline(step, color="grey", ls=style, lw=0.8)
        ax.set_xlabel("epoch (dashed: memorisation, dotted: generalisation)")
        ax.legend(fontsize=7, loc="center right")
    c2.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Grokking (a + b) mod {res['p']}, seed {res['seed']}")
    fig.tight_layout()
    sv, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, name in zip(axes, ("W_E", "L0H0_OV")):
        ax.plot(rec.checkpoint_steps, an[name]["singular_values"])
        ax.set_title(f"singular values of {name}")
        ax.set_xlabel("epoch")
    er = plt.figure(figsize=(6, 4))
    for name in ("W_E", "W_U", "L0H0_QK", "L0H0_OV"):
        plt.plot(rec.checkpoint_steps, an[name]["effective_rank"], label=name)
    plt.xlabel("epoch")
    plt.ylabel("effective rank")
    plt.legend(fontsize=7)
    return {"grokking.png": fig, "singular_values.png": sv, "effective_rank.png": er}


def run(preset: str, out, seeds=(0,), progress=None, resume: bool = False) -> dict:
    """One run per seed, each written to its folder as soon as it finishes; ``resume`` reuses
    finished runs with the same config instead of training them again."""
    from ...theory.errors import InputError
    if preset not in PRESETS:
        raise InputError("--preset", f"must be one of {sorted(PRESETS)}, got {preset!r}")
    out = Path(out)
    results = []
    for seed in seeds:
        cfg = replace(GrokConfig(), seed=seed, **PRESETS[preset])
        sub = out / f"seed{seed}" if len(seeds) > 1 else out
        r = load_run(sub, cfg) if resume else None
        if r is None:
            tell = None if progress is None else \
                (lambda s, n, sd=seed: progress(f"grokking seed {sd}", s, n))
            r = run_one(cfg, progress=tell)
            write_run(sub, cfg, r["record"], r["analysis"], r["result"], figures(r),
                      r["result"]["seconds"])
        results.append(r["result"])
    return results[0] if len(results) == 1 else {"runs": results}
