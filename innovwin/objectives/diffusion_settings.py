"""The diffusion objective's settings, as EDM names them, their scale convention and their checks (no torch here:
the config reads this module).

Scale convention: every noise level is in units of ``data_scale`` (a), the value that encodes a bit (±a; a k-valued
cell is a·(one-hot − 1/k)). ln(σ/a) ~ N(p_mean, p_std) in training; the sampler runs from a·sigma_max to
a·sigma_min; the churn window is a·[s_tmin, s_tmax]; the network's noise input is c_noise = ln(σ/a)/4. So the same
settings train the same model at any a (tests/test_diffusion_settings.py holds ±1 and ±0.5 together), and σ/a is
what decides a cell: two bits are 2a apart. ``sigma_data`` is only the preconditioning's assumed data RMS (unset:
the encoding's exact RMS, a for bits, a·sqrt(k−1)/k for k values).

EDM's defaults (P_mean −1.2, σ 0.002–80) were tuned for images of RMS 0.5; in these units, for ±1 bits, the
image-equivalent P_mean is −1.2 − ln 0.5 ≈ −0.51 and the range 0.004–160.
"""
from __future__ import annotations

# The defaults (RunConfig's, and an objective built without a config). p_mean, sigma_max and sampler_steps were
# chosen by the diffusion-settings study (docs/reproduction.md, section 7); the rest are EDM's.
DEFAULTS = {
    "data_scale": 1.0,
    "sigma_data": None,
    "p_mean": -0.5,  # EDM's -1.2 rescaled to bits: -1.2 - ln 0.5
    "p_std": 1.2,
    "sigma_min": 0.002,
    "sigma_max": 5.0,  # with 8 steps: the validity of 18 steps from 80, at 15 network calls instead of 35
    "rho": 7.0,
    "sampler_steps": 8,
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": None,
    "s_noise": 1.0,
}
FIELDS = tuple(DEFAULTS)

HELP = {
    "data_scale": "a: a bit is encoded as ±a (a k-valued cell as a·(one-hot − 1/k)); every σ below is in units of a",
    "sigma_data": "EDM preconditioning's data RMS; unset: the encoding's exact RMS (a for bits)",
    "p_mean": "training noise: mean of ln(σ/a)",
    "p_std": "training noise: standard deviation of ln(σ/a)",
    "sigma_min": "sampler's last noise level, in units of a",
    "sigma_max": "sampler's first noise level, in units of a",
    "rho": "sampler's schedule exponent (EDM's ρ)",
    "sampler_steps": "sampler's Heun steps (2 network calls each, 1 for the last)",
    "s_churn": "EDM Algorithm 2's churn; 0 is the deterministic Heun sampler",
    "s_tmin": "churn only at σ/a >= s_tmin",
    "s_tmax": "churn only at σ/a <= s_tmax; unset: no upper bound",
    "s_noise": "scale of the churn's fresh noise",
}


def check(config) -> None:
    """Refuse settings the sampler or the noise distribution cannot use (ValueError, one line)."""
    checks = [
        (config.data_scale > 0, f"data_scale must be > 0, got {config.data_scale}"),
        (config.sigma_data is None or config.sigma_data > 0, f"sigma_data must be > 0 or unset, got {config.sigma_data}"),
        (config.p_std >= 0, f"p_std must be >= 0, got {config.p_std}"),
        (config.sigma_min > 0, f"sigma_min must be > 0, got {config.sigma_min}"),
        (config.sigma_min <= config.sigma_max,
         f"sigma_min must be <= sigma_max, got sigma_min={config.sigma_min}, sigma_max={config.sigma_max}"),
        (config.rho > 0, f"rho must be > 0, got {config.rho}"),
        (config.s_churn >= 0, f"s_churn must be >= 0, got {config.s_churn}"),
        (config.s_tmin >= 0, f"s_tmin must be >= 0, got {config.s_tmin}"),
        (config.s_tmax is None or config.s_tmin <= config.s_tmax,
         f"s_tmin must be <= s_tmax, got s_tmin={config.s_tmin}, s_tmax={config.s_tmax}"),
        (config.s_noise > 0, f"s_noise must be > 0, got {config.s_noise}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
