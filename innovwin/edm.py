"""EDM diffusion (Karras et al. 2022): preconditioning, the training loss, the deterministic Heun sampler.

A model here is any callable ``model(x, sigma) -> D(x; sigma)`` (the preconditioned denoised estimate, see
:func:`precondition`) with a ``sigma_data`` attribute. ``x`` is (B, ...) and ``sigma`` is (B,).
Every random draw takes an explicit ``torch.Generator`` so an evaluation can reuse the same noises at every checkpoint.
"""
from __future__ import annotations

import torch


def precondition(sigma: torch.Tensor, sigma_data: float):
    """EDM's (c_skip, c_out, c_in, c_noise) for noise levels ``sigma``.

    D(x; s) = c_skip x + c_out F(c_in x, c_noise) keeps the network's input and training target at unit variance
    for data of per-coordinate RMS ``sigma_data``.
    """
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data / var.sqrt()
    c_in = 1 / var.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(s) = (s^2 + sd^2) / (s sd)^2 = 1 / c_out^2: every noise level contributes at unit scale."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _per_row(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) sigma so it broadcasts against x (B, ...)."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def training_noise(x0: torch.Tensor, generator: torch.Generator | None = None, p_mean: float = -1.2,
                   p_std: float = 1.2):
    """Draw the training noise levels (ln s ~ N(p_mean, p_std), shape (B,)) and unit noise (shape of x0).

    Drawn on the generator's device and moved to x0's, so a CPU generator reproduces the same draws anywhere.
    """
    if p_std < 0:
        raise ValueError(f"p_std must be >= 0, got {p_std}")
    gen_device = generator.device if generator is not None else x0.device
    log_sigma = torch.randn(x0.shape[0], generator=generator, device=gen_device) * p_std + p_mean
    noise = torch.randn(x0.shape, generator=generator, device=gen_device)
    return log_sigma.exp().to(x0.device, x0.dtype), noise.to(x0.device, x0.dtype)


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


def loss(model, x0: torch.Tensor, generator: torch.Generator | None = None, p_mean: float = -1.2,
         p_std: float = 1.2) -> torch.Tensor:
    """EDM training loss (B,) at freshly drawn noise levels (see :func:`training_noise`)."""
    return loss_at(model, x0, *training_noise(x0, generator, p_mean, p_std))


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


def sample(model, noise: torch.Tensor, steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
           rho: float = 7.0) -> torch.Tensor:
    """Deterministic EDM sample from unit noise (scaled to sigma_max inside); returns the undecoded x."""
    sigmas = sigma_schedule(steps, sigma_min, sigma_max, rho, device=noise.device)
    return heun(model, noise * sigmas[0], sigmas)
