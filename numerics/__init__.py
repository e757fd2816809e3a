"""Numerical layer: compiled flows, integrators, and the SGD simulator of the actual layer.

Every trajectory — gradient flow, RK4, gradient descent, SGD of the network, SME — is a
``Trajectory`` (``results``); ``SimResult`` is SGD's, with the parameter arrays.
"""

from .codegen import CompiledFlow, compile_flow
from .integrate import gradient_descent, integrate, rk4
from .results import SimResult, Trajectory
from .simulate import simulate_sgd

__all__ = ["compile_flow", "CompiledFlow", "integrate", "rk4", "gradient_descent",
           "Trajectory", "simulate_sgd", "SimResult"]
