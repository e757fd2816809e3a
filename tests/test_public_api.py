"""The public API: every name of DESIGN.md's public-API section resolves, the methods it uses
exist, and ``__all__`` of ``icldyn.theory`` and ``icldyn.numerics`` lists what they export
(their docstrings: tests/test_docstrings.py)."""

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


def test_design_methods_exist():
    classes = {"Derivation": theory.Derivation, "CompiledFlow": numerics.CompiledFlow,
               "Model": models.Model, "Trajectory": numerics.Trajectory}
    for cls, methods in METHODS.items():
        for method in methods:
            assert callable(getattr(classes[cls], method, None)), f"{cls}.{method}"


def test_all_lists_importable_names():
    for mod in (theory, numerics):
        assert len(set(mod.__all__)) == len(mod.__all__)
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"
