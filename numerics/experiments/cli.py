"""The icldyn command.

commands:
  run             the main job: exact flow, expected GD, SGD and the SME, report folder
  derive          a model's equations as LaTeX (--all: every model's document)
  sweep           theory and SGD over a grid, local processes or Dask, resumable
  risks           the learned algorithm's in-context risk against OLS and Bayes ridge
  task-diversity  pretraining on P tasks: exact finite-d curves against Lu et al.
  critical-sets   a model's critical sets: loss, Hessian index, kind, learned algorithm
  cache           show or clear the derivation cache
  grok            grokking on (a + b) mod p (needs torch)
  icl-emergence   ICL emergence in attention-only transformers (needs torch)

Every command takes --help; bad options stop with exit code 2 and one line naming the
option and the fix."""

from __future__ import annotations

import argparse
import inspect
import sys
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from ...theory.errors import DivergenceError, InputError, check_int


def _progress():
    """A rich progress display (quiet when stdout is not a terminal) and its update callback."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(),      # "0/?" without a total
                   console=console, disable=not console.is_terminal)
    tasks = {}

    def update(stage, done, total):
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


@contextmanager
def _stage(update, stage: str):
    """One step of unknown length on the display of ``_progress``: a pulsing bar with the
    elapsed time while the block runs, full when it ends."""
    update(stage, 0, None)
    yield
    update(stage, 1, 1)


def cmd_run(args) -> int:
    from .mainjob import RunConfig, run
    from .report import write_report
    from .runfolder import STAGES, staged_folder

    from .sweep import spectrum_values

    overrides = {f.name: getattr(args, f.name) for f in fields(RunConfig)
                 if getattr(args, f.name, None) is not None}
    d = check_int("--d", overrides.get("d", RunConfig.d))
    if args.spectrum is not None:
        overrides["spectrum"] = tuple(spectrum_values(args.spectrum, d))
    elif d != RunConfig.d:          # the preset's spectrum 2·0.5^k has d = 4 values
        overrides["spectrum"] = tuple(2 * spectrum_values("geom:0.5", d))
    config = RunConfig(**overrides)
    config.validate()
    bar, update = _progress()
    with staged_folder(args.out, resume=args.resume, overwrite=args.overwrite) as staging:
        with bar:
            outcome = run(config, progress=update, stages=staging / STAGES, resume=args.resume)
        write_report(staging, outcome)
    report = Path(args.out) / "report.md"
    res = outcome["results"]
    print(f"report: {report}")
    agr, cons = res["agreement"], res["conserved"]
    print(f"loss {res['loss']['initial']:.4f} -> flow {res['loss']['final_flow']:.5f}, "
          f"expected GD {res['loss']['final_gd']:.5f}; SGD over the last {agr['late_steps']} "
          f"steps {agr['late_sgd']:.5f} ± {agr['late_sgd_se']:.5f} (SE over seeds), "
          f"{agr['late_rel_dev']:+.2%} ± {agr['late_rel_dev_se']:.2%} from expected GD "
          f"(the gradient noise GD lacks); block z vs expected GD: mean "
          f"{agr['mean_z']:.2f}, max |z| {agr['max_abs_z']:.2f} over {len(agr['block_z'])} blocks")
    sme = res["sme"]
    if sme is not None:
        print(f"SME (derived gradient covariance) vs SGD held-out loss: block z mean "
              f"{sme['mean_z']:.2f}, max |z| {sme['max_abs_z']:.2f} over "
              f"{len(sme['block_z'])} blocks; last {agr['late_steps']} steps SME "
              f"{sme['late_sme']:.5f}, SGD {sme['late_sgd']:.5f} ± {sme['late_sgd_se']:.5f}")
        print(f"conserved {cons['name']}: SGD change {cons['sgd_mean_total_change']:.4f} ± "
              f"{cons['sgd_total_change_se']:.4f}, predicted by the gradient covariance "
              f"{cons['sgd_predicted_total_change']:.4f} (GD alone "
              f"{cons['gd_total_change']:.2e})")
    for st in res["stages"]:
        predicted = (f"predicted {st['t_half_predicted']:.2f}, " if "t_half_predicted" in st
                     else "")
        print(f"  mode {st['mode']} (s={st['s']:g}): t½ {predicted}exact flow "
              f"{st['t_half_exact_flow']:.2f}, SGD {st['t_half_sgd']:.2f}")
    return 0


def cmd_derive(args) -> int:
    import sympy as sp

    from ...theory import ICLData, derive, models

    from .runfolder import check_file, prepare_folder

    if args.all:
        return _derive_all(prepare_folder(args.out, reuse=True))
    if args.latex:
        check_file(args.latex, "--latex")
    if args.layers < 1:
        raise InputError("--layers", f"must be at least 1, got {args.layers}")
    cov = args.cov
    d_y = args.d if args.tasks == "diagonal" else args.d_y
    if args.N is not None and args.N < 1:
        raise InputError("--N", f"must be a positive integer, got {args.N}")
    N = sp.Symbol("N", positive=True, integer=True) if args.N is None else args.N
    data = ICLData(d=args.d, N=N, Lambda=cov,
                   d_y=d_y, tasks=args.tasks, noise=sp.Symbol("sigma", nonnegative=True))
    model = _model(args, d_y)
    if args.layers > 1 or not args.query_in_keys or args.negate_readout:
        model = models.Stack([model] * args.layers, query_in_keys=args.query_in_keys,
                             negate_readout=args.negate_readout)
    bar, update = _progress()
    with bar, _stage(update, f"deriving {model!r}"):
        tex = derive(model, data).to_latex(standalone=bool(args.latex))
    if args.latex:
        from ...files import write_atomic
        write_atomic(Path(args.latex), tex + "\n")
        print(f"wrote {args.latex}")
    else:
        print(tex)
    return 0


def _derive_all(out: Path) -> int:
    from ...theory.catalogue import documents, index
    from ...files import write_atomic

    bar, update = _progress()
    with bar, _stage(update, "deriving every model's document"):
        docs = documents()
    for name, text in docs.items():
        write_atomic(out / name, text)
    write_atomic(out / "README.md", index(docs))
    print(f"wrote {len(docs)} documents and README.md to {out}")
    return 0


def _seeds(text: str) -> tuple:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise InputError("--seeds", f"must be comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise InputError("--seeds", f"must be non-negative integers, got {text!r}")
    return seeds


def cmd_grok(args) -> int:
    from ..nonlinear.grok import run
    bar, update = _progress()
    with bar:
        res = run(args.preset, Path(args.out), seeds=_seeds(args.seeds), progress=update,
                  resume=args.resume)
    for r in res.get("runs", [res]):
        print(f"seed {r['seed']}: memorisation at epoch {r['memorization_step']}, "
              f"generalisation at epoch {r['generalization_step']}, final train/test accuracy "
              f"{r['final_train_acc']:.3f}/{r['final_test_acc']:.3f}, OV subspace distance falls "
              f"at {r['ov_subspace_fall_steps']}")
    print(f"run folder: {args.out}")
    return 0


def cmd_icl(args) -> int:
    from ..nonlinear.icl import run
    bar, update = _progress()
    with bar:
        res = run(args.preset, Path(args.out), seeds=_seeds(args.seeds), progress=update,
                  resume=args.resume)
    for r in res["readings"]["runs"]:
        print(f"{r['n_layers']}-layer seed {r['seed']}: emergence step {r['emergence_step']}, "
              f"QK effective-rank dip {r['qk_erank_relative_dip']:.0%}"
              + (f", subspace falls before loss: {r['subspace_falls_before_loss']}, "
                 f"curvature peaks at step {r['curvature_max_step']}"
                 if "subspace_falls_before_loss" in r else ""))
    print(f"run folder: {args.out}")
    return 0


def _grid(text: str, kind, option: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(option, f"must be comma-separated {kind.__name__} values, "
                         f"got {text!r}") from None


SWEEP_AXES = (("d", int), ("N", int), ("spectrum", str), ("noise", float),
              ("init_scale", float), ("lr", float), ("batch", int), ("seed", int),
              ("task_count", int))
SWEEP_SETTINGS = (("steps", int), ("replicas", int), ("mode", str), ("model", str),
                  ("tasks", str), ("backend", str))


SWEEP_HELP = {"d": "input dimensions", "N": "context lengths",
              "spectrum": "Λ's eigenvalues (iso, geom:r or a/b/…)", "noise": "label noise σ",
              "init_scale": "initial parameter scales", "lr": "learning rates",
              "batch": "SGD batch sizes", "seed": "seeds",
              "task_count": "finite task sets of P tasks (0: the whole family)",
              "steps": "steps per point", "replicas": "SGD seeds per point",
              "mode": "what to compute at each point", "model": "the attention layer",
              "tasks": "task law", "backend": "compiled code of the theory"}
def _sweep_choices() -> dict:
    from ...theory.models import MODELS
    from ..compiled.codegen import BACKENDS
    from .sweep import MODES
    return {"mode": MODES, "tasks": ("gaussian", "diagonal"), "model": tuple(sorted(MODELS)),
            "backend": BACKENDS}


def cmd_sweep(args) -> int:
    from .sweep import SweepSpec, read_spec, run_sweep

    given = {name: _grid(getattr(args, name), kind, f"--{name.replace('_', '-')}")
             for name, kind in SWEEP_AXES if getattr(args, name) is not None}
    given.update({name: getattr(args, name) for name, _ in SWEEP_SETTINGS
                  if getattr(args, name) is not None})
    out = Path(args.out)
    saved = read_spec(out) if args.resume else None      # None: missing or unreadable
    spec = SweepSpec.from_json({**saved.to_json(), **given}) if saved else SweepSpec(**given)
    bar, update = _progress()
    with bar:
        summary = run_sweep(spec, out, resume=args.resume, workers=args.workers,
                            scheduler=args.scheduler, progress=update)
    print(f"{summary['points']} points ({summary['computed']} computed, {summary['reused']} "
          f"reused, {summary['failed_or_diverged']} failed or diverged) in "
          f"{summary['wall_s']:.1f} s on {summary['executor']}")
    print(f"table: {out / 'results.csv'}; figure: {out / 'summary.png'}")
    if summary["failed"]:
        print(f"icldyn sweep: {summary['failed']} point(s) failed (see status in results.csv); "
              "rerun with --resume to retry them", file=sys.stderr)
        return 1
    return 0


def _model(args, d_y: int = 1):
    """The model named by --model with --heads / --rank where it has them."""
    from ...theory import models
    if args.model not in models.MODELS:
        raise InputError("--model", f"unknown model {args.model!r}; choose from "
                         f"{sorted(models.MODELS)}")
    cls = models.MODELS[args.model]
    takes = [o for o in ("heads", "rank") if o in inspect.signature(cls).parameters]
    for option in ("heads", "rank"):
        if getattr(args, option) is not None and option not in takes:
            raise InputError(f"--{option}", f"{args.model} has no {option}; drop --{option} "
                             "(MultiHead has heads, SeparateKQ heads and rank)")
    shape = {o: getattr(args, o) for o in takes if getattr(args, o) is not None}
    return cls(args.d, d_y=d_y, **shape)


def cmd_critical_sets(args) -> int:
    import numpy as np

    from ...theory import ICLData, derive
    from .runfolder import prepare_folder, provenance, write_csv, write_json
    from .sweep import spectrum_values

    d_y = args.d_y if args.d_y is not None else args.d if args.tasks == "diagonal" else 1
    model = _model(args, d_y)
    data = ICLData(d=args.d, N=args.N, Lambda=np.diag(spectrum_values(args.spectrum, args.d)),
                   d_y=d_y, tasks=args.tasks, noise=args.noise)
    prepare_folder(args.out, reuse=args.overwrite)
    bar, update = _progress()
    with bar:
        with _stage(update, f"deriving {model!r}"):
            der = derive(model, data)
        with _stage(update, "critical sets"):
            sets = der.fixed_points()
    best = min(float(fp.loss) for fp in sets)
    rows = [{"name": fp.name, "loss": float(fp.loss), "hessian_index": fp.hessian_index,
             "kind": fp.kind, "escape_order": fp.escape.order if fp.escape else None,
             "loss_gap": float(fp.loss) - best, "equations": "; ".join(map(str, fp.equations)),
             "evidence": fp.evidence,
             "algorithm": fp.algorithm.description if fp.algorithm else None}
            for fp in sets]
    print(f"critical sets of {model!r} on {data!r}, Λ = diag({args.spectrum})")
    print(f"{'L':>10} {'L - min':>10} {'index':>6}  {'kind':<22} set")
    for r in rows:
        kind = r["kind"] + (f" (k = {r['escape_order']})" if r["escape_order"] else "")
        print(f"{r['loss']:>10.6f} {r['loss_gap']:>10.6f} {str(r['hessian_index']):>6}  "
              f"{kind:<22} {r['name']}")
        if r["algorithm"]:
            print(f"{'':>30}learned algorithm: {r['algorithm']}")
    out = Path(args.out)
    config = {"model": repr(model), "d": args.d, "d_y": d_y, "tasks": args.tasks,
              "spectrum": args.spectrum, "N": args.N, "noise": args.noise}
    write_json(out / "results.json", {"config": config, "provenance": provenance(),
                                      "sets": rows})
    write_csv(out / "critical_sets.csv", rows,
              ("name", "loss", "loss_gap", "hessian_index", "kind", "escape_order"))
    print(f"run folder: {out}")
    return 0


RISK_COLUMNS = ("N", "theory", "learned", "learned_se", "ols", "ols_se", "bayes", "bayes_se")


def cmd_risks(args) -> int:
    import numpy as np

    from .risks import incontext_risks
    from .runfolder import prepare_folder, provenance, write_csv, write_json
    from .sweep import spectrum_values

    model = _model(args)
    Ns = _grid(args.N, int, "--N")
    Lam = np.diag(spectrum_values(args.spectrum, args.d))
    prepare_folder(args.out, reuse=args.overwrite)
    bar, update = _progress()
    with bar:
        rows = incontext_risks(args.d, Lam, Ns, noise=args.noise, prompts=args.prompts,
                               seed=args.seed, model=model, progress=update)
    out = Path(args.out)
    config = {"model": repr(model), "d": args.d, "spectrum": args.spectrum, "N": list(Ns),
              "noise": args.noise, "prompts": args.prompts, "seed": args.seed}
    write_json(out / "results.json", {"config": config, "provenance": provenance(),
                                      "rows": rows})
    table = []
    print(f"in-context risk ½E(ŷ − y_q)² of {model!r}'s learned algorithm "
          f"(Monte Carlo: {args.prompts} prompts per N, seed {args.seed})")
    print(f"{'N':>5} {'derived':>9} {'learned (MC)':>18} {'OLS':>18} {'Bayes ridge':>18}")
    for r in rows:
        cells = [r["learned_mc"], r["ols_mc"], r["bayes_mc"]]
        print(f"{r['N']:>5} {r['theory']:>9.5f} " + " ".join(
            f"{m:>9.5f} ± {se:<6.5f}" for m, se in cells))
        table.append(dict(zip(RISK_COLUMNS, [r["N"], r["theory"]]
                              + [v for c in cells for v in c])))
    write_csv(out / "risks.csv", table, RISK_COLUMNS)
    print(f"run folder: {out}")
    return 0


def cmd_task_diversity(args) -> int:
    from .taskdiversity import write_task_diversity

    bar, update = _progress()
    with bar:
        res = write_task_diversity(
            args.out, _grid(args.d, int, "--d"), _grid(args.kappa, float, "--kappa"),
            _grid(args.alpha, float, "--alpha"), _grid(args.rho, float, "--rho"), args.draws,
            args.seed, args.prompts, progress=update,
            parameterizations=args.parameterizations)
    print("exact finite-d e_ICL (fresh tasks) and e_IDG (training tasks) vs Lu et al.'s "
          "asymptotic e_ICL (τ = ∞), e = E(ŷ − y)²")
    print(f"{'d':>4} {'α':>5} {'ρ':>5} {'κ':>6} {'e_ICL':>17} {'asymptotic':>10} "
          f"{'diff':>8} {'e_IDG':>17}")
    for r in res["rows"]:
        print(f"{r['d']:>4} {r['alpha']:>5g} {r['rho']:>5g} {r['kappa']:>6g} "
              f"{r['e_icl']:>8.5f} ± {r['e_icl_se']:<6.5f} {r['e_asymptotic']:>10.5f} "
              f"{r['diff']:>+8.5f} {r['e_idg']:>8.5f} ± {r['e_idg_se']:<6.5f}")
    for r in res.get("parameterizations", []):
        print(f"{r['model']:<40} {r['family']:<8} P = {r['P']:<3} train {r['train']:.4f} "
              f"test {r['test']:.4f} ± {r['test_se']:.4f} (½E(ŷ − y)²)")
    print(f"run folder: {args.out}")
    return 0


def cmd_cache(args) -> int:
    from ...theory.cache import cache_info, clear_cache

    if args.action == "clear":
        print(f"removed {clear_cache()} files from {cache_info()['dir']}")
        return 0
    info = cache_info()
    print(f"derivation cache: {info['dir'] or 'off'} (code version {info['code_version']})")
    for kind, row in info["kinds"].items():
        print(f"  {kind}: {row['entries']} files, {row['bytes'] / 1024:.1f} KiB")
    return 0


def _model_arguments(p: argparse.ArgumentParser, d: int) -> None:
    """--model, --heads, --rank (read by ``_model``), --d and --spectrum (Λ's eigenvalues)."""
    from ...theory.models import MODELS
    p.add_argument("--model", default="Merged", choices=sorted(MODELS),
                   help="the attention layer (default Merged)")
    p.add_argument("--heads", type=int, default=None, help="MultiHead / SeparateKQ heads "
                   "(default 1)")
    p.add_argument("--rank", type=int, default=None, help="SeparateKQ key-query rank "
                   "(default 1)")
    p.add_argument("--d", type=int, default=d, help=f"input dimension (default {d})")
    p.add_argument("--spectrum", default="geom:0.5",
                   help="Λ's eigenvalues: iso, geom:r or a/b/… (default geom:0.5)")


def _overwrite_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out although it holds files (its results are replaced)")


def _pdf_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pdf", action="store_true", help="also write every figure as PDF")


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, naming the option (exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The ``icldyn`` argument parser: one subcommand per job (run, derive, sweep, risks,
    task-diversity, critical-sets, cache, grok, icl-emergence), each with its options' help
    and defaults and its handler (``cmd_*``) as the ``func`` default; usage errors are one line
    naming the option (exit code 2).

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> from icldyn.numerics.experiments.cli import parser
    >>> args = parser().parse_args(["derive", "--model", "FullLSA", "--d", "3", "--N", "8"])
    >>> args.model, args.d, args.N, args.cov, args.func.__name__
    ('FullLSA', 3, 8, 'full', 'cmd_derive')
    >>> parser().parse_args(["derive", "--model", "Transformer"])
    Traceback (most recent call last):
        ...
    SystemExit: 2
    """
    from ..compiled.codegen import BACKENDS
    from .mainjob import MODEL_NAMES, TASKS, RunConfig
    from .sweep import SweepSpec

    p = _Parser(prog="icldyn", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)
    r = sub.add_parser("run", help="the main job: derive, integrate, simulate SGD and the SME, "
                                   "report (default: the paper's setting)",
                       description="The main job: exact flow and expected GD, SGD on the actual "
                       "network, the SME with the derived gradient covariance, report folder.")
    r.add_argument("--out", default="runs/default", help="run folder (default runs/default)")
    defaults = RunConfig()
    r.add_argument("--model", default=None, choices=MODEL_NAMES,
                   help=f"the attention layer (default {defaults.model}; one head, rank 1)")
    r.add_argument("--layers", type=int, default=None,
                   help=f"a residual stack of this many layers of --model (default "
                        f"{defaults.layers})")
    r.add_argument("--tasks", default=None, choices=TASKS,
                   help=f"diagonal: vector tasks in Λ's eigenbasis, d_y = d (the paper's); "
                        f"gaussian: scalar tasks w ~ N(0, I) (default {defaults.tasks})")
    r.add_argument("--d", type=int, default=None, help=f"input dimension (default {defaults.d})")
    r.add_argument("--spectrum", default=None,
                   help="Λ's eigenvalues: a/b/c/… (d of them), iso or geom:r; Λ is rotated "
                        "by --rotation-seed (default "
                        f"{'/'.join(f'{x:g}' for x in defaults.spectrum)}; with another --d: "
                        "2·0.5^k)")
    for name, kind, text in (
            ("N", int, "context length"), ("lr", float, "learning rate η"),
            ("t_end", float, "horizon in t = η × steps (t_end/η whole, divisible by "
                             "--record-every)"),
            ("batch", int, "prompts per SGD step B"), ("seeds", int, "SGD runs (≥ 2)"),
            ("validation", int, "held-out prompts per SGD seed, drawn once"),
            ("replicas", int, "SME replicas (≥ 2)"), ("seed", int, "seed of SGD and SME"),
            ("rotation_seed", int, "seed of Λ's eigenbasis"),
            ("record_every", int, "record parameters every this many steps"),
            ("init_scale", float, "every parameter matrix starts as this times I"),
            ("noise", float, "label noise σ")):
        r.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                       help=f"{text} (default {getattr(defaults, name)})")
    r.add_argument("--sme", dest="sme", action=argparse.BooleanOptionalAction, default=None,
                   help="derive the gradient covariance and run the SME and the drift "
                        "prediction (default: for one layer; a stack's symbolic covariance "
                        "takes many minutes)")
    r.add_argument("--backend", default=None, choices=BACKENDS,
                   help=f"compiled code (default {defaults.backend})")
    r.add_argument("--resume", action="store_true",
                   help="reuse the finished SGD ensemble saved in --out (same settings)")
    _overwrite_argument(r)
    _pdf_argument(r)
    r.set_defaults(func=cmd_run)
    dv = sub.add_parser("derive", help="derive a model's equations and print/write LaTeX")
    dv.add_argument("--model", default="Merged", choices=MODEL_NAMES,
                    help="the attention layer (default Merged)")
    dv.add_argument("--cov", default="full", choices=["diag", "full", "iso"],
                    help="symbolic Λ: diagonal, full or λI (default full)")
    dv.add_argument("--N", type=int, default=None,
                    help="context length (default: the symbol N, every N at once)")
    dv.add_argument("--tasks", default="gaussian", choices=["gaussian", "diagonal", "finite"],
                    help="gaussian task rows; diagonal: the paper's, in Λ's eigenbasis "
                         "(d_y = d); finite: W uniform over P task matrices W_1..W_P (kept "
                         "symbolic) (default gaussian)")
    dv.add_argument("--d", type=int, default=2, help="input dimension (default 2)")
    dv.add_argument("--d-y", dest="d_y", type=int, default=1,
                    help="outputs (default 1; d for --tasks diagonal)")
    dv.add_argument("--heads", type=int, default=None, help="heads of MultiHead/SeparateKQ "
                    "(default 1)")
    dv.add_argument("--rank", type=int, default=None, help="key-query rank of SeparateKQ "
                    "(default 1)")
    dv.add_argument("--layers", type=int, default=1,
                    help="a stack of this many layers of --model (default 1)")
    dv.add_argument("--no-query-in-keys", dest="query_in_keys", action="store_false",
                    help="stack: drop the query from the keys (Ahn et al.'s mask)")
    dv.add_argument("--negate-readout", action="store_true",
                    help="stack: read ŷ as minus the query's y-rows (Ahn et al.)")
    dv.add_argument("--latex", default=None,
                    help="write the LaTeX to this file as a standalone document "
                         "(default: print the equations)")
    dv.add_argument("--all", action="store_true",
                    help="regenerate every model's LaTeX document and the index in --out")
    dv.add_argument("--out", default="derivations", help="folder for --all (default derivations)")
    dv.set_defaults(func=cmd_derive)
    sw = sub.add_parser("sweep", help="theory and SGD simulation over a grid (local processes "
                                      "or a Dask cluster), resumable")
    spec = SweepSpec()
    show = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # noqa: E731
    for name, kind in SWEEP_AXES:
        sw.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                        help=f"{SWEEP_HELP[name]}: comma-separated {kind.__name__} values "
                             f"(default {show(getattr(spec, name))})")
    for name, kind in SWEEP_SETTINGS:
        sw.add_argument(f"--{name}", dest=name, type=kind, default=None,
                        choices=_sweep_choices().get(name),
                        help=f"{SWEEP_HELP[name]} (default {getattr(spec, name)})")
    sw.add_argument("--workers", type=int, default=None, help="local processes (default: cores)")
    sw.add_argument("--scheduler", default=None,
                    help="Dask scheduler address tcp://host:port (default: none, local processes)")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    sw.add_argument("--out", default="runs/sweep", help="run folder (default runs/sweep)")
    _pdf_argument(sw)
    sw.set_defaults(func=cmd_sweep)
    rk = sub.add_parser("risks", help="in-context risk of a model's learned algorithm against "
                                      "N, with OLS and the Bayes-optimal ridge (scalar tasks)")
    _model_arguments(rk, d=3)
    rk.add_argument("--N", default="1,2,4,8,16,32",
                    help="comma-separated context lengths (default 1,2,4,8,16,32)")
    rk.add_argument("--noise", type=float, default=0.1, help="label noise σ (default 0.1)")
    rk.add_argument("--prompts", type=int, default=20000,
                    help="Monte-Carlo prompts per N (default 20000)")
    rk.add_argument("--seed", type=int, default=0, help="Monte-Carlo seed (default 0)")
    rk.add_argument("--out", default="runs/risks", help="run folder (default runs/risks)")
    _overwrite_argument(rk)
    rk.set_defaults(func=cmd_risks)
    td = sub.add_parser("task-diversity", help="Merged pretrained on P tasks, tested on the "
                        "family: exact finite-d curves against Lu et al.'s asymptotic theory")
    td.add_argument("--d", default="25,50,100,200",
                    help="comma-separated dimensions (default 25,50,100,200)")
    td.add_argument("--kappa", default="0.25,0.5,1,2,4",
                    help="task diversities P/d (default 0.25,0.5,1,2,4)")
    td.add_argument("--alpha", default="1", help="context lengths N/d (default 1)")
    td.add_argument("--rho", default="0.25", help="noise variances (default 0.25)")
    td.add_argument("--draws", type=int, default=16,
                    help="task sets per point at the smallest d (scaled ∝ 1/d, at least 2; "
                         "default 16)")
    td.add_argument("--prompts", type=int, default=0,
                    help="Monte-Carlo prompts for OLS/ridge/dMMSE baselines (default 0: none)")
    td.add_argument("--seed", type=int, default=0, help="seed of the task draws (default 0)")
    td.add_argument("--parameterizations", action="store_true",
                    help="also every parameterization (and eigenbasis tasks) at d = 3: "
                         "parameterizations.csv (minutes)")
    td.add_argument("--out", default="runs/task-diversity",
                    help="run folder (default runs/task-diversity)")
    _pdf_argument(td)
    td.set_defaults(func=cmd_task_diversity)
    cs = sub.add_parser("critical-sets", help="a model's critical sets with their loss, gap "
                                              "to the minimum, Hessian index and kind")
    _model_arguments(cs, d=2)
    cs.add_argument("--d-y", dest="d_y", type=int, default=None,
                    help="outputs (default 1; d for --tasks diagonal)")
    cs.add_argument("--tasks", default="gaussian", choices=["gaussian", "diagonal"],
                    help="gaussian task rows, or the paper's tasks in Λ's eigenbasis "
                         "(default gaussian)")
    cs.add_argument("--N", type=int, default=4, help="context length (default 4)")
    cs.add_argument("--noise", type=float, default=0.0, help="label noise σ (default 0)")
    cs.add_argument("--out", default="runs/critical-sets",
                    help="run folder (default runs/critical-sets)")
    _overwrite_argument(cs)
    cs.set_defaults(func=cmd_critical_sets)
    ca = sub.add_parser("cache", help="show or clear the on-disk derivation cache "
                                      "($ICLDYN_CACHE_DIR, default ~/.cache/icldyn)")
    ca.add_argument("action", choices=["info", "clear"],
                    help="info: entries and size per kind; clear: delete them")
    ca.set_defaults(func=cmd_cache)
    for name, func, default, text in (
            ("grok", cmd_grok, "runs/grok", "grokking on (a + b) mod p (needs torch)"),
            ("icl-emergence", cmd_icl, "runs/icl", "ICL emergence in attention-only "
                                                   "transformers (needs torch)")):
        c = sub.add_parser(name, help=text)
        c.add_argument("--preset", default="quick", choices=["quick", "paper"],
                       help="quick (minutes on a CPU) or paper (default quick)")
        c.add_argument("--out", default=default, help=f"run folder (default {default})")
        c.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
        c.add_argument("--resume", action="store_true",
                       help="reuse finished runs in --out (same config) instead of retraining")
        _pdf_argument(c)
        c.set_defaults(func=func)
    return p


def main(argv=None) -> int:
    """The ``icldyn`` console script: parse ``argv`` and run the subcommand's handler.

    An ``InputError`` or ``DivergenceError`` is printed as one line naming the command (exit
    code 2), an interrupt as one line (130); figures are also written as PDF with ``--pdf``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        The exit code: 0 on success.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from icldyn.numerics.experiments.cli import main
    >>> tmp = tempfile.TemporaryDirectory()
    >>> tex = Path(tmp.name) / "merged.tex"
    >>> main(["derive", "--d", "1", "--N", "4", "--cov", "iso", "--latex", str(tex)])
    wrote ...merged.tex
    0
    >>> "documentclass" in tex.read_text()               # a standalone LaTeX document
    True
    >>> main(["derive", "--N", "0"])          # one line on stderr names --N; exit code 2
    2
    >>> tmp.cleanup()
    """
    from .runfolder import figures_also_as_pdf

    args = parser().parse_args(argv)
    try:
        with figures_also_as_pdf(getattr(args, "pdf", False)):
            return args.func(args)
    except (InputError, DivergenceError) as exc:   # divergence: its message names the step size
        print(f"icldyn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"icldyn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
