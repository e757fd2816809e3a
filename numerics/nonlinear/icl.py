"""ICL emergence: attention-only softmax transformers on repeated random token sequences.

Each sequence repeats a block of ℓ random tokens (vocabulary V) up to 3·``block`` tokens, with
ℓ drawn per sequence from [block/2, block] so that no fixed positional offset predicts the
repeats. A model can predict a repeated token only in context, by finding the previous
occurrence of the current token and copying its successor (an induction head, which needs two
layers). ``icl_loss`` is the next-token loss on the targets after the first repetition starts
(positions ℓ+1 …); the emergence step is the first step at which it falls below
``threshold``; chance is ln V.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import require_torch
from .training import (Timer, analyse, curvature_summary, fall_step, first_step, load_run,
                       train, write_run)

PRESETS = {
    "quick": dict(steps=2500, record_every=50),
    "paper": dict(steps=6000, record_every=100, d_vocab=256, block=12),
}


@dataclass
class ICLConfig:
    n_layers: int = 2
    d_vocab: int = 128
    block: int = 8
    d_model: int = 48
    n_heads: int = 4
    d_head: int = 12
    lr: float = 3e-3
    weight_decay: float = 0.01
    batch: int = 64
    steps: int = 2500
    record_every: int = 50
    curvature_every: int = 4    # top Hessian eigenvalue on a fixed probe batch every 4 checkpoints
    threshold: float = 1.0      # below ln(block/2): copying any context token cannot reach it
    seed: int = 0


def sample(torch, cfg: ICLConfig, generator):
    """(tokens (batch, 3·block), in-context target mask (batch, 3·block − 1))."""
    n = 3 * cfg.block
    base = torch.randint(0, cfg.d_vocab, (cfg.batch, cfg.block), generator=generator)
    period = torch.randint(cfg.block // 2, cfg.block + 1, (cfg.batch, 1), generator=generator)
    pos = torch.arange(n)
    tokens = torch.gather(base, 1, pos % period)
    mask = pos[1:] >= period + 1                    # targets whose token repeats an earlier one
    return tokens, mask


def losses(torch, model, tokens, mask):
    """(mean next-token loss over all targets, mean over the in-context targets)."""
    logits = model(tokens[:, :-1])
    per = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                            tokens[:, 1:].reshape(-1), reduction="none")
    per = per.reshape(tokens.shape[0], -1)
    return per.mean(), per[mask].mean()


def run_one(cfg: ICLConfig, progress=None) -> dict:
    torch = require_torch()
    from .transformer import Transformer, TransformerConfig, top_hessian_eigenvalue
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model = Transformer(TransformerConfig(d_vocab=cfg.d_vocab, n_ctx=3 * cfg.block,
                                          d_model=cfg.d_model, n_heads=cfg.n_heads,
                                          d_head=cfg.d_head, n_layers=cfg.n_layers))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(_):
        loss, icl = losses(torch, model, *sample(torch, cfg, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "icl_loss": icl.item()}

    probe = sample(torch, cfg, torch.Generator().manual_seed(cfg.seed + 2))
    with Timer() as timer:
        record = train(model, step, cfg.steps, cfg.record_every, progress=progress,
                       curvature=lambda: top_hessian_eigenvalue(
                           model, lambda m: losses(torch, m, *probe)[0], seed=cfg.seed),
                       curvature_every=cfg.curvature_every)
    analysis = analyse(record, k=cfg.d_head)
    emergence = first_step(record.steps, record.metrics["icl_loss"], below=cfg.threshold)
    qk = [n for n in analysis if n.endswith("_QK")]
    erank = np.mean([analysis[n]["effective_rank"] for n in qk], axis=0)
    falls = {n: fall_step(record.checkpoint_steps, analysis[n]["subspace_distance"])
             for n in qk}
    result = {
        "n_layers": cfg.n_layers, "seed": cfg.seed, "emergence_step": emergence,
        "chance_loss": math.log(cfg.d_vocab), "final_icl_loss": record.metrics["icl_loss"][-1],
        "qk_effective_rank": {"initial": float(erank[0]), "min": float(erank.min()),
                              "min_step": int(record.checkpoint_steps[int(erank.argmin())]),
                              "final": float(erank[-1])},
        "qk_subspace_fall_steps": falls, "curvature": curvature_summary(record),
        "seconds": timer.seconds,
    }
    return {"config": cfg, "record": record, "analysis": analysis, "result": result}


def readings(runs: list[dict]) -> dict:
    """The paper's readings, checked on each run: (1) the QK effective rank dips around
    emergence in 2-layer models but not in 1-layer ones; (2) QK subspace distance falls before
    the loss does; (3, ours) the curvature (top Hessian eigenvalue) peaks near emergence."""
    out = []
    for r in runs:
        res = r["result"]
        e = res["qk_effective_rank"]
        dip = (e["initial"] - e["min"]) / e["initial"]
        entry = {"n_layers": res["n_layers"], "seed": res["seed"],
                 "emergence_step": res["emergence_step"], "qk_erank_relative_dip": dip,
                 "qk_erank_min_step": e["min_step"]}
        if res["emergence_step"] is not None:
            entry["erank_dip_near_emergence"] = \
                0.5 * res["emergence_step"] <= e["min_step"] <= 1.5 * res["emergence_step"]
            falls = [s for s in res["qk_subspace_fall_steps"].values() if s is not None]
            entry["subspace_falls_before_loss"] = bool(falls) and min(falls) <= res["emergence_step"]
            peak = res["curvature"].get("max_step")
            entry["curvature_max_step"] = peak
            entry["curvature_peak_near_emergence"] = peak is not None and \
                0.75 * res["emergence_step"] <= peak <= 1.5 * res["emergence_step"]
        out.append(entry)
    return {"runs": out}


def figures(runs: list[dict]) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for i, r in enumerate(runs):
        rec, res = r["record"], r["result"]
        label = f"{res['n_layers']}-layer, seed {res['seed']}"
        color = f"C{i}"
        axes[0].plot(rec.steps, rec.metrics["icl_loss"], color=color, label=label)
        if res["emergence_step"] is not None:
            for ax in axes:
                ax.axvline(res["emergence_step"], color=color, ls=":", lw=0.8)
        qk = [n for n in r["analysis"] if n.endswith("_QK")]
        axes[1].plot(rec.checkpoint_steps,
                     np.mean([r["analysis"][n]["effective_rank"] for n in qk], axis=0),
                     color=color, label=label)
        axes[2].plot(rec.checkpoint_steps,
                     np.mean([r["analysis"][n]["subspace_distance"] for n in qk], axis=0),
                     color=color, label=label)
        axes[3].plot(rec.curvature_steps, rec.curvature, "o-", ms=3, color=color, label=label)
    axes[0].axhline(runs[0]["config"].threshold, color="grey", lw=0.5)
    axes[0].set_ylabel("in-context loss (repeated tokens)")
    axes[1].set_ylabel("mean effective rank of QK (per head)")
    axes[2].set_ylabel("mean QK subspace distance to final")
    axes[3].set_ylabel("top Hessian eigenvalue (probe batch)")
    for ax in axes:
        ax.set_xlabel("step (dotted: emergence)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    sv = plt.figure(figsize=(6, 4))
    r = next((r for r in runs if r["result"]["n_layers"] == 2), runs[0])
    name = [n for n in r["analysis"] if n.endswith("_QK")][-1]
    plt.plot(r["record"].checkpoint_steps, r["analysis"][name]["singular_values"])
    plt.xlabel("step")
    plt.ylabel(f"singular values of {name}")
    return {"icl_emergence.png": fig, "singular_values.png": sv}


def run(preset: str, out, seeds=(0,), layers=(1, 2), progress=None,
        resume: bool = False) -> dict:
    """One run per (layers, seed), each written to its folder as soon as it finishes, then the
    readings across runs; ``resume`` reuses finished runs with the same config."""
    from pathlib import Path

    from ...theory.errors import InputError
    if preset not in PRESETS:
        raise InputError("--preset", f"must be one of {sorted(PRESETS)}, got {preset!r}")
    out = Path(out)
    runs = []
    with Timer() as timer:
        for n_layers in layers:
            for seed in seeds:
                cfg = replace(ICLConfig(), n_layers=n_layers, seed=seed, **PRESETS[preset])
                sub = out / f"{n_layers}layer_seed{seed}"
                r = load_run(sub, cfg) if resume else None
                if r is None:
                    tell = None if progress is None else \
                        (lambda s, n, L=n_layers, sd=seed: progress(f"{L}-layer seed {sd}", s, n))
                    r = run_one(cfg, progress=tell)
                    write_run(sub, r["config"], r["record"], r["analysis"], r["result"], {},
                              r["result"]["seconds"])
                runs.append(r)
    results = {"preset": preset, "runs": [r["result"] for r in runs], "readings": readings(runs),
               "emergence_step": {f"{r['result']['n_layers']}-layer/seed{r['result']['seed']}":
                                  r["result"]["emergence_step"] for r in runs}}
    config = {"preset": preset, "seeds": list(seeds), "layers": list(layers),
              "runs": [asdict(r["config"]) for r in runs]}
    write_run(out, config, None, {}, results, figures(runs), timer.seconds)
    return results
