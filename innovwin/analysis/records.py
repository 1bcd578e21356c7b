"""A finished run's result as one typed record, read once from a store row or a run directory.

Everything the report, the headline, the fits, the seeds table and the threshold refits say about a run is read
from its :class:`RunRecord`: its config (read by :meth:`RunConfig.from_record`, as
:func:`innovwin.store.rundir.read_config` reads config.json), the axes a report groups and fits by, its two clocks
and its window as :mod:`innovwin.analysis.clocks` types. Only the table writers flatten a record into columns.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from innovwin.analysis import clocks
from innovwin.analysis.clocks import Clock, Window
from innovwin.config import POOLED, SEED_FIELDS, RunConfig, differences
from innovwin.store import rundir, schemas
from innovwin.store.rundir import SUMMARY, read_metrics
from innovwin.store.runstore import DB_NAME, RunStore

RECORD_CONFIG = ("task", "arch", "depth", "width", "n_train", "seed", "steps", "rule_threshold", "mem_threshold")
# a clock's name in tables and fits -> its attribute
CLOCK_ATTRIBUTES = {"tau_rule": "rule", "tau_mem": "mem", "tau_mem_exact": "mem_exact"}


@dataclasses.dataclass(frozen=True)
class Stop:
    """Where a run stopped (summary.json's ``stop``): at its budget or where ``until`` was met (``reason``), the step
    its summary reads up to, and the step training reached (later where a run is answered for a smaller budget)."""

    reason: str  # "budget" (censored by the budget when a clock did not cross) or "until"
    step: int
    trained: int


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished run: what it is (config, key, name, directory, axes) and what it measured."""

    config: RunConfig
    key: str
    name: str  # what sets the run apart among the others (e.g. ``n_train=512 arch=gpt``), or its key
    run_dir: str
    task: str  # the canonical task spec
    family: str  # the task's family (its spec without the complexity knob)
    complexity: float
    complexity_label: str  # the name of the complexity knob, e.g. ``g``
    arch: str
    depth: int
    width: int
    n_train: int
    seed: int
    variant: str  # the non-pooled config fields that differ among the runs (config_variants), "" when none
    rule: Clock
    mem: Clock
    mem_exact: Clock | None  # tau_mem from the exact expected copy rate, where the objective has it (the GPT)
    window: Window
    last_step: int
    stop: Stop | None  # None for a summary written before stops were recorded (the run trained to its budget)
    final_valid_frac: float | None
    final_copy_frac: float | None
    memorization: dict | None  # summary.json's held-out memorization test, when the run made one
    timing: dict | None
    summary_check: str  # "" or why the store's summary was not the one used

    def clock(self, name: str) -> Clock:
        """The clock named as tables and fits name it: ``tau_rule``, ``tau_mem`` or ``tau_mem_exact`` (None where
        the run has no exact copy rate)."""
        return getattr(self, CLOCK_ATTRIBUTES[name])

    def with_clock(self, name: str, clock: Clock) -> "RunRecord":
        """The same run with clock ``name`` measured otherwise (e.g. at another threshold), its window again."""
        changed = dataclasses.replace(self, **{CLOCK_ATTRIBUTES[name]: clock})
        return dataclasses.replace(changed, window=clocks.window(changed.rule, changed.mem))


def field(item, name: str):
    """A named value of a record (an attribute) or of a table row (a key)."""
    return item[name] if isinstance(item, dict) else getattr(item, name)


def group_by(items, fields) -> dict[tuple, list]:
    """Items (records or table rows) grouped by their values of ``fields``, groups in first-seen order and each
    group's items in their order."""
    groups = defaultdict(list)
    for item in items:
        groups[tuple(field(item, name) for name in fields)].append(item)
    return dict(groups)


def config_variants(configs: list[dict]) -> list[str]:
    """Each config's values of the fields (:data:`innovwin.config.POOLED` aside: the axes, seeds and where or how
    finely the same experiment is measured, as each field declares) that differ among ``configs``, e.g.
    ``lr=0.003 batch=128``; "" for every config when no such field differs."""
    return differences(configs, POOLED)


# --- reading ---------------------------------------------------------------------------
def load_rows(source) -> list[dict]:
    """The runs of a store (a directory with runs.sqlite) or of one run directory (with config.json), as store
    rows: key, config, status, summary, run_dir."""
    source = Path(source)
    if (source / DB_NAME).exists():
        with RunStore(source) as store:
            return store.rows()
    if (source / rundir.CONFIG).exists():
        return [run_dir_row(source)]
    raise ValueError(f"{source} is not a run store (no {DB_NAME}) nor a run directory (no {rundir.CONFIG})")


def run_dir_row(path: Path) -> dict:
    """One run directory as a store row (done once its summary.json is written), its config read by
    :func:`innovwin.store.rundir.read_config`."""
    try:
        config = rundir.read_config(path)
        summary = rundir.read_summary(path)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a readable run directory ({error})") from None
    return {"key": config.key(), "config": config.resolved().to_dict(), "status": "done" if summary else "running",
            "summary": summary, "run_dir": str(path), "attempts": 1, "error": None}


def run_records(rows: list[dict]) -> list[RunRecord]:
    """One record per finished run, sorted by family, complexity, task, arch, size, variant, N and seed; a store
    row superseded by another of the same run (an earlier budget, :func:`innovwin.store.runstore.mark_superseded`)
    is left out, so a run counts once."""
    from innovwin.tasks import make

    finished = [row for row in rows if row["status"] == "done" and row["summary"] and not row.get("superseded_by")]
    configs = [row_config(row) for row in finished]
    flat = [config.to_dict() for config in configs]
    names = differences(flat, SEED_FIELDS)  # what sets each run apart
    tasks = {}
    records = []
    for row, config, variant, name in zip(finished, configs, config_variants(flat), names):
        summary, check = run_summary(row)
        task = tasks.setdefault(config.task, make(config.task))
        final = summary.get("final") or {}
        last_step = final.get("step", config.steps)
        rule, mem = clocks.read_clocks(summary, last_step)  # today's clock objects or an older flat summary
        records.append(RunRecord(
            config=config, key=row["key"], name=name or row["key"], run_dir=row["run_dir"], task=task.spec,
            family=task.family, complexity=task.complexity,
            complexity_label=", ".join(task.complexity_params or ("complexity",)), arch=config.arch,
            depth=config.depth, width=config.width, n_train=config.n_train, seed=config.seed, variant=variant,
            rule=rule, mem=mem, window=clocks.window(rule, mem), last_step=last_step,
            mem_exact=clocks.read_clock(summary, "tau_mem_exact", last_step) if "tau_mem_exact" in summary else None,
            stop=Stop(stop["reason"], stop["step"], stop["trained"]) if (stop := summary.get("stop")) else None,
            final_valid_frac=final.get("valid_frac"), final_copy_frac=final.get("copy_frac"),
            memorization=summary.get("memorization"), timing=summary.get("timing"), summary_check=check))
    return sorted(records, key=lambda r: (r.family, r.complexity, r.task, r.arch, r.depth, r.width, r.variant,
                                          r.n_train, r.seed))


def row_config(row: dict) -> RunConfig:
    """A store row's config as the run recorded it (:meth:`RunConfig.from_record`); a row lacking what a record
    needs is refused, named."""
    missing = [f"its config lacks {name}" for name in RECORD_CONFIG if name not in row["config"]]
    try:
        if not missing:
            return RunConfig.from_record(row["config"])
    except (ValueError, TypeError) as error:
        missing.append(str(error))
    raise ValueError(f"run {row['key']} in the store is malformed: {'; '.join(missing)}")


def run_summary(row: dict) -> tuple[dict, str]:
    """The run's own summary.json (the store keeps a copy) and a note where the two disagree, or "".

    summary.json is what the run wrote; a store edited, restored from a backup or written by a crashed driver may
    hold another copy, which is used only where the run directory has none. A summary the records cannot read is
    refused, named."""
    summary = rundir.read_summary(row["run_dir"])
    if summary is not None:
        differs = summary != row["summary"]
        return summary, f"the store's summary differs from {SUMMARY}: {SUMMARY} is used" if differs else ""
    return (schemas.check(row["summary"], f"the summary of run {row['key']} in the store", schemas.SUMMARY,
                          schemas.SUMMARY_OPTIONAL, fix="fix or delete the row"),
            f"no {SUMMARY} in the run directory: the store's copy is used")


def run_metrics(record: RunRecord) -> list[dict]:
    """A finished run's metrics rows up to its summary's final row (a run answered for a smaller budget than it
    trained keeps the later rows), refused when they stop short of it (a file cut at a row boundary reads as a
    shorter history; rerunning the run's train restores it from state.pt)."""
    path = Path(record.run_dir) / rundir.METRICS
    if (path.parent / rundir.CONFIG).is_file() and not path.is_file():
        raise ValueError(f"{path} is missing: rerun the run's `innovwin train --out {path.parent}` to restore it "
                         f"from {rundir.STATE}")
    rows = [row for row in read_metrics(record.run_dir) if row["step"] <= record.last_step]
    if rows and rows[-1]["step"] != record.last_step:
        raise ValueError(f"{Path(record.run_dir) / 'metrics.jsonl'} ends at step {rows[-1]['step']} but the run's "
                         f"summary at step {record.last_step}: rerun the run's `innovwin train` to restore it")
    return rows
