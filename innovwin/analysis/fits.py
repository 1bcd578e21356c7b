"""Scaling fits of the clocks: tau = a * x^alpha, two ways side by side.

- Ordinary least squares in log-log on the measured clocks, with a bootstrap interval on alpha (the old fit).
- Maximum likelihood with censoring (:func:`fit_censored_power_law`): log tau = log a + alpha log x + sigma eps,
  eps standard normal, where each run is known only to an interval of steps: its bracket (the two evaluations
  around the crossing), [0, first step] when crossed by the first evaluation, [last step, inf) when never
  crossed. Every run of every seed enters; the interval on alpha is the profile-likelihood one.

x is the training-set size N for tau_mem (the paper's claim: alpha close to 1), and the rule
complexity or the depth for tau_rule (alpha is then the clock's elasticity: how many times
later the rule is learned per doubling of complexity, as 2^alpha); both clocks are also fitted against the
model's width at fixed N (does a wider model memorize or learn sooner; it predicts a width not run yet). The
least-squares fit takes measured clocks only (:attr:`Clock.measured`): a clock that never crossed (a lower bound)
or crossed by the first evaluation (an upper bound) is left out and counted, never silently fitted as if it were
measured.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
import torch

from innovwin.analysis.clocks import Clock
from innovwin.analysis.records import RunRecord, group_by


@dataclass(frozen=True)
class PowerFit:
    a: float
    alpha: float
    alpha_lo: float | None  # bootstrap percentile interval (None with fewer than 3 points)
    alpha_hi: float | None
    n_points: int
    x_min: float
    x_max: float

    def predict(self, x) -> np.ndarray:
        return self.a * np.asarray(x, dtype=float) ** self.alpha


def fit_power_law(x, y, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> PowerFit:
    """Fit y = a * x^alpha (ordinary least squares of log y on log x); bootstrap over points."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of the same length, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError("a power-law fit needs finite, positive x and y")
    if len(np.unique(x)) < 2:
        raise ValueError(f"a power-law fit needs at least 2 distinct x values, got {len(np.unique(x))}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    log_x, log_y = np.log(x), np.log(y)
    alpha, log_a = _slope_intercept(log_x, log_y)
    lo = hi = None
    if n_boot > 0 and len(x) >= 3:
        rng = np.random.default_rng(seed)
        slopes = []
        while len(slopes) < n_boot:
            pick = rng.integers(0, len(x), size=len(x))
            if np.ptp(log_x[pick]) > 0:  # a resample with one x value has no slope
                slopes.append(_slope_intercept(log_x[pick], log_y[pick])[0])
        lo, hi = (float(q) for q in np.quantile(slopes, [(1 - ci) / 2, (1 + ci) / 2]))
    return PowerFit(a=float(np.exp(log_a)), alpha=float(alpha), alpha_lo=lo, alpha_hi=hi,
                    n_points=len(x), x_min=float(x.min()), x_max=float(x.max()))


def _slope_intercept(log_x: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    dx = log_x - log_x.mean()
    slope = float(dx @ (log_y - log_y.mean()) / (dx @ dx))
    return slope, float(log_y.mean() - slope * log_x.mean())


@dataclass(frozen=True)
class CensoredFit:
    a: float
    alpha: float
    alpha_lo: float | None  # profile-likelihood interval; None where the profile stays above the cut (unbounded)
    alpha_hi: float | None
    sigma: float  # the spread of log tau around the line (seeds, and everything else the line misses)
    n: int  # runs fitted: all of them
    n_right: int  # never crossed: [last step, inf)
    n_left: int  # crossed by the first evaluation: [0, first step]


SIGMA_MIN = 1e-3  # intervals that one line threads leave sigma at 0 (likelihood 1); the floor keeps it finite


def _log_ndtr(z: np.ndarray) -> np.ndarray:
    """log Phi(z), accurate in the far lower tail where Phi underflows (torch has it; numpy has no erf)."""
    return torch.special.log_ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


def _log_interval(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log(Phi(hi) - Phi(lo)) for lo < hi, computed in the lower tail (mirrored when the interval lies above 0)."""
    mirror = lo + hi > 0
    lo, hi = np.where(mirror, -hi, lo), np.where(mirror, -lo, hi)
    top, bottom = _log_ndtr(hi), _log_ndtr(lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        return top + np.log1p(-np.exp(bottom - top))


def censored_log_terms(mean: np.ndarray, sigma: float, log_lo, log_hi) -> np.ndarray:
    """Each run's log-likelihood when log tau ~ N(mean, sigma) and the run is known to lie in
    [exp(log_lo), exp(log_hi)]; an exact observation (lo == hi) contributes its density."""
    exact = log_lo == log_hi
    with np.errstate(invalid="ignore"):
        z_lo, z_hi = (log_lo - mean) / sigma, (log_hi - mean) / sigma
    density = -0.5 * z_lo**2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    return np.where(exact, density, _log_interval(np.where(exact, -1.0, z_lo), np.where(exact, 1.0, z_hi)))


def censored_log_likelihood(log_a: float, alpha: float, sigma: float, log_x, log_lo, log_hi) -> float:
    """Log-likelihood of runs known to lie in [exp(log_lo), exp(log_hi)] under log tau ~ N(log a + alpha log x,
    sigma)."""
    return float(censored_log_terms(log_a + alpha * log_x, sigma, log_lo, log_hi).sum())


def _nelder_mead(f, x0, step, *, iterations: int = 400, tol: float = 1e-6) -> tuple[np.ndarray, float]:
    """Minimize f from x0 (the textbook simplex: reflect, expand, contract, shrink)."""
    simplex = np.array([x0, *(np.asarray(x0, float) + np.diag(step))], dtype=float)
    values = np.array([f(x) for x in simplex])
    for _ in range(iterations):
        order = np.argsort(values)
        simplex, values = simplex[order], values[order]
        if values[-1] - values[0] < tol:
            break
        centroid = simplex[:-1].mean(axis=0)
        reflected = centroid + (centroid - simplex[-1])
        f_reflected = f(reflected)
        if f_reflected < values[0]:
            expanded = centroid + 2 * (centroid - simplex[-1])
            f_expanded = f(expanded)
            simplex[-1], values[-1] = (expanded, f_expanded) if f_expanded < f_reflected else (reflected, f_reflected)
        elif f_reflected < values[-2]:
            simplex[-1], values[-1] = reflected, f_reflected
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            f_contracted = f(contracted)
            if f_contracted < values[-1]:
                simplex[-1], values[-1] = contracted, f_contracted
            else:
                simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                values[1:] = [f(x) for x in simplex[1:]]
    best = int(np.argmin(values))
    return simplex[best], float(values[best])


@dataclass(frozen=True, eq=False)
class CensoredMaximum:
    """The maximum of the censored likelihood (:func:`maximize_censored`): the law's parameters, the runs in log
    steps, and the negative log-likelihood that a profile or a prediction explores around it."""

    log_a: float
    alpha: float
    sigma: float
    neg_max: float
    log_x: np.ndarray
    log_lo: np.ndarray  # -inf: crossed by the first evaluation
    log_hi: np.ndarray  # inf: never crossed

    def negative(self, log_a: float, alpha: float, log_sigma: float) -> float:
        """-log L at these parameters (sigma floored at SIGMA_MIN); inf where the likelihood vanishes."""
        return _negative(log_a, alpha, log_sigma, self.log_x, self.log_lo, self.log_hi)

    def resolution(self) -> float:
        """The scatter the evaluation grid resolves: a clock known only to a bracket of log-width w is uniform within
        it (sd w/sqrt(12)); the median over the runs' two-sided brackets, SIGMA_MIN where none has one."""
        widths = (self.log_hi - self.log_lo)[np.isfinite(self.log_lo) & np.isfinite(self.log_hi)]
        widths = widths[widths > 0]
        return max(float(np.median(widths)) / math.sqrt(12) if widths.size else 0.0, SIGMA_MIN)


def _negative(log_a, alpha, log_sigma, log_x, log_lo, log_hi) -> float:
    value = censored_log_likelihood(log_a, alpha, max(math.exp(log_sigma), SIGMA_MIN), log_x, log_lo, log_hi)
    return -value if np.isfinite(value) else np.inf


def maximize_censored(x, lo, hi) -> CensoredMaximum:
    """The maximum-likelihood law tau = a * x^alpha (log-normal scatter sigma) of runs known only to lie in [lo, hi]
    (steps; lo = 0: crossed by the first evaluation, hi = inf: never crossed, lo = hi: an exact value)."""
    x, lo, hi = (np.asarray(v, dtype=float) for v in (x, lo, hi))
    if not x.shape == lo.shape == hi.shape or x.ndim != 1:
        raise ValueError(f"x, lo and hi must be 1-d of one length, got {x.shape}, {lo.shape}, {hi.shape}")
    if not (np.all(x > 0) and np.all(np.isfinite(x)) and np.all(lo >= 0) and np.all(hi >= lo) and np.all(hi > 0)):
        raise ValueError("a censored fit needs x > 0 and 0 <= lo <= hi, hi > 0")
    bounded = np.isfinite(hi)
    if len(np.unique(x[bounded])) < 2:
        raise ValueError(f"a censored fit needs runs that crossed at >= 2 distinct x values, got "
                         f"{len(np.unique(x[bounded]))}")
    log_x = np.log(x)
    with np.errstate(divide="ignore"):
        log_lo, log_hi = np.log(lo), np.log(hi)
    # start from least squares on a point per run (the bracket's geometric middle, or its finite end)
    middle = np.where(np.isfinite(log_lo) & bounded, (log_lo + log_hi) / 2, np.where(bounded, log_hi, log_lo))
    alpha0, log_a0 = _slope_intercept(log_x, middle)
    spread = max(float(np.std(middle - log_a0 - alpha0 * log_x)), 0.1)
    (log_a, alpha, log_sigma), neg_max = _nelder_mead(lambda p: _negative(*p, log_x, log_lo, log_hi),
                                                      [log_a0, alpha0, math.log(spread)], [0.5, 0.2, 0.5])
    return CensoredMaximum(float(log_a), float(alpha), max(math.exp(log_sigma), SIGMA_MIN), neg_max, log_x, log_lo,
                           log_hi)


def fit_censored_power_law(x, lo, hi, *, ci: float = 0.95) -> CensoredFit:
    """Fit tau = a * x^alpha by maximum likelihood to runs known only to lie in [lo, hi] (:func:`maximize_censored`),
    with a profile-likelihood interval on alpha at level ``ci``."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    best = maximize_censored(x, lo, hi)
    log_x, log_sigma = best.log_x, math.log(best.sigma)

    def profile(a_fixed: float) -> float:  # the drop of the profile log-likelihood below the maximum
        _, neg = _nelder_mead(lambda p: best.negative(p[0] + (best.alpha - a_fixed) * log_x.mean(), a_fixed, p[1]),
                              [best.log_a, log_sigma], [0.3, 0.3])
        return neg - best.neg_max

    cut = _profile_cut(ci, len(log_x))
    ends = [_profile_end(profile, best.alpha, direction, cut) for direction in (-1.0, 1.0)]
    return CensoredFit(a=math.exp(best.log_a), alpha=best.alpha, alpha_lo=ends[0], alpha_hi=ends[1],
                       sigma=best.sigma, n=len(log_x), n_right=int(np.isinf(best.log_hi).sum()),
                       n_left=int(np.isneginf(best.log_lo).sum()))


def _profile_cut(ci: float, n: int) -> float:
    """The drop of the log-likelihood that bounds a ``ci`` interval: n/2 log(1 + t^2/(n-2)), t Student's quantile
    with n - 2 degrees of freedom (exact for uncensored normal regression with sigma estimated; chi-square(1)/2,
    the asymptotic cut, undercovers with the few runs a sweep has)."""
    if n <= 3:
        return math.inf  # one degree of freedom or none: no finite interval
    t = student_t_quantile(ci, n - 2)
    return n / 2 * math.log1p(t * t / (n - 2))


def student_t_quantile(ci: float, nu: int) -> float:
    """The two-sided ``ci`` quantile of Student's t with ``nu`` >= 2 degrees of freedom, by the Cornish-Fisher
    expansion (3% below the exact value at nu = 2, within 1% from nu = 3)."""
    z = NormalDist().inv_cdf((1 + ci) / 2)
    return (z + (z**3 + z) / (4 * nu) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * nu**3))


def _profile_end(drop, alpha: float, direction: float, cut: float, *, reach: float = 10.0) -> float | None:
    """Where the profile's drop reaches ``cut`` on one side of alpha (stepping out, then bisecting);
    None when it does not within ``reach``."""
    inner, outer = 0.0, 0.125
    while drop(alpha + direction * outer) < cut:
        inner, outer = outer, 2 * outer
        if outer > reach:
            return None
    for _ in range(10):
        middle = (inner + outer) / 2
        inner, outer = (middle, outer) if drop(alpha + direction * middle) < cut else (inner, middle)
    return float(alpha + direction * (inner + outer) / 2)


CLOCK_SYMBOLS = {"tau_rule": "τ_rule", "tau_mem": "τ_mem", "tau_mem_exact": "τ_mem (exact copy rate)"}


def law_text(clock: str, x: str, alpha: float, lo: float | None, hi: float | None, note: str = "") -> str:
    """A fitted law in words: ``τ_mem ∝ N^0.91 [0.62, 1.36] (5 runs)``; where the interval covers 0,
    ``τ_rule against N: no measurable trend (α -0.11 [-0.21, 0.04]; 5 runs)``; an end the profile did not reach
    reads "open"."""
    name = CLOCK_SYMBOLS[clock]
    if lo is None and hi is None:
        return f"{name} ∝ {x}^{alpha:.2f} (no interval{'; ' * bool(note)}{note})"
    interval = "[" + ", ".join("open" if end is None else f"{end:.2f}" for end in (lo, hi)) + "]"
    if (lo is None or lo <= 0) and (hi is None or hi >= 0):
        return f"{name} against {x}: no measurable trend (α {alpha:.2f} {interval}{'; ' * bool(note)}{note})"
    return f"{name} ∝ {x}^{alpha:.2f} {interval}" + (f" ({note})" if note else "")


# Which clock is fitted against what, and which record fields must be equal within one fit. ``variant`` holds
# the other config fields that vary in the store (innovwin.analysis.records.config_variants): "" when none does.
FIT_PLAN = (
    ("tau_mem", "n_train", ("task", "arch", "depth", "width", "variant")),
    ("tau_mem_exact", "n_train", ("task", "arch", "depth", "width", "variant")),
    ("tau_rule", "n_train", ("task", "arch", "depth", "width", "variant")),
    ("tau_rule", "complexity", ("family", "arch", "depth", "width", "variant")),
    ("tau_rule", "depth", ("task", "arch", "width", "variant")),
    ("tau_mem", "width", ("task", "arch", "depth", "n_train", "variant")),
    ("tau_rule", "width", ("task", "arch", "depth", "n_train", "variant")),
)


def having(records: list[RunRecord], clock: str) -> list[RunRecord]:
    """The records that measured ``clock`` (every run measures tau_rule and tau_mem; only those with exact sample
    probabilities, the GPT's, tau_mem_exact)."""
    return [record for record in records if record.clock(clock) is not None]


def varying_groups(records: list[RunRecord], against: str, by: tuple) -> list[tuple[dict, list[RunRecord]]]:
    """The groups of records equal in ``by`` among which ``against`` takes at least two values (the others are not
    fits to make), each as (its values of ``by``, its records), in first-seen order."""
    return [(dict(zip(by, values)), members) for values, members in group_by(records, by).items()
            if len({getattr(member, against) for member in members}) >= 2]


def fit_groups(records: list[RunRecord], clock: str, against: str, by: tuple[str, ...], *,
               n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One fit of ``clock`` (tau_rule or tau_mem) against ``against`` per group of records equal in ``by``.

    Groups where ``against`` never varies are not fits to make and are skipped; groups where it varies but fewer
    than two distinct values survive the censoring get a row saying so. ``n_censored`` counts both kinds of bound
    left out.
    """
    rows = []
    for group, members in sorted(varying_groups(having(records, clock), against, by),
                                 key=lambda item: str(tuple(item[0].values()))):
        found = [member.clock(clock) for member in members]
        measured = [(getattr(m, against), c.value) for m, c in zip(members, found) if c.measured]
        early = sum(c.censoring == "left" for c in found)
        row = {"clock": clock, "against": against, **group,
               "n_censored": len(members) - len(measured)}
        early_note = f"{early} crossed at the first evaluation (upper bounds), not fitted" if early else ""
        try:
            fit = fit_power_law(*zip(*measured) if measured else ([], []), n_boot=n_boot, seed=seed)
            row.update(asdict(fit), note=early_note)
        except ValueError as error:
            row.update(a=None, alpha=None, alpha_lo=None, alpha_hi=None, n_points=len(measured),
                       x_min=None, x_max=None, note="; ".join(filter(None, (str(error), early_note))))
        row.update(censored_fit_row([getattr(m, against) for m in members], found))
        rows.append(row)
    return rows


ML_COLUMNS = ("ml_alpha", "ml_alpha_lo", "ml_alpha_hi", "ml_a", "ml_sigma", "ml_n", "ml_n_right", "ml_n_left",
              "ml_note")


def censored_fit_row(xs, found: list[Clock]) -> dict:
    """The ML_COLUMNS of one group: each clock's :meth:`~innovwin.analysis.clocks.Clock.observation` at its x,
    fitted by fit_censored_power_law."""
    row = dict.fromkeys(ML_COLUMNS)
    row.update(ml_n=len(found), ml_note="")
    bounds = [clock.observation() for clock in found]
    try:
        fit = fit_censored_power_law(xs, [lo for lo, _ in bounds], [hi for _, hi in bounds])
    except ValueError as error:
        return {**row, "ml_note": str(error)}
    return {**row, **{f"ml_{name}": value for name, value in asdict(fit).items()}}


def fit_all(records: list[RunRecord], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Every fit of FIT_PLAN that the records support."""
    return [row for clock, against, by in FIT_PLAN
            for row in fit_groups(records, clock, against, by, n_boot=n_boot, seed=seed)]
