"""EDM against a case with a known answer: Gaussian data N(0, sd^2), whose exact denoiser is linear.

For x0 ~ N(0, sd^2) and x = x0 + s n, E[x0 | x] = x sd^2 / (s^2 + sd^2), its weighted loss is exactly 1 at every s,
and the probability-flow ODE has the closed form x(s) = x(s0) sqrt((s^2 + sd^2) / (s0^2 + sd^2)).
"""
import math

import pytest
import torch

from innovwin.objectives import diffusion as edm


class LinearDenoiser(torch.nn.Module):
    """D(x; s) = gain(s) x; the exact Gaussian denoiser when ``gain`` is None."""

    def __init__(self, sigma_data, gain=None):
        super().__init__()
        self.sigma_data = sigma_data
        self.gain = gain

    def forward(self, x, sigma):
        gain = self.gain if self.gain is not None else self.sigma_data**2 / (sigma**2 + self.sigma_data**2)
        return x * torch.as_tensor(gain, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))


def test_precondition_values_and_weight():
    sd = 0.5
    sigma = torch.tensor([0.1, 0.5, 2.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm.precondition(sigma, sd)
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2))
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2))
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2))
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4)
    # the weight undoes c_out^2: the effective target of F has unit scale at every sigma
    torch.testing.assert_close(edm.loss_weight(sigma, sd) * c_out**2, torch.ones_like(sigma))


@pytest.mark.parametrize("sigma", [0.05, 0.7, 5.0])
def test_loss_at_matches_closed_form_and_is_minimal_at_exact_denoiser(sigma):
    sd, n = 0.8, 200_000
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(n, 1, generator=gen, dtype=torch.float64) * sd
    noise = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    s = torch.full((n,), sigma, dtype=torch.float64)
    exact_gain = sd**2 / (sigma**2 + sd**2)
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    losses = {}
    for gain in (exact_gain, exact_gain * 0.7, min(1.0, exact_gain * 1.3)):
        got = edm.loss_at(LinearDenoiser(sd, gain), x0, s, noise).mean().item()
        expected = weight * ((gain - 1) ** 2 * sd**2 + gain**2 * sigma**2)
        assert got == pytest.approx(expected, rel=0.02)
        losses[gain] = got
    assert losses[exact_gain] == pytest.approx(1.0, rel=0.02)
    assert edm.loss_at(LinearDenoiser(sd), x0, s, noise).mean().item() == pytest.approx(losses[exact_gain])
    assert min(losses, key=losses.get) == exact_gain


def test_loss_is_reproducible_and_draws_log_normal_sigmas():
    x0 = torch.zeros(20_000, 3)
    a = edm.loss_at(LinearDenoiser(1.0), x0, *edm.training_noise(x0, torch.Generator().manual_seed(5)))
    b = edm.loss_at(LinearDenoiser(1.0), x0, *edm.training_noise(x0, torch.Generator().manual_seed(5)))
    assert a.shape == (20_000,)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    sigma, noise = edm.training_noise(x0, torch.Generator().manual_seed(5), p_mean=-1.2, p_std=1.2)
    assert sigma.log().mean().item() == pytest.approx(-1.2, abs=0.03)
    assert sigma.log().std().item() == pytest.approx(1.2, abs=0.03)
    assert noise.shape == x0.shape and noise.std().item() == pytest.approx(1.0, abs=0.02)


def test_sigma_schedule():
    sigmas = edm.sigma_schedule(18, 0.002, 80.0, 7.0)
    assert sigmas.shape == (19,) and sigmas.dtype == torch.float32
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    assert sigmas[-1].item() == 0 and (sigmas[1:] < sigmas[:-1]).all()
    # rho = 7 spacing: sigma^(1/7) is linear in the step index
    root = sigmas[:-1].double() ** (1 / 7)
    torch.testing.assert_close(root.diff(), root.diff()[:1].expand(17), rtol=1e-4, atol=0)
    for bad in (dict(steps=0), dict(sigma_min=0.0), dict(sigma_min=2.0, sigma_max=1.0), dict(rho=0)):
        with pytest.raises(ValueError):
            edm.sigma_schedule(**bad)


@pytest.mark.parametrize("sd", [1.0, 0.5])
def test_heun_with_exact_gaussian_denoiser_follows_the_ode(sd):
    noise = torch.randn(4000, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact_gain = sd * 80.0 / math.sqrt(80.0**2 + sd**2)
    errors = []
    for steps in (18, 36, 72):
        out = edm.sample(LinearDenoiser(sd), noise, steps=steps)
        gain = (out / noise).median().item()
        torch.testing.assert_close(out, noise * gain, rtol=1e-5, atol=1e-6)  # a deterministic linear map
        errors.append(abs(gain / exact_gain - 1))
    assert errors[0] < 0.06  # EDM's 18-step schedule: 4.5% (sd 1) to 5.5% (sd 0.5) too wide here
    assert 3 < errors[0] / errors[1] < 5 and 3 < errors[1] / errors[2] < 5  # Heun is second order
    assert out.std().item() == pytest.approx(sd, rel=0.02)


def test_per_row_schedules_equal_separate_runs():
    model = LinearDenoiser(1.0)
    nonlinear = lambda x, s: torch.tanh(3 * x) * (1 / (1 + s.reshape(-1, 1)))  # noqa: E731
    nonlinear.sigma_data = 1.0
    schedules = [edm.sigma_schedule(6, 0.01, 10.0), edm.sigma_schedule(6, 0.002, 1.0),
                 torch.cat([edm.sigma_schedule(4, 0.1, 3.0), torch.zeros(2)])]  # padded: stays put after 0
    x_init = torch.randn(3, 5, generator=torch.Generator().manual_seed(2)) * 3
    for m in (model, nonlinear):
        together = edm.heun(m, x_init, torch.stack(schedules, dim=1))
        for row, sched in enumerate(schedules):
            unpadded = sched[: int((sched > 0).sum()) + 1]
            alone = edm.heun(m, x_init[row:row + 1], unpadded)
            torch.testing.assert_close(together[row:row + 1], alone, rtol=1e-6, atol=1e-6)


def test_last_step_to_zero_is_euler_returning_the_denoised_estimate():
    calls = []

    def model(x, s):
        calls.append(s.clone())
        return torch.full_like(x, 0.25)

    model.sigma_data = 1.0
    out = edm.heun(model, torch.ones(2, 3), torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(out, torch.full((2, 3), 0.25))
    assert len(calls) == 1  # no model call at sigma 0


def test_heun_rejects_bad_schedules():
    model = LinearDenoiser(1.0)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        edm.heun(model, x, torch.ones(4, 3))
    with pytest.raises(ValueError, match="non-increasing"):
        edm.heun(model, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="noise shape"):
        edm.loss_at(model, x, torch.ones(2), torch.zeros(2, 4))


class CountingNet(torch.nn.Module):
    """A backbone that returns zeros and counts its calls (one per denoiser evaluation of the batch)."""

    def __init__(self, n_cells):
        super().__init__()
        self.n_cells, self.channels, self.calls = n_cells, 1, 0

    def forward(self, x, c_noise):
        self.calls += 1
        return torch.zeros_like(x)


@pytest.mark.parametrize("steps, s_churn", [(1, 0.0), (8, 0.0), (8, 10.0), (18, 0.0)])
def test_network_calls_per_sample_counts_the_samplers_calls(steps, s_churn):
    from types import SimpleNamespace

    from innovwin.objectives.diffusion_settings import DEFAULTS

    settings = SimpleNamespace(**{**DEFAULTS, "sampler_steps": steps, "s_churn": s_churn})
    objective = edm.Diffusion(SimpleNamespace(n_cells=4, k=2), settings)
    net = CountingNet(4)
    objective.generate(net, objective.eval_start(3, torch.Generator().manual_seed(0), "cpu"))
    assert net.calls == objective.network_calls_per_sample()
