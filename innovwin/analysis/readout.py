"""Reading a run's clocks and window back from its summary (summary.json, or a store row's summary).

Everything that shows clocks (the sweep's lines, ``innovwin runs``, the report's records) reads them through
:func:`clock`, so a change of summary.json's format lands here only. Two formats are read: flat keys
(``tau_rule``, ``tau_rule_ci``, ``tau_rule_censored``, ``tau_rule_text``) and one object per clock
(``{"estimate", "bracket", "interval", "censored"}``).
"""
from __future__ import annotations

import math

CLOCKS = ("tau_rule", "tau_mem")


def clock(summary: dict, name: str) -> dict:
    """{"value", "lo", "hi", "censored", "at_first_eval", "text"} of clock ``name`` ("tau_rule" or "tau_mem");
    value None when censored; lo/hi None when there is no interval (hi None also: open to the right)."""
    stored = summary.get(name)
    if isinstance(stored, dict):
        value, interval = stored.get("estimate"), stored.get("interval") or [None, None]
        censored = bool(stored.get("censored")) or value is None
    else:
        value, interval = stored, summary.get(f"{name}_ci") or [None, None]
        censored = bool(summary.get(f"{name}_censored")) or value is None
    text = summary.get(f"{name}_text") or (f"> {_last_step(summary)}" if censored else f"{value:.0f}")
    return {"value": None if censored else value, "lo": None if censored else interval[0],
            "hi": None if censored else interval[1], "censored": censored,
            "at_first_eval": not censored and text.startswith("<="), "text": text}


def _last_step(summary: dict):
    return (summary.get("final") or {}).get("step", "last step")


def clock_text(summary: dict, name: str) -> str:
    """e.g. ``119 [101, 145]``, ``<= 10``, ``> 2000``, ``533 [492, open]``."""
    read = clock(summary, name)
    return with_interval(read["text"], read["lo"], read["hi"])


def with_interval(text: str, low: float | None, high: float | None) -> str:
    """A clock's text followed by its 95% interval when it has one (``open`` for no upper end)."""
    if low is None:
        return text
    return f"{text} [{low:.0f}, {'open' if high is None else f'{high:.0f}'}]"


def window_text(summary: dict) -> str:
    """The window's state and width, e.g. ``open, 0.65 decades`` or ``closed``."""
    state = summary.get("window_state") or "unknown"
    span = summary.get("window")
    if span:
        return f"{state.replace('_', ' ')}, {math.log10(span[1] / span[0]):.2f} decades"
    return state.replace("_", " ")


def one_line(summary: dict) -> str:
    """Both clocks and the window on one line (the sweep's line per finished run, ``innovwin runs``)."""
    return (f"τ_rule {clock_text(summary, 'tau_rule')} · τ_mem {clock_text(summary, 'tau_mem')} · "
            f"window {window_text(summary)}")
