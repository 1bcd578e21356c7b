"""Seeds as replicates: per grid cell (a run's axes and variant, every seed), each seed's clocks, their spread and
the cell's window verdict.

The seed-to-seed spread of a clock is often larger than any one run's interval (science.md: tau_rule 1716, 3517
and > 6000 for three seeds), so a cell's verdict is the seeds' common one, and "unresolved" when they disagree.
A clock that never crossed counts as +inf in the median and the maximum, which then read "> last step".
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from innovwin.analysis.clocks import CLOCKS
from innovwin.analysis.records import RunRecord, group_by
from innovwin.report.tables import html_table

CELL = ("task", "arch", "depth", "width", "variant", "n_train")
COLUMNS = (*CELL, "seeds", *(f"{clock}_{part}" for clock in CLOCKS for part in ("seeds", "median", "range")),
           "verdict", "verdicts")


def cell_verdict(members: list[RunRecord]) -> str:
    """The seeds' common window verdict, or unresolved when they disagree."""
    states = {record.window.state for record in members}
    return states.pop() if len(states) == 1 else "unresolved"


def _step(value: float, last_step: int) -> str:
    return f"> {last_step}" if np.isinf(value) else f"{value:.0f}"


def seed_rows(records: list[RunRecord]) -> list[dict]:
    """One row per grid cell: each seed's clocks (in seed order), their median and range, the cell's verdict."""
    rows = []
    for values, members in group_by(records, CELL).items():
        members = sorted(members, key=lambda r: r.seed)
        last = max(r.last_step for r in members)
        row = {**dict(zip(CELL, values)), "seeds": len(members), "verdict": cell_verdict(members),
               "verdicts": ", ".join(f"{state} x{count}" for state, count in
                                     sorted(Counter(r.window.state for r in members).items()))}
        for name in CLOCKS:
            found = [r.clock(name) for r in members]
            steps = np.array([np.inf if c.censoring == "right" else c.value for c in found], dtype=float)
            row[f"{name}_seeds"] = ", ".join(c.render() for c in found)
            row[f"{name}_median"] = _step(float(np.median(steps)), last)
            row[f"{name}_range"] = f"{_step(steps.min(), last)} - {_step(steps.max(), last)}"
        rows.append(row)
    return rows


def section(rows: list[dict]) -> str:
    """index.html's section: the cells with more than one seed."""
    replicated = [row for row in rows if row["seeds"] > 1]
    if not replicated:
        return ""
    unresolved = sum(row["verdict"] == "unresolved" for row in replicated)
    return ("<h2>Seeds</h2><p>Each grid cell's seeds: their clocks, median and range (a clock that never crossed "
            f"counts as beyond the last step), and the window verdict, unresolved where the seeds disagree "
            f"({unresolved} of {len(replicated)} cells). <a href='seeds.csv'>seeds.csv</a> (.md).</p>"
            + html_table(replicated, COLUMNS))
