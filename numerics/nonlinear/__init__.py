"""Non-linear transformers (PyTorch, optional extra ``nonlinear``): ICL emergence in
attention-only networks and grokking on modular addition, read with ``numerics.measures``."""


def require_torch():
    """Import torch or raise a clear error naming the extra to install."""
    try:
        import torch
    except ImportError:
        from ...theory.errors import InputError
        raise InputError("torch", "the non-linear experiments need PyTorch: "
                         "pip install -e '.[nonlinear]' (pins torch==2.13.0, CPU)") from None
    return torch
