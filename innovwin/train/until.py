"""Where a run stops: at its budget (``steps``), or, with ``until``, ``margin`` evaluations after the clocks it waits
for are measured, whichever comes first.

The clocks count as measured at the first evaluation where each one ``until`` names (rule: tau_rule, mem: tau_mem,
both) has a closed interval: it crossed, and the paired bootstrap's upper end is no longer open. They are computed
from the rows and per-sample arrays so far exactly as the summary computes them (:func:`clocks.summarize`). Once
closed, an interval stays closed as rows are added (a resample's first crossing never moves, and one that had not
crossed can only cross), so the stop is a function of the rows alone: a resumed run finds it again, and a run asked
again with a smaller budget or margin answers from the rows it has. A row that ``refine`` inserted does not count:
the stop is where training was, not where a later replay looked.
"""
from __future__ import annotations

import math

import numpy as np

from innovwin.analysis import clocks
from innovwin.config import RunConfig

WAITS = {"budget": (), "rule": ("tau_rule",), "mem": ("tau_mem",), "both": clocks.CLOCKS}


def measured(config: RunConfig, rows: list[dict], valid, copy) -> bool:
    """True when every clock ``config.until`` waits for has a closed interval at the last of ``rows`` (``config``
    resolved: its sampling seed seeds the bootstrap, as in the summary)."""
    found = clocks.summarize(rows, valid, copy, rule_threshold=config.rule_threshold,
                             mem_threshold=config.mem_threshold, n_resamples=config.bootstrap,
                             seed=config.sampling_seed)
    for name in WAITS[config.until]:
        clock = clocks.read_clock(found, name, rows[-1]["step"])
        if clock.censoring == "right" or math.isinf(clock.bounds()[1]):
            return False
    return True


class StopRule:
    """One run's stop, fed its training rows in step order (:meth:`add`): the step it ends at, and why."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.rows: list[dict] = []
        self.valid: list = []
        self.copy: list = []
        self.closed_at: int | None = None  # index of the row at which the awaited clocks were measured
        self.evaluated: list[int] = []  # the steps of every training row (refined ones aside), in order

    def reads(self, row: dict) -> bool:
        """Whether the rule reads this row: a training row within the budget, when ``until`` waits for clocks."""
        return bool(WAITS[self.config.until]) and not row.get("refined") and row["step"] <= self.config.steps

    def add(self, row: dict, samples: dict | None) -> None:
        """One more row (and its per-sample arrays, where :meth:`reads` says the rule reads it)."""
        if not row.get("refined"):
            self.evaluated.append(row["step"])
        if not self.reads(row):
            return
        self.rows.append(row)
        self.valid.append(samples["valid"])
        self.copy.append(samples["copy"])
        if self.closed_at is None and measured(self.config, self.rows, np.stack(self.valid), np.stack(self.copy)):
            self.closed_at = len(self.rows) - 1

    def until_step(self) -> int | None:
        """The evaluation ``margin`` after the clocks were measured, once the run has it; None before."""
        if self.closed_at is None or self.closed_at + self.config.margin >= len(self.rows):
            return None
        return self.rows[self.closed_at + self.config.margin]["step"]

    def end(self, trained: int) -> tuple[int, str] | None:
        """(the step the run ends at, why: "until" or "budget") once a run trained to step ``trained`` is done;
        None while it must train on. An end before ``trained`` is answered from the rows up to it: a budget asked
        below the trained step ends at the last evaluation within it (the one its clocks can be read at)."""
        by_until = self.until_step()
        if by_until is not None:
            return by_until, "until"
        if trained < self.config.steps:
            return None
        within = [step for step in self.evaluated if step <= self.config.steps]
        return (within[-1] if within and trained > self.config.steps else self.config.steps), "budget"


def budget_words(config: RunConfig) -> str:
    """What a run trains until, after its budget in the start line: "" for the budget alone, else e.g.
    " at most, until both clocks are measured (then 1 more evaluation)"."""
    if not WAITS[config.until]:
        return ""
    what = "both clocks are" if config.until == "both" else f"tau_{config.until} is"
    return f" at most, until {what} measured (then {_evaluations(config.margin)})"


def describe(summary: dict) -> str:
    """The summary's stop in one line: where the run stopped and why, e.g. ``stopped   at step 562 of 5000: both
    clocks measured, then 1 more evaluation``."""
    stop, config = summary["stop"], summary["config"]
    if stop["reason"] == "until":
        what = "both clocks" if config["until"] == "both" else f"tau_{config['until']}"
        why = f"{what} measured, then {_evaluations(config['margin'])}"
    elif config.get("until", "budget") == "budget":
        why = "the budget"
    else:
        why = f"the budget, before until = {config['until']} was met"
    answered = (f" (answered from the rows up to step {summary['final']['step']} of a run trained to step "
                f"{stop['trained']})" if stop["trained"] > stop["step"] else "")
    return f"stopped   at step {stop['step']} of {config['steps']}: {why}{answered}"


def _evaluations(margin: int) -> str:
    return f"{margin} more evaluation{'s' * (margin != 1)}"
