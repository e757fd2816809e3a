"""Symbolic layer: exact expectations, derivations and their LaTeX (SymPy and mpmath only).

Importing it loads the analyses (symmetry, gradient covariance, critical sets, LaTeX), which
register themselves behind ``Derivation``'s methods; ``derive`` imports none of them.
"""

from . import covariance, fixedpoints, latex, models, symmetry  # noqa: F401  (registration)
from .data import ICLData
from .derive import Derivation, derive
from .errors import DivergenceError, InputError
from .landscape import FixedPointSet

__all__ = ["ICLData", "models", "derive", "Derivation", "FixedPointSet", "InputError",
           "DivergenceError"]
