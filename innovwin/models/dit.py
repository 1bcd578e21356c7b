"""The Diffusion Transformer backbone (facebookresearch/DiT, adaLN-Zero): one token per cell, conditioned on the
noise level through adaptive layer norms.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from innovwin.models.blocks import MLP, SelfAttention, check_size, init_linear


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class SigmaEmbedding(nn.Module):
    """c_noise = ln(sigma)/4 -> width: sin/cos features, then an MLP (DiT's timestep embedder).

    Frequencies run geometrically from 1 to 100. Over the default sampler's sigmas (8 steps from sigma_max 5 down to
    0.002, in units of the data scale) c_noise spans about [-1.55, 0.40] and moves 0.18-0.45 per Heun step (EDM's 18
    steps from 80: [-1.55, 1.10], 0.08-0.33 per step), so the top frequencies tell neighbouring steps apart and the
    bottom ones vary smoothly.
    """

    def __init__(self, width: int, n_freqs: int = 128, max_freq: float = 100.0):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(max_freq), n_freqs)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.float()[..., None] * self.freqs
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))


class DiTBlock(nn.Module):
    """Bidirectional attention + MLP, each pre-normed and modulated (shift, scale, gate) by the sigma embedding."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(width, mlp_ratio)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).unsqueeze(-2).chunk(6, dim=-1)
        x = x + gate1 * self.attn(_modulate(self.norm1(x), shift1, scale1), causal=False)
        return x + gate2 * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """Modulated norm and the projection back to C channels per cell."""

    def __init__(self, width: int, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(cond).unsqueeze(-2).chunk(2, dim=-1)
        return self.out(_modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """The network F(c_in x, c_noise) of EDM's denoiser over ``n_cells`` tokens of ``channels`` values each.

    It knows nothing of noise levels beyond the conditioning it is given: the preconditioning around it
    (c_skip, c_out, c_in, c_noise), the encoding of cells and the loss live in
    :mod:`innovwin.objectives.diffusion`.
    """

    def __init__(self, n_cells: int, channels: int, depth: int = 4, width: int = 128, heads: int = 4,
                 mlp_ratio: float = 4):
        super().__init__()
        check_size(depth, width, heads, mlp_ratio)
        self.n_cells, self.channels = int(n_cells), int(channels)
        self._size = dict(depth=depth, width=width, heads=heads, mlp_ratio=mlp_ratio)

        self.embed = nn.Linear(self.channels, width)
        self.pos = nn.Parameter(torch.zeros(1, self.n_cells, width))
        self.sigma_embed = SigmaEmbedding(width)
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(width, self.channels)

        init_linear(self)
        # Content and position enter the residual stream at unit scale, as DiT's fixed sin-cos positions do. At
        # GPT-2's 0.02 (a stream of norm ~0.2, small next to what the branches add once their gates open and to
        # Adam's lr-sized steps) a width-64 DiT had not learned G=2 pairs after 1500 steps; at unit scale it does by
        # ~1500 (measured; positions alone at 1 also work, content alone at 1 does not).
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.pos, std=1.0)
        for block in self.blocks:  # adaLN-Zero: every residual branch starts closed, F starts at 0
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for layer in (self.final.modulation[-1], self.final.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def size_config(self) -> dict:
        """The size keywords that rebuild this network (with the same ``n_cells`` and ``channels``)."""
        return dict(self._size)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """F(x_in; c_noise): x_in (B, n_cells, channels) already scaled by c_in, c_noise (B,) -> float32, same shape."""
        h = self.embed(x_in) + self.pos
        cond = self.sigma_embed(c_noise)
        for block in self.blocks:
            h = block(h, cond)
        return self.final(h, cond).float()
