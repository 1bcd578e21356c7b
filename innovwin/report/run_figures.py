"""The figures of one run and of the windows: a run's two-clock curves (curves/KEY.png) and the window's width
over task x N (window_map.png)."""
from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from innovwin.analysis.records import RunRecord, group_by
from innovwin.report import seeds
from innovwin.report.drawing import CLOCK_STYLE, arch_panels, arch_title, size_label

WINDOW_CMAP = matplotlib.colormaps["viridis"]
CURVES = [("valid_frac", "rule-valid", "tab:blue", "-"),
          ("constraint_frac", "groups / constraints satisfied", "tab:blue", "--"),
          ("copy_frac", "exact copy of a training sample", "tab:red", "-"),
          ("chance_copy", "copy rate by chance (N/|V|)", "tab:red", ":"),
          ("copy_prob", "expected copy rate, exact (Σ p(training samples))", "tab:red", "-."),
          ("heldout_hit_frac", "hits on a held-out set of N (no memorization)", "tab:orange", ":"),
          ("novel_valid_frac", "new and valid", "tab:green", "-")]


def plot_curves(record: RunRecord, metrics: list[dict]) -> Figure:
    """Validity and copy rate against step (log x), the clocks marked, the window shaded."""
    rows = [row for row in metrics if row.get("step", 0) > 0]
    steps = np.array([row["step"] for row in rows], dtype=float)
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.subplots()
    for name, label, color, style in CURVES:
        values = [row.get(name) for row in rows]
        if any(value is not None for value in values):
            ax.plot(steps, [np.nan if v is None else v for v in values], style, color=color, label=label,
                    marker="." if style == "-" else None, lw=1.5 if style == "-" else 1.0)
    # the two criteria: validity >= rule_threshold; copy rate >= chance + mem_threshold
    ax.axhline(record.config.rule_threshold, color="tab:blue", lw=0.6, ls="--", alpha=0.6)
    chance = [row.get("chance_copy") or 0.0 for row in rows]
    ax.plot(steps, np.add(chance, record.config.mem_threshold), color="tab:red", lw=0.6, ls="--", alpha=0.6)
    for name, color, height in (("tau_rule", "tab:blue", 0.55), ("tau_mem", "tab:red", 0.45)):
        clock = record.clock(name)
        value = clock.drawn_at()
        label = f"{CLOCK_STYLE[name][2]} {clock.render()}"
        if clock.censoring == "right":
            ax.annotate(label, xy=(value, height), xytext=(-4, 0), textcoords="offset points", ha="right",
                        color=color, fontsize=8)
            continue
        ax.axvline(value, color=color, lw=1.2, ls="--")
        if clock.interval is not None and clock.interval[0] is not None:
            lo, hi = clock.interval
            ax.axvspan(lo, hi if hi is not None else steps[-1], color=color, alpha=0.08, lw=0)
        rule = name == "tau_rule"  # labels on either side of their lines, so near clocks stay readable
        ax.annotate(label, xy=(value, 1.02), xytext=(-2 if rule else 2, 0),
                    textcoords="offset points", ha="right" if rule else "left", color=color, fontsize=8,
                    xycoords=("data", "axes fraction"))
    if record.window.kind == "open":
        ax.axvspan(*record.window.span, color="tab:green", alpha=0.15, lw=0, label="innovation window")
    elif record.window.kind == "open at the end":
        ax.axvspan(record.window.span[0], steps[-1], color="tab:green", alpha=0.1, lw=0, hatch="//",
                   label="window (still open at the end)")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step (log scale)")
    ax.set_ylabel("fraction of generated samples")
    size = size_label(record.depth, record.width, record.variant)
    ax.set_title(f"{record.task} · {record.arch.upper()} {size} · "
                 f"N = {record.n_train} · seed {record.seed}", fontsize=9, pad=14)
    ax.legend(fontsize=7, loc="center left")
    ax.grid(alpha=0.3, which="both")
    return figure


def plot_window_map(records: list[RunRecord], fits: list[dict]) -> Figure | None:
    """The window's width in decades over (task x N), one panel per (size, variant, architecture); a cell
    is the median over seeds, and a cell where no seed's window opened is marked closed."""
    sizes = sorted(group_by(records, ("depth", "width", "variant")))
    figure, archs, axes = arch_panels(records, n_rows=len(sizes), height=3.2)
    task_names = [task for _, _, task in sorted({(r.family, r.complexity, r.task) for r in records})]
    ns = sorted({r.n_train for r in records})
    vmax = max([r.window.width for r in records if r.window.width is not None] + [1.0])
    image = None
    panels = group_by(records, ("arch", "depth", "width", "variant"))
    for row_axes, size in zip(axes, sizes):
        for ax, arch in zip(row_axes, archs):
            cells = group_by(panels.get((arch, *size), []), ("task", "n_train"))
            grid = np.full((len(task_names), len(ns)), np.nan)
            for (task, n), members in cells.items():
                i, j = task_names.index(task), ns.index(n)
                text, value = _window_cell(members)
                grid[i, j] = value
                closed = text == "×"
                if closed:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.75", hatch="xx", edgecolor="white",
                                           lw=0))
                ax.text(j, i, text, ha="center", va="center", fontsize=9 if closed else 8,
                        color="black" if closed or value is None else _text_colour(WINDOW_CMAP(value / vmax)))
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=WINDOW_CMAP, vmin=0, vmax=vmax, aspect="auto",
                              origin="lower")
            ax.set_xticks(range(len(ns)), [str(n) for n in ns])
            ax.set_yticks(range(len(task_names)), task_names, fontsize=8)
            ax.set_xlim(-0.5, len(ns) - 0.5)
            ax.set_ylim(-0.5, len(task_names) - 0.5)
            ax.set_xlabel("training-set size N (samples)")
            if ax is row_axes[0]:
                ax.set_ylabel("task (complexity increases upward)")
            ax.set_title(f"{arch_title(arch)} · {size_label(*size)}", fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8,
                        label="log10(τ_mem/τ_rule), decades")
    return figure


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (by the cell colour's luminance)."""
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def _window_cell(members: list[RunRecord]) -> tuple[str, float | None]:
    """Text and colour value of one window-map cell (one task, N, size, arch; several seeds): the median width
    over the seeds' open windows, marked ≥ where one is a lower bound."""
    widths = [r.window.width for r in members if r.window.width is not None]
    if seeds.cell_verdict(members) == "unresolved":  # the runs' clocks overlap, or the seeds disagree
        return f"?\n{len(widths)}/{len(members)} open" if len(members) > 1 else "?", None
    if not widths:
        return "×", None
    value = float(np.median(widths))
    prefix = "≥" if any(r.window.width_is_bound for r in members) else ""
    suffix = f"\n{len(widths)}/{len(members)} open" if len(widths) < len(members) else ""
    return f"{prefix}{value:.1f}{suffix}", value
