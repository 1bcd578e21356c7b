"""`innovwin report STORE --out OUT`: every finished run's clocks as tables, the scaling fits, the
figures, and an index.html that shows them together.

    OUT/index.html              the page a user opens first
    OUT/runs.csv, runs.md       one row per finished run: variant (config_variants), clocks, intervals,
                                censoring, window, and summary_check: where the store's copy of the run's summary
                                disagrees with the run directory's summary.json (which the report then uses)
    OUT/fits.csv, fits.md       tau = a * x^alpha per group (see innovwin.analysis.fits): least squares with a bootstrap
                                interval, and maximum likelihood with censoring (ml_*, profile-likelihood interval)
    OUT/seeds.csv, seeds.md     per grid cell, every seed's clocks, median and range, verdict (innovwin.report.seeds)
    OUT/sensitivity.csv, .md    each run's clocks at several thresholds (see innovwin.sensitivity)
    OUT/alpha_sensitivity.csv, .md, .png   tau_mem = a * N^alpha refitted at each tau_mem threshold
    OUT/tau_vs_n.png            tau_rule and tau_mem against N (log-log) with the fitted lines, DiT | GPT
    OUT/tau_rule.png            tau_rule against rule complexity, one line per depth, DiT | GPT
    OUT/window_map.png          the window's width over (task x N), closed windows marked, DiT | GPT
    OUT/arch_pairs.png          each clock of a GPT run against the same run as a DiT (when both exist)
    OUT/curves/KEY.png          the two-clock curves of each run
    OUT/basins/*.png            basin figures found in the run directories

Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas: no pyplot global state.
Censored clocks ("> last step") are drawn hollow at the last step and never enter a fit; clocks crossed by the
first evaluation ("<= first step", upper bounds) are drawn there as downward triangles and never enter a fit either.
"""
from __future__ import annotations

import csv
import html
import math
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from innovwin import objectives
from innovwin.analysis import clocks, sensitivity
from innovwin.analysis.fits import ML_COLUMNS, fit_all
from innovwin.config import DOTTED, HELP, SEED_FIELDS, differences
from innovwin.report import seeds
from innovwin.report.headline import clock_text, headline, thresholds
from innovwin.store import rundir
from innovwin.store.rundir import SUMMARY, read_json, read_metrics
from innovwin.store.runstore import DB_NAME, RunStore

CLOCKS = ("tau_rule", "tau_mem")
CLOCK_STYLE = {"tau_rule": ("s", "--", "τ_rule"), "tau_mem": ("o", "-", "τ_mem")}
WINDOW_CMAP = matplotlib.colormaps["viridis"]
BOUND_MARKER = "v"  # a clock crossed by the first evaluation, drawn at that step: "at most" (an upper bound)
RUN_COLUMNS = ("key", "name", "task", "arch", "depth", "width", "variant", "n_train", "seed", "steps",
               "tau_rule", "tau_rule_lo", "tau_rule_hi", "tau_rule_bracket_lo", "tau_rule_bracket_hi",
               "tau_rule_censored", "tau_rule_at_first_eval",
               "tau_mem", "tau_mem_lo", "tau_mem_hi", "tau_mem_bracket_lo", "tau_mem_bracket_hi",
               "tau_mem_censored", "tau_mem_at_first_eval",
               "window_state", "window_width_decades", "window_reason", "final_valid_frac", "final_copy_frac",
               "summary_check")
RECORD_CONFIG = ("task", "arch", "depth", "width", "n_train", "seed", "steps", "rule_threshold", "mem_threshold")
FIT_COLUMNS = ("clock", "against", "task", "family", "arch", "depth", "width", "variant", "alpha", "alpha_lo",
               "alpha_hi", "a", "n_points", "n_censored", "x_min", "x_max", "note", *ML_COLUMNS)


def load_rows(source) -> list[dict]:
    """The runs of a store (a directory with runs.sqlite) or of one run directory (with config.json), as store
    rows: key, config, status, summary, run_dir."""
    source = Path(source)
    if (source / DB_NAME).exists():
        with RunStore(source) as store:
            return store.rows()
    if (source / rundir.CONFIG).exists():
        return [run_dir_row(source)]
    raise ValueError(f"{source} is not a run store (no {DB_NAME}) nor a run directory (no {rundir.CONFIG})")


def run_dir_row(path: Path) -> dict:
    """One run directory as a store row (done once its summary.json is written)."""
    try:
        config = rundir.read_config(path)
        summary = read_json(path / SUMMARY) if (path / SUMMARY).exists() else None
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a readable run directory ({error})") from None
    return {"key": config.key(), "config": config.resolved().to_dict(), "status": "done" if summary else "running",
            "summary": summary, "run_dir": str(path), "attempts": 1, "error": None}


def findings(rows: list[dict], *, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """The headline of these runs (innovwin.report.headline): what `innovwin sweep` ends with."""
    records = run_records(rows)
    return _headline(rows, records, fit_all(records, n_boot=n_boot, seed=seed))


def _headline(rows, records, fits) -> list[str]:
    counts = Counter(row["status"] for row in rows)
    return headline(records, fits, failed=counts["failed"], pending=counts["queued"] + counts["running"])


def build_report(source, out_dir, *, n_boot: int = 1000, seed: int = 0) -> Path:
    """Write the whole report of a store or of one run directory; returns the path of index.html (the headline
    is also in headline.txt beside it)."""
    out = Path(out_dir)
    rows = load_rows(source)
    records = run_records(rows)
    out.mkdir(parents=True, exist_ok=True)
    fits = fit_all(records, n_boot=n_boot, seed=seed)
    lines = _headline(rows, records, fits)
    (out / "headline.txt").write_text("\n".join(lines) + "\n")
    write_table(out / "runs", records, RUN_COLUMNS)
    write_table(out / "fits", fits, FIT_COLUMNS)
    figures = {}
    for name, draw in (("tau_vs_n", plot_tau_vs_n), ("tau_rule", plot_tau_rule),
                       ("window_map", plot_window_map), ("arch_pairs", plot_arch_pairs)):
        figure = draw(records, fits) if records else None  # a store whose runs are all queued has nothing to draw
        if figure is not None:
            figures[name] = _save(figure, out / f"{name}.png")
    metrics = {record["key"]: run_metrics(record) for record in records}
    curves = {}
    for record in records:
        if metrics[record["key"]]:
            curves[record["key"]] = _save(plot_curves(record, metrics[record["key"]]),
                                          out / "curves" / f"{record['key']}.png")
    basins = collect_basins(records, out / "basins")
    replicates = seeds.seed_rows(records)
    write_table(out / "seeds", replicates, seeds.COLUMNS)
    section = seeds.section(replicates) + write_sensitivity(out, records, metrics, n_boot=n_boot, seed=seed)
    index = out / "index.html"
    index.write_text(render_index(source, rows, records, fits, figures, curves, basins, section, lines))
    return index


def write_sensitivity(out: Path, records, metrics, *, n_boot: int, seed: int) -> str:
    """The threshold-sensitivity tables and figure (innovwin.sensitivity); returns index.html's section."""
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
    figure = sensitivity.plot_alpha_sensitivity(alphas)
    if figure is not None:
        parts.append(f"<figure>{_img(_save(figure, out / 'alpha_sensitivity.png'))}</figure>")
    parts.append(_html_table(*sensitivity.alpha_by_group(alphas)) if alphas
                 else "<p>No refit: N does not vary within any group of runs with evaluation rows.</p>")
    return "".join(parts)


# --- records ---------------------------------------------------------------------------
# Config fields that never make a run's variant: runs that differ only in these share one fit, colour,
# window-map cell and architecture pair. Why each is safe to pool:
POOLED_FIELDS = frozenset({
    # the axes: grouping keys already, or the x of a fit
    "task", "arch", "depth", "width", "n_train",
    # replicates of one experiment
    "seed", *SEED_FIELDS,
    # the rate is constant after warmup (innovwin.train), so a longer run follows the same trajectory: steps
    # only sets where it stops, and a clock past that end is censored, never misread
    "steps",
    # where and how finely the same curves are measured: evaluating never changes training (and a clock
    # crossed by the first evaluation is an upper bound, not fitted)
    "evals_per_decade", "first_eval", "eval_samples",
    # the held-out loss set's size: no clock reads a loss (it can redraw the training set, as a data seed would)
    "loss_samples",
    # the near-copy and ratio-copy metrics: tau_mem counts exact copies only
    "near_copy_radius", "ratio_copy",
    # bookkeeping: the clocks' interval resamples, weight snapshots
    "bootstrap", "snapshots",
    # where and in which precision the same computation runs (dtype auto follows the device, so these fields
    # do not even record the precision used): numerical differences, not another experiment
    "device", "dtype", "compile",
})


def config_variants(configs: list[dict]) -> list[str]:
    """Each config's values of the fields (POOLED_FIELDS aside) that differ among ``configs``, e.g.
    ``lr=0.003 batch=128``; "" for every config when no such field differs."""
    return differences(configs, POOLED_FIELDS)


def run_records(rows: list[dict]) -> list[dict]:
    """One flat record per finished run: its configuration's axes and variant (config_variants among the
    finished runs), its clocks and its window."""
    from innovwin.tasks import make

    tasks = {}
    records = []
    finished = [row for row in rows if row["status"] == "done" and row["summary"]]
    names = differences([row["config"] for row in finished], SEED_FIELDS)  # what sets each run apart
    for row, variant, name in zip(finished, config_variants([row["config"] for row in finished]), names):
        summary, check = run_summary(row)
        config = row["config"]
        task = tasks.setdefault(config["task"], make(config["task"]))
        final = summary.get("final") or {}
        record = {
            "key": row["key"], "name": name or row["key"], "run_dir": row["run_dir"], "task": task.spec, "family": task.family,
            "complexity": task.complexity, "complexity_label": ", ".join(task.complexity_params or ("complexity",)),
            "arch": config["arch"], "depth": config["depth"],
            "width": config["width"], "variant": variant, "n_train": config["n_train"], "seed": config["seed"],
            "steps": config["steps"], "last_step": final.get("step", config["steps"]),
            "rule_threshold": config["rule_threshold"], "mem_threshold": config["mem_threshold"],
            "final_valid_frac": final.get("valid_frac"), "final_copy_frac": final.get("copy_frac"),
            "summary_check": check,
        }
        read = clocks.read_clocks(summary, record["last_step"])  # today's clock objects or an older flat summary
        for clock, found in zip(CLOCKS, read):
            record.update(clocks.record_fields(clock, found))
        window, record["window_state"], reason = clocks.window(*read)
        record["window_reason"] = reason or ""
        record["window_width_decades"] = math.log10(window[1] / window[0]) if window and window[1] else None
        records.append(record)
    return sorted(records, key=lambda r: (r["family"], r["complexity"], r["task"], r["arch"], r["depth"],
                                          r["width"], r["variant"], r["n_train"], r["seed"]))


def run_summary(row: dict) -> tuple[dict, str]:
    """The run's own summary.json (the store keeps a copy) and a note where the two disagree, or "".

    summary.json is what the run wrote; a store edited, restored from a backup or written by a crashed driver may
    hold another copy, which is used only where the run directory has none. A row the records cannot read is
    refused, named."""
    path = Path(row["run_dir"]) / SUMMARY
    summary, check = row["summary"], f"no {SUMMARY} in the run directory: the store's copy is used"
    if path.is_file():
        summary = read_json(path)
        check = "" if summary == row["summary"] else f"the store's summary differs from {SUMMARY}: {SUMMARY} is used"
    problems = [f"its config lacks {name}" for name in RECORD_CONFIG if name not in row["config"]]
    problems += [f"its summary's {name} is not a {kind.__name__}"
                 for name, kind in (("final", dict), ("tau_rule_ci", list), ("tau_mem_ci", list))
                 if summary.get(name) is not None and not isinstance(summary[name], kind)]
    if problems:
        raise ValueError(f"run {row['key']} in the store is malformed: {'; '.join(problems)}")
    return summary, check


def run_metrics(record: dict) -> list[dict]:
    """A finished run's metrics rows, refused when they stop short of its summary's final row (a file cut at a row
    boundary reads as a shorter history; rerunning the run's train restores it from state.pt)."""
    rows = read_metrics(record["run_dir"])
    if rows and rows[-1]["step"] != record["last_step"]:
        raise ValueError(f"{Path(record['run_dir']) / 'metrics.jsonl'} ends at step {rows[-1]['step']} but the run's "
                         f"summary at step {record['last_step']}: rerun the run's `innovwin train` to restore it")
    return rows


def clock_kind(record: dict, clock: str) -> str:
    """measured, censored (a lower bound) or first_eval (crossed by the first evaluation: an upper bound)."""
    if record[f"{clock}_censored"] or record[clock] is None:
        return "censored"
    return "first_eval" if record[f"{clock}_at_first_eval"] else "measured"


def clock_value(record: dict, clock: str) -> tuple[float | None, bool]:
    """(value to draw, censored): a censored clock is drawn at the last step, as a lower bound."""
    if record[f"{clock}_censored"] or record[clock] is None:
        return float(record["last_step"]), True
    return float(record[clock]), False


# --- tables ----------------------------------------------------------------------------
def write_table(stem: Path, rows: list[dict], columns) -> None:
    with open(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


# --- figures ---------------------------------------------------------------------------
PAGE_DPI = 110  # pixels per inch a figure takes on the page; its PNG has twice as many, for sharp screens


def _save(figure: Figure, path: Path) -> Path:
    """Write the figure as SVG (vector) and as PNG at 2x PAGE_DPI beside it; returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path.with_suffix(".svg"))
    figure.savefig(path, dpi=2 * PAGE_DPI)
    return path


def _img(path: Path, folder: str = "") -> str:
    """The PNG shown at half its pixel width (2x for sharp screens), linked to its SVG."""
    width = int.from_bytes(path.read_bytes()[16:20], "big") // 2  # the PNG header's width field
    return (f"<a href='{folder}{path.with_suffix('.svg').name}'><img src='{folder}{path.name}' width='{width}' "
            f"alt='{html.escape(path.stem)}'></a>")


def _arch_panels(records, n_rows: int = 1, height: float = 4.0, width: float = 5.5):
    """A figure with one column per architecture present (in registry order), shared y."""
    archs = present_archs(records)
    figure = Figure(figsize=(width * len(archs), height * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, len(archs), squeeze=False, sharey=n_rows == 1)
    return figure, archs, axes


def _size_label(depth, width, variant="") -> str:
    return f"depth {depth}, width {width}" + (f", {variant}" if variant else "")


def plot_curves(record: dict, metrics: list[dict]) -> Figure:
    """Validity and copy rate against step (log x), the clocks marked, the window shaded."""
    rows = [row for row in metrics if row.get("step", 0) > 0]
    steps = np.array([row["step"] for row in rows], dtype=float)
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = figure.subplots()
    series = [("valid_frac", "rule-valid", "tab:blue", "-"),
              ("constraint_frac", "groups / constraints satisfied", "tab:blue", "--"),
              ("copy_frac", "exact copy of a training sample", "tab:red", "-"),
              ("chance_copy", "copy rate by chance (N/|V|)", "tab:red", ":"),
              ("copy_prob", "expected copy rate, exact (Σ p(training samples))", "tab:red", "-."),
              ("heldout_hit_frac", "hits on a held-out set of N (no memorization)", "tab:orange", ":"),
              ("novel_valid_frac", "new and valid", "tab:green", "-")]
    for name, label, color, style in series:
        values = [row.get(name) for row in rows]
        if any(value is not None for value in values):
            ax.plot(steps, [np.nan if v is None else v for v in values], style, color=color, label=label,
                    marker="." if style == "-" else None, lw=1.5 if style == "-" else 1.0)
    # the two criteria: validity >= rule_threshold; copy rate >= chance + mem_threshold
    ax.axhline(record["rule_threshold"], color="tab:blue", lw=0.6, ls="--", alpha=0.6)
    chance = [row.get("chance_copy") or 0.0 for row in rows]
    ax.plot(steps, np.add(chance, record["mem_threshold"]), color="tab:red", lw=0.6, ls="--", alpha=0.6)
    for clock, color, height in (("tau_rule", "tab:blue", 0.55), ("tau_mem", "tab:red", 0.45)):
        value, censored = clock_value(record, clock)
        if censored:
            ax.annotate(f"{CLOCK_STYLE[clock][2]} > {value:.0f}", xy=(value, height), xytext=(-4, 0),
                        textcoords="offset points", ha="right", color=color, fontsize=8)
            continue
        ax.axvline(value, color=color, lw=1.2, ls="--")
        lo, hi = record[f"{clock}_lo"], record[f"{clock}_hi"]
        if lo is not None:
            ax.axvspan(lo, hi if hi is not None else steps[-1], color=color, alpha=0.08, lw=0)
        rule = clock == "tau_rule"  # labels on either side of their lines, so near clocks stay readable
        relation = "≤" if record[f"{clock}_at_first_eval"] else "="
        ax.annotate(f"{CLOCK_STYLE[clock][2]} {relation} {value:.0f}", xy=(value, 1.02), xytext=(-2 if rule else 2, 0),
                    textcoords="offset points", ha="right" if rule else "left", color=color, fontsize=8,
                    xycoords=("data", "axes fraction"))
    if record["window_state"] == "open" and not record["tau_mem_censored"]:
        ax.axvspan(record["tau_rule"], record["tau_mem"], color="tab:green", alpha=0.15, lw=0,
                   label="innovation window")
    elif record["window_state"] == "open":
        ax.axvspan(record["tau_rule"], steps[-1], color="tab:green", alpha=0.1, lw=0, hatch="//",
                   label="window (still open at the end)")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step (log scale)")
    ax.set_ylabel("fraction of generated samples")
    size = _size_label(record["depth"], record["width"], record["variant"])
    ax.set_title(f"{record['task']} · {record['arch'].upper()} {size} · "
                 f"N = {record['n_train']} · seed {record['seed']}", fontsize=9, pad=14)
    ax.legend(fontsize=7, loc="center left")
    ax.grid(alpha=0.3, which="both")
    return figure


def plot_tau_vs_n(records: list[dict], fits: list[dict]) -> Figure | None:
    """Both clocks against N on log-log axes, one colour per (task, size, variant), with the fitted lines."""
    return _plot_against(records, fits, "n_train", CLOCKS, "task", lambda rows: "training-set size N (samples)",
                         "clock τ (training steps)")


def plot_tau_rule(records: list[dict], fits: list[dict]) -> Figure | None:
    """tau_rule against the rule's complexity, one row of panels per task family (parity's G and a Sudoku's n
    are different knobs), one colour per size (pooled over N and seeds)."""
    return _plot_against(records, fits, "complexity", ("tau_rule",), "family",
                         lambda rows: f"rule complexity: {rows[0]['complexity_label']} of {rows[0]['family']}",
                         "τ_rule (training steps)", rows_by="family")


def _plot_against(records, fits, x: str, shown, colour_by: str, xlabel, ylabel: str, rows_by: str | None = None):
    """The clocks ``shown`` against ``x`` (log-log), one column per architecture and one row per value of
    ``rows_by``, one colour per (``colour_by``, size, variant), fitted lines where they are drawable (_draw_fit);
    None when x takes fewer than two values in every row."""
    rows = defaultdict(list)
    for r in records:
        rows[r[rows_by] if rows_by else None].append(r)
    rows = {value: members for value, members in sorted(rows.items(), key=lambda item: str(item[0]))
            if len({r[x] for r in members}) >= 2}
    if not rows:
        return None
    figure, archs, axes = _arch_panels(records, n_rows=len(rows), width=8.5)  # room for the legend beside
    for row_axes, in_row in zip(axes, rows.values()):
        for ax, arch in zip(row_axes, archs):
            for color, group, members in _coloured_groups(in_row, arch, colour_by):
                for clock in shown:
                    _scatter_clock(ax, members, x, clock, color)
                    fit = _find_fit(fits, clock, x, arch=arch, **dict(zip((colour_by, "depth", "width", "variant"),
                                                                          group)))
                    _draw_fit(ax, fit, members, x, clock, color, f"{group[0]}, {_size_label(*group[1:])}")
            _clock_legend(ax, [r for r in in_row if r["arch"] == arch], shown)
            _log_panel(ax, sorted({r[x] for r in in_row}), xlabel(in_row), ylabel, arch_title(arch))
    return figure


def _coloured_groups(records: list[dict], arch: str, by: str):
    """(colour, (record[by], depth, width, variant), members) for each such group of ``arch``'s records."""
    fields = (by, "depth", "width", "variant")
    groups = sorted({tuple(r[f] for f in fields) for r in records if r["arch"] == arch})
    for index, group in enumerate(groups):
        members = [r for r in records if r["arch"] == arch and tuple(r[f] for f in fields) == group]
        yield f"C{index % 10}", group, members


MIN_FIT_XS = 3  # distinct x values a fitted line needs to be drawn


def _draw_fit(ax, fit: dict | None, members: list[dict], x: str, clock: str, color: str, group: str) -> bool:
    """Draw a fitted power law over its x range, with its exponent's interval in the legend, when it has an
    interval and rests on at least MIN_FIT_XS distinct measured x; otherwise a legend entry says why not."""
    name, style = CLOCK_STYLE[clock][2], CLOCK_STYLE[clock][1]
    symbol = "N" if x == "n_train" else members[0]["complexity_label"] if x == "complexity" else x
    xs = {r[x] for r in members if clock_kind(r, clock) == "measured"}
    if fit and fit["alpha"] is not None and fit["alpha_lo"] is not None and len(xs) >= MIN_FIT_XS:
        grid = np.geomspace(fit["x_min"], fit["x_max"], 50)
        ax.plot(grid, fit["a"] * grid ** fit["alpha"], style, color=color, lw=1.2,
                label=f"{name} ∝ {symbol}^{fit['alpha']:.2f} [{fit['alpha_lo']:.2f}, {fit['alpha_hi']:.2f}]  {group}")
        return True
    ax.plot([], [], CLOCK_STYLE[clock][0], color=color,
            label=f"{name}  {group}: no line ({len(xs)} distinct measured x; a drawn line needs {MIN_FIT_XS})")
    return False


def _log_panel(ax, x_values, xlabel: str, ylabel: str, title: str) -> None:
    """Log-log axes with ticks at the swept x values, labels, title and a light grid."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    _ticks_at(ax, x_values)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")


def plot_window_map(records: list[dict], fits: list[dict]) -> Figure | None:
    """The window's width in decades over (task x N), one panel per (size, variant, architecture); a cell
    is the median over seeds, and a cell where no seed's window opened is marked closed."""
    sizes = sorted({(r["depth"], r["width"], r["variant"]) for r in records})
    figure, archs, axes = _arch_panels(records, n_rows=len(sizes), height=3.2)
    tasks = sorted({(r["family"], r["complexity"], r["task"]) for r in records})
    task_names = [task for _, _, task in tasks]
    ns = sorted({r["n_train"] for r in records})
    vmax = max([width for r in records if (width := _window_width(r)) is not None] + [1.0])
    image = None
    for row_axes, (depth, width, variant) in zip(axes, sizes):
        for ax, arch in zip(row_axes, archs):
            cells = defaultdict(list)
            for r in records:
                if (r["arch"], r["depth"], r["width"], r["variant"]) == (arch, depth, width, variant):
                    cells[(task_names.index(r["task"]), ns.index(r["n_train"]))].append(r)
            grid = np.full((len(task_names), len(ns)), np.nan)
            for (i, j), members in cells.items():
                text, value = _window_cell(members)
                grid[i, j] = value
                closed = text == "×"
                if closed:
                    ax.add_patch(_rectangle(j, i, color="0.75"))
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
            ax.set_title(f"{arch_title(arch)} · {_size_label(depth, width, variant)}", fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8,
                        label="log10(τ_mem/τ_rule), decades")
    return figure


def _text_colour(rgba) -> str:
    """Black on light cells, white on dark ones (by the cell colour's luminance)."""
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def _window_cell(members: list[dict]) -> tuple[str, float | None]:
    """Text and colour value of one window-map cell (one task, N, size, arch; several seeds)."""
    widths = [width for r in members if (width := _window_width(r)) is not None]
    if seeds.cell_verdict(members) == "unresolved":  # the runs' clocks overlap, or the seeds disagree
        return f"?\n{len(widths)}/{len(members)} open" if len(members) > 1 else "?", None
    if not widths:
        return "×", None
    value = float(np.median(widths))
    prefix = "≥" if any(_width_is_a_bound(r) for r in members) else ""
    suffix = f"\n{len(widths)}/{len(members)} open" if len(widths) < len(members) else ""
    return f"{prefix}{value:.1f}{suffix}", value


def _window_width(record: dict) -> float | None:
    """The window's width in decades; for a window still open at the last step, its lower bound (likewise
    for one whose tau_rule is an upper bound, crossed at the first evaluation)."""
    if record["window_state"] != "open":
        return None
    if record["tau_mem_censored"]:
        return math.log10(record["last_step"] / record["tau_rule"])
    return record["window_width_decades"]


def _width_is_a_bound(record: dict) -> bool:
    """An open window whose tau_rule is an upper bound (crossed at the first evaluation) or whose tau_mem was not
    reached: its width is a lower bound."""
    return record["window_state"] == "open" and (record["tau_rule_at_first_eval"] or record["tau_mem_censored"])


def _rectangle(x, y, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=color, hatch="xx", edgecolor="white", lw=0)


def plot_arch_pairs(records: list[dict], fits: list[dict]) -> Figure | None:
    """Each clock of a run of the second architecture against the same run (task, N, size, seed, variant) of the
    first, for the first two architectures present (e.g. DiT on x, GPT on y)."""
    pairs = arch_pairs(records)
    if not pairs:
        return None
    first, second = (arch_title(arch).split(" (")[0] for arch in present_archs(records)[:2])
    figure = Figure(figsize=(5.2, 4.8), layout="constrained")
    ax = figure.subplots()
    values = []
    notes = {"measured": "", "censored": " (a clock censored: > last step)",
             "first_eval": " (a clock crossed by the first evaluation: ≤ that step)"}
    for clock, color in (("tau_rule", "tab:blue"), ("tau_mem", "tab:red")):
        for kind, note in notes.items():
            points = [(clock_value(a, clock)[0], clock_value(b, clock)[0]) for a, b in pairs
                      if _pair_kind(a, b, clock) == kind]
            if points:
                xs, ys = zip(*points)
                values += xs + ys
                ax.scatter(xs, ys, marker=BOUND_MARKER if kind == "first_eval" else CLOCK_STYLE[clock][0], s=30,
                           facecolors="none" if kind == "censored" else color, edgecolors=color,
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


def present_archs(records: list[dict]) -> list[str]:
    """The architectures among the records, registry order first (unregistered names after, sorted)."""
    present = {r["arch"] for r in records}
    return [a for a in objectives.names() if a in present] + sorted(present - set(objectives.names()))


def arch_title(arch: str) -> str:
    return objectives.get(arch).title if arch in objectives.names() else arch


def arch_pairs(records: list[dict]) -> list[tuple[dict, dict]]:
    """(run of the first architecture, run of the second) with the same task, N, size, seed and variant: every
    such pair, so runs that differ only in POOLED_FIELDS (e.g. steps) each get a point instead of overwriting one
    another. Empty with fewer than two architectures."""
    archs = present_archs(records)
    if len(archs) < 2:
        return []
    runs = defaultdict(lambda: defaultdict(list))
    for r in records:
        runs[(r["task"], r["n_train"], r["depth"], r["width"], r["seed"], r["variant"])][r["arch"]].append(r)
    return [(a, b) for by_arch in runs.values() for a in by_arch[archs[0]] for b in by_arch[archs[1]]]


def _pair_kind(a: dict, b: dict, clock: str) -> str:
    """How a pair's point is drawn: censored if a clock is, else an upper bound if a clock is one."""
    kinds = {clock_kind(a, clock), clock_kind(b, clock)}
    return next(kind for kind in ("censored", "first_eval", "measured") if kind in kinds)


def _ticks_at(ax, values) -> None:
    """x ticks at the swept values (a log axis would label only powers of ten)."""
    ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _scatter_clock(ax, members, x_name, clock, color) -> None:
    """Measured clocks filled with their 95% interval as an error bar (one open above is drawn up to the last
    step), censored ones hollow at the last step, upper bounds as BOUND_MARKER."""
    for kind in ("measured", "censored", "first_eval"):
        points = [(r[x_name], clock_value(r, clock)[0]) for r in members if clock_kind(r, clock) == kind]
        if points:
            xs, ys = zip(*points)
            ax.scatter(xs, ys, marker=BOUND_MARKER if kind == "first_eval" else CLOCK_STYLE[clock][0], s=28,
                       edgecolors=color, linewidths=1.2, facecolors="none" if kind == "censored" else color, zorder=3)
    bars = [(r[x_name], r[clock], r[f"{clock}_lo"], r[f"{clock}_hi"] or r["last_step"]) for r in members
            if clock_kind(r, clock) == "measured" and r[f"{clock}_lo"] is not None]
    if bars:
        xs, ys, lo, hi = (np.array(column, dtype=float) for column in zip(*bars))
        # a bootstrap percentile interval can miss its point estimate: clip, never a negative bar
        ax.errorbar(xs, ys, yerr=[np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)], fmt="none", ecolor=color,
                    elinewidth=1, capsize=2, zorder=2)


def _clock_legend(ax, records, shown=CLOCKS) -> None:
    """Fitted lines carry their own labels; add one entry per marker kind (upper bounds when ``records``
    have one)."""
    for clock in shown:
        marker, _, name = CLOCK_STYLE[clock]
        ax.scatter([], [], marker=marker, color="0.3", label=f"{name} measured")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="0.3", label="censored: drawn at the last step "
                                                                              "(> value, not fitted)")
    if any(clock_kind(r, clock) == "first_eval" for r in records for clock in shown):
        ax.scatter([], [], marker=BOUND_MARKER, color="0.3", label="crossed by the first evaluation: drawn there "
                                                                   "(≤ value, not fitted)")
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the panel: it hides no point


def _find_fit(fits, clock, against, **group):
    return next((f for f in fits if f["clock"] == clock and f["against"] == against
                 and all(f.get(name) == value for name, value in group.items())), None)


def collect_basins(records: list[dict], out: Path) -> list[Path]:
    """Copy the basin figures (``basins_*.png``) the basin analysis left in run directories."""
    copied = []
    for record in records:
        for source in sorted(Path(record["run_dir"]).glob("**/basins_*.png")):
            out.mkdir(parents=True, exist_ok=True)
            target = out / f"{record['key']}_{source.name}"
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


# --- index.html ------------------------------------------------------------------------
FIGURE_CAPTIONS = {
    "tau_vs_n": "τ_rule and τ_mem against the training-set size N (log-log). Bars: 95% bootstrap intervals (one "
                "open above is drawn up to the last step). Lines: least-squares power laws, drawn only where α has "
                "an interval and at least 3 distinct N are measured (the legend says when not); hollow markers: "
                "clocks that never crossed (drawn at the last step, left out of the fits); downward triangles: "
                "clocks crossed by the first evaluation (upper bounds, drawn at that step, left out of the fits).",
    "tau_rule": "τ_rule against rule complexity, one row per task family (each family's own knob), one colour per "
                "model size (pooled over N and seeds). Bars: 95% intervals. Hollow: censored; downward triangles: "
                "crossed by the first evaluation (upper bounds); neither is fitted.",
    "window_map": "Innovation window width, log10(τ_mem/τ_rule), over task × N. × marks closed windows "
                  "(memorized first or rule never learned); ≥ marks widths that are lower bounds (windows still "
                  "open at the last step, or τ_rule crossed by the first evaluation); ? marks unresolved cells: the "
                  "two clocks' intervals overlap (or neither clock crossed, or both by the first evaluation), or "
                  "the seeds' verdicts disagree.",
    "arch_pairs": "Each clock of a run of one architecture (e.g. GPT) against the run of the other (e.g. DiT) with "
                  "the same task, N, size, seed and variant. Hollow: a clock censored; downward triangles: a clock "
                  "crossed by the first evaluation (upper bound).",
}


def render_index(source, rows, records, fits, figures, curves, basins, sensitivity_html="", lines=()) -> str:
    counts = Counter(row["status"] for row in rows)
    status = ", ".join(f"{counts.get(name, 0)} {name}" for name in ("done", "running", "queued", "failed"))
    single = not (Path(source) / DB_NAME).exists()
    parts = ["<h1>innovwin report</h1><section id='headline'><h2>Findings</h2><ul>"
             + "".join(f"<li>{html.escape(line)}</li>" for line in lines)
             + f"</ul><p class='definitions'>{html.escape(thresholds(records))}</p></section>"
             f"<p>{'Run directory' if single else 'Store'} <code>{html.escape(str(source))}</code>: {status}. "
             "Tables: <a href='runs.csv'>runs.csv</a>, <a href='fits.csv'>fits.csv</a> (also as .md).</p>"]
    if single and rows:
        config = rows[0]["config"]
        parts.append("<h2>Settings</h2>" + _html_table([{"field": DOTTED.get(name, name), "value": config[name],
                                                          "meaning": HELP.get(name, "")} for name in config],
                                                        ("field", "value", "meaning")))
    for name, path in figures.items():
        parts.append(f"<figure>{_img(path)}<figcaption>{html.escape(FIGURE_CAPTIONS[name])}</figcaption></figure>")
    parts.append("<h2>Scaling fits: τ = a·x<sup>α</sup></h2><p>Two fits side by side: least squares on the "
                 "measured clocks (alpha, 95% bootstrap interval; censored runs left out) and maximum likelihood "
                 "on every run's bracket, censored runs included (ml_alpha, 95% profile-likelihood interval; "
                 "ml_sigma is the spread of log τ about the line).</p>")
    parts.append(_html_table(fits, ("clock", "against", "task", "family", "arch", "depth", "width", "variant", "alpha",
                                    "alpha_lo", "alpha_hi", "n_points", "n_censored", "ml_alpha", "ml_alpha_lo",
                                    "ml_alpha_hi", "ml_sigma", "ml_n", "note", "ml_note"))
                 if fits else "<p>No fits: no axis (N, complexity, depth) varies with at least two values.</p>")
    parts.append("<h2>Runs</h2>")
    if not records:
        parts.append("<p>There is no finished run in this store yet: rerun the sweep, then the report.</p>")
    parts.append(_html_table([_rendered_run(r) for r in records],
                             ("run", "task", "arch", "depth", "width", "variant", "n_train", "seed", "τ_rule",
                              "τ_mem", "window")))
    checked = [r["key"] for r in records if r["summary_check"]]
    if checked:
        parts.append(f"<p><b>Check:</b> {len(checked)} run(s) whose stored summary disagrees with its run directory "
                     f"(or has none): {html.escape(', '.join(checked))}; see runs.csv's summary_check.</p>")
    parts.append(sensitivity_html)
    if curves:
        parts.append("<h2>Two-clock curves</h2><div class='grid'>")
        parts += [f"<div id='{key}'>{_img(path, 'curves/')}</div>" for key, path in curves.items()]
        parts.append("</div>")
    if basins:
        parts.append("<h2>Basins of attraction</h2><div class='grid'>")
        parts += [f"<a href='basins/{path.name}'><img src='basins/{path.name}' title='{path.name}'></a>"
                  for path in basins]
        parts.append("</div>")
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
             "#headline{background:#f2f6fb;border-left:5px solid #2b6cb0;padding:.2em 1.2em;font-size:17px}"
             "#headline li{margin:.3em 0}.definitions{font-size:14px;color:#333}"
             "img{max-width:100%}figure{margin:1.5em 0}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:8px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>innovwin report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _rendered_run(record: dict) -> dict:
    window = record["window_state"]
    if (width := _window_width(record)) is not None:
        window += f" ({'≥ ' if _width_is_a_bound(record) else ''}{width:.2f} decades)"
    return {**record, "run": f"<a href='#{record['key']}' title='{record['key']}'>{html.escape(record['name'])}</a>",
            "τ_rule": clock_text(record, "tau_rule"), "τ_mem": clock_text(record, "tau_mem"), "window": window}


def _html_table(rows: list[dict], columns) -> str:
    # the variant column only where a variant is set: a store that varies nothing but the axes reads as before
    columns = [c for c in columns if c != "variant" or any(row.get("variant") for row in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(c, row.get(c))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_cell(column: str, value) -> str:
    return _cell(value) if column == "run" else html.escape(_cell(value))
