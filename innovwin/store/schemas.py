"""The shape of every JSON file in a run directory, in one place: what each reader may trust once it has checked.

A hand-edited, damaged or foreign file must be refused with one line naming it (and what to do), never read into
a traceback or, worse, a wrong number: a summary whose clock lost its interval, a metrics row whose valid_frac is
NaN (which would read as "never crossed"). Each file has one schema here, a field -> (test, what it must be), and
:func:`check` applies it; the readers (:mod:`~innovwin.store.rundir`, :mod:`~innovwin.store.provenance`,
:mod:`~innovwin.store.runlog`, the basins and records readers) call it on everything they read.
"""
from __future__ import annotations

import math

CENSORING = (None, "left", "right")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fraction(value) -> bool:
    return _number(value) and 0 <= value <= 1


def _optional(test):
    return lambda value: value is None or test(value)


def _list_of(test):
    return lambda value: isinstance(value, list) and all(test(one) for one in value)


def _pair(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(end is None or _number(end) for end in value)


def _object(value) -> bool:
    return isinstance(value, dict)


def _clock(value) -> bool:
    """Today's clock object (:meth:`innovwin.analysis.clocks.Clock.to_json`), or an older summary's flat value."""
    if not isinstance(value, dict):
        return value is None or _number(value)
    return (set(CLOCK_FIELDS) <= set(value) and all(test(value[name]) for name, (test, _) in CLOCK_FIELDS.items()))


CLOCK_FIELDS = {"estimate": (_optional(_number), "a number or null"), "bracket": (_optional(_pair), "[lo, hi] or null"),
                "interval": (_optional(_pair), "[lo, hi] or null"),
                "censored": (lambda value: value in CENSORING, "null, 'left' or 'right'")}
CLOCK = (_clock, "a clock {estimate, bracket, interval, censored}")

METRICS_ROW = {"step": (_int, "an integer"), "valid_frac": (_fraction, "a fraction in [0, 1]"),
               "copy_frac": (_fraction, "a fraction in [0, 1]"),
               "chance_copy": (_optional(_fraction), "a fraction in [0, 1] or null")}
SUMMARY = {"tau_rule": CLOCK, "tau_mem": CLOCK}
SUMMARY_OPTIONAL = {"final": (lambda value: _object(value) and _int(value.get("step")), "a metrics row with its step"),
                    "tau_rule_ci": (_optional(_pair), "[lo, hi] or null"),
                    "tau_mem_ci": (_optional(_pair), "[lo, hi] or null"),
                    "refined": (lambda value: _object(value) and all(_list_of(_int)(one) for one in value.values()),
                                "an object of step lists"),
                    "timing": (_optional(_object), "an object or null"),
                    "memorization": (_optional(_object), "an object or null"),
                    "tau_mem_exact": CLOCK,
                    "stop": (lambda value: _object(value) and value.get("reason") in ("until", "budget")
                             and _int(value.get("step")) and _int(value.get("trained")),
                             "a stop {reason: until|budget, step, trained}"),
                    "config": (_object, "an object")}
PROVENANCE = {"sessions": (_list_of(_object), "a list of session objects")}
PROGRESS = {"step": (_int, "an integer"), "steps": (lambda value: _int(value) and value >= 1, "an integer >= 1"),
            "updated": (_number, "a time")}
PROGRESS_OPTIONAL = {name: (_optional(_number), "a number or null")
                     for name in ("steps_per_s", "valid_frac", "copy_frac", "eval_step", "from_step")}
BASINS_ROW = {"step": (_int, "an integer"), "sigmas": (_list_of(_number), "a list of numbers"),
              "n_probes": (_int, "an integer"), "draws": (_int, "an integer"), "steps": (_int, "an integer"),
              "seed": (_int, "an integer"), "classes": (_object, "an object")}
BASINS_OPTIONAL = {"snapshot": (lambda value: isinstance(value, str), "a fingerprint")}  # older rows have none


def problems(value, required: dict, optional: dict | None = None) -> list[str]:
    """What is wrong with ``value`` against a schema (``required`` fields, and ``optional`` ones where present)."""
    if not isinstance(value, dict):
        return [f"a JSON {type(value).__name__}, not an object"]
    found = [f"no {name}" for name in required if name not in value]
    for name, (test, meaning) in {**required, **(optional or {})}.items():
        if name in value and not test(value[name]):
            found.append(f"{name} is {_short(value[name])}, not {meaning}")
    return found


def check(value, where: str, required: dict, optional: dict | None = None, fix: str = "") -> dict:
    """``value`` when it has the schema's shape; else ValueError naming ``where`` (the file, the line) and ``fix``."""
    found = problems(value, required, optional)
    if found:
        raise ValueError(f"{where} is malformed ({'; '.join(found[:3])})" + (f": {fix}" if fix else ""))
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
