"""`innovwin report STORE --out OUT`: every finished run's clocks as tables, the scaling fits, the
figures, and an index.html that shows them together.

    OUT/index.html              the page a user opens first (innovwin.report.page)
    OUT/headline.txt            the findings (innovwin.report.headline), as the terminal shows them
    OUT/runs.csv, runs.md       one row per finished run: variant (config_variants), clocks, intervals,
                                censoring, window, and summary_check: where the store's copy of the run's summary
                                disagrees with the run directory's summary.json (which the report then uses)
    OUT/fits.csv, fits.md       tau = a * x^alpha per group (see innovwin.analysis.fits): maximum likelihood with
                                censoring (ml_*, profile-likelihood interval; what the findings and figures use), and
                                least squares on the measured clocks with a bootstrap interval
    OUT/predict_check.csv, .md  each run's clocks predicted from the others of its group (innovwin.analysis.predict)
    OUT/seeds.csv, seeds.md     per grid cell, every seed's clocks, median and range, verdict (innovwin.report.seeds)
    OUT/sensitivity.csv, .md    each run's clocks at several thresholds (innovwin.report.thresholds)
    OUT/alpha_sensitivity.csv, .md, .png   tau_mem = a * N^alpha refitted at each tau_mem threshold
    OUT/tau_vs_n.png            tau_rule and tau_mem against N (log-log) with the censored fits' lines, DiT | GPT
    OUT/tau_rule.png            tau_rule against rule complexity, one line per depth, DiT | GPT
    OUT/window_map.png          the window's width over (task x N), closed windows marked, DiT | GPT
    OUT/arch_pairs.png          each clock of a GPT run against the same run as a DiT (when both exist)
    OUT/curves/KEY.png          the two-clock curves of each run
    OUT/basins/*.png            basin figures found in the run directories

Every part reads the runs as records (:class:`innovwin.analysis.records.RunRecord`), read once here.
"""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from innovwin.analysis.fits import fit_all
from innovwin.analysis.records import RunRecord, load_rows, run_metrics, run_records
from innovwin.report import seeds
from innovwin.report.drawing import save
from innovwin.report.headline import headline
from innovwin.report.page import render_index
from innovwin.report.predict_check import write_check
from innovwin.report.run_figures import plot_curves, plot_window_map
from innovwin.report.scaling_figures import plot_arch_pairs, plot_tau_rule, plot_tau_vs_n
from innovwin.report.tables import FIT_COLUMNS, RUN_COLUMNS, run_row, write_table
from innovwin.report.thresholds import write_sensitivity
from innovwin.store import rundir

FIGURES = {"tau_vs_n": plot_tau_vs_n, "tau_rule": plot_tau_rule, "window_map": plot_window_map,
           "arch_pairs": plot_arch_pairs}


def findings(rows: list[dict], *, n_boot: int = 1000, seed: int = 0) -> list[str]:
    """The headline of these runs (innovwin.report.headline): what `innovwin sweep` ends with."""
    records = run_records(rows)
    return _headline(rows, records, fit_all(records, n_boot=n_boot, seed=seed))


def _headline(rows: list[dict], records: list[RunRecord], fits: list[dict]) -> list[str]:
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
    write_table(out / "runs", [run_row(record) for record in records], RUN_COLUMNS)
    write_table(out / "fits", fits, FIT_COLUMNS)
    figures = {}
    for name, draw in FIGURES.items():
        figure = draw(records, fits) if records else None  # a store whose runs are all queued has nothing to draw
        if figure is not None:
            figures[name] = save(figure, out / f"{name}.png")
    metrics = {record.key: run_metrics(record) for record in records}
    curves = {record.key: save(plot_curves(record, metrics[record.key]), out / "curves" / f"{record.key}.png")
              for record in records if metrics[record.key]}
    basins = collect_basins(records, out / "basins")
    replicates = seeds.seed_rows(records)
    write_table(out / "seeds", replicates, seeds.COLUMNS)
    section = seeds.section(replicates) + write_sensitivity(out, records, metrics, n_boot=n_boot, seed=seed)
    index = out / "index.html"
    check = write_check(out, records)
    index.write_text(render_index(source, rows, records, fits, figures, curves, basins, section, lines, check))
    return index


def collect_basins(records: list[RunRecord], out: Path) -> list[Path]:
    """Copy the basin figures the basin analysis left in run directories (rundir.basin_figures)."""
    copied = []
    for record in records:
        for source in rundir.basin_figures(record.run_dir):
            out.mkdir(parents=True, exist_ok=True)
            target = out / f"{record.key}_{source.name}"
            shutil.copyfile(source, target)
            copied.append(target)
    return copied
