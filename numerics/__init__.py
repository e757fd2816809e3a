"""Numerical layer: compiled flows, integrators, and the SGD simulator of the actual layer.

Sub-packages by concern (one-way: each imports only from those listed before it, and from the
neutral modules ``results``, ``params``, ``limits``):

* ``compiled``: code generation from a derivation (NumPy / Numba), the kernel cache, the
  integrators (gradient flow, RK4, gradient descent).
* ``simulation``: the ground truth, SGD on the actual network; imports nothing derived.
* ``noise``: the exact gradient covariance as matrices, the SME.
* ``measures``: spectral rank, subspaces, curvature (plain arrays), and along a trajectory.
* ``experiments``: the ``icldyn`` command, the main job and its report, sweeps, risks, task
  diversity, run folders. ``nonlinear`` (torch, optional) holds the non-linear experiments.

Every trajectory — gradient flow, RK4, gradient descent, SGD of the network, SME — is a
``Trajectory`` (``results``); ``SimResult`` is SGD's, with the parameter arrays.
"""

import sys as _sys

from . import noise as _noise
from .compiled import CompiledFlow, compile_flow, gradient_descent, integrate, rk4
from .results import SimResult, Trajectory
from .simulation import simulate_sgd

# ``icldyn.numerics.covariance`` is a public import path (DESIGN.md); it is the noise module.
_sys.modules[f"{__name__}.covariance"] = _noise.covariance

__all__ = ["compile_flow", "CompiledFlow", "integrate", "rk4", "gradient_descent",
           "Trajectory", "simulate_sgd", "SimResult"]
