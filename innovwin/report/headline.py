"""The answer first: when the rule is learned, when copying starts, how sure, and whether a window opens.

The same lines end ``innovwin sweep`` and ``innovwin report`` in the terminal and open the report's page. They are
read from the report's records (one per finished run, :func:`innovwin.analysis.records.run_records`) and fits
(:func:`innovwin.analysis.fits.fit_all`).

A window is *unresolved* when the order of its clocks is not decided (:func:`innovwin.analysis.clocks.window`):
their intervals overlap, neither clock crossed, or both crossed by the first evaluation.
"""
from __future__ import annotations

from innovwin.analysis.fits import CLOCK_SYMBOLS, law_text
from innovwin.analysis.predict import AXIS_NAMES
from innovwin.analysis.records import RunRecord

WINDOW_KINDS = ("open", "open at the end", "closed", "unresolved")


def fit_text(fit: dict, x: str) -> str:
    """The censored maximum-likelihood law of a fit row (every run, censored ones included), e.g.
    ``τ_mem ∝ N^0.91 [0.62, 1.36] (5 runs, 1 censored)``; ``τ_rule against N: no measurable trend (α -0.11
    [-0.21, 0.04]; 5 runs)`` where its 95% interval covers 0; or why there is no fit. Least squares stays in
    fits.csv."""
    censored = (fit["ml_n_right"] or 0) + (fit["ml_n_left"] or 0)
    counted = f"{fit['ml_n']} run{'s' * (fit['ml_n'] != 1)}" + (f", {censored} censored" if censored else "")
    if fit["ml_alpha"] is None:
        clock = CLOCK_SYMBOLS[fit["clock"]]
        return f"{clock} against {x}: no fit ({fit['ml_note'] or 'too few runs'}; {counted})"
    return law_text(fit["clock"], x, fit["ml_alpha"], fit["ml_alpha_lo"], fit["ml_alpha_hi"], counted)


def group_text(fit: dict) -> str:
    parts = [fit.get("task") or fit.get("family"), fit["arch"], f"depth {fit['depth']}" if "depth" in fit else None,
             f"width {fit['width']}" if "width" in fit else None, f"N {fit['n_train']}" if "n_train" in fit else None,
             fit.get("variant")]
    return ", ".join(str(part) for part in parts if part)


def headline(records: list[RunRecord], fits: list[dict], *, failed: int = 0, pending: int = 0) -> list[str]:
    """A few lines: α of the censored fit with its interval per group, τ_rule's range and trend (and both clocks'
    against width where a store varies it), the windows, what did not finish."""
    if not records:
        return [f"no finished run yet ({pending} to run, {failed} failed)"]
    if len(records) == 1:
        return one_run(records[0]) + ([f"runs: 1 finished, {failed} failed, {pending} not run yet"]
                                      if failed or pending else [])
    lines = [f"{fit_text(fit, 'N')}  [{group_text(fit)}]"
             for fit in fits if fit["clock"] == "tau_mem" and fit["against"] == "n_train"]
    if not lines:
        lines.append("τ_mem against N: not fitted (N does not vary within any group of runs)")
    rules = [r.rule.value for r in records if r.rule.censoring != "right"]
    never = len(records) - len(rules)
    if rules:
        lines.append(f"τ_rule {span(rules, '.0f')} steps in {len(rules)} of {len(records)} runs"
                     + (f" ({never} never crossed)" if never else ""))
    else:
        lines.append(f"τ_rule never crossed in any of {len(records)} runs")
    lines += [f"{fit_text(fit, AXIS_NAMES[fit['against']])}  [{group_text(fit)}]"
              for fit in fits if fit["clock"] == "tau_rule" or (fit["clock"], fit["against"]) == ("tau_mem", "width")]
    kinds = [r.window.kind for r in records]
    widths = [r.window.width for r in records if r.window.kind == "open"]
    window = ", ".join(f"{kinds.count(kind)} {kind}" for kind in WINDOW_KINDS)
    if widths:
        window += (f"; open widths {span(widths, '.2f')} decades (τ_mem/τ_rule "
                   f"{span([10 ** w for w in widths], '.1f')})")
    lines.append(f"windows: {window}")
    lines.append(f"runs: {len(records)} finished, {failed} failed, {pending} not run yet")
    return lines


def one_run(record: RunRecord) -> list[str]:
    """A single run's headline: its clocks with their intervals, its window and why, unless plainly open."""
    window = record.window
    reason = f": {window.reason}" if window.reason and window.kind != "open" else ""
    return [f"τ_rule {record.rule.render_interval()}", f"τ_mem {record.mem.render_interval()}",
            f"window {window.render()}{reason}"]


def span(values: list[float], spec: str) -> str:
    """``a to b``, or ``a`` when all values print alike."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low} to {high}"


def thresholds(records: list[RunRecord]) -> str:
    """The definitions in force, with the thresholds the runs used."""
    rule = ", ".join(f"{t:g}" for t in sorted({r.config.rule_threshold for r in records})) or "0.9"
    mem = ", ".join(f"{t:g}" for t in sorted({r.config.mem_threshold for r in records})) or "0.1"
    return (f"τ_rule: the first evaluation where sample-level validity ≥ {rule} and stays so at the next one; "
            f"τ_mem: the first evaluation where the exact-copy rate exceeds chance (N/|V|) by ≥ {mem}. Both are "
            "interpolated in log(step) between the evaluations around the crossing; a clock's 95% interval joins "
            "that bracket with a paired bootstrap over the generated samples; a clock that never crosses is "
            "censored (> last step). Fitted laws τ ∝ x^α are censored maximum-likelihood fits over every run and "
            "seed (censored runs included, each as the interval it is known to), with 95% profile-likelihood "
            "intervals on α.")
