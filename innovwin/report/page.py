"""index.html: the headline first, then the figures with their captions, the fits, how well they predict a run
left out, the runs, the seeds, the threshold sensitivity, each run's curves and the basin figures; every table
also a CSV beside it."""
from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

from innovwin.analysis.records import RunRecord
from innovwin.config import DOTTED, HELP
from innovwin.report.headline import thresholds
from innovwin.report.tables import html_table
from innovwin.store.runstore import DB_NAME

FIGURE_CAPTIONS = {
    "tau_vs_n": "τ_rule and τ_mem against the training-set size N (log-log). Bars: each clock's 95% interval, the "
                "bracket of evaluations around its crossing joined with a paired bootstrap over the generated "
                "samples (one open above is drawn up to the last step). Lines: censored maximum-likelihood power "
                "laws over every run and seed, censored runs included, drawn where α has an interval and the group "
                "spans at least 3 distinct N (the legend gives α with its 95% interval, says 'no measurable trend' "
                "where that interval covers 0, and says when no line is drawn); hollow markers: clocks that never "
                "crossed (drawn at the last step, fitted as lower bounds); downward triangles: clocks crossed by the "
                "first evaluation (drawn at that step, fitted as upper bounds).",
    "tau_rule": "τ_rule against rule complexity, one row per task family (each family's own knob), one colour per "
                "model size (pooled over N and seeds). Bars: 95% intervals (the bracket joined with the paired "
                "bootstrap over the generated samples). Lines: censored maximum-likelihood power laws, every run "
                "included. Hollow: censored (fitted as lower bounds); downward triangles: crossed by the first "
                "evaluation (fitted as upper bounds).",
    "window_map": "Innovation window width, log10(τ_mem/τ_rule), over task × N. × marks closed windows "
                  "(memorized first or rule never learned); ≥ marks widths that are lower bounds (windows still "
                  "open at the last step, or τ_rule crossed by the first evaluation); ? marks unresolved cells: the "
                  "two clocks' intervals overlap (or neither clock crossed, or both by the first evaluation), or "
                  "the seeds' verdicts disagree.",
    "arch_pairs": "Each clock of a run of one architecture (e.g. GPT) against the run of the other (e.g. DiT) with "
                  "the same task, N, size, seed and variant, each at its estimate (no bars). Hollow: a clock censored; "
                  "downward triangles: a clock crossed by the first evaluation (upper bound).",
}


def render_index(source, rows: list[dict], records: list[RunRecord], fits: list[dict], figures: dict[str, Path],
                 curves: dict[str, Path], basins: list[Path], sensitivity_html: str = "", lines=(),
                 check_html: str = "") -> str:
    """The page of a store or of one run directory (``rows``: the store's rows, every status); ``check_html`` the
    leave-one-out section (innovwin.report.predict_check), after the fits."""
    counts = Counter(row["status"] for row in rows)
    status = ", ".join(f"{counts.get(name, 0)} {name}" for name in ("done", "running", "queued", "failed"))
    single = not (Path(source) / DB_NAME).exists()
    parts = ["<h1>innovwin report</h1><section id='headline'><h2>Findings</h2><ul>"
             + "".join(f"<li>{html.escape(line)}</li>" for line in lines)
             + f"</ul><p class='definitions'>{html.escape(thresholds(records))}</p></section>"
             f"<p>{'Run directory' if single else 'Store'} <code>{html.escape(str(source))}</code>: {status}. "
             "Tables: <a href='runs.csv'>runs.csv</a>, <a href='fits.csv'>fits.csv</a>, "
             "<a href='predict_check.csv'>predict_check.csv</a> (also as .md).</p>"]
    if single and rows:
        config = rows[0]["config"]
        parts.append("<h2>Settings</h2>" + html_table([{"field": DOTTED.get(name, name), "value": config[name],
                                                         "meaning": HELP.get(name, "")} for name in config],
                                                       ("field", "value", "meaning")))
    for name, path in figures.items():
        parts.append(f"<figure>{img(path)}<figcaption>{html.escape(FIGURE_CAPTIONS[name])}</figcaption></figure>")
    parts.append("<h2>Scaling fits: τ = a·x<sup>α</sup></h2><p>The fit the findings and figures use is the censored "
                 "maximum-likelihood one: every run's bracket, censored runs included (ml_alpha, 95% "
                 "profile-likelihood interval; ml_sigma is the spread of log τ about the line, seeds included, at "
                 "least what the evaluation grid resolves). Least squares on the measured clocks only (alpha, 95% "
                 "bootstrap interval over runs; censored runs left out) stays in fits.csv for comparison.</p>")
    parts.append(html_table(fits, ("clock", "against", "task", "family", "arch", "depth", "width", "n_train",
                                   "variant", "ml_alpha", "ml_alpha_lo", "ml_alpha_hi", "ml_sigma", "ml_n",
                                   "ml_n_right", "ml_n_left", "ml_note", "alpha", "alpha_lo", "alpha_hi", "n_points",
                                   "n_censored", "note"))
                 if fits else "<p>No fits: no axis (N, complexity, depth, width) varies with at least two values.</p>")
    parts.append(check_html)
    parts.append("<h2>Runs</h2>")
    if not records:
        parts.append("<p>There is no finished run in this store yet: rerun the sweep, then the report.</p>")
    runs = [rendered_run(r) for r in records]
    parts.append(html_table(runs, ("run", "task", "arch", "depth", "width", "variant", "n_train", "seed", "τ_rule",
                                   "τ_mem", "window", *(("stopped",) if any(row["stopped"] for row in runs) else ()))))
    checked = [r.key for r in records if r.summary_check]
    if checked:
        parts.append(f"<p><b>Check:</b> {len(checked)} run(s) whose stored summary disagrees with its run directory "
                     f"(or has none): {html.escape(', '.join(checked))}; see runs.csv's summary_check.</p>")
    parts.append(sensitivity_html)
    if curves:
        parts.append("<h2>Two-clock curves</h2><div class='grid'>")
        parts += [f"<div id='{key}'>{img(path, 'curves/')}</div>" for key, path in curves.items()]
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


def rendered_run(record: RunRecord) -> dict:
    """The runs table's row of a record: its name linked to its curves, its clocks, its window and where it stopped
    short of its budget (:func:`stopped`) as text."""
    return {"run": f"<a href='#{record.key}' title='{record.key}'>{html.escape(record.name)}</a>",
            **{name: getattr(record, name) for name in ("task", "arch", "depth", "width", "variant", "n_train",
                                                        "seed")},
            "τ_rule": record.rule.render_interval(), "τ_mem": record.mem.render_interval(),
            "window": record.window.render(), "stopped": stopped(record)}


def stopped(record: RunRecord) -> str:
    """Where a run stopped short of its budget, e.g. ``step 562 (until)``; "" where it reads up to its budget."""
    stop = record.stop
    return f"step {stop.step} ({stop.reason})" if stop and stop.step != record.config.steps else ""


def img(path: Path, folder: str = "") -> str:
    """The PNG shown at half its pixel width (2x for sharp screens), linked to its SVG."""
    width = int.from_bytes(path.read_bytes()[16:20], "big") // 2  # the PNG header's width field
    return (f"<a href='{folder}{path.with_suffix('.svg').name}'><img src='{folder}{path.name}' width='{width}' "
            f"alt='{html.escape(path.stem)}'></a>")
