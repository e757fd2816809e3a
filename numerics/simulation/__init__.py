"""The ground truth: SGD on the actual linear-attention network over sampled prompts (``sgd``).
Nothing here uses a derived formula; it imports only the model and data definitions of
``theory`` and the neutral numerics modules (tests/test_layering.py checks)."""

from .sgd import PromptSampler, simulate_sgd

__all__ = ["simulate_sgd", "PromptSampler"]
