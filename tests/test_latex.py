"""LaTeX export: the checked-in derivations are up to date, and documents hold what they claim."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from icldyn.numerics.experiments.cli import main
from icldyn.theory import ICLData, derive, models
from icldyn.theory.catalogue import documents, index

DERIVATIONS = Path(__file__).resolve().parent.parent / "derivations"


@pytest.fixture(scope="module")
def generated():
    return documents()


@pytest.mark.slow
def test_checked_in_derivations_are_current(generated):
    """Fails when derivations/ is stale: run `icldyn derive --all` and commit the result."""
    for name, text in generated.items():
        assert (DERIVATIONS / name).read_text() == text, f"derivations/{name} is stale"
    assert (DERIVATIONS / "README.md").read_text() == index(generated)
    assert sorted(p.name for p in DERIVATIONS.glob("*.tex")) == sorted(generated)


@pytest.mark.slow
def test_documents_state_loss_flow_conservation_and_stages(generated):
    for name, text in generated.items():
        assert text.startswith("\\documentclass") and text.rstrip().endswith("\\end{document}")
        assert text.count("\\begin{align*}") == text.count("\\end{align*}")
        assert "L &=" in text and "\\frac{d" in text and "\\Delta C_{1}^{\\mathrm{GD}}" in text
    merged = generated["merged.tex"]
    assert "\\mathcal{D}" in merged           # the eigenbasis-diagonal tasks section
    assert "t_{3} &=" in merged and "growth rates at the origin" in merged


@pytest.mark.slow
def test_derive_all_writes_the_folder(tmp_path, monkeypatch, generated):
    """The command writes every document and the index (the documents themselves are the
    module's, derived once: the staleness test checks their content)."""
    from icldyn.theory import catalogue
    monkeypatch.setattr(catalogue, "documents", lambda: generated)
    assert main(["derive", "--all", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text() == index(generated)
    assert sorted(p.name for p in tmp_path.glob("*.tex")) == sorted(generated)


def test_isotropic_inputs_are_substituted():
    """With Lambda="iso" the documents read Λ = λ I: no Λ left, and the expression equals the
    numeric-Λ derivation at Λ = λ I (exact rationals)."""
    from icldyn.theory.data import LAMBDA_ISO
    N, sigma = sp.Symbol("N", positive=True, integer=True), sp.Symbol("sigma", nonnegative=True)
    der = derive(models.Merged(2), ICLData(d=2, N=N, Lambda="iso", noise=sigma))
    tex = der.to_latex()
    assert r"\Lambda" not in tex and r"\lambda" in tex
    lam, Q = sp.Rational(3, 4), sp.Matrix([[1, 2], [-1, sp.Rational(1, 3)]])
    V = sp.Matrix([[sp.Rational(2, 5)]])
    values = {sp.MatrixSymbol("Q", 2, 2): Q, sp.MatrixSymbol("V", 1, 1): V}
    iso = der.loss.subs({LAMBDA_ISO: lam, N: 5, sigma: sp.Rational(1, 2)}).subs(values).doit()
    numeric = derive(models.Merged(2), ICLData(d=2, N=5, Lambda=lam * sp.eye(2),
                                               noise=sp.Rational(1, 2)))
    assert sp.simplify(iso - numeric.loss_value({"V": V, "Q": Q})) == 0


# --- the printer: grouped forms equal the expressions; documents compile without overfull lines

N_SYM = sp.Symbol("N", positive=True, integer=True)
SIGMA_SYM = sp.Symbol("sigma", nonnegative=True)


def _at_point(expr, rng, cache):
    """``expr`` at a random rational point: every matrix letter a random rational matrix of
    its shape, each 1×1 letter's scalar (a Symbol of its name, as the printer writes it) the
    same number, and N, σ, η random rationals; the same draws for the same names."""
    def draw(key, shape):
        if key not in cache:
            cache[key] = sp.ImmutableMatrix(*shape, lambda i, j: sp.Rational(
                int(rng.integers(-9, 10)), int(rng.integers(1, 7))))
        return cache[key]
    values = {}
    for s in expr.free_symbols:
        if isinstance(s, sp.MatrixSymbol):
            values[s] = draw(s.name, s.shape)
    for s in expr.free_symbols:
        if isinstance(s, sp.Symbol):
            known = cache.get(s.name)
            values[s] = known[0, 0] if known is not None else draw(s.name, (1, 1))[0, 0]
    out = expr.xreplace(values).doit()
    if hasattr(out, "shape"):
        out = sp.Matrix(out)
        return out[0, 0] if out.shape == (1, 1) else out      # a 1×1 letter is a scalar
    return out


def _expressions(der):
    yield der.loss
    yield from der.flow.values()
    for law in der.conserved:
        yield law.expr
        yield law.gd_change_expr
    for law in der.conserved_matrices:
        yield law.expr


@pytest.mark.parametrize("model, d_y", [
    (models.Merged(2), 1), (models.Merged(2, d_y=2), 2), (models.MultiHead(2, heads=2), 1),
    (models.SeparateKQ(2, heads=1, rank=1), 1), (models.FullLSA(2), 1)])
def test_grouped_forms_equal_the_expressions(model, d_y):
    """The printer's grouped form (``group(expr).to_sympy()``: merged monomials, factored
    coefficients, powers, 1×1 letters as scalars) equals the derived expression exactly at
    random rational points (N, σ, η, Λ, Σ_w and the parameters drawn)."""
    from icldyn.theory import texform
    rng = np.random.default_rng(0)
    der = derive(model, ICLData(d=2, N=N_SYM, Lambda="full", Sigma_w="full", d_y=d_y,
                                noise=SIGMA_SYM))
    for expr in _expressions(der):
        grouped = texform.group(expr)
        assert len(grouped.terms) <= len(sp.Add.make_args(expr)) or \
            isinstance(expr, sp.MatrixExpr)
        for _ in range(2):
            cache = {"N": sp.ImmutableMatrix([[int(rng.integers(2, 9))]])}
            assert _at_point(grouped.to_sympy(), rng, cache) == _at_point(expr, rng, cache)


def test_grouped_form_can_fail():
    """The comparison sees a wrong coefficient: change one term's coefficient and the two
    differ at a random point."""
    from icldyn.theory import texform
    der = derive(models.Merged(2), ICLData(d=2, N=N_SYM, noise=SIGMA_SYM))
    grouped = texform.group(der.loss)
    wrong = texform.Grouped((texform.Term(grouped.terms[0].coeff + 1 / N_SYM,
                                          grouped.terms[0].monomials),) + grouped.terms[1:])
    rng = np.random.default_rng(1)
    cache = {"N": sp.ImmutableMatrix([[5]])}
    assert _at_point(wrong.to_sympy(), rng, cache) != _at_point(der.loss, rng, cache)


def test_paper_notation():
    """Scalar V (d_y = 1) as a scalar, runs as powers, coefficients factored over N, float
    inputs as short rationals; the expanded forms the printer replaces are absent."""
    der = derive(models.Merged(2), ICLData(d=2, N=N_SYM, Lambda="full", noise=0.1))
    tex = der.to_latex()
    assert "V^{2}" in tex and r"\operatorname{tr}(V" not in tex and r"\mathbb{I}" not in tex
    assert r"\Lambda^{2}" in tex and r"\Lambda \Lambda" not in tex
    assert r"\frac{N + 1}{2 N}" in tex and r"\frac{1}{2 N}" not in tex
    assert "1801439850948199" not in tex and r"\frac{1}{100" in tex       # σ² = 0.01
    assert r"\left(N + 1\right)^{2}" in tex    # η²(N+1)²/N², not η² + 2η²/N + η²/N²


def test_rounded_rationals_stay_close():
    """A float input's 17-digit rationals are printed rounded; the rounded grouped form is the
    expression to 1e-12 relative at random points."""
    from icldyn.theory import texform
    der = derive(models.Merged(2), ICLData(d=2, N=6, Lambda="full", noise=0.1))
    grouped = texform.group(der.loss)
    rng = np.random.default_rng(2)
    for _ in range(3):
        cache = {}
        a, b = _at_point(grouped.to_sympy(), rng, cache), _at_point(der.loss, rng, cache)
        assert abs(a - b) <= 1e-12 * abs(b) and a != b


def _compile(tex: str, tmp_path, name: str = "doc") -> str:
    (tmp_path / f"{name}.tex").write_text(tex)
    subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                   cwd=tmp_path, capture_output=True, timeout=300)
    return (tmp_path / f"{name}.log").read_text(errors="replace")


PDFLATEX = shutil.which("pdflatex")
needs_tex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed")


def _problems(log: str) -> list:
    return [line for line in log.splitlines()
            if line.startswith("Overfull \\hbox") or line.startswith("!")]


@needs_tex
@pytest.mark.parametrize("name", sorted(p.name for p in DERIVATIONS.glob("*.tex")))
def test_shipped_documents_compile_without_overfull_lines(name, tmp_path):
    log = _compile((DERIVATIONS / name).read_text(), tmp_path, name[:-4])
    assert "Output written" in log, f"{name} did not compile"
    assert not _problems(log), f"{name}: {_problems(log)}"


@needs_tex
def test_standalone_latex_compiles(tmp_path):
    """``to_latex(standalone=True)`` and ``icldyn derive --latex FILE`` give documents that
    compile, with every line on the page (a numeric example and the CLI's symbolic one)."""
    der = derive(models.Merged(2), ICLData(d=2, N=N_SYM, noise=0.1))
    log = _compile(der.to_latex(standalone=True), tmp_path, "merged")
    assert "Output written" in log and not _problems(log)
    out = tmp_path / "cli.tex"
    assert main(["derive", "--model", "MultiHead", "--heads", "2", "--latex", str(out)]) == 0
    log = _compile(out.read_text(), tmp_path, "cli")
    assert "Output written" in log and not _problems(log)


@pytest.mark.slow
def test_abbreviated_closed_form_substitutes_back():
    """The isotropic section prints t(a) = N (G(a₀) − G(a)) with abbreviations b, R, θ:
    substituted back they give the derived time at a random point (to 1e-12)."""
    from icldyn.theory.catalogue import isotropic_time_parts
    from icldyn.theory.data import SIGMA
    from icldyn.theory.solutions import isotropic_reduction
    red = isotropic_reduction(derive(models.Merged(2), ICLData(d=2, N=N_SYM, Lambda="iso",
                                                              noise=SIGMA)))
    time = red.unbalanced_time()
    G, names = isotropic_time_parts(time)
    syms = {s.name: s for s in time.free_symbols}
    theta, b, R = (next(k for k in names if k.name == n) for n in ("theta", "b", "R"))
    full = G.subs(theta, names[theta]).subs(R, names[R]).subs(b, names[b])
    x = next(s for s in full.free_symbols if s.name == "x")
    back = N_SYM * (full.subs(x, syms["a_0"]) - full.subs(x, syms["a"]))
    point = {N_SYM: 7, syms["a_0"]: sp.Rational(1, 50), syms["a"]: sp.Rational(3, 10),
             syms["Delta"]: sp.Rational(-2, 5), syms["lambda"]: sp.Rational(3, 4),
             syms["d"]: 3, SIGMA: sp.Rational(1, 5)}
    assert abs(sp.N(back.subs(point), 30) - sp.N(time.subs(point), 30)) < 1e-12
    assert abs(sp.N(time.subs(point), 30)) > 1e-3
