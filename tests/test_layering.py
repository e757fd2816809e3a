"""One-way layering, read from the source (``ast``; nothing is imported): no import cycle among
the package's modules (imports inside functions count), ``theory`` never imports ``numerics``
or torch, ``theory`` has no function-level import at all (its dependencies are light), and
``numerics``' sub-packages import one way (``NUMERICS_MAY_IMPORT``): the simulation, the ground
truth, reaches nothing derived."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMERICS_SUBPACKAGES = ("compiled", "simulation", "noise", "measures", "experiments", "nonlinear")
PACKAGES = {"icldyn": ROOT / "icldyn", "icldyn.theory": ROOT / "theory",
            "icldyn.numerics": ROOT / "numerics",
            **{f"icldyn.numerics.{sub}": ROOT / "numerics" / sub for sub in NUMERICS_SUBPACKAGES}}


def modules() -> dict:
    """{dotted module name: source path} of every module in the package."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def _type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, mods: dict):
    """(imported module, inside a function?) for every import statement that runs
    (``if TYPE_CHECKING:`` blocks are skipped). ``from P import n`` imports the module P.n
    when there is one, else P itself."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    yield (sub if sub in mods else base), in_function
            yield from walk(child, inner)

    yield from walk(ast.parse(path.read_text()), False)


def graph() -> dict:
    """{module: {package modules it imports}}."""
    mods = modules()
    return {name: {target for target, _ in imports(name, path, mods)
                   if target in mods and target != name} for name, path in mods.items()}


def cycle(edges: dict) -> list | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_package_modules():
    edges = graph()
    assert len(edges) > 30 and edges["icldyn.theory.fixedpoints"]
    found = cycle(edges)
    assert found is None, "import cycle: " + " → ".join(found)


def test_theory_imports_neither_numerics_nor_torch_and_only_at_module_level():
    mods = modules()
    for name, path in mods.items():
        if not name.startswith("icldyn.theory"):
            continue
        for target, in_function in imports(name, path, mods):
            assert not target.startswith(("icldyn.numerics", "torch")), f"{name} imports {target}"
            assert not in_function, f"{name} imports {target} inside a function"


ANALYSES = ("symmetry", "covariance", "fixedpoints", "scalarsets", "vectorsets", "landscape",
            "criticality", "solutions", "latex", "catalogue", "productform", "gdsteps")


def test_derive_reaches_no_analysis():
    """Building blocks and models sit below ``derive``; the analyses above it register
    themselves (``derive.register_analysis``), so nothing ``derive`` imports, directly or
    not, is an analysis."""
    edges = graph()
    seen, todo = set(), ["icldyn.theory.derive"]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert "icldyn.theory.terms" in seen and "icldyn.theory.models" in seen
    assert not seen & {f"icldyn.theory.{a}" for a in ANALYSES}, sorted(seen)


# numerics: which concern may import which ("neutral": results, params, limits at the top; "api":
# numerics/__init__). Experiments (and the torch experiments in nonlinear) sit on top; nothing
# else imports them.
NUMERICS_MAY_IMPORT = {
    "neutral": {"neutral"},
    "measures": {"neutral", "measures"},
    "compiled": {"neutral", "measures", "compiled"},
    "simulation": {"neutral", "simulation"},
    "noise": {"neutral", "measures", "compiled", "simulation", "noise"},
    "api": {"neutral", "compiled", "simulation", "noise"},
    "nonlinear": {"neutral", "measures", "experiments", "nonlinear"},
    "experiments": {"neutral", "measures", "compiled", "simulation", "noise", "experiments",
                    "nonlinear"},
}
# the ground truth's view of theory: the data law and the model definitions, nothing derived
SIMULATION_MAY_IMPORT_FROM_THEORY = {"icldyn.theory.data", "icldyn.theory.errors",
                                     "icldyn.theory.models", "icldyn.theory.params"}


def concern(module: str) -> str | None:
    """The numerics concern of a module (None outside numerics)."""
    if module == "icldyn.numerics":
        return "api"
    if not module.startswith("icldyn.numerics."):
        return None
    head = module.split(".")[2]
    return head if head in NUMERICS_SUBPACKAGES else "neutral"


def violations(edges: dict) -> list[str]:
    """Imports between numerics concerns that ``NUMERICS_MAY_IMPORT`` does not allow."""
    return [f"{name} imports {target}" for name, targets in sorted(edges.items())
            for target in sorted(targets)
            if concern(name) and concern(target)
            and concern(target) not in NUMERICS_MAY_IMPORT[concern(name)]]


def test_the_concern_check_finds_a_planted_upward_import():
    planted = {"icldyn.numerics.compiled.codegen": {"icldyn.numerics.experiments.report"},
               "icldyn.numerics.simulation.sgd": {"icldyn.numerics.compiled.integrate"},
               "icldyn.numerics.noise.sme": {"icldyn.numerics.compiled.integrate"}}
    assert violations(planted) == [
        "icldyn.numerics.compiled.codegen imports icldyn.numerics.experiments.report",
        "icldyn.numerics.simulation.sgd imports icldyn.numerics.compiled.integrate"]


def test_numerics_concerns_import_one_way():
    edges = graph()
    assert {concern(name) for name in edges} >= set(NUMERICS_MAY_IMPORT), sorted(edges)
    assert not violations(edges), violations(edges)


def test_simulation_reaches_nothing_derived():
    """The SGD simulator imports from theory only the data law and the model definitions, and
    nothing it reaches, directly or not, is ``derive``, an analysis, or numerics outside the
    simulation and the neutral modules."""
    edges = graph()
    simulation = [name for name in edges if concern(name) == "simulation"]
    assert "icldyn.numerics.simulation.sgd" in simulation
    for name in simulation:
        theory = {t for t in edges[name] if t.startswith("icldyn.theory")}
        assert theory <= SIMULATION_MAY_IMPORT_FROM_THEORY, (name, sorted(theory))
    seen, todo = set(), list(simulation)
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    derived = {"icldyn.theory.derive"} | {f"icldyn.theory.{a}" for a in ANALYSES}
    assert not seen & derived, sorted(seen & derived)
    assert {concern(m) for m in seen} <= {None, "neutral", "simulation"}, sorted(seen)
