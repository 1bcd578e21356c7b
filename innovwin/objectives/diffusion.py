"""The diffusion objective: EDM (Karras et al. 2022) over a task's cells.

The functions are EDM's pieces over any denoiser, a callable ``denoiser(x, sigma) -> D(x; sigma)`` with a
``sigma_data`` attribute (``x`` is (B, ...), ``sigma`` (B,)): preconditioning, the weighted loss, the Heun sampler
(EDM Algorithm 1) and its stochastic form (Algorithm 2). :class:`Diffusion` is the objective the registry pairs with
the DiT backbone: it encodes cells, wraps the backbone in EDM's preconditioning (:class:`Denoiser`), and trains,
scores and samples it with the run's settings (every one a config field; their scale convention, every sigma in
units of the encoding scale a, is in :mod:`innovwin.objectives.diffusion_settings`).

Encodings (each zero-mean, with ``sigma_data`` by default its exact per-coordinate RMS, which is what EDM's
preconditioning assumes):
- bits (k = 2): the scalar -a / +a, C = 1, sigma_data = a;
- k-valued cells: a times the one-hot vector minus 1/k, C = k, sigma_data = a sqrt(k - 1) / k. Centering removes
  the constant 1/k that an uncentered one-hot would add to every coordinate, so the network's input c_in x and its
  target are zero-mean, unit-variance as EDM intends; argmax decoding is unchanged by the shift.

Every random draw takes an explicit ``torch.Generator`` so an evaluation can reuse the same noises at every checkpoint.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from innovwin.objectives import diffusion_settings


def precondition(sigma: torch.Tensor, sigma_data: float, unit: float = 1.0):
    """EDM's (c_skip, c_out, c_in, c_noise) for noise levels ``sigma``.

    D(x; s) = c_skip x + c_out F(c_in x, c_noise) keeps the network's input and training target at unit variance
    for data of per-coordinate RMS ``sigma_data``. c_noise = ln(s / unit) / 4 sees the noise level in the data's
    units, so the network's inputs do not depend on the scale the data is encoded at.
    """
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data / var.sqrt()
    c_in = 1 / var.sqrt()
    c_noise = (sigma / unit).log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(s) = (s^2 + sd^2) / (s sd)^2 = 1 / c_out^2: every noise level contributes at unit scale."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _per_row(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) sigma so it broadcasts against x (B, ...)."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def training_noise(x0: torch.Tensor, generator: torch.Generator | None = None, p_mean: float = -1.2,
                   p_std: float = 1.2, unit: float = 1.0):
    """Draw the training noise levels (ln(s / unit) ~ N(p_mean, p_std), shape (B,)) and unit noise (shape of x0).

    Drawn on the generator's device and moved to x0's, so a CPU generator reproduces the same draws anywhere.
    """
    if p_std < 0:
        raise ValueError(f"p_std must be >= 0, got {p_std}")
    gen_device = generator.device if generator is not None else x0.device
    log_sigma = torch.randn(x0.shape[0], generator=generator, device=gen_device) * p_std + p_mean
    noise = torch.randn(x0.shape, generator=generator, device=gen_device)
    return (log_sigma.exp() * unit).to(x0.device, x0.dtype), noise.to(x0.device, x0.dtype)


def loss_at(model, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Weighted denoising loss (B,) at given noise levels and noises: lambda(s) * mean((D(x0 + s n; s) - x0)^2).

    With the weighting, the loss of the exact denoiser of N(0, sd^2) data is 1 at every sigma.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match x0 shape {tuple(x0.shape)}")
    if sigma.shape != (x0.shape[0],):
        raise ValueError(f"sigma must have shape ({x0.shape[0]},), got {tuple(sigma.shape)}")
    denoised = model(x0 + _per_row(sigma, x0) * noise, sigma)
    err = (denoised.float() - x0.float()).square().flatten(1).mean(1)
    return loss_weight(sigma.float(), model.sigma_data) * err


def sigma_schedule(steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                   device=None) -> torch.Tensor:
    """EDM's sampler noise levels, (steps + 1,) float32 from sigma_max down to sigma_min, then 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    i = torch.arange(steps, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (hi + i / max(steps - 1, 1) * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=torch.float32)


@torch.no_grad()
def heun(model, x_init: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate the probability-flow ODE with Heun's method (EDM Algorithm 1, no churn).

    ``x_init`` is already at noise level ``sigmas[0]``. ``sigmas`` is (T,) for every row, or (T, B) for one
    schedule per row (rows may start at different noise levels). A step to sigma 0 is an Euler step (it returns
    D(x; s)); a row whose sigma is already 0 stays where it is, so shorter schedules can be padded with zeros.
    """
    batch = x_init.shape[0]
    if sigmas.ndim == 1:
        sigmas = sigmas[:, None].expand(-1, batch)
    if sigmas.ndim != 2 or sigmas.shape[1] != batch or sigmas.shape[0] < 1:
        raise ValueError(f"sigmas must have shape (T,) or (T, {batch}), got {tuple(sigmas.shape)}")
    sigmas = sigmas.to(x_init.device, torch.float32)
    if (sigmas < 0).any() or (sigmas[1:] > sigmas[:-1]).any():
        raise ValueError("sigmas must be >= 0 and non-increasing along each schedule")
    positive = sigmas > 0
    all_positive, any_positive = positive.all(1).tolist(), positive.any(1).tolist()  # one host sync

    def slope(x, s):
        """dx/ds = (x - D(x; s)) / s, evaluated at s = 1 where s = 0 (those rows are masked out by the caller)."""
        s_safe = torch.where(s > 0, s, torch.ones_like(s))
        return (x - model(x, s_safe).to(x.dtype)) / _per_row(s_safe, x)

    x = x_init
    for t in range(sigmas.shape[0] - 1):
        if not any_positive[t]:
            break
        s, s_next = sigmas[t], sigmas[t + 1]
        h = _per_row(s_next - s, x)
        d = slope(x, s)
        x_euler = x + h * d
        if not any_positive[t + 1]:
            x_next = x_euler
        else:
            x_heun = x + h * (d + slope(x_euler, s_next)) / 2
            x_next = x_heun if all_positive[t + 1] else torch.where(_per_row(s_next > 0, x), x_heun, x_euler)
        x = x_next if all_positive[t] else torch.where(_per_row(s > 0, x), x_next, x)
    return x


@torch.no_grad()
def stochastic_heun(model, x_init: torch.Tensor, sigmas: torch.Tensor, churn_noises: torch.Tensor | None = None,
                    s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf,
                    s_noise: float = 1.0) -> torch.Tensor:
    """EDM Algorithm 2: before each Heun step from s_i, raise the noise to s_hat = (1 + gamma) s_i by adding fresh
    noise, gamma = min(s_churn / steps, sqrt 2 - 1) where s_tmin <= s_i <= s_tmax, else 0.

    The fresh noise lets the sampler correct the errors earlier steps made, which the deterministic ODE carries to
    the end. ``sigmas`` is one (T,) schedule ending at 0; ``churn_noises`` (T - 1, *x.shape) the unit noises of
    each step (needed where gamma > 0). A step with gamma = 0 is exactly :func:`heun`'s step, so s_churn = 0 is the
    deterministic sampler bit for bit.
    """
    steps = sigmas.shape[0] - 1
    gamma_max = min(s_churn / steps, math.sqrt(2) - 1)
    x = x_init
    for t, (s, s_next) in enumerate(zip(sigmas[:-1].tolist(), sigmas[1:].tolist())):
        gamma = gamma_max if s_tmin <= s <= s_tmax else 0.0
        if gamma > 0:
            if churn_noises is None:
                raise ValueError("s_churn > 0 needs churn_noises")
            s_hat = s * (1 + gamma)
            x = x + math.sqrt(s_hat**2 - s**2) * s_noise * churn_noises[t].to(x.device, x.dtype)
            s = s_hat
        x = heun(model, x, sigmas.new_tensor([s, s_next]))
    return x


def sample(model, noise: torch.Tensor, steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
           rho: float = 7.0, **churn) -> torch.Tensor:
    """EDM sample from unit noise (scaled to sigma_max inside); returns the undecoded x. Without ``churn``
    (keywords of :func:`stochastic_heun`) the deterministic Heun sampler."""
    sigmas = sigma_schedule(steps, sigma_min, sigma_max, rho, device=noise.device)
    return stochastic_heun(model, noise * sigmas[0], sigmas, **churn)


def channels(k: int) -> int:
    """Values per cell in the encoding: one scalar for bits, a centred one-hot vector for k > 2."""
    return 1 if k == 2 else k


class Denoiser:
    """EDM's preconditioned denoiser around a backbone F: D(x; s) = c_skip x + c_out F(c_in x, c_noise).

    A thin view, not a module: the backbone keeps its parameters (and state_dict names). ``unit`` is the data's
    scale a (c_noise sees s / a).
    """

    def __init__(self, net: nn.Module, sigma_data: float, unit: float = 1.0):
        self.net, self.sigma_data, self.unit = net, float(sigma_data), float(unit)
        self.sample_shape = (net.n_cells, net.channels)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Preconditioned denoised estimate D(x; sigma), float32; sigma a scalar or (B,)."""
        if x.ndim != 3 or tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.sample_shape))}), got {tuple(x.shape)}")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = precondition(sigma, self.sigma_data, self.unit)
        x = x.float()
        out = self.net(c_in[:, None, None] * x, c_noise)
        return c_skip[:, None, None] * x + c_out[:, None, None] * out


class Diffusion:
    """EDM over a task's cells (see the module doc for the encoding). Settings come from the run config (its
    defaults without one); every noise level is in units of ``data_scale``."""

    def __init__(self, task, config=None):
        self.settings = config if config is not None else SimpleNamespace(**diffusion_settings.DEFAULTS)
        self.n_cells, self.k = int(task.n_cells), int(task.k)
        self.channels = channels(self.k)
        self.scale = self.settings.data_scale
        rms = self.scale if self.k == 2 else self.scale * math.sqrt(self.k - 1) / self.k
        self.sigma_data = self.settings.sigma_data if self.settings.sigma_data is not None else rms
        self.sampler_steps = self.settings.sampler_steps

    @property
    def sample_shape(self) -> tuple[int, int]:
        return (self.n_cells, self.channels)

    def network_calls_per_sample(self) -> int:
        """Network evaluations one generated sample costs, the evaluation's cost model: two per Heun step, one for
        the last (its step to sigma 0 is an Euler step, :func:`heun`), with or without churn."""
        return 2 * self.sampler_steps - 1

    def denoiser(self, net: nn.Module) -> Denoiser:
        return Denoiser(net, self.sigma_data, self.scale)

    # --- cells <-> model space ------------------------------------------------------------
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
            return (cells.float() * 2 - 1)[..., None] * self.scale
        return (nn.functional.one_hot(cells.long(), self.k).float() - 1 / self.k) * self.scale

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n_cells, C) -> uint8 cells: sign for bits (0 decodes to 0), argmax (lowest index on ties) else."""
        if x.ndim != 3 or tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"x must have shape (B, {self.n_cells}, {self.channels}), got {tuple(x.shape)}")
        if self.k == 2:
            return (x[..., 0] > 0).to(torch.uint8)
        return x.argmax(dim=-1).to(torch.uint8)

    def features(self, cells: torch.Tensor) -> torch.Tensor:
        """The flat encoded form (B, n_cells * C) the ratio test compares undecoded generations with."""
        return self.encode(cells).flatten(1)

    # --- training -------------------------------------------------------------------------
    def noise_levels(self, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM's training draws for x0 under the run's settings: (sigma (B,), unit noise like x0)."""
        return training_noise(x0, generator, self.settings.p_mean, self.settings.p_std, self.scale)

    def training_inputs(self, x0: torch.Tensor, generator: torch.Generator) -> tuple:
        """A batch's random draws, outside any compiled step: (x0, sigma, noise)."""
        return (x0, *self.noise_levels(x0, generator))

    def loss(self, net: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Weighted denoising loss (B,)."""
        return loss_at(self.denoiser(net), x0, sigma, noise)

    # --- evaluation -----------------------------------------------------------------------
    def eval_start(self, n: int, generator: torch.Generator, device) -> tuple:
        """What every evaluation starts its n generations from (drawn once per run): the unit starting noises and,
        with churn, each sampler step's unit noises (None without: the generator then draws nothing more)."""
        noise = torch.randn((n, *self.sample_shape), generator=generator).to(device)
        churn = None
        if self.settings.s_churn > 0:
            churn = torch.randn((self.sampler_steps, n, *self.sample_shape), generator=generator).to(device)
        return noise, churn

    @staticmethod
    def join_starts(starts: list[tuple]) -> tuple:
        """A stacked ensemble's members' starts as one: their noises (and churn noises) concatenated over samples."""
        noises, churns = zip(*starts)
        return torch.cat(noises), None if churns[0] is None else torch.cat(churns, dim=1)

    def loss_inputs(self, sets: dict, generator: torch.Generator, device) -> dict:
        """Fixed loss inputs for each named cell set; one draw of noise levels and noises, paired across sets."""
        longest = self.encode(max(sets.values(), key=len))
        sigma, noise = self.noise_levels(longest, generator)
        return {name: tuple(t.to(device) for t in (self.encode(cells), sigma[:len(cells)], noise[:len(cells)]))
                for name, cells in sets.items()}

    def sample(self, net: nn.Module, start: tuple) -> torch.Tensor:
        """Undecoded samples (M, n_cells, C) from ``eval_start``'s noises, with the run's sampler."""
        settings, (noise, churn) = self.settings, start
        s_tmax = math.inf if settings.s_tmax is None else settings.s_tmax
        return sample(self.denoiser(net), noise, self.sampler_steps, self.scale * settings.sigma_min,
                      self.scale * settings.sigma_max, settings.rho, churn_noises=churn, s_churn=settings.s_churn,
                      s_tmin=self.scale * settings.s_tmin, s_tmax=self.scale * s_tmax, s_noise=settings.s_noise)

    @torch.no_grad()
    def generate(self, net: nn.Module, start: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded cells (M, n_cells) and the undecoded outputs flattened (M, n_cells * C), on the device."""
        x = self.sample(net, start)
        return self.decode(x), x.float().flatten(1)
