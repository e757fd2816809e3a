"""The documentation site: it builds with warnings as errors, its internal links and anchors
resolve, its pages carry rendered-maths markup (no raw TeX left for the reader), and every
reference to the mathematics from the code or the README names a section that exists.

The build needs the ``docs`` extra (``pip install -e ".[docs]"``); without it those tests skip.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATH_PAGE = ROOT / "docs" / "math.md"


def _docs_tools_missing() -> str | None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python",
                   "pymdownx"):
        try:
            __import__(module)
        except ImportError:
            return module
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = _docs_tools_missing()
    if missing:
        pytest.skip(f"{missing} not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    seconds = time.perf_counter() - start
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    print(f"docs build: {seconds:.1f} s")
    return out


class _Page(html.parser.HTMLParser):
    """Links (href/src), element ids, and the text outside maths and code of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids, self.text = [], set(), []
        self._skip = []           # stack of open tags whose text is maths, code or script

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])
        classes = (attrs.get("class") or "").split()
        if self._skip or "arithmatex" in classes or tag in ("code", "pre", "script", "style"):
            self._skip.append(tag)

    def handle_endtag(self, tag):
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _pages(site: Path) -> dict:
    return {p: _parse(p) for p in site.rglob("*.html")}


def test_internal_links_and_anchors_resolve(site):
    pages = _pages(site)
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "data:")):
                continue
            base = site if parts.path.startswith("/") else path.parent   # 404.html: root-relative
            target = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(site)}: {link} (no file)")
            elif parts.fragment and target.suffix == ".html":
                if parts.fragment not in pages[target].ids:
                    broken.append(f"{path.relative_to(site)}: {link} (no anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


MATH_PAGES = ["math.html", "concepts/data.html", "concepts/parameterizations.html",
              "concepts/derivation.html", "concepts/trajectories.html",
              "concepts/critical-sets.html", "concepts/noise.html", "concepts/measures.html",
              "concepts/conventions.html", "derivations/merged.html",
              "derivations/separatekq.html", "derivations/stack.html",
              "tutorials/staged_learning.html", "tutorials/zfb_minimum.html",
              "tutorials/your_model.html", "tutorials/sgd_noise.html",
              "tutorials/saddle_to_saddle.html", "tutorials/two_layers.html",
              "tutorials/nonlinear_measures.html"]


@pytest.mark.parametrize("name", MATH_PAGES)
def test_pages_carry_rendered_math_markup(site, name):
    source = (site / name).read_text(encoding="utf-8")
    blocks = re.findall(r'<div class="arithmatex">(.*?)</div>', source, re.S)
    inline = re.findall(r'<span class="arithmatex">(.*?)</span>', source, re.S)
    assert blocks or inline, f"{name}: no maths for MathJax"
    # every piece is delimited the way the MathJax configuration (docs/javascripts) looks for
    for piece in blocks:
        assert piece.strip().startswith("\\[") and piece.strip().endswith("\\]"), piece[:80]
    for piece in inline:
        assert piece.startswith("\\(") and piece.endswith("\\)"), piece[:80]
    # no TeX left outside the maths (and outside code, where it is meant literally)
    text = "".join(_parse(site / name).text)
    raw = re.findall(r"\$\$|\\begin\{|\\frac|\\operatorname|\\\(|\\\[|\$[^$\s][^$]{0,60}\$",
                     text)
    assert not raw, f"{name}: raw TeX in the text: {raw[:5]}"


def test_mathjax_is_loaded_and_configured(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "javascripts/mathjax.js" in index and "tex-mml-chtml.js" in index
    config = (site / "javascripts" / "mathjax.js").read_text(encoding="utf-8")
    assert 'processHtmlClass: "arithmatex"' in config


def test_api_reference_documents_the_public_names(site):
    theory = (site / "api" / "theory.html").read_text(encoding="utf-8")
    numerics = (site / "api" / "numerics.html").read_text(encoding="utf-8")
    for name in ("icldyn.theory.data.ICLData", "icldyn.theory.derive.derive",
                 "icldyn.theory.models.Merged", "icldyn.theory.models.Stack",
                 "icldyn.theory.derive.Derivation"):
        assert f'id="{name}"' in theory, name
    for name in ("icldyn.numerics.compiled.codegen.compile_flow",
                 "icldyn.numerics.compiled.integrate.integrate",
                 "icldyn.numerics.simulation.sgd.simulate_sgd",
                 "icldyn.numerics.noise.sme.simulate_sme",
                 "icldyn.numerics.noise.covariance.compile_covariance"):
        assert f'id="{name}"' in numerics, name


def test_every_tutorial_is_a_page_with_its_script(site):
    for script in (ROOT / "tutorials").glob("*.py"):
        assert (site / "tutorials" / f"{script.stem}.html").exists(), script.name
        assert (site / "tutorials" / script.name).read_bytes() == script.read_bytes()


def test_every_shipped_derivation_is_a_page(site):
    for tex in (ROOT / "derivations").glob("*.tex"):
        page = site / "derivations" / f"{tex.stem}.html"
        assert page.exists(), tex.name
        assert (site / "derivations" / tex.name).read_bytes() == tex.read_bytes()


# --- the examples on the pages run -------------------------------------------------------------

STANDALONE = ["getting-started.md", "concepts/data.md", "concepts/parameterizations.md",
              "concepts/derivation.md"]        # pages whose Python blocks run in sequence


@pytest.mark.slow
@pytest.mark.parametrize("page", STANDALONE)
def test_code_examples_of_a_page_run(page, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(encoding="utf-8"),
                        re.S)
    assert blocks, page
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert run.returncode == 0, f"{page}:\n{run.stderr[-3000:]}"


# --- in a real browser (optional: Chromium and a local MathJax 3) ------------------------------

CDN_MATHJAX = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _local_mathjax() -> Path | None:
    """MathJax 3's es5/tex-mml-chtml.js from $ICLDYN_MATHJAX (a MathJax 3 package folder, e.g.
    from ``npm pack mathjax@3``) or ./node_modules/mathjax: the test has no network."""
    for folder in (os.environ.get("ICLDYN_MATHJAX"), ROOT / "node_modules" / "mathjax"):
        if folder and (Path(folder) / "es5" / "tex-mml-chtml.js").exists():
            return Path(folder) / "es5" / "tex-mml-chtml.js"
    return None


@pytest.mark.parametrize("name", ["index.html", "math.html", "tutorials/staged_learning.html"])
def test_maths_renders_in_a_headless_browser(site, name, tmp_path):
    """Chromium loads the page (MathJax from a local copy instead of the CDN), runs MathJax,
    and the DOM it leaves has every arithmatex element typeset and no TeX delimiters left; a
    screenshot is taken and is not blank."""
    browser, mathjax = _browser(), _local_mathjax()
    if browser is None:
        pytest.skip("no Chromium (apt-get install chromium-headless-shell)")
    if mathjax is None:
        pytest.skip("no local MathJax 3 (npm pack mathjax@3, unpack, set ICLDYN_MATHJAX)")
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    page = copy / name
    page.write_text(page.read_text(encoding="utf-8").replace(CDN_MATHJAX, mathjax.as_uri()),
                    encoding="utf-8")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--allow-file-access-from-files", "--virtual-time-budget=20000",
             "--window-size=1200,1400"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True,
                   timeout=120)
    marked = len(re.findall(r'class="arithmatex"', dom))
    typeset = len(re.findall(r"<mjx-container", dom))
    if marked:
        assert typeset >= marked, f"{name}: {typeset} of {marked} maths typeset"
    rendered = _Page()
    rendered.feed(dom)
    text = "".join(rendered.text)
    assert not re.findall(r"\$\$|\\\(|\\\[|\\begin\{", text), f"{name}: raw TeX after MathJax"
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.std() > 0.05, "blank screenshot"


# --- references to the mathematics (no build needed) -------------------------------------------

def _math_sections() -> set:
    """Section numbers of docs/math.md: "1", "2", "2.1", "3.2", …"""
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", MATH_PAGE.read_text(encoding="utf-8"),
                       re.M)
    return set(heads)


def _sources():
    for folder in ("theory", "numerics", "icldyn", "tests", "benchmarks", "tutorials"):
        yield from (ROOT / folder).rglob("*.py")
    yield ROOT / "README.md"
    yield from (ROOT / "derivations").glob("*")


def test_references_to_the_mathematics_resolve():
    sections = _math_sections()
    assert {"1", "2", "3.1", "3.2", "3.3", "3.4", "4", "5"} <= sections
    bad = []
    for path in _sources():
        if not path.is_file() or path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if "MATH.md" in text:
            bad.append(f"{path.relative_to(ROOT)}: cites MATH.md, which a clone does not have")
        for ref in re.findall(r"docs/math\.md §(\d+(?:\.\d+)?)", text):
            if ref not in sections:
                bad.append(f"{path.relative_to(ROOT)}: docs/math.md §{ref} does not exist")
    assert not bad, "\n".join(bad)
