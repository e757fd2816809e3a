"""From a derivation to fast functions of θ and their trajectories: ``codegen`` (NumPy / Numba
source generated at the matrix level), ``kernelcache`` (Numba's on-disk cache, kept private),
``integrate`` (adaptive gradient flow, RK4, gradient descent, an mpmath reference)."""

from .codegen import CompiledFlow, compile_flow
from .integrate import gradient_descent, integrate, rk4

__all__ = ["compile_flow", "CompiledFlow", "integrate", "rk4", "gradient_descent"]
