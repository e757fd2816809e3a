"""icl-dynamics: exact learning dynamics of in-context learning.

The symbolic layer lives in :mod:`icldyn.theory` (SymPy only) and the numerical layer in
:mod:`icldyn.numerics`; ``theory`` never imports ``numerics``.
"""

__version__ = "0.1.0"
