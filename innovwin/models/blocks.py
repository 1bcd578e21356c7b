"""Pieces both models share: the size check, the MLP, multi-head self-attention, weight init."""
from __future__ import annotations

import torch
from torch import nn

from innovwin.models.attention import attention


def check_size(depth: int, width: int, heads: int, mlp_ratio: float) -> None:
    """Reject sizes that cannot build a transformer, naming the bad value."""
    for name, value in (("depth", depth), ("width", width), ("heads", heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if width % heads:
        raise ValueError(f"width {width} is not divisible by heads {heads}")
    if not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")


class MLP(nn.Sequential):
    """width -> mlp_ratio * width -> width with a tanh-GELU between (DiT's; nanoGPT's is exact: see models.gpt)."""

    def __init__(self, width: int, mlp_ratio: float):
        hidden = int(round(width * mlp_ratio))
        super().__init__(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))


class SelfAttention(nn.Module):
    """Multi-head self-attention through :func:`innovwin.models.attention.attention`.

    ``project`` and ``merge`` are exposed so the GPT's KV-cached decoding reuses the same weights and layout.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def project(self, x: torch.Tensor):
        """(..., L, width) -> q, k, v each (R, heads, L, head_dim), R the product of the leading dims (a stacked
        ensemble's (K, B) become K*B rows of one attention call)."""
        length, width = x.shape[-2:]
        qkv = self.qkv(x).reshape(-1, length, 3, self.heads, width // self.heads)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def merge(self, y: torch.Tensor, lead: tuple) -> torch.Tensor:
        """(R, heads, L, head_dim) -> output projection (*lead, L, width), ``lead`` the input's leading dims."""
        _, heads, length, head_dim = y.shape
        return self.proj(y.transpose(1, 2).reshape(*lead, length, heads * head_dim))

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        return self.merge(attention(*self.project(x), causal), x.shape[:-2])


def init_linear(module: nn.Module) -> None:
    """GPT-2 style init for every Linear and Embedding in ``module``: N(0, 0.02) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
