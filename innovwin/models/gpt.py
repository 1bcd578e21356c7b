"""Next-token GPT over a task's cells (karpathy/nanoGPT, pre-LN): BOS, then one token per cell in row-major order.

Tokens 0..k-1 are cell values and token k is BOS. The head predicts only the k cell values (BOS never follows),
and it is untied from the token embedding: with a vocabulary of 3 to 17 tokens, tying saves nothing.

One departure from nanoGPT: the MLP's GELU is the tanh approximation (``blocks.MLP``, shared with the DiT, whose
reference uses it too), where nanoGPT uses the exact erf GELU. The two differ by at most 5e-4 in an activation, and
the tanh form is the one GPT-2 itself was trained with (nanoGPT accepts the same difference when it loads GPT-2's
weights). It stays so that one block serves both backbones and the golden rows recorded with it stay exact.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from innovwin.models.attention import attention
from innovwin.models.blocks import MLP, SelfAttention, check_size, init_linear


class GPTBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), causal=True)
        return x + self.mlp(self.ln2(x))

    def forward_cached(self, x: torch.Tensor, cache: torch.Tensor, t: int) -> torch.Tensor:
        """One new token x (..., B, 1, width) at position t; ``cache`` (2, R, heads, n_cells, head_dim), R rows for
        the product of x's leading dims, holds keys and values of positions < t and receives position t's."""
        q, k, v = self.attn.project(self.ln1(x))
        cache[0, :, :, t:t + 1] = k
        cache[1, :, :, t:t + 1] = v
        x = x + self.attn.merge(attention(q, cache[0, :, :, :t + 1], cache[1, :, :, :t + 1], causal=False), x.shape[:-2])
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A causal transformer over BOS + ``n_cells`` tokens: ``forward`` scores a whole prefix, ``decode_step`` one new
    token against a key/value cache. What the tokens mean, the loss and the sampling live in
    :mod:`innovwin.objectives.autoregressive`."""

    def __init__(self, n_cells: int, k: int, depth: int = 4, width: int = 128, heads: int = 4, mlp_ratio: float = 4):
        super().__init__()
        check_size(depth, width, heads, mlp_ratio)
        self.n_cells, self.k = int(n_cells), int(k)
        self.bos = self.k
        self.heads = heads
        self._size = dict(depth=depth, width=width, heads=heads, mlp_ratio=mlp_ratio)

        self.tok_emb = nn.Embedding(self.k + 1, width)
        self.pos_emb = nn.Embedding(self.n_cells, width)
        self.blocks = nn.ModuleList(GPTBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, self.k, bias=False)

        init_linear(self)
        for block in self.blocks:  # GPT-2: residual projections scaled down with depth
            for proj in (block.attn.proj, block.mlp[-1]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * depth))

    def size_config(self) -> dict:
        """The size keywords that rebuild this network (with the same ``n_cells`` and ``k``)."""
        return dict(self._size)

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Token plus position embeddings of (..., B, L) tokens; positions get the leading dims but B (a stacked
        ensemble's member dimension, which its embeddings index by)."""
        positions = torch.arange(start, start + tokens.shape[-1], device=tokens.device)
        return self.tok_emb(tokens) + self.pos_emb(positions.expand(*tokens.shape[:-2], 1, -1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64, BOS first, L <= n_cells -> logits (B, L, k); logits[:, t] predict cell t.
        (A stacked ensemble passes (K, B, L).)"""
        if tokens.ndim < 2 or not 1 <= tokens.shape[-1] <= self.n_cells:
            raise ValueError(f"tokens must have shape (B, L) with 1 <= L <= {self.n_cells}, got {tuple(tokens.shape)}")
        x = self._embed(tokens, 0)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def new_cache(self, n: int) -> torch.Tensor:
        """An empty key/value cache for ``n`` sequences, in the dtype the blocks will compute in."""
        device = self.pos_emb.weight.device
        autocast = torch.is_autocast_enabled(device.type)
        dtype = torch.get_autocast_dtype(device.type) if autocast else self.pos_emb.weight.dtype
        head_dim = self.pos_emb.weight.shape[-1] // self.heads
        return torch.empty(len(self.blocks), 2, n, self.heads, self.n_cells, head_dim, dtype=dtype, device=device)

    def decode_step(self, token: torch.Tensor, cache: torch.Tensor, t: int) -> torch.Tensor:
        """Logits (B, k) for cell t given the token at position t (B, 1); writes position t's keys and values."""
        x = self._embed(token, t)
        for block, block_cache in zip(self.blocks, cache):
            x = block.forward_cached(x, block_cache, t)
        return self.head(self.ln_f(x))[..., -1, :]
