"""Figures of a basin dissection (rows of basins.jsonl): radii over training, return probability and loss gap maps.

- ``basins_radius.png``: median basin radius (band: interquartile range) of each probe class against the training
  step, with tau_rule and tau_mem (and their intervals) from summary.json, and for bit tasks the radius every
  point has under a denoiser that knows only the alphabet;
- ``basins_return.png``: the return probability over (step x sigma), one panel per probe class;
- ``basins_loss_gap.png``: loss(novel) - loss(train) (where memorization shows) and loss(invalid) - loss(novel)
  (where the rule shows) over (step x sigma).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize, SymLogNorm  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, NullFormatter  # noqa: E402

from innovwin import tasks  # noqa: E402
from innovwin.analysis.basins import PROBE_CLASSES, independent_bits_radius  # noqa: E402
from innovwin.analysis.clocks import read_clocks  # noqa: E402

FIGURES = ("basins_radius.png", "basins_return.png", "basins_loss_gap.png")
CLASS_COLORS = {"train": "tab:red", "novel": "tab:green", "invalid": "tab:gray"}
CLOCK_COLORS = {"tau_rule": "tab:green", "tau_mem": "tab:red"}


def _steps_and_sigmas(rows: list[dict]):
    if not rows:
        raise ValueError("no basin rows to plot")
    sigmas = rows[0]["sigmas"]
    if any(row["sigmas"] != sigmas for row in rows):
        raise ValueError("basin rows were measured on different sigma grids; re-run `innovwin basins`")
    return np.array([row["step"] for row in rows], dtype=np.float64), np.array(sigmas)


def _log_edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges for a map over log-spaced centers: geometric midpoints, the ends mirrored."""
    if len(centers) == 1:
        return centers[0] * np.array([0.8, 1.25])
    mids = np.sqrt(centers[1:] * centers[:-1])
    return np.concatenate([[centers[0] ** 2 / mids[0]], mids, [centers[-1] ** 2 / mids[-1]]])


def _log_step_axis(ax, steps: np.ndarray) -> None:
    """Log training-step axis: labelled at powers of ten, or at the measured steps when they span under a decade
    (matplotlib's minor labels collide over short ranges)."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    if steps[-1] < 10 * steps[0]:
        ax.set_xticks(steps, [f"{s:.0f}" for s in steps])
    else:
        ax.xaxis.set_major_formatter(LogFormatterSciNotation())
    ax.set_xlabel("training step")


def _mark_clocks(ax, summary: dict | None) -> None:
    if summary is None:
        return
    for clock, (name, color) in zip(read_clocks(summary), CLOCK_COLORS.items()):
        if clock.censoring == "right":
            ax.plot([], [], color=color, linestyle="--", linewidth=1, label=f"{name}: not reached")
            continue
        ax.axvline(clock.value, color=color, linestyle="--", linewidth=1, label=f"{name} = {clock.value:.0f}")
        if clock.interval and clock.interval[0] > 0:
            ax.axvspan(clock.interval[0], clock.interval[1] or clock.value, color=color, alpha=0.08)


def plot_radius(rows: list[dict], summary: dict | None, path) -> None:
    steps, sigmas = _steps_and_sigmas(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for name in PROBE_CLASSES:
        stats = [row["classes"][name] for row in rows]
        median = [s["radius_median"] for s in stats]
        ax.fill_between(steps, [s["radius_q25"] for s in stats], [s["radius_q75"] for s in stats],
                        color=CLASS_COLORS[name], alpha=0.2, linewidth=0)
        ax.plot(steps, median, "o-", color=CLASS_COLORS[name], markersize=3, label=name)
    levels = [(sigmas[0], "grid bottom"), (sigmas[-1], "grid top (censored)")]
    task = tasks.make(rows[0]["task"])
    if task.k == 2:
        levels.append((independent_bits_radius(task.n_cells), "independent bits (nothing learned)"))
    for level, text in levels:
        ax.axhline(level, color="black", linestyle=":", linewidth=0.8)
        ax.annotate(text, (steps[0], level), fontsize=7, va="bottom")
    _mark_clocks(ax, summary)
    _log_step_axis(ax, steps)
    ax.set_yscale("symlog", linthresh=sigmas[0])  # linear below the grid, where a radius is 0
    ax.set_ylim(0, sigmas[-1] * 2)
    ax.set_ylabel("basin radius (sigma, median and IQR)")
    ax.set_title("basins of attraction over training")
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _maps(rows, panels, path, colorbar_label, norm=None, cmap="viridis") -> None:
    """One (step x sigma) map per panel: ``panels`` is [(title, values (steps, sigmas))]."""
    steps, sigmas = _steps_and_sigmas(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1, 3.6), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, (title, values) in zip(axes[0], panels):
        mesh = ax.pcolormesh(_log_edges(steps), _log_edges(sigmas), np.asarray(values).T, norm=norm, cmap=cmap,
                             shading="flat")
        _log_step_axis(ax, steps)
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0, 0].set_ylabel("sigma")
    fig.colorbar(mesh, ax=axes[0].tolist(), label=colorbar_label)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_return(rows: list[dict], path) -> None:
    panels = [(name, [row["classes"][name]["return_prob"] for row in rows]) for name in PROBE_CLASSES]
    _maps(rows, panels, path, "return probability", norm=Normalize(0, 1))


def plot_loss_gap(rows: list[dict], path) -> None:
    loss = {name: np.array([row["classes"][name]["loss"] for row in rows]) for name in PROBE_CLASSES}
    panels = [("loss(novel) - loss(train)", loss["novel"] - loss["train"]),
              ("loss(invalid) - loss(novel)", loss["invalid"] - loss["novel"])]
    vmax = max(max(np.abs(values).max() for _, values in panels), 1e-6)
    norm = SymLogNorm(linthresh=min(1e-2, vmax), vmin=-vmax, vmax=vmax)
    _maps(rows, panels, path, "weighted denoising loss gap", norm=norm, cmap="RdBu_r")


def plot_all(run_dir, rows: list[dict], summary: dict | None = None) -> list[Path]:
    """Write the three figures into ``run_dir``; returns their paths."""
    paths = [Path(run_dir) / name for name in FIGURES]
    plot_radius(rows, summary, paths[0])
    plot_return(rows, paths[1])
    plot_loss_gap(rows, paths[2])
    return paths
