"""Tasks: rule-valid configurations to train on, sample, count and check.

``make("parity:h=6,w=6,g=3")`` builds a task from its spec string ``name:key=value,...``;
``names()`` lists the task names. See :class:`innovwin.tasks.base.Task` for the interface.
"""
from __future__ import annotations

from innovwin.tasks.base import Task
from innovwin.tasks.latin import LatinTask
from innovwin.tasks.linear import LinearCodeTask
from innovwin.tasks.parity import GroupParityTask, GroupRuleTask
from innovwin.tasks.sudoku import SudokuTask

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (GroupParityTask, GroupRuleTask, LinearCodeTask, LatinTask, SudokuTask)
}


def names() -> list[str]:
    return list(TASKS)


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:a=1,b=2"`` -> ("name", {"a": "1", "b": "2"})."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"task spec must be a non-empty string like 'parity:h=6,w=6,g=3', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    raw: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"task spec {spec!r}: expected key=value, got {item!r}")
        if key.strip() in raw:
            raise ValueError(f"task spec {spec!r}: parameter {key.strip()} given twice")
        raw[key.strip()] = value.strip()
    return name.strip(), raw


def make(spec: str) -> Task:
    """The task a spec string names, e.g. ``parity:h=6,w=6,g=3``, ``latin:n=5``, ``sudoku:n=4``."""
    name, raw = parse_spec(spec)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name].from_params(raw)


__all__ = ["Task", "make", "names", "parse_spec", "TASKS"]
