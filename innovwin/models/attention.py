"""Attention entry point for every model: ``attention(q, k, v, causal)`` on (batch, heads, L, head_dim).

Placeholder until the Triton dispatch lands: plain PyTorch SDPA everywhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Softmax attention over the last two dims; ``causal`` masks keys after each query."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
