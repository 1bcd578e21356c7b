"""How long a draw of samples takes, said where it is long: an exact sampler's chains (Latin squares) can take
minutes to hours, and a command that draws that many says so, with an estimate and progress, rather than go silent.
"""
from __future__ import annotations

import sys
import time

SLOW_S = 10.0  # a draw estimated slower than this is announced, and reports progress at most this often


def sampling_progress(task, n: int, stream=None):
    """None for a draw of ``n`` samples that is fast (:meth:`Task.sample_seconds`); for a slow one, its estimate
    written to ``stream`` (stderr) now, and a ``progress`` callback for :meth:`Task.sample` that writes how many are
    drawn and about how long is left."""
    estimate = task.sample_seconds(n)
    if estimate is None or estimate <= SLOW_S:
        return None
    stream = stream or sys.stderr
    started = shown = time.monotonic()
    stream.write(f"sampling {n} of {task.spec}: about {estimate / 60:.1f} min\n")
    stream.flush()

    def progress(done: int, total: int) -> None:
        nonlocal shown
        now = time.monotonic()
        if now - shown >= SLOW_S or done == total:
            shown = now
            stream.write(f"  {done} of {total} sampled, about {(now - started) * (total - done) / done / 60:.1f} "
                         "min left\n")
            stream.flush()

    return progress
