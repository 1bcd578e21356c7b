"""Scaling fits of the clocks: tau = a * x^alpha by least squares in log-log, with a bootstrap
interval on alpha.

x is the training-set size N for tau_mem (the paper's claim: alpha close to 1), and the rule
complexity or the depth for tau_rule (alpha is then the clock's elasticity: how many times
later the rule is learned per doubling of complexity, as 2^alpha). Censored clocks (the curve
never crossed, so tau is only a lower bound) are left out of the fit and counted, never
silently fitted as if they were measured. The same holds for a clock already crossed at the first
evaluation (``clock + "_at_first_eval"``): its value is only an upper bound.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np


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


# Which clock is fitted against what, and which run fields must be equal within one fit. ``variant`` holds
# the other config fields that vary in the store (innovwin.report.config_variants): "" when none does.
FIT_PLAN = (
    ("tau_mem", "n_train", ("task", "arch", "depth", "width", "variant")),
    ("tau_rule", "n_train", ("task", "arch", "depth", "width", "variant")),
    ("tau_rule", "complexity", ("family", "arch", "depth", "width", "variant")),
    ("tau_rule", "depth", ("task", "arch", "width", "variant")),
)


def fit_groups(records: list[dict], clock: str, against: str, by: tuple[str, ...], *,
               n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One fit of ``clock`` against ``against`` per group of records equal in ``by``.

    Records carry ``clock``, ``clock + "_censored"`` and the fields named (and optionally
    ``clock + "_at_first_eval"``). Groups where ``against`` never varies are not fits to make and
    are skipped; groups where it varies but fewer than two distinct values survive the censoring
    get a row saying so. ``n_censored`` counts both kinds of bound left out.
    """
    groups = defaultdict(list)
    for record in records:
        groups[tuple(record[name] for name in by)].append(record)
    rows = []
    for group_values, members in sorted(groups.items(), key=lambda item: str(item[0])):
        if len({member[against] for member in members}) < 2:
            continue
        early = [m for m in members if m.get(f"{clock}_at_first_eval") and not m[f"{clock}_censored"]]
        measured = [m for m in members if not m[f"{clock}_censored"] and m[clock] is not None
                    and not m.get(f"{clock}_at_first_eval")]
        row = {"clock": clock, "against": against, **dict(zip(by, group_values)),
               "n_censored": len(members) - len(measured)}
        early_note = (f"{len(early)} crossed at the first evaluation (upper bounds), not fitted"
                      if early else "")
        try:
            fit = fit_power_law([m[against] for m in measured], [m[clock] for m in measured],
                                n_boot=n_boot, seed=seed)
            row.update(asdict(fit), note=early_note)
        except ValueError as error:
            row.update(a=None, alpha=None, alpha_lo=None, alpha_hi=None, n_points=len(measured),
                       x_min=None, x_max=None, note="; ".join(filter(None, (str(error), early_note))))
        rows.append(row)
    return rows


def fit_all(records: list[dict], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Every fit of FIT_PLAN that the records support."""
    return [row for clock, against, by in FIT_PLAN
            for row in fit_groups(records, clock, against, by, n_boot=n_boot, seed=seed)]
