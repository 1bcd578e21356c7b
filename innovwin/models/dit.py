"""EDM-preconditioned Diffusion Transformer over the cells of a rule grid (facebookresearch/DiT, adaLN-Zero).

One token per cell. Encodings (each zero-mean, with ``sigma_data`` its exact per-coordinate RMS, which is what EDM's
preconditioning assumes):
- bits (k = 2): the scalar -1 / +1, C = 1, sigma_data = 1.0 (science.md; +-0.5 with 0.5 is the same model);
- k-valued cells: the one-hot vector minus 1/k, C = k, sigma_data = sqrt(k - 1) / k. Centering removes the constant
  1/k that an uncentered one-hot would add to every coordinate, so the network's input c_in x and its target are
  zero-mean, unit-variance as EDM intends; argmax decoding is unchanged by the shift.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from innovwin import edm
from innovwin.models.blocks import MLP, SelfAttention, check_size, init_linear


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class SigmaEmbedding(nn.Module):
    """c_noise = ln(sigma)/4 -> width: sin/cos features, then an MLP (DiT's timestep embedder).

    Frequencies run geometrically from 1 to 100: c_noise spans about [-1.6, 1.1] over the sampler's sigmas and moves
    about 0.15 per Heun step, so the top frequencies tell neighbouring steps apart and the bottom ones vary smoothly.
    """

    def __init__(self, width: int, n_freqs: int = 128, max_freq: float = 100.0):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(max_freq), n_freqs)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freqs, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.float()[:, None] * self.freqs
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
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None].chunk(6, dim=-1)
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
        shift, scale = self.modulation(cond)[:, None].chunk(2, dim=-1)
        return self.out(_modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """D(x; sigma) for a task's grids; ``forward`` applies EDM's preconditioning around the transformer F."""

    arch = "dit"

    def __init__(self, task, depth: int = 4, width: int = 128, heads: int = 4, mlp_ratio: float = 4,
                 sigma_data: float | None = None):
        super().__init__()
        check_size(depth, width, heads, mlp_ratio)
        self.n_cells, self.k = int(task.n_cells), int(task.k)
        self.channels = 1 if self.k == 2 else self.k
        if sigma_data is None:
            sigma_data = 1.0 if self.k == 2 else math.sqrt(self.k - 1) / self.k
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data!r}")
        self.sigma_data = float(sigma_data)
        self._size = dict(depth=depth, width=width, heads=heads, mlp_ratio=mlp_ratio, sigma_data=self.sigma_data)

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

    @property
    def sample_shape(self) -> tuple[int, int]:
        return (self.n_cells, self.channels)

    def size_config(self) -> dict:
        """The keyword arguments that rebuild this model with ``build(task, "dit", **size_config())``."""
        return dict(self._size)

    def encode(self, cells: torch.Tensor) -> torch.Tensor:
        """uint8 cells (B, n_cells) -> float32 x0 (B, n_cells, C) in the encoding described in the module doc."""
        cells = torch.as_tensor(cells)
        if cells.ndim != 2 or cells.shape[1] != self.n_cells:
            raise ValueError(f"cells must have shape (B, {self.n_cells}), got {tuple(cells.shape)}")
        if cells.dtype != torch.uint8:
            raise ValueError(f"cells must be uint8, got {cells.dtype}")
        if cells.numel() and int(cells.max()) >= self.k:
            raise ValueError(f"cell value {int(cells.max())} is outside the alphabet 0..{self.k - 1}")
        if self.k == 2:
            return (cells.float() * 2 - 1)[..., None]
        return nn.functional.one_hot(cells.long(), self.k).float() - 1 / self.k

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n_cells, C) -> uint8 cells: sign for bits (0 decodes to 0), argmax (lowest index on ties) else."""
        if x.ndim != 3 or tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x must have shape (B, {self.n_cells}, {self.channels}), got {tuple(x.shape)}")
        if self.k == 2:
            return (x[..., 0] > 0).to(torch.uint8)
        return x.argmax(dim=-1).to(torch.uint8)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Preconditioned denoised estimate D(x; sigma) = c_skip x + c_out F(c_in x, c_noise), float32."""
        if x.ndim != 3 or tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x must have shape (B, {self.n_cells}, {self.channels}), got {tuple(x.shape)}")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = edm.precondition(sigma, self.sigma_data)
        x = x.float()
        h = self.embed(c_in[:, None, None] * x) + self.pos
        cond = self.sigma_embed(c_noise)
        for block in self.blocks:
            h = block(h, cond)
        out = self.final(h, cond).float()
        return c_skip[:, None, None] * x + c_out[:, None, None] * out
