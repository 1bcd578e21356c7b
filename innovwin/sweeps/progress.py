"""What a sweep shows while it runs: a line per running run, a count line with a time left that counts down, and
a line per finished run with its clocks and window.

Each run writes its step, rate and last rates to ``progress.json`` in its run directory
(:mod:`innovwin.store.runlog`); the driver polls those files, so the same display works for local processes and
Ray tasks on a shared filesystem. The time left is a schedule, not a ratio: every running run finishes after its
remaining steps at its own measured rate, and each queued run (longest first) starts on the first worker free,
lasting its cost times the seconds per unit of cost measured so far (finished runs and the running runs'
projections). Where a run's budget is an upper bound (it trains ``until`` its clocks are measured, or under
``steps = "auto"``), the time left assumes the whole budget and says so: ``ETA ≤ 3m10s``, ``step 120/≤800``. A
terminal gets a block redrawn in place; a log file gets one line per change (a count changes, a run
starts, passes a quarter of its steps or finishes).
"""
from __future__ import annotations

import heapq
import time

from innovwin.analysis.readout import one_line
from innovwin.store.runlog import read_progress

QUARTERS = 4  # a log file gets a run's line at each quarter of its steps


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def schedule_eta(running_left: list[float], queued_seconds: list[float], capacity: int) -> float:
    """When the last run ends: running runs end after their time left, queued runs (in order) start on the
    first of ``capacity`` workers free."""
    free = sorted(running_left) + [0.0] * max(capacity - len(running_left), 0)
    heapq.heapify(free)
    end = max(free, default=0.0)
    for seconds in queued_seconds:
        start = heapq.heappop(free)
        heapq.heappush(free, start + seconds)
        end = max(end, start + seconds)
    return end


class SweepProgress:
    """The live display of one sweep (``stream`` None: silent)."""

    def __init__(self, stream, costs: dict[str, float], capacity: int, names: dict[str, str],
                 bounded: set[str] = frozenset()):
        self.stream = stream
        self.costs, self.capacity, self.names = costs, capacity, names
        self.bounded = bounded  # keys whose budget is the most they train, not what they train
        self.start = time.monotonic()
        self.tty = bool(stream) and hasattr(stream, "isatty") and stream.isatty()
        self.finished_cost: list[tuple[float, float]] = []  # (seconds, cost) of runs finished here
        self.started: dict[str, float] = {}  # key -> when it was handed out (time.time(): progress.json's clock)
        self.run_dirs: dict[str, str] = {}
        self.quarter: dict[str, int] = {}  # key -> quarter of its steps last logged
        self.block_lines = 0  # lines of the terminal block drawn last
        self.last_counts = None

    def name(self, key: str) -> str:
        return self.names.get(key) or key

    # --- events ------------------------------------------------------------------------
    def submitted(self, key: str, run_dir: str) -> None:
        self.started[key] = time.time()
        self.run_dirs[key] = run_dir
        self.quarter[key] = -1

    def finished(self, key: str, status: str, payload, seconds: float, note: str = "") -> None:
        """One line for a run that returned: its clocks and window, or its error's last line."""
        self.started.pop(key, None)
        if status == "done":
            if seconds > 0:
                self.finished_cost.append((seconds, self.costs.get(key, 0.0)))
            line = f"[sweep] done {self.name(key)} in {duration(seconds)}: {one_line(payload)}"
        else:
            last = (str(payload).strip().splitlines() or ["?"])[-1]
            line = f"[sweep] failed {self.name(key)} ({note}): {last}"
        self.say(line)

    def say(self, line: str) -> None:
        """A line that stays (above the terminal's live block)."""
        if self.stream:
            self._clear_block()
            self.stream.write(line + "\n")
            self.stream.flush()

    # --- the estimate ------------------------------------------------------------------
    def seconds_per_cost(self, progress: dict[str, dict]) -> float | None:
        """Measured seconds per unit of cost: finished runs, and running runs projected from their rates."""
        pairs = list(self.finished_cost)
        for key, state in progress.items():
            if state.get("steps_per_s") and self.costs.get(key):
                pairs.append((state["steps"] / state["steps_per_s"], self.costs[key]))
        seconds, cost = (sum(column) for column in zip(*pairs)) if pairs else (0.0, 0.0)
        return seconds / cost if cost > 0 else None

    def time_left(self, key: str, state: dict | None, per_cost: float | None) -> float | None:
        if state and state.get("steps_per_s") and state.get("state") == "running":
            since = max(time.time() - state["updated"], 0.0)
            return max((state["steps"] - state["step"]) / state["steps_per_s"] - since, 0.0)
        if per_cost is None:
            return None
        return max(per_cost * self.costs.get(key, 0.0) - (time.time() - self.started.get(key, 0.0)), 0.0)

    def eta(self, queue: list[str], progress: dict[str, dict]) -> tuple[float | None, dict[str, float | None]]:
        """(time until the sweep ends, each running run's time left); None where nothing is measured yet."""
        per_cost = self.seconds_per_cost(progress)
        left = {key: self.time_left(key, progress.get(key), per_cost) for key in self.started}
        if any(value is None for value in left.values()) or (queue and per_cost is None):
            return None, left
        queued = [per_cost * self.costs.get(key, 0.0) for key in queue]
        return schedule_eta(list(left.values()), queued, self.capacity), left

    # --- drawing -----------------------------------------------------------------------
    def show(self, counts: dict[str, int], queue: list[str], final: bool = False) -> None:
        if not self.stream:
            return
        progress = {key: state for key, since in self.started.items()  # a resumed run's old file is not news
                    if (state := read_progress(self.run_dirs[key])) and state.get("updated", 0) >= since}
        eta, left = self.eta(queue, progress)
        at_most = "≤ " if eta is not None and not final and self.bounded & {*self.started, *queue} else ""
        summary = (f"[sweep] {counts['done']} done · {counts['running']} running · {counts['queued']} queued · "
                   f"{counts['failed']} failed · {duration(time.monotonic() - self.start)} elapsed · "
                   f"ETA {'?' if eta is None else at_most + duration(0 if final else eta)}")
        runs = ["  " + self.run_line(key, progress.get(key), left[key]) for key in sorted(self.started, key=self.name)]
        if self.tty and not final:
            self._clear_block()
            self.stream.write("\n".join([summary, *runs]) + "\n")
            self.block_lines = 1 + len(runs)
        else:
            changed = final or counts != self.last_counts
            for key in sorted(self.started, key=self.name):
                quarter = self._quarter(progress.get(key))
                if quarter > self.quarter[key]:
                    self.quarter[key] = quarter
                    self.stream.write(f"[sweep] {self.run_line(key, progress.get(key), left[key])}\n")
                    changed = True
            if changed:  # the counts, or a run's progress: the ETA line follows
                self.stream.write(summary + "\n")
        self.last_counts = dict(counts)
        self.stream.flush()

    def run_line(self, key: str, state: dict | None, left: float | None) -> str:
        if not state or state.get("state") != "running" or state.get("step") is None:
            return f"{self.name(key)}: starting"
        parts = [f"step {state['step']}/{'≤' * (key in self.bounded)}{state['steps']}"]
        if state.get("from_step"):
            parts[0] += f" (resumed at {state['from_step']})"
        if state.get("steps_per_s"):
            parts.append(f"{state['steps_per_s']:.1f} steps/s")
        if state.get("valid_frac") is not None:
            parts.append(f"valid {state['valid_frac']:.2f} · copy {state['copy_frac']:.2f} "
                         f"(at step {state['eval_step']})")
        if left is not None:
            parts.append(f"{'at most ' * (key in self.bounded)}{duration(left)} left")
        return f"{self.name(key)}: {' · '.join(parts)}"

    @staticmethod
    def _quarter(state: dict | None) -> int:
        if not state or state.get("state") != "running" or not state.get("steps_per_s"):
            return -1  # a log's first line about a run waits for its rate
        return min(QUARTERS - 1, QUARTERS * state["step"] // state["steps"])

    def _clear_block(self) -> None:
        if self.tty and self.block_lines:
            self.stream.write(f"\033[{self.block_lines}F\033[J")  # up to the block's first line, erase below
            self.block_lines = 0
