"""innovwin: when do generative models learn rules, and when do they start to copy?

Trains small DiT and GPT models on rule-valid data, measures rule validity and copying at
log-spaced checkpoints, and extracts the two clocks tau_rule and tau_mem.
"""
from innovwin._native_loader import native_available

__version__ = "0.1.0"
__all__ = ["native_available", "__version__"]
