"""Every public name documents its interface, numpydoc style: each function and class defined in
a module of ``icldyn.theory`` or ``icldyn.numerics`` (every module below them, not only those
that declare ``__all__``) under a name without a leading underscore, and the public methods
those classes define. A callable that takes arguments has a ``Parameters`` section (a class may
list ``Attributes`` instead); one that returns (or yields) a value has a ``Returns``
(``Yields``) section; one whose own body raises ``InputError`` has a ``Raises`` section (for a
class: its ``__init__`` or ``__post_init__``). Properties are read as attributes and skipped.
The CLI's ``cmd_*`` handlers are the exception when argparse documents them
(``argparse_commands``): their one argument is the parsed namespace, their interface is the
subcommand's ``--help`` (every option with help text and default), they return the exit
code, and the API reference does not render the CLI module; a handler without that help is
held to the rule like any other name.
Every such function and class of ``icldyn.numerics`` also shows what it is for in an
``Examples`` section with ``>>>`` lines (``missing_examples``; the ``cmd_*`` handlers excepted),
and every example gives the output it shows.
The torch experiments (``numerics.nonlinear``) are optional and not walked."""

import ast
import doctest
import importlib
import inspect
import pkgutil
import re
import textwrap

import pytest

import icldyn.numerics
import icldyn.theory
from icldyn.theory.errors import InputError

ROOTS = (icldyn.theory, icldyn.numerics)


def _section(doc: str, *names: str) -> bool:
    return any(re.search(rf"^{name}\n-{{3,}}[ \t]*$", doc, re.M) for name in names)


def _walked(name: str) -> bool:
    parts = name.split(".")
    return "nonlinear" not in parts and not any(p.startswith("_") for p in parts)


def public_modules() -> list:
    """The packages and every module below them (torch experiments and private modules
    excepted)."""
    out = list(ROOTS)
    for root in ROOTS:
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            if _walked(info.name):
                out.append(importlib.import_module(info.name))
    return out


def _own_body(node):
    """The nodes of a function's own body (nested functions and classes excluded)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield child
        yield from _own_body(child)


def _tree(fn):
    return ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]


def returns_value(fn) -> bool:
    """Whether ``fn`` returns or yields something: its return annotation when it has one (not
    None), else a ``return <value>`` or ``yield`` in its own body (nested functions excluded)."""
    node = _tree(fn)
    if node.returns is not None:
        return ast.unparse(node.returns) != "None"
    return any(isinstance(child, (ast.Yield, ast.YieldFrom)) or (
        isinstance(child, ast.Return) and child.value is not None and not (
            isinstance(child.value, ast.Constant) and child.value.value is None))
        for child in _own_body(node))


def raises_input_error(fn) -> bool:
    """Whether ``fn``'s own body has a ``raise InputError(...)``."""
    for child in _own_body(_tree(fn)):
        if isinstance(child, ast.Raise) and child.exc is not None:
            exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            name = exc.attr if isinstance(exc, ast.Attribute) else getattr(exc, "id", None)
            if name == "InputError":
                return True
    return False


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
    if raises_input_error(fn) and not _section(doc, "Raises"):
        missing.append("Raises")
    return missing


def _own_constructor(cls) -> bool:
    """Whether the constructor nearest in ``cls``'s MRO is Python code (a list subclass that
    defines none is built like a list: nothing of its own to document)."""
    for klass in cls.__mro__:
        own = [vars(klass)[n] for n in ("__new__", "__init__") if n in vars(klass)]
        if own:
            return any(inspect.isfunction(getattr(f, "__func__", f)) for f in own)
    return False


def class_missing(cls) -> dict:
    """{name: missing sections} of a class (its constructor's arguments and InputErrors) and
    the public methods it defines."""
    out = {}
    doc = inspect.getdoc(cls) or ""
    try:
        takes = _own_constructor(cls) and bool(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        takes = False
    missing = []
    if takes and not _section(doc, "Parameters", "Attributes"):
        missing.append("Parameters")
    constructors = [fn for fn in map(vars(cls).get, ("__init__", "__post_init__"))
                    if inspect.isfunction(fn) and not fn.__code__.co_filename.startswith("<")]
    # (a dataclass's generated __init__ has no source and raises nothing of its own)
    if any(map(raises_input_error, constructors)) and not _section(doc, "Raises"):
        missing.append("Raises")
    if missing:
        out[cls.__name__] = missing
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


def argparse_commands() -> set:
    """The ``icldyn`` subcommand handlers that argparse documents: each the ``func`` default of
    a subcommand with a ``help`` text, whose options all carry help too (``--help`` is their
    documentation; their one argument is the parsed namespace)."""
    import argparse

    from icldyn.numerics.experiments.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    helped = {a.dest for a in sub._choices_actions if a.help}
    out = set()
    for name, command in sub.choices.items():
        options = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
        if name in helped and all(a.help for a in options) and "func" in command._defaults:
            out.add(command._defaults["func"])
    return out


def public_objects(root=None):
    """(qualified name, object) of every walked public function and class, each once; only
    those defined below ``root`` (a package of ``ROOTS``) when given. The CLI handlers that
    argparse documents are left out."""
    seen = {id(f) for f in argparse_commands()}
    below = None if root is None else root.__name__
    for module in public_modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or id(obj) in seen:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            where = getattr(obj, "__module__", "") or ""
            if not (where.startswith("icldyn.") and _walked(where)):
                continue            # imported from elsewhere (numpy, sympy, the torch part)
            if below is not None and not (where == below or where.startswith(below + ".")):
                continue
            seen.add(id(obj))
            yield f"{where}.{obj.__qualname__}", obj


def undocumented() -> dict:
    """{qualified name: missing sections} over every public name (each object once)."""
    out = {}
    for name, obj in public_objects():
        if inspect.isclass(obj):
            out.update({f"{obj.__module__}.{k}": v for k, v in class_missing(obj).items()})
        else:
            missing = missing_sections(obj)
            if missing:
                out[name] = missing
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

    def checked(x):
        """Parameters
        ----------
        x : int
        """
        if x < 0:
            raise InputError("x", "must be >= 0")

    class Checked:
        """Parameters
        ----------
        x : int
        """

        def __init__(self, x):
            if x < 0:
                raise InputError("x", "must be >= 0")

    class Sets(list):
        """Built like a list (no constructor of its own to document)."""

    assert class_missing(Sets) == {}
    assert missing_sections(checked) == ["Raises"]
    assert class_missing(Checked) == {"Checked": ["Raises"]}
    assert missing_sections(bare) == ["Parameters", "Returns"]
    assert missing_sections(documented) == []
    assert missing_sections(procedure) == []
    assert missing_sections(Thing.value, bound=True) == ["Returns"]
    assert class_missing(Thing) == {"Thing": ["Parameters"], "Thing.value": ["Returns"]}


def test_the_excepted_handlers_are_the_cli_commands():
    from icldyn.numerics.experiments import cli

    handlers = {name for name in vars(cli) if name.startswith("cmd_")}
    assert handlers and {f.__name__ for f in argparse_commands()} == handlers


def test_the_walk_covers_the_design_names_and_the_subpackages():
    names = {m.__name__ for m in public_modules()}
    assert {"icldyn.theory", "icldyn.numerics", "icldyn.theory.models",
            "icldyn.numerics.measures", "icldyn.numerics.noise", "icldyn.theory.gaussian",
            "icldyn.numerics.experiments.cli", "icldyn.numerics.experiments.mainjob"} <= names


def test_public_names_document_parameters_and_returns():
    missing = undocumented()
    assert not missing, "missing numpydoc sections:\n" + "\n".join(
        f"  {name}: {', '.join(sections)}" for name, sections in sorted(missing.items()))


def lacks_example(obj) -> bool:
    """Whether ``obj``'s docstring has no ``Examples`` section with a ``>>>`` line in it."""
    section = re.search(r"^Examples\n-{3,}[ \t]*$(.*?)(?=^\S[^\n]*\n-{3,}[ \t]*$|\Z)",
                        inspect.getdoc(obj) or "", re.M | re.S)
    return not (section and re.search(r"^>>> ", section.group(1), re.M))


def missing_examples(root) -> list:
    """The public functions and classes defined in ``root``'s walked modules (as
    ``public_objects`` finds them: the CLI's ``cmd_*`` handlers, whose interface is their
    ``--help``, excepted) that lack an example (``lacks_example``)."""
    return sorted(name for name, obj in public_objects(root) if lacks_example(obj))


def test_the_examples_check_finds_planted_gaps():
    def shown():
        """Parameters
        ----------

        Examples
        --------
        >>> 1 + 1
        2
        """

    def bare():
        """No example."""

    def prose_only():
        """Examples
        --------
        Call it.
        """

    def elsewhere():
        """Notes
        -----
        >>> 1 + 1
        2

        Examples
        --------
        None.
        """

    assert not lacks_example(shown)
    assert all(map(lacks_example, (bare, prose_only, elsewhere)))


@pytest.mark.parametrize("root", ROOTS, ids=lambda root: root.__name__)
def test_public_names_have_examples(root):
    """Every public function and class of ``icldyn.theory`` and ``icldyn.numerics`` shows an
    ``Examples`` doctest."""
    missing = missing_examples(root)
    assert not missing, "no Examples section with a >>> line:\n  " + "\n  ".join(missing)


_FINDER = doctest.DocTestFinder()
EXAMPLED = [m for m in public_modules() if any(t.examples for t in _FINDER.find(m))]


@pytest.mark.parametrize("module", EXAMPLED, ids=lambda module: module.__name__)
def test_the_examples_run(module):
    """Every ``>>>`` example in the walked modules' docstrings gives the output it shows (one
    test per module, so that the modules' examples run in parallel)."""
    runner = doctest.DocTestRunner(verbose=False,
                                   optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []                                 # the runner reports only the failures
    for test in _FINDER.find(module):
        runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted and not failed, (f"{failed} of {attempted} docstring examples failed:\n"
                                      + "".join(report))
