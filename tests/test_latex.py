"""LaTeX export: the checked-in derivations are up to date, and documents hold what they claim."""

from pathlib import Path

import pytest

from icldyn.numerics.cli import main
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


def test_derive_all_writes_the_folder(tmp_path):
    assert main(["derive", "--all", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").exists() and len(list(tmp_path.glob("*.tex"))) == 4
