"""The censored maximum-likelihood power law on synthetic runs whose clocks follow a known law and are seen
only as the brackets of a log-spaced evaluation grid, censored where they pass the last step."""
import math

import numpy as np
import pytest

from innovwin.analysis.clocks import Clock
from innovwin.analysis.fits import censored_fit_row, fit_censored_power_law, fit_power_law

GRID = np.unique(np.round(10 * 10 ** (np.arange(25) / 8)).astype(int))  # 8 evaluations per decade from 10


def bracketed(tau, last_step):
    """Each clock as the evaluations around it: [0, first] when already crossed, [last, inf) when never."""
    grid = GRID[GRID <= last_step]
    lo = np.array([grid[grid < t].max() if (grid < t).any() else 0 for t in tau], float)
    hi = np.array([grid[grid >= t].min() if (grid >= t).any() else np.inf for t in tau], float)
    return lo, hi


def synthetic(rng, alpha=1.0, sigma=0.3, last_step=600, seeds=3):
    x = np.repeat([16, 32, 64, 128, 256, 512], seeds)
    tau = 2.0 * x**alpha * np.exp(rng.normal(0, sigma, x.size))
    return x, *bracketed(tau, last_step)


def test_censored_fit_recovers_a_known_alpha_from_brackets_and_censored_runs():
    rng = np.random.default_rng(0)
    covered, errors, n_right = 0, [], 0
    for _ in range(20):
        x, lo, hi = synthetic(rng, alpha=0.8, last_step=200)
        fit = fit_censored_power_law(x, lo, hi)
        covered += fit.alpha_lo <= 0.8 <= fit.alpha_hi
        errors.append(fit.alpha - 0.8)
        n_right += fit.n_right
        assert fit.n == len(x) and 0.1 < fit.sigma < 0.6  # every run enters; sigma near the true 0.3
    assert n_right >= 60  # the largest N cross past the last step: censoring matters here
    assert covered >= 16  # measured 16/20 on these draws (88% over 60): a 95% interval, slightly optimistic
    assert abs(np.mean(errors)) < 0.05


def test_censored_fit_of_exact_values_is_least_squares():
    x = np.array([10.0, 20, 40, 80, 160])
    y = 3 * x**0.8 * np.exp(np.array([0.1, -0.2, 0.05, 0.15, -0.1]))
    ml, ols = fit_censored_power_law(x, y, y), fit_power_law(x, y, n_boot=0)
    assert ml.alpha == pytest.approx(ols.alpha, abs=1e-3) and ml.a == pytest.approx(ols.a, rel=1e-2)
    assert ml.alpha_lo < ml.alpha < ml.alpha_hi


def test_left_censored_runs_and_unbounded_intervals():
    x = np.array([10.0, 10, 100, 100])
    fit = fit_censored_power_law(x, [0, 0, 100, 120], [10, 10, 120, 140])  # both low-N runs crossed by the first eval
    assert fit.n_left == 2 and fit.alpha > 0.8
    with pytest.raises(ValueError, match="distinct x"):
        fit_censored_power_law(x, [0, 0, 100, 100], [10, 10, math.inf, math.inf])
    with pytest.raises(ValueError, match="lo <= hi"):
        fit_censored_power_law([1.0, 2.0], [5, 5], [4, 6])


def test_clocks_become_observations_and_a_row():
    found = [Clock(2.0 * n, None, 20000, (1.5 * n, 2.5 * n), (1.5 * n, 2.5 * n)) for n in (10, 100, 1000)]
    found.append(Clock(None, "right", 20000, (3000.0, None)))  # never crossed: [last evaluation, inf)
    found.append(Clock(20.0, None, 20000))  # an older summary: no bracket
    row = censored_fit_row([10, 100, 1000, 10000, 10], found)
    assert row["ml_n"] == 5 and row["ml_n_right"] == 1 and row["ml_alpha_lo"] < 1.0 < row["ml_alpha_hi"]

