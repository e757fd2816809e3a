"""Symbolic layer: exact expectations, derivations and their LaTeX (SymPy and mpmath only)."""

from . import models
from .data import ICLData
from .derive import Derivation, derive
from .errors import DivergenceError, InputError

__all__ = ["ICLData", "models", "derive", "Derivation", "InputError", "DivergenceError"]
