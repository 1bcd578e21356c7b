"""``steps = "auto"`` in a sweep spec: each run's budget is decided when the driver hands it out, from the runs
finished so far in the store, and a run that ends censored is extended once, up to the cap.

The order lets finished runs predict the next: increasing N, then rule complexity, then depth (the axes
:func:`innovwin.analysis.predict.predict` fits against), the other axes and the seeds in the spec's order. A run's
budget is the later 95% upper end of the clocks its ``until`` waits for (both clocks under ``until = "budget"``),
times the spec's ``safety``, capped by ``max_steps``; where no fit applies (fewer than
:data:`innovwin.analysis.predict.MIN_RUNS` finished runs in its group, another task), the cap is the budget. A run
is predicted from the runs *finished* when it is handed out: with several workers its predecessors still running do
not count (it may get the cap, or a wider interval), and no worker waits for them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from innovwin.analysis.clocks import CLOCKS, read_clock
from innovwin.config import POOLED


@dataclass(frozen=True)
class AutoBudget:
    """A sweep whose runs' budgets are predicted: the cap (``max_steps``) and the factor on the upper end."""

    max_steps: int
    safety: float

    def capped(self, config: dict) -> dict:
        return {**config, "steps": self.max_steps}


def awaited(config: dict) -> tuple[str, ...]:
    """The clocks a run's budget must reach: those its ``until`` waits for, both under ``until = "budget"``."""
    from innovwin.train.until import WAITS

    return WAITS[config["until"]] or CLOCKS


def auto_order(runs: dict[str, dict], keys: list[str]) -> list[str]:
    """``keys`` in increasing N, then complexity, then depth; ties in their order in ``runs`` (the spec's)."""
    from innovwin.tasks import make

    index = {key: position for position, key in enumerate(runs)}
    complexity = {spec: make(spec).complexity for spec in {runs[key]["task"] for key in keys}}
    return sorted(keys, key=lambda key: (runs[key]["n_train"], complexity[runs[key]["task"]], runs[key]["depth"],
                                         index[key]))


def budget_for(config: dict, rows: list[dict], auto: AutoBudget) -> tuple[int, str]:
    """(steps, where they came from) for a run of ``config`` from the finished runs among the store's ``rows``; the
    cap when they cannot be read (a malformed row stops no sweep)."""
    from innovwin.analysis.records import run_records

    try:
        records = run_records(rows)
    except ValueError as error:
        return auto.max_steps, f"the cap, max_steps {auto.max_steps} ({error})"
    return predicted_budget(config, records, auto)


def predicted_budget(config: dict, records: list, auto: AutoBudget) -> tuple[int, str]:
    """(steps, where they came from) for a run of ``config`` from the finished runs ``records``."""
    from innovwin.analysis.fits import CLOCK_SYMBOLS
    from innovwin.analysis.predict import RECORD_FIELDS, predict, runs_note

    settings = {name: str(value) for name, value in config.items() if name in RECORD_FIELDS or name not in POOLED}
    try:
        result = predict(records, settings, safety=auto.safety)
    except ValueError as error:
        return auto.max_steps, f"the cap, max_steps {auto.max_steps} ({error})"
    found = {p.clock: p for p in result["predictions"]}
    missing = [clock for clock in awaited(config) if clock not in found]
    if missing:
        return auto.max_steps, f"the cap, max_steps {auto.max_steps} ({result['skipped'][missing[0]]})"
    later = max((found[clock] for clock in awaited(config)), key=lambda p: p.hi)
    wanted = math.ceil(later.hi * auto.safety)
    steps = min(wanted, auto.max_steps)
    capped = f", capped at max_steps {auto.max_steps}" if wanted > steps else ""
    return steps, (f"{CLOCK_SYMBOLS[later.clock]}'s 95% upper end {later.hi:.0f} x safety {auto.safety:g}{capped} "
                   f"(predicted {later.estimate:.0f} from {runs_note(later.fit)})")


def censored(config: dict, summary: dict | None) -> bool:
    """Whether a finished run stopped at its budget before the clocks it waits for were measured (closed)."""
    if not summary or (summary.get("stop") or {}).get("reason") != "budget":
        return False
    for name in awaited(config):
        clock = read_clock(summary, name)
        if clock.censoring == "right" or math.isinf(clock.bounds()[1]):
            return True
    return False


def extends(config: dict, summary: dict | None, auto: AutoBudget) -> bool:
    """Whether a finished run is extended: censored under a budget below the cap (so once at most)."""
    return config["steps"] < auto.max_steps and censored(config, summary)


def is_upper_bound(config: dict, auto: AutoBudget | None) -> bool:
    """Whether a run's ``steps`` is the most it trains rather than what it trains (``until``, or predicted)."""
    return auto is not None or config["until"] != "budget"
