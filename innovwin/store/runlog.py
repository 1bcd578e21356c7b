"""What a run says while it runs, in its run directory:

    log.txt         the run's console lines (start or resume, each evaluation, the clocks), appended across sessions
    loss.jsonl      the mean training loss of every LOSS_EVERY steps: {"step", "loss"} (metrics.jsonl has it only
                    at evaluations)
    progress.json   the live state a sweep driver polls: step, steps, steps/s, last validity and copy rate

On resume, loss.jsonl rows past the saved state's step are dropped (:func:`truncate_loss`; they will be written again,
identically), and so is a line torn by a kill: a lost loss row costs a point of a curve, not a measurement.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from innovwin.store import schemas
from innovwin.store.files import write_atomic, write_jsonl

LOG = "log.txt"
LOSS = "loss.jsonl"
PROGRESS = "progress.json"
LOSS_EVERY = 10  # steps per loss.jsonl row
PROGRESS_EVERY_S = 1.0  # at most one progress.json write per this many seconds (and one at each evaluation)
RATE_AFTER_S = 3.0  # seconds of steps before a rate is reported


class RunLog:
    """log.txt, loss.jsonl and progress.json of one run; ``echo`` (e.g. print) shows the lines asked to echo."""

    def __init__(self, run_dir, steps: int, first_step: int, echo=None, last_row: dict | None = None):
        self.run_dir = Path(run_dir)
        self.steps, self.first_step = steps, first_step
        self.echo = echo
        self.clock = None  # (monotonic time, step) of the first progress call: the rate leaves setup out
        self.last_write = -float("inf")
        self.last_row = last_row or {}  # the last evaluation's row (a resumed run's from before)

    def line(self, text: str, echo: bool = False) -> None:
        """Append a line to log.txt; ``echo`` prints it too (the console's own lines: start, resume)."""
        with open(self.run_dir / LOG, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {text}\n")
        if echo and self.echo is not None:
            self.echo(text)

    def loss(self, step: int, value: float) -> None:
        with open(self.run_dir / LOSS, "a") as handle:
            handle.write(json.dumps({"step": step, "loss": value}) + "\n")

    def steps_per_s(self, step: int) -> float | None:
        """This session's rate since its first step, evaluations included (what the time left depends on);
        None for the first RATE_AFTER_S seconds, when a rate would mostly measure warm-up."""
        now = time.monotonic()
        if self.clock is None:
            self.clock = (now, step)
        elapsed = now - self.clock[0]
        return (step - self.clock[1]) / elapsed if elapsed >= RATE_AFTER_S else None

    def progress(self, step: int, row: dict | None = None, state: str = "running") -> None:
        """Write progress.json now if an evaluation ``row`` came or a state changed, else at most every
        PROGRESS_EVERY_S."""
        now = time.monotonic()
        if row is None and state == "running" and now - self.last_write < PROGRESS_EVERY_S:
            return
        self.last_write = now
        self.last_row = row or self.last_row
        write_progress(self.run_dir, {
            "step": step, "steps": self.steps, "steps_per_s": self.steps_per_s(step), "state": state,
            "from_step": self.first_step,
            "valid_frac": self.last_row.get("valid_frac"), "copy_frac": self.last_row.get("copy_frac"),
            "eval_step": self.last_row.get("step"), "updated": time.time(),
        })


def read_loss(run_dir) -> list[dict]:
    """loss.jsonl's rows, skipping a line a killed run tore."""
    rows = []
    try:
        lines = (Path(run_dir) / LOSS).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def truncate_loss(run_dir, step: int) -> None:
    """Keep the loss.jsonl rows up to ``step`` (a resumed run writes the later ones again)."""
    rows = [row for row in read_loss(run_dir) if row["step"] <= step]
    write_jsonl(Path(run_dir) / LOSS, rows, allow_nan=True)


def write_progress(run_dir, progress: dict) -> None:
    # not fsynced: a lost update is replaced within a second
    write_atomic(Path(run_dir) / PROGRESS, json.dumps(progress).encode(), fsync=False)


def read_progress(run_dir) -> dict | None:
    """The run's last progress.json, or None (not started, written by an older version, or damaged: a live view
    that the run rewrites within a second must never stop the sweep that polls it)."""
    try:
        progress = json.loads((Path(run_dir) / PROGRESS).read_text())
    except (OSError, ValueError):
        return None
    return progress if not schemas.problems(progress, schemas.PROGRESS, schemas.PROGRESS_OPTIONAL) else None
