"""SGD's noise from the derivation: the exact single-prompt gradient covariance as a matrix in
the ordering of θ (``covariance``), and the stochastic modified equation driven by it
(``sme``)."""

from .covariance import CompiledCovariance, compile_covariance
from .sme import simulate_sme

__all__ = ["compile_covariance", "CompiledCovariance", "simulate_sme"]
