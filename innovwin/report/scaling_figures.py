"""The figures of the clocks across runs: both clocks against N and tau_rule against complexity with the fitted
power laws (the censored maximum-likelihood fits of innovwin.analysis.fits: every run, censored ones included;
tau_vs_n.png, tau_rule.png), and each clock of one architecture against the other (arch_pairs.png)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from innovwin.analysis.clocks import CLOCKS
from innovwin.analysis.fits import law_text
from innovwin.analysis.records import RunRecord, group_by
from innovwin.report.drawing import (
    CLOCK_STYLE,
    arch_panels,
    arch_title,
    clock_legend,
    log_panel,
    marker,
    present_archs,
    scatter_clock,
    size_label,
)

MIN_FIT_XS = 3  # distinct x values a fitted line needs to be drawn
SIZE = ("depth", "width", "variant")


def plot_tau_vs_n(records: list[RunRecord], fits: list[dict]) -> Figure | None:
    """Both clocks against N on log-log axes, one colour per (task, size, variant), with the fitted lines."""
    return _plot_against(records, fits, "n_train", CLOCKS, "task", lambda rows: "training-set size N (samples)",
                         "clock τ (training steps)")


def plot_tau_rule(records: list[RunRecord], fits: list[dict]) -> Figure | None:
    """tau_rule against the rule's complexity, one row of panels per task family (parity's G and a Sudoku's n
    are different knobs), one colour per size (pooled over N and seeds)."""
    return _plot_against(records, fits, "complexity", ("tau_rule",), "family",
                         lambda rows: f"rule complexity: {rows[0].complexity_label} of {rows[0].family}",
                         "τ_rule (training steps)", rows_by="family")


def _plot_against(records, fits, x: str, shown, colour_by: str, xlabel, ylabel: str, rows_by: str | None = None):
    """The clocks ``shown`` against ``x`` (log-log), one column per architecture and one row per value of
    ``rows_by``, one colour per (``colour_by``, size, variant), fitted lines where they are drawable (_draw_fit);
    None when x takes fewer than two values in every row."""
    rows = group_by(records, (rows_by,) if rows_by else ())
    rows = {value: members for value, members in sorted(rows.items(), key=lambda item: str(item[0]))
            if len({getattr(r, x) for r in members}) >= 2}
    if not rows:
        return None
    figure, archs, axes = arch_panels(records, n_rows=len(rows), width=8.5)  # room for the legend beside
    for row_axes, in_row in zip(axes, rows.values()):
        for ax, arch in zip(row_axes, archs):
            groups = sorted(group_by([r for r in in_row if r.arch == arch], (colour_by, *SIZE)).items())
            for index, (group, members) in enumerate(groups):
                color = f"C{index % 10}"
                for clock in shown:
                    scatter_clock(ax, members, x, clock, color)
                    fit = _find_fit(fits, clock, x, arch=arch, **dict(zip((colour_by, *SIZE), group)))
                    _draw_fit(ax, fit, members, x, clock, color, f"{group[0]}, {size_label(*group[1:])}")
            clock_legend(ax, [r for r in in_row if r.arch == arch], shown)
            log_panel(ax, sorted({getattr(r, x) for r in in_row}), xlabel(in_row), ylabel, arch_title(arch))
    return figure


def _find_fit(fits, clock, against, **group):
    return next((f for f in fits if f["clock"] == clock and f["against"] == against
                 and all(f.get(name) == value for name, value in group.items())), None)


def _draw_fit(ax, fit: dict | None, members: list[RunRecord], x: str, clock: str, color: str, group: str) -> bool:
    """Draw the censored maximum-likelihood law (every run, censored ones included) over the group's x range, its
    exponent's interval in the legend ("no measurable trend" where that interval covers 0), when α has an interval
    and the group spans at least MIN_FIT_XS distinct x; otherwise a legend entry says why not."""
    name, style = CLOCK_STYLE[clock][2], CLOCK_STYLE[clock][1]
    symbol = "N" if x == "n_train" else members[0].complexity_label if x == "complexity" else x
    xs = sorted({getattr(r, x) for r in members})
    if fit is None or fit["ml_alpha"] is None:
        why = (fit or {}).get("ml_note") or "no fit"
    elif None in (fit["ml_alpha_lo"], fit["ml_alpha_hi"]):
        why = f"α {fit['ml_alpha']:.2f} has no closed 95% interval from {fit['ml_n']} runs"
    elif len(xs) < MIN_FIT_XS:
        why = f"{len(xs)} distinct x; a drawn line needs {MIN_FIT_XS}"
    else:
        grid = np.geomspace(xs[0], xs[-1], 50)
        law = law_text(clock, symbol, fit["ml_alpha"], fit["ml_alpha_lo"], fit["ml_alpha_hi"])
        ax.plot(grid, fit["ml_a"] * grid ** fit["ml_alpha"], style, color=color, lw=1.2, label=f"{law}  {group}")
        return True
    ax.plot([], [], CLOCK_STYLE[clock][0], color=color, label=f"{name}  {group}: no line ({why})")
    return False


def arch_pairs(records: list[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """(run of the first architecture, run of the second) with the same task, N, size, seed and variant: every
    such pair, so runs that differ only in pooled fields (config.POOLED, e.g. steps) each get a point instead of overwriting one
    another. Empty with fewer than two architectures."""
    archs = present_archs(records)
    if len(archs) < 2:
        return []
    pairs = []
    for same in group_by(records, ("task", "n_train", "depth", "width", "seed", "variant")).values():
        by_arch = group_by(same, ("arch",))
        pairs += [(a, b) for a in by_arch.get((archs[0],), []) for b in by_arch.get((archs[1],), [])]
    return pairs


def _pair_censoring(a: RunRecord, b: RunRecord, clock: str) -> str | None:
    """How a pair's point is drawn: never crossed if a clock is, else an upper bound if a clock is one."""
    kinds = {a.clock(clock).censoring, b.clock(clock).censoring}
    return next(kind for kind in ("right", "left", None) if kind in kinds)


def plot_arch_pairs(records: list[RunRecord], fits: list[dict]) -> Figure | None:
    """Each clock of a run of the second architecture against the same run (task, N, size, seed, variant) of the
    first, for the first two architectures present (e.g. DiT on x, GPT on y)."""
    pairs = arch_pairs(records)
    if not pairs:
        return None
    first, second = (arch_title(arch).split(" (")[0] for arch in present_archs(records)[:2])
    figure = Figure(figsize=(5.2, 4.8), layout="constrained")
    ax = figure.subplots()
    values = []
    notes = {None: "", "right": " (a clock censored: > last step)",
             "left": " (a clock crossed by the first evaluation: ≤ that step)"}
    for clock, color in (("tau_rule", "tab:blue"), ("tau_mem", "tab:red")):
        for censoring, note in notes.items():
            points = [(a.clock(clock).drawn_at(), b.clock(clock).drawn_at()) for a, b in pairs
                      if _pair_censoring(a, b, clock) == censoring]
            if points:
                xs, ys = zip(*points)
                values += xs + ys
                ax.scatter(xs, ys, marker=marker(clock, censoring), s=30,
                           facecolors="none" if censoring == "right" else color, edgecolors=color,
                           label=f"{CLOCK_STYLE[clock][2]}{note}")
    low, high = min(values) / 1.5, max(values) * 1.5
    ax.plot([low, high], [low, high], color="0.5", lw=0.8, ls=":", label="same step")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{first} clock (training steps)")
    ax.set_ylabel(f"{second} clock (training steps), same task, N, size, seed, variant")
    ax.set_title(f"{first} vs {second}: the same two clocks, shifted")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    return figure
