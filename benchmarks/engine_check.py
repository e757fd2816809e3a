"""Bit-identity check of the expectation engine: fingerprints of derived polynomials, written
before a change to the engine and compared after it.

`python benchmarks/engine_check.py --write FILE` derives, cold (empty cache), the gradient
covariance's second-moment blocks of Merged(2), MultiHead(2, heads=2), SeparateKQ(2, 2, 2) and
FullLSA(2) and the loss of 2- and 3-layer Stacks of Merged(2) (d = 2, symbolic N, full Λ, Σ_w,
σ), and the loss of FullLSA(2, d_y=2) and the covariances of Merged(2, d_y=2) and FullLSA(2, d_y=2)
with the paper's eigenbasis tasks (diagonal Λ), and
writes for each the number of terms and the SHA-256 of its terms (trace keys and the ``srepr``
of their SymPy coefficients, sorted); `--against FILE` derives them again and fails (exit 1)
naming every polynomial whose fingerprint differs. ``--only`` restricts to models whose name
starts with one of the given prefixes (separated by ";").

benchmarks/engine_fingerprints.json holds the fingerprints written by the engine before issue
16's speed-ups (commit 4311ae6, SymPy 1.14), which every later engine has reproduced:
`python benchmarks/engine_check.py --against benchmarks/engine_fingerprints.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import sympy as sp


def fingerprint(poly) -> dict:
    """{"terms": number of terms, "sha256": digest of the sorted (key, srepr(coeff)) pairs}."""
    rows = sorted((repr(key), sp.srepr(coeff)) for key, coeff in poly.terms.items())
    digest = hashlib.sha256("\n".join(f"{k}\t{c}" for k, c in rows).encode()).hexdigest()
    return {"terms": len(rows), "sha256": digest}


def jobs():
    from icldyn.theory import ICLData, models
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    full = ICLData(d=2, N=N, Lambda="full", Sigma_w="full", noise=sigma)
    eigen = ICLData(d=2, N=N, Lambda="diag", d_y=2, tasks="diagonal", noise=sigma)

    def covariance(der):
        return {f"{L},{M}": block
                for (L, M), block in der.gradient_covariance().second_moment.items()}

    def loss(der):
        return {"loss": der.loss_poly}

    return [(models.Merged(2), full, covariance), (models.MultiHead(2, heads=2), full, covariance),
            (models.SeparateKQ(2, 2, 2), full, covariance), (models.FullLSA(2), full, covariance),
            (models.Stack([models.Merged(2)] * 2), full, loss),
            (models.Stack([models.Merged(2)] * 3), full, loss),
            (models.FullLSA(2, d_y=2), eigen, loss),
            (models.Merged(2, d_y=2), eigen, covariance),
            (models.FullLSA(2, d_y=2), eigen, covariance)]


def derive_all(only) -> dict:
    from icldyn.theory import cache, derive
    out = {}
    for model, data, quantity in jobs():
        if only and not repr(model).startswith(tuple(only)):
            continue
        cache.clear_cache()
        start = time.process_time()
        polys = quantity(derive(model, data))
        seconds = time.process_time() - start
        out[f"{model!r} tasks={data.tasks} {quantity.__name__}"] = {
            name: fingerprint(p) for name, p in polys.items()}
        print(f"{model!r} ({data.tasks} tasks): {len(polys)} polynomials, "
              f"{sum(len(p.terms) for p in polys.values())} terms, {seconds:.2f} s CPU")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE")
    group.add_argument("--against", metavar="FILE")
    parser.add_argument("--only", default="", help="model-name prefixes separated by \";\"")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(";") if s]
    got = derive_all(only)
    if args.write:
        with open(args.write, "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
        print(f"wrote {args.write}")
        return 0
    with open(args.against) as f:
        want = json.load(f)
    bad = [f"{model} {name}" for model, polys in got.items() for name, fp in polys.items()
           if want.get(model, {}).get(name) != fp]
    for line in bad:
        print(f"DIFFERS: {line}")
    print("identical" if not bad else f"{len(bad)} polynomials differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
