"""The public API: every name of DESIGN.md's public-API section resolves, ``__all__`` of
``icldyn.theory`` and ``icldyn.numerics`` lists what they export, and every public function,
class and method there documents its Parameters and Returns (classes: Parameters or
Attributes)."""

import inspect

import pytest

import icldyn.numerics as numerics
import icldyn.theory as theory
from icldyn.theory import models

DESIGN_NAMES = {
    "icldyn.theory": ["ICLData", "models", "derive"],
    "icldyn.theory.models": ["Merged", "FullLSA", "MultiHead", "SeparateKQ", "Stack"],
    "icldyn.numerics": ["compile_flow", "integrate", "gradient_descent", "simulate_sgd"],
    "icldyn.numerics.covariance": ["compile_covariance"],
}
METHODS = {"Derivation": ["fixed_points", "to_latex", "loss_value", "gradient_value",
                          "conservation_laws", "gradient_covariance"],
           "CompiledFlow": ["pack", "unpack", "loss", "grad", "conserved"],
           "Model": ["shapes", "attention_weights", "blocks", "prediction", "layer",
                     "product_model", "head_products", "signal_paths", "with_outputs"],
           "Trajectory": ["along", "params", "save", "load"]}


@pytest.mark.parametrize("module,names", DESIGN_NAMES.items())
def test_design_names_resolve(module, names):
    mod = __import__(module, fromlist=names)
    for name in names:
        assert getattr(mod, name) is not None


def _public():
    for mod in (theory, numerics):
        for name in mod.__all__:
            yield name, getattr(mod, name)
    for name in ("Model", "Merged", "MultiHead", "SeparateKQ", "FullLSA", "Stack", "Param",
                 "Block", "HeadProducts"):
        yield f"models.{name}", getattr(models, name)


def test_all_lists_importable_names():
    for mod in (theory, numerics):
        assert len(set(mod.__all__)) == len(mod.__all__)
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


def test_public_names_document_parameters_and_returns():
    missing = []
    for name, obj in _public():
        doc = inspect.getdoc(obj) or ""
        if inspect.ismodule(obj):
            continue
        if inspect.isclass(obj):
            if "Parameters" not in doc and "Attributes" not in doc:
                missing.append(name)
            for method in METHODS.get(obj.__name__, []):
                mdoc = inspect.getdoc(getattr(obj, method)) or ""
                if "Returns" not in mdoc:
                    missing.append(f"{name}.{method}")
        elif "Parameters" not in doc or "Returns" not in doc:
            missing.append(name)
    assert not missing, f"undocumented: {missing}"
