"""Every public name documents its interface, numpydoc style: the names in ``__all__`` of
``icldyn.theory``, ``icldyn.numerics`` and every module below them that declares ``__all__``,
and the public methods those classes define. A callable that takes arguments has a
``Parameters`` section (a class may list ``Attributes`` instead); one that returns (or yields)
a value has a ``Returns`` (``Yields``) section. Properties are read as attributes and skipped.
The torch experiments (``numerics.nonlinear``) are optional and not walked."""

import ast
import importlib
import inspect
import pkgutil
import re
import textwrap

import icldyn.numerics
import icldyn.theory

ROOTS = (icldyn.theory, icldyn.numerics)


def _section(doc: str, *names: str) -> bool:
    return any(re.search(rf"^{name}\n-{{3,}}[ \t]*$", doc, re.M) for name in names)


def public_modules() -> list:
    """The packages and every module below them that declares ``__all__``."""
    out = list(ROOTS)
    for root in ROOTS:
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            parts = info.name.split(".")
            if "nonlinear" in parts or any(p.startswith("_") for p in parts):
                continue
            module = importlib.import_module(info.name)
            if hasattr(module, "__all__"):
                out.append(module)
    return out


def returns_value(fn) -> bool:
    """Whether ``fn`` returns or yields something: its return annotation when it has one (not
    None), else a ``return <value>`` or ``yield`` in its own body (nested functions excluded)."""
    node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    if node.returns is not None:
        return ast.unparse(node.returns) != "None"

    def walk(parent):
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                  ast.ClassDef)):
                continue
            if isinstance(child, (ast.Yield, ast.YieldFrom)):
                return True
            if isinstance(child, ast.Return) and child.value is not None and not (
                    isinstance(child.value, ast.Constant) and child.value.value is None):
                return True
            if walk(child):
                return True
        return False

    return walk(node)


def _takes_arguments(fn, bound: bool) -> bool:
    params = list(inspect.signature(fn).parameters)
    return len(params) > (1 if bound else 0)


def missing_sections(fn, bound: bool = False) -> list[str]:
    """The sections ``fn``'s docstring lacks (``bound``: a method, its first argument is
    ``self`` or ``cls``)."""
    doc = inspect.getdoc(fn) or ""
    missing = []
    if _takes_arguments(fn, bound) and not _section(doc, "Parameters"):
        missing.append("Parameters")
    if returns_value(fn) and not _section(doc, "Returns", "Yields"):
        missing.append("Returns")
    return missing


def class_missing(cls) -> dict:
    """{name: missing sections} of a class and the public methods it defines."""
    out = {}
    try:
        takes = bool(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        takes = False
    if takes and not _section(inspect.getdoc(cls) or "", "Parameters", "Attributes"):
        out[cls.__name__] = ["Parameters"]
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            fn, bound = member.__func__, isinstance(member, classmethod)
        elif inspect.isfunction(member):
            fn, bound = member, True
        else:
            continue
        missing = missing_sections(fn, bound)
        if missing:
            out[f"{cls.__name__}.{name}"] = missing
    return out


def undocumented() -> dict:
    """{qualified name: missing sections} over every public name (each object once)."""
    out, seen = {}, set()
    for module in public_modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            where = getattr(obj, "__module__", module.__name__)
            if inspect.isclass(obj):
                out.update({f"{where}.{k}": v for k, v in class_missing(obj).items()})
            elif inspect.isfunction(obj):
                missing = missing_sections(obj)
                if missing:
                    out[f"{where}.{obj.__qualname__}"] = missing
    return out


def test_the_check_finds_planted_missing_sections():
    def bare(a, b=1):
        """No sections."""
        return a + b

    def documented(a):
        """Sections present.

        Parameters
        ----------
        a : int
            Anything.

        Returns
        -------
        int
        """
        return a

    def procedure(a) -> None:
        """Parameters
        ----------
        a : int
        """

    class Thing:
        """A thing (no sections)."""

        def __init__(self, x):
            self.x = x

        def value(self):
            """The value."""
            return self.x

        def _private(self):
            return 0

    assert missing_sections(bare) == ["Parameters", "Returns"]
    assert missing_sections(documented) == []
    assert missing_sections(procedure) == []
    assert missing_sections(Thing.value, bound=True) == ["Returns"]
    assert class_missing(Thing) == {"Thing": ["Parameters"], "Thing.value": ["Returns"]}


def test_the_walk_covers_the_design_names_and_the_subpackages():
    names = {m.__name__ for m in public_modules()}
    assert {"icldyn.theory", "icldyn.numerics", "icldyn.theory.models",
            "icldyn.numerics.measures", "icldyn.numerics.noise"} <= names


def test_public_names_document_parameters_and_returns():
    missing = undocumented()
    assert not missing, "missing numpydoc sections:\n" + "\n".join(
        f"  {name}: {', '.join(sections)}" for name, sections in sorted(missing.items()))
