"""What a config field declares beside its default (:func:`setting`), so that a new field is described once:
every list of fields by kind in :mod:`innovwin.config` (GROUPS, HELP, BEFORE, ADDED, UNKEYED, SHARED, POOLED,
SAMPLER) is derived from these declarations, and tests/test_config.py checks that each field declares everything."""
from __future__ import annotations

import dataclasses

GROUP_ORDER = ("task", "model", "objective", "optim", "eval", "clocks", "seeds", "runtime")
ENSEMBLE_ROLES = ("shared", "member")
# How a report treats runs that differ in the field: "axis" (a grouping key or the x of a fit), "replicate" (a seed),
# "pooled" (where or how finely the same experiment is measured or computed: see each field's comment), or
# "variant" (another experiment: never pooled, named in the run's variant).
REPORT_ROLES = ("axis", "replicate", "pooled", "variant")
NEW = object()  # ``before`` of a field that every recorded run already has


def setting(default, group: str, help: str, *, ensemble: str, report: str, sampler: bool, before=NEW,
            added: bool = True, keyed: bool = True):
    """A RunConfig field and what it is.

    ``group``: its config.json table and --help section; ``help``: its meaning, what `train --help` shows;
    ``ensemble``: "shared" when every member of a stacked ensemble must hold the same value, "member" when each
    has its own; ``report``: one of REPORT_ROLES; ``sampler``: evaluation-side, so a run's snapshots can be evaluated
    again under another value without retraining; ``before``: the value every run keyed before it existed was made
    with (``added`` False: it existed, but was read by another architecture alone), see :meth:`RunConfig.key`;
    ``keyed`` False: it decides only where a run stops, so the run key leaves it out (:data:`UNKEYED`).
    """
    return dataclasses.field(default=default, metadata={
        "group": group, "help": help, "ensemble": ensemble, "report": report, "sampler": sampler,
        "before": before, "added": added, "keyed": keyed})


def declared(cls, key: str) -> dict:
    """Each field of dataclass ``cls``'s declared ``key`` (see :func:`setting`), in field order."""
    return {field.name: field.metadata[key] for field in dataclasses.fields(cls)}
