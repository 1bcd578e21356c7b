"""The report's check of the fits as predictors (innovwin.analysis.predict.leave_one_out): predict_check.csv and
.md (one row per run and fit) and index.html's section "How well do the fits predict a run they have not seen?"."""
from __future__ import annotations

import html
from pathlib import Path

from innovwin.analysis import predict
from innovwin.analysis.records import RunRecord
from innovwin.report.tables import html_table, write_table

SUMMARY_COLUMNS = ("clock", "against", "predicted", "covered", "coverage", "median_log10_error", "measured",
                   "not_predicted")


def write_check(out: Path, records: list[RunRecord]) -> str:
    """Predict each run from the others of its group, write the rows, and return the page's section ("" where no
    group of runs varies an axis: nothing was fitted, so nothing is checked)."""
    rows = predict.leave_one_out(records)
    write_table(out / "predict_check", rows, predict.CHECK_COLUMNS)
    if not rows:
        return ""
    summary = predict.check_summary(rows)
    return ("<h2>How well do the fits predict a run they have not seen?</h2><p>Each run is left out of its group in "
            "turn and its clocks are predicted from the others' censored fit, as <code>innovwin predict</code> would "
            "predict a new run (95% prediction interval: the law's uncertainty at the run's x plus the runs' scatter "
            "around it). Covered: the measured clock lies in the interval (a censored clock: what is known of it, "
            "past the last step or by the first evaluation, meets the interval). The error is |log10(measured / "
            "predicted)| over measured clocks. Every prediction: <a href='predict_check.csv'>predict_check.csv</a> "
            "(.md).</p><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in predict.check_lines(summary))
            + "</ul>" + html_table(summary, SUMMARY_COLUMNS))
