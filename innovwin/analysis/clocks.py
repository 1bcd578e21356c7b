"""The two clocks and the innovation window, from a run's evaluation rows.

- ``tau_rule``: the first evaluation whose sample-level validity is >= the threshold *and* stays >= it at
  the next evaluation. A crossing at the last evaluation has no next one to confirm it, so it does not
  count: the clock stays censored. (Otherwise one lucky final evaluation would end a run with a clock.)
- ``tau_mem``: the first evaluation whose copy rate above chance (copy_frac - chance_copy) is >= the threshold.
- Both are interpolated in log(step) between the evaluation before the crossing and the crossing one. A curve
  already above the threshold at the first evaluation gives the first step, an upper bound (``at_first_eval``).
  A curve that never crosses is *censored*: no value, rendered "> last step".
- Intervals: a paired bootstrap over the generated samples. The same starting noises are used at every
  evaluation, so sample j of one evaluation and sample j of the next are paired; one resample of the sample
  indices is applied to every evaluation, and the clocks are recomputed on the resampled curves.

Everything here is a pure function of arrays; the training driver and the reports share it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CI_LEVEL = 0.95


@dataclass(frozen=True)
class Clock:
    value: float | None  # interpolated step; None when censored
    censored: bool  # the curve never crossed by the last evaluation
    at_first_eval: bool  # already crossed at the first evaluation: value is an upper bound
    last_step: int

    def render(self) -> str:
        if self.censored:
            return f"> {self.last_step}"
        if self.at_first_eval:
            return f"<= {self.value:.0f}"
        return f"{self.value:.0f}"


def crossing_steps(steps, values, threshold: float, confirm: bool) -> np.ndarray:
    """Crossing step of each curve in ``values`` (curves, evals), NaN where a curve never crosses.

    ``confirm`` asks the next evaluation to stay at or above the threshold too (tau_rule's rule).
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if steps.ndim != 1 or values.shape[1] != steps.size or steps.size == 0:
        raise ValueError(f"values must have shape (curves, {steps.size}) for {steps.size} steps, got {values.shape}")
    if np.any(np.diff(steps) <= 0) or steps[0] <= 0:
        raise ValueError("steps must be positive and strictly increasing")
    hit = values >= threshold
    if confirm:
        hit = np.concatenate([hit[:, :-1] & hit[:, 1:], np.zeros_like(hit[:, :1])], axis=1)
    crossed = hit.any(axis=1)
    first = hit.argmax(axis=1)
    before = np.maximum(first - 1, 0)
    rows = np.arange(values.shape[0])
    v0, v1 = values[rows, before], values[rows, first]
    # v0 < threshold <= v1 wherever first > 0, so the division is safe there.
    fraction = np.where(first > 0, (threshold - v0) / np.where(v1 > v0, v1 - v0, 1.0), 0.0)
    log_step = np.log(steps[before]) + np.clip(fraction, 0.0, 1.0) * (np.log(steps[first]) - np.log(steps[before]))
    at_step = np.where(first > 0, np.exp(log_step), steps[0])
    return np.where(crossed, at_step, np.nan)


def _clock(steps, values, threshold: float, confirm: bool) -> Clock:
    value = float(crossing_steps(steps, values, threshold, confirm)[0])
    censored = bool(np.isnan(value))
    return Clock(
        value=None if censored else value,
        censored=censored,
        at_first_eval=not censored and value == float(steps[0]),
        last_step=int(steps[-1]),
    )


def tau_rule(steps, valid_frac, threshold: float = 0.9) -> Clock:
    """First step with validity >= threshold, confirmed by the next evaluation."""
    return _clock(steps, valid_frac, threshold, confirm=True)


def tau_mem(steps, copy_frac, chance_copy, threshold: float = 0.1) -> Clock:
    """First step with copy rate above chance >= threshold."""
    excess = np.asarray(copy_frac, dtype=np.float64) - np.asarray(chance_copy, dtype=np.float64)
    return _clock(steps, excess, threshold, confirm=False)


def window(rule: Clock, mem: Clock) -> tuple[list[float] | None, str, str | None]:
    """The innovation window ``[tau_rule, tau_mem]`` with its state and, when there is none, the reason.

    States: "open" (both clocks crossed, rule first), "closed" (memorization came first, or the rule was
    never learned while memorization began), "open_at_end" (rule learned, memorization not reached: the
    window's end is past the run), "unknown" (neither clock crossed, or both by the first evaluation: both
    are upper bounds there, so their order is unknown). An open window whose tau_rule is an upper bound
    (crossed at the first evaluation) opened at or before it: its width is a lower bound, and the reason says so.
    """
    if not rule.censored and not mem.censored:
        if rule.at_first_eval and mem.at_first_eval:
            return None, "unknown", (f"both clocks crossed by the first evaluation (step {rule.value:.0f}): "
                                     "which came first is unknown")
        if rule.value < mem.value:
            reason = (f"tau_rule {rule.render()} (crossed at the first evaluation): the window opened at or "
                      "before it, so its width is a lower bound") if rule.at_first_eval else None
            return [rule.value, mem.value], "open", reason
        return None, "closed", f"memorized before the rule was learned (tau_mem {mem.render()} <= tau_rule {rule.render()})"
    if rule.censored and not mem.censored:
        return None, "closed", (f"tau_rule never reached (sample validity never held at its threshold); "
                                f"memorization began at step {mem.render()}")
    if not rule.censored:
        return None, "open_at_end", f"memorization not reached: window open at the end (rule learned at step {rule.render()})"
    return None, "unknown", f"neither clock reached by step {rule.last_step}"


def bootstrap_intervals(steps, valid, copy, chance_copy, *, rule_threshold=0.9, mem_threshold=0.1,
                        n_resamples=1000, seed=0, level=CI_LEVEL):
    """Paired bootstrap intervals for (tau_rule, tau_mem) over the generated samples.

    ``valid`` and ``copy`` are boolean (evals, samples) arrays, sample j of every evaluation coming from the
    same starting noise. Returns two ``[lo, hi]`` lists; ``hi`` is None when more than the upper tail of
    resamples never crosses (the interval is open to the right).
    """
    valid = np.asarray(valid, dtype=np.float64)
    copy = np.asarray(copy, dtype=np.float64)
    if valid.shape != copy.shape or valid.ndim != 2 or valid.shape[0] != len(steps):
        raise ValueError(f"valid and copy must both have shape ({len(steps)}, samples), got {valid.shape}, {copy.shape}")
    m = valid.shape[1]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(m, np.full(m, 1.0 / m), size=n_resamples).astype(np.float64)  # (B, M)
    valid_curves = counts @ valid.T / m
    excess_curves = counts @ copy.T / m - np.asarray(chance_copy, dtype=np.float64)
    tails = [(1 - level) / 2, (1 + level) / 2]
    intervals = []
    for curves, threshold, confirm in ((valid_curves, rule_threshold, True), (excess_curves, mem_threshold, False)):
        taus = crossing_steps(steps, curves, threshold, confirm)
        lo, hi = np.quantile(np.where(np.isnan(taus), np.inf, taus), tails, method="inverted_cdf")
        intervals.append([None if np.isinf(lo) else float(lo), None if np.isinf(hi) else float(hi)])
    return intervals[0], intervals[1]


def summarize(rows: list[dict], valid=None, copy=None, *, rule_threshold=0.9, mem_threshold=0.1,
              n_resamples=1000, seed=0) -> dict:
    """The clocks' part of summary.json from metrics rows (and per-sample arrays for the intervals).

    An interval is reported only for a clock that crossed (a censored clock has no value to bracket).
    """
    if not rows:
        raise ValueError("no evaluation rows: the run has not evaluated yet")
    steps = [row["step"] for row in rows]
    chance = [row["chance_copy"] or 0.0 for row in rows]
    rule = tau_rule(steps, [row["valid_frac"] for row in rows], rule_threshold)
    mem = tau_mem(steps, [row["copy_frac"] for row in rows], chance, mem_threshold)
    rule_ci = mem_ci = None
    if valid is not None and n_resamples > 0:
        rule_ci, mem_ci = bootstrap_intervals(steps, valid, copy, chance, rule_threshold=rule_threshold,
                                              mem_threshold=mem_threshold, n_resamples=n_resamples, seed=seed)
    span, state, reason = window(rule, mem)
    return {
        "tau_rule": rule.value,
        "tau_mem": mem.value,
        "tau_rule_ci": None if rule.censored else rule_ci,
        "tau_mem_ci": None if mem.censored else mem_ci,
        "tau_rule_censored": rule.censored,
        "tau_mem_censored": mem.censored,
        "tau_rule_text": rule.render(),
        "tau_mem_text": mem.render(),
        "window": span,
        "window_state": state,
        "window_reason": reason,
    }


def describe(summary: dict) -> str:
    """A few human lines for the end of a run."""
    def one(name):
        ci = summary[f"{name}_ci"]
        text = summary[f"{name}_text"]
        if ci:  # either bound may be open (None): the bootstrap found no crossing on that side
            lo, hi = ("open" if bound is None else f"{bound:.0f}" for bound in ci)
            text += f"  (95% CI {lo}-{hi})"
        return text

    lines = [f"tau_rule  {one('tau_rule')}", f"tau_mem   {one('tau_mem')}"]
    if summary["window"]:
        lo, hi = summary["window"]
        lines.append(f"window    [{lo:.0f}, {hi:.0f}]: open for {hi - lo:.0f} steps ({hi / lo:.1f}x)")
        if summary["window_reason"]:  # a width that is only a lower bound
            lines.append(f"          {summary['window_reason']}")
    else:
        lines.append(f"window    none ({summary['window_state']}): {summary['window_reason']}")
    return "\n".join(lines)
