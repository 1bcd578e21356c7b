"""The clocks of a run not yet made, from the censored fits of the runs already made (`innovwin predict`).

A new run is described by the config fields it sets (``n_train=4096``, ``task=parity:h=6,w=6,g=4``, ``depth=8``).
Its clock is predicted from the first fit of :data:`innovwin.analysis.fits.FIT_PLAN` that applies: the group of
runs (equal in the plan's fields, every run and seed, censored ones included) that the new run belongs to, fitted
against the axis the plan names (N for both clocks, then rule complexity, then depth, then width), at the new run's
value of that axis (a width not run yet: from the runs of the other widths at the same N). A field the new run
leaves unset matches any value; where that leaves more than one group, the prediction is refused and says what to
set.

The 95% interval is a *prediction* interval for the new run's clock, not a confidence interval for the law: it
adds the uncertainty of the fitted line at x (the inverse of the observed Fisher information of log a and alpha at
the maximum, carried to log a + alpha log x) to the runs' scatter around the law (sigma, seeds included), and
scales the sum by n/(n - 2) with Student's t at n - 2 degrees of freedom: for runs measured exactly this is the
textbook interval of a new observation in normal regression, exp(mu ± t s sqrt(1 + h)). Brackets and censored runs
enter through the likelihood's curvature. sigma is the fit's, floored at the evaluation grid's resolution
(:meth:`innovwin.analysis.fits.CensoredMaximum.resolution`): a law that threads every bracket has sigma -> 0 and
would otherwise predict with no spread at all (and its line would not be pinned: no curvature inside the
brackets).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import median

import numpy as np

from innovwin.analysis.clocks import CI_LEVEL, CLOCKS
from innovwin.analysis.fits import (
    CLOCK_SYMBOLS,
    FIT_PLAN,
    CensoredFit,
    CensoredMaximum,
    censored_log_terms,
    fit_censored_power_law,
    having,
    law_text,
    maximize_censored,
    student_t_quantile,
    varying_groups,
)
from innovwin.analysis.records import RunRecord, group_by
from innovwin.config import POOLED, canonical_name, parse_value

MIN_RUNS = 4  # a prediction interval needs n - 2 >= 2 degrees of freedom
SAFETY = 1.5  # the suggested budget: the later clock's upper end times this
AXIS_NAMES = {"n_train": "N", "complexity": "complexity", "depth": "depth", "width": "width"}  # FIT_PLAN's axes
AXES_TEXT = ", ".join(list(AXIS_NAMES.values())[:-1]) + " or " + list(AXIS_NAMES.values())[-1]  # "N, ... or width"
RECORD_FIELDS = ("task", "arch", "depth", "width", "n_train")  # config fields a record holds as its own axes


@dataclass(frozen=True)
class Prediction:
    """One clock of the new run: estimate and prediction interval (steps), the fit it comes from."""

    clock: str
    against: str
    x: float
    estimate: float
    lo: float
    hi: float
    level: float
    group: dict  # the fitted group's values of the plan's fields
    fit: CensoredFit | None  # with alpha's interval; None in the leave-one-out check, which needs only the law

    def to_json(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "fit"},
                "fit": None if self.fit is None else asdict(self.fit)}

    def render(self) -> str:
        """``τ_mem ≈ 3447 steps (95% prediction interval 2580 to 4605), from τ_mem ∝ N^0.90 [0.86, 0.94]
        (18 runs, 5 censored) [task …, arch dit, …]``."""
        fit, axis = self.fit, AXIS_NAMES[self.against]
        source = "" if fit is None else \
            f", from {law_text(self.clock, axis, fit.alpha, fit.alpha_lo, fit.alpha_hi, runs_note(fit))}"
        return (f"{CLOCK_SYMBOLS[self.clock]} ≈ {self.estimate:.0f} steps ({self.level:.0%} prediction interval "
                f"{self.lo:.0f} to {self.hi:.0f}){source}  [{group_text(self.group)}]")


def runs_note(fit: CensoredFit) -> str:
    censored = fit.n_right + fit.n_left
    return f"{fit.n} run{'s' * (fit.n != 1)}" + (f", {censored} censored" if censored else "")


def group_text(group: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in group.items() if value != "")


def prediction_interval(best: CensoredMaximum, x: float, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(estimate, lo, hi) steps of a new run's clock at ``x`` under the law ``best`` (see the module's docstring)."""
    n = len(best.log_x)
    if n < MIN_RUNS:
        raise ValueError(f"a prediction interval needs at least {MIN_RUNS} runs in the group, it has {n}")
    if not x > 0:
        raise ValueError(f"a power law predicts at x > 0, got {x}")
    sigma = max(best.sigma, best.resolution())
    mean = best.log_a + best.alpha * best.log_x
    step = 1e-2 * sigma
    terms = [censored_log_terms(mean + shift, sigma, best.log_lo, best.log_hi) for shift in (-step, 0.0, step)]
    weights = -(terms[0] - 2 * terms[1] + terms[2]) / step**2  # each run's curvature in its mean (>= 0: log-concave)
    design = np.stack([np.ones(n), best.log_x], axis=1)
    at = np.array([1.0, math.log(x)])
    try:
        line_variance = float(at @ np.linalg.solve(design.T @ (weights[:, None] * design), at))
    except np.linalg.LinAlgError:
        line_variance = math.nan
    if not (math.isfinite(line_variance) and line_variance >= 0):
        raise ValueError("the runs do not pin the law down (its information is singular): no prediction")
    spread = math.sqrt((line_variance + sigma**2) * n / (n - 2))
    half = student_t_quantile(level, n - 2) * spread
    centre = best.log_a + best.alpha * math.log(x)
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


def predict_from(members: list[RunRecord], clock: str, against: str, x: float, group: dict, *,
                 level: float = CI_LEVEL, with_fit: bool = True) -> Prediction:
    """The prediction at ``x`` from the censored fit of ``members``' clock against ``against``."""
    xs = [getattr(m, against) for m in members]
    bounds = [m.clock(clock).observation() for m in members]
    lo, hi = [b[0] for b in bounds], [b[1] for b in bounds]
    estimate, low, high = prediction_interval(maximize_censored(xs, lo, hi), x, level)
    fit = fit_censored_power_law(xs, lo, hi, ci=level) if with_fit else None
    return Prediction(clock, against, float(x), estimate, low, high, level, group, fit)


# --- the new run ----------------------------------------------------------------------------------------------------
def target(settings: dict[str, str]) -> dict:
    """The new run's known values: record axes (task, family and complexity from a task spec; arch, depth, width,
    n_train) and, under ``variant``, the fields that make another experiment (config.POOLED aside). Unknown fields
    and bad values are refused, named."""
    from innovwin.tasks import make

    known, variant = {}, {}
    for name, text in settings.items():
        field = canonical_name(name)
        value = parse_value(field, text)
        if field == "task":
            task = make(value)
            known.update(task=task.spec, family=task.family, complexity=task.complexity)
        elif field in RECORD_FIELDS:
            known[field] = value
        elif field not in POOLED:
            variant[field] = value
    return {**known, "variant": variant}


def matches(group: dict, members: list[RunRecord], new: dict) -> bool:
    """Whether the new run belongs to this group: equal wherever it sets a value the group is defined by."""
    for name, value in group.items():
        if name == "variant":
            config = members[0].config
            if any(getattr(config, field) != wanted for field, wanted in new["variant"].items()):
                return False
        elif name in new and new[name] != value:
            return False
    return True


def predict_clock(records: list[RunRecord], new: dict, clock: str, level: float = CI_LEVEL) -> Prediction:
    """``clock`` of the new run from the first plan entry that applies; ValueError saying why none does."""
    reasons = []
    for planned, against, by in FIT_PLAN:
        if planned != clock:
            continue
        groups = [(g, m) for g, m in varying_groups(having(records, clock), against, by) if matches(g, m, new)]
        axis = AXIS_NAMES[against]
        if not groups:
            continue
        if against not in new:
            reasons.append(f"against {axis}: set the new run's {'task' if against == 'complexity' else against}")
        elif len(groups) > 1:
            differ = [name for name in by if len({str(g[name]) for g, _ in groups}) > 1]
            reasons.append(f"against {axis}: {len(groups)} groups of runs match; set {', '.join(differ)}")
        else:
            try:
                return predict_from(groups[0][1], clock, against, new[against], groups[0][0], level=level)
            except ValueError as error:
                reasons.append(f"against {axis}: {error}")
    if not reasons:
        tasks = ", ".join(sorted({r.task for r in records})[:3])
        varied = any(varying_groups(records, against, by) for _, against, by in FIT_PLAN)
        reasons.append(f"no group of runs that varies {AXES_TEXT} matches the new run's task and settings (the "
                       f"store's tasks: {tasks})" if varied else f"no group of runs has more than one value of "
                                                                 f"{AXES_TEXT} to fit")
    raise ValueError(f"no prediction of {CLOCK_SYMBOLS[clock]}: {'; '.join(reasons)}")


def predict(records: list[RunRecord], settings: dict[str, str], *, level: float = CI_LEVEL,
            safety: float = SAFETY) -> dict:
    """Both clocks of the run that ``settings`` describe, what was not predicted and why, and a budget; ValueError
    when neither clock can be predicted."""
    if not records:
        raise ValueError("no prediction: the store has no finished run to fit")
    if not safety >= 1:
        raise ValueError(f"the safety factor must be >= 1, got {safety}")
    new = target(settings)
    predictions, skipped = [], {}
    for clock in CLOCKS:
        try:
            predictions.append(predict_clock(records, new, clock, level))
        except ValueError as error:
            skipped[clock] = str(error)
    if not predictions:
        raise ValueError("; ".join(skipped.values()))
    later = max(predictions, key=lambda p: p.hi)
    return {"settings": settings, "predictions": predictions, "skipped": skipped,
            "budget": {"steps": math.ceil(later.hi * safety), "safety": safety, "clock": later.clock,
                       "upper_end": later.hi}}


def render(result: dict) -> list[str]:
    """The lines `innovwin predict` prints."""
    lines = [p.render() for p in result["predictions"]] + list(result["skipped"].values())
    budget = result["budget"]
    lines.append(f"suggested budget: steps = {budget['steps']} ({CLOCK_SYMBOLS[budget['clock']]}'s upper end "
                 f"{budget['upper_end']:.0f} x safety {budget['safety']:g})")
    return lines


def to_json(result: dict) -> dict:
    return {**result, "predictions": [p.to_json() for p in result["predictions"]]}


# --- the check ------------------------------------------------------------------------------------------------------
def leave_one_out(records: list[RunRecord], *, level: float = CI_LEVEL) -> list[dict]:
    """Each run of each fitted group predicted from the others of its group: one row per (run, fit), with the
    prediction, what the run measured, and whether that lies in the interval (a censored clock: whether its known
    interval, past the last step or before the first evaluation, meets the prediction's). A row whose group is too
    small without the run says why instead."""
    rows = []
    for clock, against, by in FIT_PLAN:
        for group, members in varying_groups(having(records, clock), against, by):
            for index, record in enumerate(members):
                others = members[:index] + members[index + 1:]
                row = {"key": record.key, "name": record.name, "clock": clock, "against": against,
                       "x": getattr(record, against), "group": group_text(group),
                       "observed": record.clock(clock).render(), "censoring": record.clock(clock).censoring or ""}
                try:
                    found = predict_from(others, clock, against, row["x"], group, level=level, with_fit=False)
                except ValueError as error:
                    rows.append({**row, "note": str(error)})
                    continue
                rows.append({**row, **judged(record.clock(clock), found), "note": ""})
    return rows


def judged(observed, found: Prediction) -> dict:
    """The prediction's columns of a check row: estimate, interval, covered, |log10 error| (measured clocks)."""
    if observed.measured:
        low = high = observed.value
    else:
        low, high = observed.observation()
    error = abs(math.log10(observed.value / found.estimate)) if observed.measured else None
    return {"estimate": found.estimate, "lo": found.lo, "hi": found.hi, "covered": found.lo <= high and low <= found.hi,
            "log10_error": error}


CHECK_COLUMNS = ("key", "name", "clock", "against", "x", "group", "observed", "censoring", "estimate", "lo", "hi",
                 "covered", "log10_error", "note")


def check_summary(rows: list[dict]) -> list[dict]:
    """Per (clock, against): runs predicted, how many inside their interval, the median |log10 error| of the
    measured ones, and the runs that could not be predicted."""
    summary = []
    for (clock, against), found in group_by(rows, ("clock", "against")).items():
        done = [row for row in found if "covered" in row]
        errors = [row["log10_error"] for row in done if row["log10_error"] is not None]
        summary.append({"clock": clock, "against": against, "predicted": len(done),
                        "covered": sum(row["covered"] for row in done),
                        "coverage": sum(row["covered"] for row in done) / len(done) if done else None,
                        "median_log10_error": median(errors) if errors else None, "measured": len(errors),
                        "not_predicted": len(found) - len(done)})
    return summary


def check_lines(summary: list[dict], level: float = CI_LEVEL) -> list[str]:
    """One line per fit: ``τ_mem against N: 70 of 72 runs inside their 95% prediction interval (97%); median
    |log10 error| 0.05 (x1.12) over 60 measured runs``."""
    if not summary:
        return [f"no check: no group of runs varies {AXES_TEXT}"]
    lines = []
    for item in summary:
        head = f"{CLOCK_SYMBOLS[item['clock']]} against {AXIS_NAMES[item['against']]}: "
        if not item["predicted"]:
            lines.append(head + f"no run predicted ({item['not_predicted']} in groups too small without it)")
            continue
        text = (head + f"{item['covered']} of {item['predicted']} runs inside their {level:.0%} prediction interval "
                f"({item['coverage']:.0%})")
        if item["median_log10_error"] is not None:
            error = item["median_log10_error"]
            text += f"; median |log10 error| {error:.2f} (x{10 ** error:.2f}) over {item['measured']} measured runs"
        if item["not_predicted"]:
            text += f"; {item['not_predicted']} not predicted (group too small without them)"
        lines.append(text)
    return lines
