"""Critical sets of a derivation, the front door: ``fixed_points(der)`` sends scalar tasks to
``scalarsets`` and vector or eigenbasis tasks to ``vectorsets``; both return ``FixedPointSet``s
(``landscape``) whose kind ``criticality`` decides. Which sets a model has is read from the
structure it states (``Model.head_products``, ``Model.signal_paths``); a model that states
neither is refused with an ``InputError`` naming it.
"""

from __future__ import annotations

from .derive import Derivation, register_analysis
from .display import CriticalSets
from .landscape import (CONVEX, DPS, INDEX_TOL, FixedPointSet, HessianIndex,  # noqa: F401
                        entry_symbols, require_structure)
from .scalarsets import ProductForm, scalar_fixed_points  # noqa: F401  (old import paths)
from .vectorsets import vector_fixed_points


def fixed_points(der: Derivation) -> list[FixedPointSet]:
    """Critical sets of ``der`` with their loss, Hessian index and kind.

    Parameters
    ----------
    der : Derivation
        Any data law the enumerations cover (``scalarsets``, ``vectorsets``: Gaussian tasks,
        the paper's eigenbasis tasks, finite task sets diagonal in Λ's eigenbasis) of a model
        that states ``head_products()`` or ``signal_paths()``.

    Returns
    -------
    CriticalSets
        A list of FixedPointSet (shown as a table in notebooks), sorted as the enumeration
        sorts them (by loss where losses are numeric).

    Examples
    --------
    >>> import numpy as np
    >>> from icldyn.theory import ICLData, derive, models
    >>> from icldyn.theory.fixedpoints import fixed_points
    >>> der = derive(models.Merged(2), ICLData(d=2, N=4, Lambda=np.diag([1.0, 0.5])))
    >>> [(fp.name, fp.kind, fp.hessian_index, fp.loss) for fp in fixed_points(der)]
    [('global minimum', 'minimum', 0, 33/104), ('saddle set', 'strict saddle', 1, 3/4)]
    """
    require_structure(der.model)
    if der.data.d_y != 1 or der.data.tasks == "diagonal":
        return CriticalSets(vector_fixed_points(der))
    return CriticalSets(scalar_fixed_points(der))


register_analysis("fixed_points", fixed_points)
