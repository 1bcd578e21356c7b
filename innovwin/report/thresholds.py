"""The report's threshold-sensitivity part (innovwin.analysis.sensitivity): sensitivity.csv, alpha_sensitivity.csv,
the figure of tau_mem's exponent against its threshold, and index.html's section about them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from innovwin.analysis import sensitivity
from innovwin.analysis.records import RunRecord, group_by
from innovwin.report.drawing import save
from innovwin.report.page import img
from innovwin.report.tables import html_table, write_table


def write_sensitivity(out: Path, records: list[RunRecord], metrics: dict[str, list[dict]], *, n_boot: int,
                      seed: int) -> str:
    """The threshold-sensitivity tables and figure; returns index.html's section."""
    rule_thresholds, mem_thresholds = sensitivity.thresholds_for(records)
    runs, columns = sensitivity.sensitivity_rows(records, metrics, rule_thresholds, mem_thresholds)
    alphas = sensitivity.alpha_sensitivity(runs, mem_thresholds, n_boot=n_boot, seed=seed)
    write_table(out / "sensitivity", runs, columns)
    write_table(out / "alpha_sensitivity", alphas, sensitivity.ALPHA_COLUMNS)
    parts = ["<h2>How the clocks move with their thresholds</h2><p>Every run's τ_rule at validity thresholds "
             f"{', '.join(f'{t:g}' for t in rule_thresholds)} and τ_mem at copy-above-chance thresholds "
             f"{', '.join(f'{t:g}' for t in mem_thresholds)}, from its stored evaluations: "
             "<a href='sensitivity.csv'>sensitivity.csv</a> (.md). Below, τ_mem = a·N<sup>α</sup> refitted at each "
             "τ_mem threshold (<a href='alpha_sensitivity.csv'>alpha_sensitivity.csv</a>); censored clocks are "
             f"not fitted. {len(runs)} of {len(records)} finished runs have evaluation rows.</p>"]
    figure = plot_alpha_sensitivity(alphas)
    if figure is not None:
        parts.append(f"<figure>{img(save(figure, out / 'alpha_sensitivity.png'))}</figure>")
    parts.append(html_table(*sensitivity.alpha_by_group(alphas)) if alphas
                 else "<p>No refit: N does not vary within any group of runs with evaluation rows.</p>")
    return "".join(parts)


def plot_alpha_sensitivity(fits: list[dict]) -> Figure | None:
    """alpha of tau_mem = a * N^alpha against the mem threshold, one line per group, with its interval
    and a dotted line at alpha = 1. None when no threshold gave a fit."""
    fitted = [fit for fit in fits if fit["alpha"] is not None]
    if not fitted:
        return None
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.subplots()
    groups = sorted(group_by(fitted, sensitivity.MEM_GROUP).items(), key=lambda item: str(item[0]))
    for index, (group, line) in enumerate(groups):
        xs = np.array([f["threshold"] for f in line]) * 1.03 ** (index - (len(groups) - 1) / 2)  # no overlap
        ys = np.array([f["alpha"] for f in line])
        lo = np.array([f["alpha"] if f["alpha_lo"] is None else f["alpha_lo"] for f in line])
        hi = np.array([f["alpha"] if f["alpha_hi"] is None else f["alpha_hi"] for f in line])
        color = f"C{index % 10}"
        # a percentile interval need not contain the point estimate; matplotlib refuses negative error bars
        ax.errorbar(xs, ys, yerr=[np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)], marker="o", capsize=3, color=color,
                    label=", ".join(f"{name} {value}" for name, value in zip(sensitivity.MEM_GROUP, group)
                                    if value != ""))
        partial = np.array([f["n_censored"] > 0 for f in line])
        ax.scatter(xs[partial], ys[partial], s=60, facecolors="white", edgecolors=color, zorder=3)
    if any(f["n_censored"] for f in fitted):
        ax.scatter([], [], s=60, facecolors="white", edgecolors="0.3",
                   label="some runs censored at this threshold (not fitted)")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":", label="α = 1 (τ_mem ∝ N)")
    thresholds = sorted({f["threshold"] for f in fits})
    ax.set_xscale("log")
    ax.set_xticks(thresholds, [f"{t:g}" for t in thresholds])
    ax.minorticks_off()
    ax.set_xlabel("τ_mem threshold (copy rate above chance)")
    ax.set_ylabel("α in τ_mem = a·N^α (95% bootstrap interval)")
    ax.set_title("Does τ_mem's exponent depend on the threshold?", fontsize=10)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, which="both")
    return figure
