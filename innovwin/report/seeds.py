"""Seeds as replicates: per grid cell (a run's axes and variant, every seed), each seed's clocks, their spread and
the cell's window verdict.

The seed-to-seed spread of a clock is often larger than any one run's interval (science.md: tau_rule 1716, 3517
and > 6000 for three seeds), so a cell's verdict is the seeds' common one, and "unresolved" when they disagree.
A clock that never crossed counts as +inf in the median and the maximum, which then read "> last step".
"""
from __future__ import annotations

import html
from collections import Counter, defaultdict

import numpy as np

CELL = ("task", "arch", "depth", "width", "variant", "n_train")
CLOCKS = ("tau_rule", "tau_mem")
COLUMNS = (*CELL, "seeds", *(f"{clock}_{part}" for clock in CLOCKS for part in ("seeds", "median", "range")),
           "verdict", "verdicts")


def cell_verdict(members: list[dict]) -> str:
    """The seeds' common window verdict, or unresolved when they disagree."""
    states = {record["window_state"] for record in members}
    return states.pop() if len(states) == 1 else "unresolved"


def _step(value: float, last_step: int) -> str:
    return f"> {last_step}" if np.isinf(value) else f"{value:.0f}"


def _clock_text(record: dict, clock: str) -> str:
    if record[f"{clock}_censored"]:
        return f"> {record['last_step']}"
    return f"{'<= ' if record[f'{clock}_at_first_eval'] else ''}{record[clock]:.0f}"


def seed_rows(records: list[dict]) -> list[dict]:
    """One row per grid cell: each seed's clocks (in seed order), their median and range, the cell's verdict."""
    cells = defaultdict(list)
    for record in records:
        cells[tuple(record[name] for name in CELL)].append(record)
    rows = []
    for values, members in cells.items():
        members = sorted(members, key=lambda r: r["seed"])
        last = max(r["last_step"] for r in members)
        row = {**dict(zip(CELL, values)), "seeds": len(members), "verdict": cell_verdict(members),
               "verdicts": ", ".join(f"{state} x{count}" for state, count in
                                     sorted(Counter(r["window_state"] for r in members).items()))}
        for clock in CLOCKS:
            steps = np.array([np.inf if r[f"{clock}_censored"] else r[clock] for r in members], dtype=float)
            row[f"{clock}_seeds"] = ", ".join(_clock_text(r, clock) for r in members)
            row[f"{clock}_median"] = _step(float(np.median(steps)), last)
            row[f"{clock}_range"] = f"{_step(steps.min(), last)} - {_step(steps.max(), last)}"
        rows.append(row)
    return rows


def section(rows: list[dict]) -> str:
    """index.html's section: the cells with more than one seed."""
    replicated = [row for row in rows if row["seeds"] > 1]
    if not replicated:
        return ""
    columns = [c for c in COLUMNS if c != "variant" or any(row["variant"] for row in replicated)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in columns) + "</tr>"
                   for row in replicated)
    unresolved = sum(row["verdict"] == "unresolved" for row in replicated)
    return ("<h2>Seeds</h2><p>Each grid cell's seeds: their clocks, median and range (a clock that never crossed "
            f"counts as beyond the last step), and the window verdict, unresolved where the seeds disagree "
            f"({unresolved} of {len(replicated)} cells). <a href='seeds.csv'>seeds.csv</a> (.md).</p>"
            f"<table><tr>{head}</tr>{body}</table>")
