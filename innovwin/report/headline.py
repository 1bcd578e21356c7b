"""The answer first: when the rule is learned, when copying starts, how sure, and whether a window opens.

The same lines end ``innovwin sweep`` and ``innovwin report`` in the terminal and open the report's page. They are
read from the report's records (one per finished run, :func:`innovwin.analysis.records.run_records`) and fits
(:func:`innovwin.analysis.fits.fit_all`).

A window is *unresolved* when the order of its clocks is not decided (:func:`innovwin.analysis.clocks.window`):
their intervals overlap, neither clock crossed, or both crossed by the first evaluation.
"""
from __future__ import annotations

from innovwin.analysis.records import RunRecord

WINDOW_KINDS = ("open", "open at the end", "closed", "unresolved")


def fit_text(fit: dict, x: str) -> str:
    """``τ_mem ∝ N^0.88 (95% CI 0.59 to 1.03, 4 runs, 1 censored)``, or why there is no interval or fit."""
    clock = "τ_rule" if fit["clock"] == "tau_rule" else "τ_mem"
    counted = f"{fit['n_points']} run{'s' * (fit['n_points'] != 1)}" + (f", {fit['n_censored']} censored"
                                                                      if fit["n_censored"] else "")
    if fit["alpha"] is None:
        return f"{clock} against {x}: no fit ({fit['note'] or 'too few measured clocks'}; {counted})"
    interval = (f"95% CI {fit['alpha_lo']:.2f} to {fit['alpha_hi']:.2f}" if fit["alpha_lo"] is not None
                else "no interval: fewer than 3 runs")
    return f"{clock} ∝ {x}^{fit['alpha']:.2f} ({interval}; {counted})"


def group_text(fit: dict) -> str:
    parts = [fit.get("task") or fit.get("family"), fit["arch"], f"depth {fit['depth']}" if "depth" in fit else None,
             f"width {fit['width']}", fit.get("variant")]
    return ", ".join(str(part) for part in parts if part)


def headline(records: list[RunRecord], fits: list[dict], *, failed: int = 0, pending: int = 0) -> list[str]:
    """A few lines: α with its interval per group, τ_rule's range and trend, the windows, what did not finish."""
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
    lines += [f"{fit_text(fit, {'n_train': 'N'}.get(fit['against'], fit['against']))}  "
              f"[{group_text(fit)}]" for fit in fits if fit["clock"] == "tau_rule"]
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
            "interpolated in log(step) between the evaluations around the crossing; intervals are 95% paired "
            "bootstraps over the generated samples; a clock that never crosses is censored (> last step).")
