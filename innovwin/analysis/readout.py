"""A run's clocks and window on one line, read from its summary (summary.json, or a store row's summary) through
:func:`innovwin.analysis.clocks.read_clocks`, which knows every summary form: what the sweep prints for each
finished run and `innovwin runs` lists."""
from __future__ import annotations

from innovwin.analysis import clocks


def one_line(summary: dict) -> str:
    """e.g. ``τ_rule 119 [101, 145] · τ_mem 514 [470, 575] · window open, 0.63 decades (x4.3)``."""
    rule, mem = clocks.read_clocks(summary)
    return f"τ_rule {rule.render_interval()} · τ_mem {mem.render_interval()} · window {clocks.window(rule, mem).render()}"
