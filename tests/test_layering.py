"""One-way layering, read from the source (``ast``; nothing is imported): no import cycle among
the package's modules (imports inside functions count), ``theory`` never imports ``numerics``
or torch, and ``theory`` has no function-level import at all (its dependencies are light)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"icldyn": ROOT / "icldyn", "icldyn.theory": ROOT / "theory",
            "icldyn.numerics": ROOT / "numerics",
            "icldyn.numerics.nonlinear": ROOT / "numerics" / "nonlinear"}


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
