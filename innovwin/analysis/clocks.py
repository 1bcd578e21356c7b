"""The two clocks and the innovation window, from a run's evaluation rows.

- ``tau_rule``: the first evaluation whose sample-level validity is >= the threshold *and* stays >= it at
  the next evaluation. A crossing at the last evaluation has no next one to confirm it, so it does not
  count: the clock stays censored. (Otherwise one lucky final evaluation would end a run with a clock.)
- ``tau_mem``: the first evaluation whose copy rate above chance (copy_frac - chance_copy) is >= the threshold.
- ``tau_mem_exact`` (an objective with exact sample probabilities, the GPT's): the same crossing of the *expected*
  copy rate above chance (copy_prob - chance_copy: the probability mass the model puts on the training set,
  computed by teacher forcing at every evaluation). It carries no sampling noise, so its interval is its bracket.
- The *estimate* is interpolated in log(step) between the evaluation before the crossing and the crossing one.
  Where the crossing lies between those two evaluations is not measured: they are the clock's *bracket*.
  A curve already above the threshold at the first evaluation is *left-censored* (bracket [0, first step]; the
  first step is an upper bound), rendered "<= first step". A curve that never crosses is *right-censored*
  (bracket [last step, open]), rendered "> last step". :attr:`Clock.censoring` says which, in one field.
- The *interval* joins the bracket and the sampling error of the generations: a paired bootstrap over the
  generated samples (the same starting noises are used at every evaluation, so sample j of one evaluation and
  sample j of the next are paired; one resample of the sample indices is applied to every evaluation), taking
  the lower tail of the resampled brackets' low ends and the upper tail of their high ends. It is never narrower
  than the bracket.
- The window's verdict is three-valued: open (tau_rule's interval ends at or before tau_mem's begins), closed
  (the reverse), or unresolved (the intervals overlap: the order is not measured). A :class:`Window` holds it
  with its reason and, when open, its span and width in decades (a lower bound when open at the end, or when
  tau_rule is left-censored): the same width wherever it is shown.

summary.json holds each clock as ``{"estimate", "bracket", "interval", "censored"}`` (see :meth:`Clock.to_json`);
:func:`read_clock` reads that and the flat form of older summaries alike, and every reader goes through it.
Everything here is a pure function of arrays; the training driver and the reports share it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

CI_LEVEL = 0.95
CLOCKS = ("tau_rule", "tau_mem")
CENSORING = (None, "left", "right")  # measured, crossed by the first evaluation, never crossed


@dataclass(frozen=True)
class Clock:
    """One clock of one run. ``censoring`` is summary.json's ``censored``: None (measured), "left" (crossed by the
    first evaluation: ``value`` is that step, an upper bound) or "right" (never crossed: ``value`` is None, the
    clock is past ``last_step``)."""

    value: float | None
    censoring: str | None
    last_step: int
    bracket: tuple | None = None  # (last evaluation below, first at/after; None: open); None: not recorded
    interval: tuple | None = None  # the bracket joined with the bootstrap, (lo, hi or None: open); None: none

    def __post_init__(self):
        if self.censoring not in CENSORING:
            raise ValueError(f"a clock's censoring is one of {CENSORING}, got {self.censoring!r}")

    @property
    def measured(self) -> bool:
        """Crossed between two evaluations: a value a fit may take (neither kind of bound)."""
        return self.censoring is None

    def drawn_at(self) -> float:
        """Where a figure puts the clock: its value, or the last step for a clock never crossed (a lower bound)."""
        return float(self.last_step) if self.censoring == "right" else float(self.value)

    def bounds(self) -> tuple[float, float]:
        """(lo, hi) of what is known of the clock, hi = inf when open: the interval, else the bracket, else the
        value itself (an older summary's measured clock), with the censoring's own bounds."""
        if self.censoring == "right":
            return float(self.last_step), math.inf
        known = self.interval or self.bracket
        if known is None:
            return (0.0 if self.censoring == "left" else self.value), self.value
        return float(known[0] or 0.0), math.inf if known[1] is None else float(known[1])

    def observation(self) -> tuple[float, float]:
        """(lo, hi) steps for a censored fit: the bracket; [0, first step] when crossed by the first evaluation;
        [last step, inf) when never crossed; (value, value) for an older summary's clock that kept no bracket."""
        lo, hi = self.bracket or (None, None)
        if self.censoring == "right":
            return float(self.last_step if lo is None else lo), math.inf
        if self.censoring == "left":
            return 0.0, float(self.value if hi is None else hi)
        return (float(lo), float(hi)) if lo is not None and hi is not None else (float(self.value),) * 2

    def render(self) -> str:
        """The clock's one text: ``399``, ``<= 10`` (crossed by the first evaluation), ``> 2000`` (never)."""
        if self.censoring == "right":
            return f"> {self.last_step}"
        if self.censoring == "left":
            return f"<= {self.value:.0f}"
        return f"{self.value:.0f}"

    def render_interval(self) -> str:
        """The value and its interval, e.g. ``399 [316, 562]``; a censored clock has only its bound."""
        if self.censoring == "right" or self.interval is None:
            return self.render()
        lo, hi = ("open" if bound is None else f"{bound:.0f}" for bound in self.interval)  # an older summary's
        return f"{self.render()} [{lo}, {hi}]"  # bootstrap may have found no crossing on either side

    def to_json(self) -> dict:
        as_list = lambda pair: None if pair is None else [float(pair[0]), None if pair[1] is None else float(pair[1])]  # noqa: E731
        return {"estimate": None if self.censoring else self.value, "bracket": as_list(self.bracket),
                "interval": as_list(self.interval), "censored": self.censoring}


@dataclass(frozen=True)
class Window:
    """The innovation window of one run (:func:`window`): its verdict and, when open, how wide it is.

    ``span`` is ``(tau_rule, tau_mem)``, tau_mem None when memorization was not reached (open at the end).
    ``width`` is log10(tau_mem / tau_rule) in decades, the last step standing in for a tau_mem not reached;
    ``width_is_bound`` says it is only a lower bound (open at the end, or tau_rule crossed by the first
    evaluation). A window that is not open has neither span nor width."""

    state: str  # open | closed | unresolved
    reason: str | None = None
    span: tuple | None = None
    width: float | None = None
    width_is_bound: bool = False

    @property
    def kind(self) -> str:
        """open, open at the end (memorization not reached), closed or unresolved."""
        return "open at the end" if self.state == "open" and self.span[1] is None else self.state

    def render(self) -> str:
        """The window's one text: its kind, and its width when open, e.g. ``open, 0.63 decades (x4.3)``,
        ``open at the end, ≥ 0.92 decades (x8.3)`` (a lower bound), ``closed``."""
        if self.width is None:
            return self.kind
        return f"{self.kind}, {'≥ ' * self.width_is_bound}{self.width:.2f} decades (x{10 ** self.width:.1f})"


def crossing_brackets(steps, values, threshold: float, confirm: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each curve's crossing of ``values`` (curves, evals): (estimate, bracket low, bracket high) steps.

    The estimate is NaN where a curve never crosses (its bracket is [last step, inf]); a curve crossed at the
    first evaluation has the first step as estimate and bracket [0, first step]. ``confirm`` asks the next
    evaluation to stay at or above the threshold too (tau_rule's rule).
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
    low = np.where(crossed, np.where(first > 0, steps[before], 0.0), steps[-1])
    high = np.where(crossed, steps[first], np.inf)
    return np.where(crossed, at_step, np.nan), low, high


def crossing_steps(steps, values, threshold: float, confirm: bool) -> np.ndarray:
    """Crossing step of each curve in ``values`` (curves, evals), NaN where a curve never crosses."""
    return crossing_brackets(steps, values, threshold, confirm)[0]


def _clock(steps, values, threshold: float, confirm: bool) -> Clock:
    estimate, low, high = (float(a[0]) for a in crossing_brackets(steps, values, threshold, confirm))
    bracket = (low, None if math.isinf(high) else high)
    censoring = "right" if np.isnan(estimate) else "left" if estimate == float(steps[0]) else None
    return Clock(value=None if censoring == "right" else estimate, censoring=censoring, last_step=int(steps[-1]),
                 bracket=bracket, interval=bracket)


def tau_rule(steps, valid_frac, threshold: float = 0.9) -> Clock:
    """First step with validity >= threshold, confirmed by the next evaluation."""
    return _clock(steps, valid_frac, threshold, confirm=True)


def tau_mem(steps, copy_frac, chance_copy, threshold: float = 0.1) -> Clock:
    """First step with copy rate above chance >= threshold."""
    excess = np.asarray(copy_frac, dtype=np.float64) - np.asarray(chance_copy, dtype=np.float64)
    return _clock(steps, excess, threshold, confirm=False)


def tau_mem_exact(rows: list[dict], threshold: float = 0.1) -> Clock | None:
    """First step with expected copy rate above chance >= threshold; None where a row has no ``copy_prob``."""
    if any(row.get("copy_prob") is None for row in rows):
        return None
    return tau_mem([row["step"] for row in rows], [row["copy_prob"] for row in rows],
                   [row["chance_copy"] or 0.0 for row in rows], threshold)


def with_bootstrap(clock: Clock, boot: list | None) -> Clock:
    """``clock`` with its interval widened to the bootstrap's ``[lo, hi]`` (hi None: open); never below the
    bracket. A right-censored clock keeps [last step, open]."""
    if boot is None or clock.censoring == "right" or clock.bracket is None:
        return clock
    lo = min(clock.bracket[0], boot[0]) if boot[0] is not None else clock.bracket[0]
    hi = None if boot[1] is None or clock.bracket[1] is None else max(clock.bracket[1], boot[1])
    return replace(clock, interval=(lo, hi))


def window(rule: Clock, mem: Clock) -> Window:
    """The innovation window ``[tau_rule, tau_mem]``: its verdict, the verdict's reason and its width.

    The verdict compares what is known of the two clocks (:meth:`Clock.bounds`): "open" when tau_rule's
    interval ends at or before tau_mem's begins, "closed" when tau_mem's ends at or before tau_rule's begins,
    "unresolved" otherwise (the intervals overlap, both clocks crossed by the first evaluation, or neither
    crossed). An open window's span is ``[tau_rule, tau_mem]``, with tau_mem None when memorization was not
    reached (the window is still open at the end); the reason says when its width is only a lower bound.
    """
    rule_lo, rule_hi = rule.bounds()
    mem_lo, mem_hi = mem.bounds()
    if rule_hi <= mem_lo:
        bound = []
        if rule.censoring == "left":
            bound.append(f"tau_rule {rule.render()} crossed at the first evaluation")
        if mem.censoring == "right":
            bound.append(f"memorization not reached by step {mem.last_step}: the window is open at the end")
        reason = f"{'; '.join(bound)} (its width is a lower bound)" if bound else None
        width = math.log10(mem.drawn_at() / rule.value)
        return Window("open", reason, (rule.value, mem.value), width, bool(bound))
    if mem_hi <= rule_lo:
        if rule.censoring == "right":
            return Window("closed", f"tau_rule never reached (sample validity never held at its threshold); "
                                    f"memorization began at step {mem.render_interval()}")
        return Window("closed", f"memorized before the rule was learned (tau_mem {mem.render_interval()} "
                                f"<= tau_rule {rule.render_interval()})")
    if rule.censoring == mem.censoring == "right":
        return Window("unresolved", f"neither clock reached by step {rule.last_step}")
    if rule.censoring == mem.censoring == "left":
        return Window("unresolved", f"both clocks crossed by the first evaluation (step {rule.value:.0f}): "
                                    "which came first is unknown")
    return Window("unresolved", f"the clocks' intervals overlap (tau_rule {rule.render_interval()}, tau_mem "
                                f"{mem.render_interval()}): which came first is not measured")


def bootstrap_intervals(steps, valid, copy, chance_copy, *, rule_threshold=0.9, mem_threshold=0.1,
                        n_resamples=1000, seed=0, level=CI_LEVEL):
    """Paired bootstrap intervals for (tau_rule, tau_mem) over the generated samples.

    ``valid`` and ``copy`` are boolean (evals, samples) arrays, sample j of every evaluation coming from the
    same starting noise. Each resample's clock is known to its bracket; the interval runs from the lower tail
    of the brackets' low ends to the upper tail of their high ends. Returns two ``[lo, hi]`` lists; ``hi`` is
    None when more than the upper tail of resamples never crosses (the interval is open to the right).
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
    intervals = []
    for curves, threshold, confirm in ((valid_curves, rule_threshold, True), (excess_curves, mem_threshold, False)):
        _, low, high = crossing_brackets(steps, curves, threshold, confirm)
        lo = float(np.quantile(low, (1 - level) / 2, method="inverted_cdf"))
        hi = float(np.quantile(high, (1 + level) / 2, method="inverted_cdf"))
        intervals.append([lo, None if math.isinf(hi) else hi])
    return intervals[0], intervals[1]


def summarize(rows: list[dict], valid=None, copy=None, *, rule_threshold=0.9, mem_threshold=0.1,
              n_resamples=1000, seed=0) -> dict:
    """The clocks' part of summary.json from metrics rows (and per-sample arrays for the intervals)."""
    if not rows:
        raise ValueError("no evaluation rows: the run has not evaluated yet")
    steps = [row["step"] for row in rows]
    chance = [row["chance_copy"] or 0.0 for row in rows]
    rule = tau_rule(steps, [row["valid_frac"] for row in rows], rule_threshold)
    mem = tau_mem(steps, [row["copy_frac"] for row in rows], chance, mem_threshold)
    if valid is not None and n_resamples > 0:
        rule_ci, mem_ci = bootstrap_intervals(steps, valid, copy, chance, rule_threshold=rule_threshold,
                                              mem_threshold=mem_threshold, n_resamples=n_resamples, seed=seed)
        rule, mem = with_bootstrap(rule, rule_ci), with_bootstrap(mem, mem_ci)
    found = window(rule, mem)
    exact = tau_mem_exact(rows, mem_threshold)
    return {"tau_rule": rule.to_json(), "tau_mem": mem.to_json(), "window": found.span and list(found.span),
            "window_state": found.state, "window_reason": found.reason,
            **({} if exact is None else {"tau_mem_exact": exact.to_json()})}


def read_clock(summary: dict, name: str, last_step: int | None = None) -> Clock:
    """Clock ``name`` of a summary, in today's form (an object) or the flat form of older summaries (a value
    with ``name_ci``, ``name_censored`` and ``name_text``; no bracket). ``last_step`` defaults to the
    summary's final row."""
    if last_step is None:
        last_step = int((summary.get("final") or {}).get("step") or 0)
    stored = summary.get(name)
    if isinstance(stored, dict):
        pair = lambda value: None if value is None else (value[0], value[1])  # noqa: E731
        kind, bracket = stored.get("censored"), pair(stored.get("bracket"))
        if kind == "right":
            return Clock(None, "right", int(bracket[0]) if bracket else last_step, bracket, pair(stored["interval"]))
        value = bracket[1] if kind == "left" else stored["estimate"]
        return Clock(value, kind, last_step, bracket, pair(stored.get("interval")))
    if summary.get(f"{name}_censored") or stored is None:
        return Clock(None, "right", last_step)
    ci = summary.get(f"{name}_ci")
    left = (summary.get(f"{name}_text") or "").startswith("<=")
    return Clock(stored, "left" if left else None, last_step, None, None if not ci else (ci[0], ci[1]))


def read_clocks(summary: dict, last_step: int | None = None) -> tuple[Clock, Clock]:
    """(tau_rule, tau_mem) of a summary, as :func:`read_clock` reads them."""
    return tuple(read_clock(summary, name, last_step) for name in CLOCKS)


def describe(summary: dict) -> str:
    """A few human lines for the end of a run."""
    rule, mem = read_clocks(summary)
    lines = [f"tau_rule  {rule.render_interval()}", f"tau_mem   {mem.render_interval()}"]
    found = window(rule, mem)
    if found.kind == "open":
        lo, hi = found.span
        lines.append(f"window    open [{lo:.0f}, {hi:.0f}]: {hi - lo:.0f} steps ({hi / lo:.1f}x)")
    else:
        lines.append(f"window    {found.state}")
    if found.reason:
        lines.append(f"          {found.reason}")
    return "\n".join(lines)
