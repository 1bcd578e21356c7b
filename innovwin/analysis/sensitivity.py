"""How the clocks move when their thresholds change.

tau_rule's 0.9 and tau_mem's 0.1 are choices, not facts about a model (science.md: "Thresholds are
parameters; reports show how the clocks move when they change"). A finding that holds at one threshold
only is a finding about the threshold. So the report recomputes both clocks at several thresholds and
refits tau_mem = a * N^alpha at each mem threshold, which shows whether alpha close to 1 depends on the
0.1 choice.
tau_rule is also recomputed at the group level (``constraint_frac``, the fraction of parity groups or puzzle
constraints satisfied: science.md measures correctness at both levels) as ``tau_rule_group``: a model whose
samples each break one of 18 groups 1% of the time has learned the rule at the group level long before its
sample-level validity (0.99^18 = 0.83) reaches 0.9.

Everything here is a pure function of the evaluation rows a run already stored (metrics.jsonl): no model
is evaluated again. The clocks are ``innovwin.analysis.clocks``' own (same crossing, confirmation, interpolation
and censoring), and the fits are ``innovwin.analysis.fits``' own (same groups; censored clocks, and clocks already
crossed at the first evaluation, never enter a fit).
The clocks here carry no bootstrap interval (that needs the per-sample arrays); the intervals at the
configured thresholds are in runs.csv, and the refitted alphas keep fits.py's bootstrap over runs.
"""
from __future__ import annotations

from innovwin.analysis import clocks
from innovwin.analysis.fits import FIT_PLAN, fit_groups
from innovwin.analysis.records import RunRecord, group_by

RULE_THRESHOLDS = (0.8, 0.9, 0.95, 0.99)
MEM_THRESHOLDS = (0.05, 0.1, 0.2, 0.5)
RUN_FIELDS = ("key", "task", "arch", "depth", "width", "variant", "n_train", "seed", "last_step")
# the report's fit of tau_mem against N, and the run fields that define one of its groups
(MEM_GROUP,) = [by for clock, against, by in FIT_PLAN if (clock, against) == ("tau_mem", "n_train")]
ALPHA_COLUMNS = ("clock", "against", *MEM_GROUP, "threshold", "alpha", "alpha_lo", "alpha_hi", "n_points",
                 "n_censored", "note")


def column(clock: str, threshold: float) -> str:
    """The table column of one clock at one threshold, e.g. ``tau_mem@0.1``."""
    return f"{clock}@{threshold:g}"


def threshold_clocks(rows: list[dict], rule_thresholds=RULE_THRESHOLDS,
                     mem_thresholds=MEM_THRESHOLDS) -> dict[tuple[str, float], clocks.Clock]:
    """Each clock at each of its thresholds, from one run's evaluation rows: {(clock, threshold): Clock}."""
    if not rows:
        raise ValueError("no evaluation rows: the run has not evaluated yet")
    steps = [row["step"] for row in rows]
    valid = [row["valid_frac"] for row in rows]
    copy = [row["copy_frac"] for row in rows]
    chance = [row["chance_copy"] or 0.0 for row in rows]  # as clocks.summarize reads a missing baseline
    group_valid = [row["constraint_frac"] for row in rows]
    result = {("tau_rule", t): clocks.tau_rule(steps, valid, t) for t in rule_thresholds}
    result.update({("tau_rule_group", t): clocks.tau_rule(steps, group_valid, t) for t in rule_thresholds})
    result.update({("tau_mem", t): clocks.tau_mem(steps, copy, chance, t) for t in mem_thresholds})
    return result


def thresholds_for(records: list[RunRecord]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The default thresholds plus every threshold a run was configured with (its summary's clocks)."""
    rule = sorted(set(RULE_THRESHOLDS) | {r.config.rule_threshold for r in records})
    mem = sorted(set(MEM_THRESHOLDS) | {r.config.mem_threshold for r in records})
    return tuple(rule), tuple(mem)


def sensitivity_rows(records: list[RunRecord], metrics: dict[str, list[dict]], rule_thresholds=RULE_THRESHOLDS,
                     mem_thresholds=MEM_THRESHOLDS) -> tuple[list[dict], list[str]]:
    """One row per run with evaluation rows (``metrics[key]``): the run's axes and each clock at each
    threshold, rendered as ``Clock.render`` does ("> last step" when censored). Returns (rows, columns).

    Each row also carries its ``record`` and ``clocks``, the ``Clock`` objects, for the refits.
    """
    columns = [*RUN_FIELDS, *(column("tau_rule", t) for t in rule_thresholds),
               *(column("tau_rule_group", t) for t in rule_thresholds),
               *(column("tau_mem", t) for t in mem_thresholds)]
    rows = []
    for record in records:
        if not metrics.get(record.key):
            continue
        found = threshold_clocks(metrics[record.key], rule_thresholds, mem_thresholds)
        row = {name: getattr(record, name) for name in RUN_FIELDS}
        row.update({column(clock, t): value.render() for (clock, t), value in found.items()})
        row.update(record=record, clocks=found)
        rows.append(row)
    return rows, columns


def refit(rows: list[dict], clock: str, against: str, by: tuple[str, ...], thresholds, *,
          n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """``fits.fit_groups`` of ``clock`` against ``against`` once per threshold, on the clocks of
    ``sensitivity_rows``; rows sorted by group, then threshold."""
    fits = []
    for threshold in thresholds:
        points = [row["record"].with_clock(clock, row["clocks"][(clock, threshold)]) for row in rows]
        fits += [{**fit, "threshold": threshold}
                 for fit in fit_groups(points, clock, against, by, n_boot=n_boot, seed=seed)]
    return sorted(fits, key=lambda fit: (str(tuple(fit[name] for name in by)), fit["threshold"]))


def alpha_sensitivity(rows: list[dict], mem_thresholds=MEM_THRESHOLDS, *, n_boot: int = 1000,
                      seed: int = 0) -> list[dict]:
    """tau_mem = a * N^alpha refitted at each mem threshold, grouped as in the report's fits.csv."""
    return refit(rows, "tau_mem", "n_train", MEM_GROUP, mem_thresholds, n_boot=n_boot, seed=seed)


def alpha_by_group(fits: list[dict]) -> tuple[list[dict], list[str]]:
    """The refits side by side, one row per group and one column per threshold ("0.93 [0.85, 1.01]",
    with how many runs were fitted and how many were censored). Returns (rows, columns)."""
    rows = []
    for group, members in group_by(fits, MEM_GROUP).items():
        row = dict(zip(MEM_GROUP, group))
        for fit in members:
            counts = f"({fit['n_points']} fitted, {fit['n_censored']} censored)"
            if fit["alpha"] is None:
                row[f"α @ {fit['threshold']:g}"] = f"none {counts}"
            else:
                interval = "" if fit["alpha_lo"] is None else f" [{fit['alpha_lo']:.2f}, {fit['alpha_hi']:.2f}]"
                row[f"α @ {fit['threshold']:g}"] = f"{fit['alpha']:.2f}{interval} {counts}"
        rows.append(row)
    thresholds = sorted({fit["threshold"] for fit in fits})
    return rows, [*MEM_GROUP, *(f"α @ {t:g}" for t in thresholds)]
