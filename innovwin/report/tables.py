"""The report's tables: a record flattened into runs.csv's columns, and every table written as CSV, Markdown and
HTML. The one place a record becomes strings."""
from __future__ import annotations

import csv
import html
from pathlib import Path

from innovwin.analysis.fits import ML_COLUMNS
from innovwin.analysis.records import CLOCK_ATTRIBUTES, RunRecord

RUN_COLUMNS = ("key", "name", "task", "arch", "depth", "width", "variant", "n_train", "seed", "steps",
               "stop_reason", "stop_step",
               "tau_rule", "tau_rule_lo", "tau_rule_hi", "tau_rule_bracket_lo", "tau_rule_bracket_hi",
               "tau_rule_censored", "tau_rule_at_first_eval",
               "tau_mem", "tau_mem_lo", "tau_mem_hi", "tau_mem_bracket_lo", "tau_mem_bracket_hi",
               "tau_mem_censored", "tau_mem_at_first_eval",
               "tau_mem_exact", "tau_mem_exact_lo", "tau_mem_exact_hi", "tau_mem_exact_bracket_lo",
               "tau_mem_exact_bracket_hi", "tau_mem_exact_censored", "tau_mem_exact_at_first_eval",
               "window_state", "window_width_decades", "window_reason", "final_valid_frac", "final_copy_frac",
               "summary_check")
FIT_COLUMNS = ("clock", "against", "task", "family", "arch", "depth", "width", "n_train", "variant", "alpha",
               "alpha_lo", "alpha_hi", "a", "n_points", "n_censored", "x_min", "x_max", "note", *ML_COLUMNS)


def run_row(record: RunRecord) -> dict:
    """runs.csv's row of a record: the axes, where the run stopped (``stop_reason`` budget or until, and
    ``stop_step``; empty for a summary from before stops were recorded), each clock's value, interval, bracket and
    censoring (as the two columns ``_censored``, never crossed, and ``_at_first_eval``, crossed by the first
    evaluation), tau_mem from the exact copy rate where the run has it (its interval is its bracket), the window
    (its width a lower bound where its reason says so) and the summary check."""
    row = {name: getattr(record, name) for name in ("key", "name", "task", "arch", "depth", "width", "variant",
                                                     "n_train", "seed", "final_valid_frac", "final_copy_frac",
                                                     "summary_check")}
    row["steps"] = record.config.steps
    row["stop_reason"], row["stop_step"] = (record.stop.reason, record.stop.step) if record.stop else ("", None)
    for name in CLOCK_ATTRIBUTES:
        clock = record.clock(name)
        if clock is None:  # tau_mem_exact of a run without exact probabilities (a DiT): empty cells
            continue
        interval, bracket = clock.interval or (None, None), clock.bracket or (None, None)
        row.update({name: clock.value, f"{name}_lo": interval[0], f"{name}_hi": interval[1],
                    f"{name}_bracket_lo": bracket[0], f"{name}_bracket_hi": bracket[1],
                    f"{name}_censored": clock.censoring == "right", f"{name}_at_first_eval": clock.censoring == "left"})
    row.update(window_state=record.window.state, window_width_decades=record.window.width,
               window_reason=record.window.reason or "")
    return row


def write_table(stem: Path, rows: list[dict], columns) -> None:
    """``stem``.csv and ``stem``.md of ``rows`` (dicts) in ``columns``."""
    with open(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def cell(value) -> str:
    """A table cell's text: floats to 4 significant digits, None empty, pipes escaped for Markdown."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def html_table(rows: list[dict], columns) -> str:
    """An HTML table; the ``run`` column holds markup already, every other cell is escaped."""
    # the variant column only where a variant is set: a store that varies nothing but the axes reads as before
    columns = [c for c in columns if c != "variant" or any(row.get("variant") for row in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(c)) if c == 'run' else html.escape(cell(row.get(c)))}</td>"
                                    for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
