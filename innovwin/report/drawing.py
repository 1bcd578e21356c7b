"""What the report's figures share: how a clock is drawn (marker by censoring, interval bars, legend), panels per
architecture, log axes at the swept values, and writing a figure as SVG + 2x PNG.

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas: no pyplot global state. A clock that never
crossed ("> last step") is drawn hollow at the last step; one crossed by the first evaluation ("<= first step", an
upper bound) as a downward triangle there; the censored fits take both as the bounds they are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from innovwin import objectives
from innovwin.analysis.clocks import CLOCKS
from innovwin.analysis.records import RunRecord

CLOCK_STYLE = {"tau_rule": ("s", "--", "τ_rule"), "tau_mem": ("o", "-", "τ_mem")}
BOUND_MARKER = "v"  # a clock crossed by the first evaluation, drawn at that step: "at most" (an upper bound)
PAGE_DPI = 110  # pixels per inch a figure takes on the page; its PNG has twice as many, for sharp screens


def save(figure: Figure, path: Path) -> Path:
    """Write the figure as SVG (vector) and as PNG at 2x PAGE_DPI beside it; returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path.with_suffix(".svg"))
    figure.savefig(path, dpi=2 * PAGE_DPI)
    return path


def present_archs(records: list[RunRecord]) -> list[str]:
    """The architectures among the records, registry order first (unregistered names after, sorted)."""
    present = {r.arch for r in records}
    return [a for a in objectives.names() if a in present] + sorted(present - set(objectives.names()))


def arch_title(arch: str) -> str:
    return objectives.get(arch).title if arch in objectives.names() else arch


def arch_panels(records: list[RunRecord], n_rows: int = 1, height: float = 4.0, width: float = 5.5):
    """A figure with one column per architecture present (in registry order), shared y."""
    archs = present_archs(records)
    figure = Figure(figsize=(width * len(archs), height * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, len(archs), squeeze=False, sharey=n_rows == 1)
    return figure, archs, axes


def size_label(depth, width, variant="") -> str:
    return f"depth {depth}, width {width}" + (f", {variant}" if variant else "")


def marker(clock: str, censoring: str | None) -> str:
    """A clock's marker: its own when measured or never crossed (hollow), BOUND_MARKER when an upper bound."""
    return BOUND_MARKER if censoring == "left" else CLOCK_STYLE[clock][0]


def log_panel(ax, x_values, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes with ticks at the swept x values (a log axis would label only powers of ten), labels, title
    and a light grid."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(x_values, [f"{v:g}" for v in x_values])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")


def scatter_clock(ax, members: list[RunRecord], x_name: str, clock: str, color) -> None:
    """Measured clocks filled with their 95% interval as an error bar (the bracket joined with the paired bootstrap;
    one open above is drawn up to the last step), censored ones hollow at the last step, upper bounds as
    BOUND_MARKER."""
    for censoring in (None, "right", "left"):
        points = [(getattr(r, x_name), r.clock(clock).drawn_at()) for r in members
                  if r.clock(clock).censoring == censoring]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, marker=marker(clock, censoring), s=28, edgecolors=color, linewidths=1.2,
                       facecolors="none" if censoring == "right" else color, zorder=3)
    bars = [(getattr(r, x_name), c.value, c.interval[0], c.interval[1] or r.last_step) for r in members
            if (c := r.clock(clock)).measured and c.interval is not None and c.interval[0] is not None]
    if bars:
        xs, ys, lo, hi = (np.array(column, dtype=float) for column in zip(*bars))
        # a bootstrap percentile interval can miss its point estimate: clip, never a negative bar
        ax.errorbar(xs, ys, yerr=[np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)], fmt="none", ecolor=color,
                    elinewidth=1, capsize=2, zorder=2)


def clock_legend(ax, records: list[RunRecord], shown=CLOCKS) -> None:
    """Fitted lines carry their own labels; add one entry per marker kind (upper bounds when ``records``
    have one)."""
    for clock in shown:
        _, _, name = CLOCK_STYLE[clock]
        ax.scatter([], [], marker=marker(clock, None), color="0.3", label=f"{name} measured")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="0.3", label="censored: drawn at the last step "
                                                                              "(> value; fitted as a lower bound)")
    if any(r.clock(clock).censoring == "left" for r in records for clock in shown):
        ax.scatter([], [], marker=BOUND_MARKER, color="0.3", label="crossed by the first evaluation: drawn there "
                                                                   "(≤ value; fitted as an upper bound)")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel: it hides no point
