"""Macroscopic measures: of weight matrices and a symmetric operator on plain arrays
(``matrices``: singular values, effective / stable / numerical rank, subspaces, curvature), and
of the linear theory along an exact trajectory (``trajectory``). Framework-agnostic: imports no
other numerics package."""

from .matrices import (alignment_distance, effective_rank, numerical_rank, principal_angles,
                       singular_values, stable_rank, subspace_overlap, top_hessian_eigenvalue)
from .trajectory import trajectory_measures

__all__ = ["singular_values", "effective_rank", "stable_rank", "numerical_rank",
           "principal_angles", "subspace_overlap", "alignment_distance",
           "top_hessian_eigenvalue", "trajectory_measures"]
