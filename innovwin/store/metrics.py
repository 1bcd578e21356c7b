"""metrics.jsonl: one row per evaluation, appended and fsynced at once; each row checked when read back
(:data:`innovwin.store.schemas.METRICS_ROW`). Part of the run directory's format (:mod:`innovwin.store.rundir`)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from innovwin.store import schemas
from innovwin.store.files import naming, write_atomic

METRICS = "metrics.jsonl"
STATE = "state.pt"  # the training state, whose copy of the rows restores a damaged file


def metrics_line(row: dict) -> str:
    """A row as metrics.jsonl's line; a row holding NaN or inf (training diverged) is refused, its fields named."""
    diverged = [name for name, value in row.items() if isinstance(value, float) and not math.isfinite(value)]
    if diverged:
        raise ValueError(f"the evaluation at step {row.get('step')} measured {', '.join(diverged)} = "
                         f"{row[diverged[0]]}: training diverged (try a smaller lr)")
    return json.dumps(row, allow_nan=False) + "\n"


def append_metrics(run_dir, row: dict) -> str:
    """Append one row and push it to disk before returning (a reader never waits on a buffer); returns the line."""
    line = metrics_line(row)
    with naming(Path(run_dir) / METRICS), open(Path(run_dir) / METRICS, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return line


def insert_metrics(run_dir, rows: list[dict]) -> str:
    """Put ``rows`` among the others in step order (refined evaluations between scheduled ones), replacing rows of
    the same steps; the file is rewritten atomically. Returns its text, for state.pt's copy."""
    steps = {row["step"] for row in rows}
    merged = sorted([old for old in read_metrics(run_dir) if old["step"] not in steps] + list(rows),
                    key=lambda one: one["step"])
    text = "".join(metrics_line(one) for one in merged)
    write_atomic(Path(run_dir) / METRICS, text.encode())
    return text


def read_metrics(run_dir) -> list[dict]:
    """All rows; a torn or garbled row is refused (ValueError naming the file), never skipped: rerunning the same
    `innovwin train` restores it from state.pt."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return parse_metrics(path.read_bytes().decode(errors="replace"), path)


def parse_metrics(text: str, path) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        step = row.get("step") if isinstance(row, dict) else None
        restore = f"rerun `innovwin train --out {Path(path).parent}` to restore it from {STATE}"
        if not isinstance(step, int) or step <= (rows[-1]["step"] if rows else 0):
            raise ValueError(f"{path} line {number} is torn or garbled (a run killed mid-write, or a damaged "
                             f"file): {restore}")
        rows.append(schemas.check(row, f"{path} line {number}", schemas.METRICS_ROW, fix=restore))
    return rows
