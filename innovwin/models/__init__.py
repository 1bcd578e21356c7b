"""Backbones only: networks that map tensors to tensors and know nothing of losses, noise or sampling.

``DiT`` (a denoiser's network F, conditioned on the noise level) and ``GPT`` (a causal transformer with a key/value
cache); both call :func:`innovwin.models.attention.attention`, which picks the fused Triton kernel or SDPA.
How a task's cells become their inputs, and how they are trained, is :mod:`innovwin.objectives`'.
"""
from innovwin.models.dit import DiT
from innovwin.models.gpt import GPT

__all__ = ["DiT", "GPT"]
