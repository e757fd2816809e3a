"""Numerical layer: compiled flows, integrators, and the SGD simulator of the actual layer."""

from .codegen import CompiledFlow, compile_flow
from .integrate import Trajectory, gradient_descent, integrate, rk4
from .simulate import SimResult, simulate_sgd

__all__ = ["compile_flow", "CompiledFlow", "integrate", "rk4", "gradient_descent",
           "Trajectory", "simulate_sgd", "SimResult"]
