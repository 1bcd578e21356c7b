"""Which attention implementation the models call.

``attention(q, k, v, causal)`` on (batch, heads, L, head_dim) tensors picks:
- the fused Triton kernel (``innovwin.kernels.attention``) on CUDA, for the inputs it takes
  (L <= 128, head_dim 16/32/64, equal q/k/v shapes, fp32/bf16/fp16);
- PyTorch SDPA otherwise: always on CPU, and on CUDA for other inputs (warned once per reason).

``INNOVWIN_ATTENTION`` overrides the choice: ``triton`` (the kernel, ValueError if it cannot take
the inputs), ``sdpa``, or ``math`` (the plain PyTorch reference the kernel is tested against).
Cached decoding (fewer queries than keys, as in GPT sampling) takes SDPA, or ``math`` if forced,
without a warning: the kernel is written for self-attention over whole sequences in training.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

try:  # Triton is a Linux-only dependency; elsewhere SDPA is the only path.
    from innovwin.kernels import attention as fused
except ImportError:
    fused = None

ENV_VAR = "INNOVWIN_ATTENTION"
BACKENDS = ("triton", "sdpa", "math")
_warned: set[str] = set()


def _is_decoding(q: torch.Tensor, k: torch.Tensor) -> bool:
    return q.ndim == k.ndim == 4 and q.shape[-2] != k.shape[-2]


def backend_for(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The backend ``attention`` uses for these inputs under the current environment."""
    forced = os.environ.get(ENV_VAR, "")
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"{ENV_VAR} must be one of {BACKENDS} or unset, got {forced!r}")
        if forced != "sdpa" and fused is None:
            raise ValueError(f"{ENV_VAR}={forced} needs triton, which is not installed")
        return "sdpa" if forced == "triton" and _is_decoding(q, k) else forced
    if q.device.type != "cuda" or fused is None or _is_decoding(q, k):
        return "sdpa"
    reason = fused.unsupported_reason(q, k, v)
    if reason is None:
        return "triton"
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"fused attention does not take these inputs ({reason}); using SDPA", stacklevel=3)
    return "sdpa"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v, causally masked if asked, on (batch, heads, L, head_dim)."""
    backend = backend_for(q, k, v)
    if backend == "triton":
        return fused.attention(q, k, v, causal)
    if backend == "math":
        return fused.attention_reference(q, k, v, causal)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
