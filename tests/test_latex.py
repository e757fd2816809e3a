"""LaTeX export: the checked-in derivations are up to date, and documents hold what they claim."""

from pathlib import Path

import pytest

from icldyn.numerics.experiments.cli import main
from icldyn.theory.catalogue import documents, index

DERIVATIONS = Path(__file__).resolve().parent.parent / "derivations"


@pytest.fixture(scope="module")
def generated():
    return documents()


def test_checked_in_derivations_are_current(generated):
    """Fails when derivations/ is stale: run `icldyn derive --all` and commit the result."""
    for name, text in generated.items():
        assert (DERIVATIONS / name).read_text() == text, f"derivations/{name} is stale"
    assert (DERIVATIONS / "README.md").read_text() == index(generated)
    assert sorted(p.name for p in DERIVATIONS.glob("*.tex")) == sorted(generated)


def test_documents_state_loss_flow_conservation_and_stages(generated):
    for name, text in generated.items():
        assert text.startswith("\\documentclass") and text.rstrip().endswith("\\end{document}")
        assert text.count("\\begin{align*}") == text.count("\\end{align*}")
        assert "L &=" in text and "\\frac{d" in text and "\\Delta C_{1}^{\\mathrm{GD}}" in text
    merged = generated["merged.tex"]
    assert "\\mathcal{D}" in merged           # the eigenbasis-diagonal tasks section
    assert "t_{3} =" in merged and "growth rates at the origin" in merged


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
    import sympy as sp

    from icldyn.theory import ICLData, derive, models
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
