"""What an executor runs and what it hands back: a job (the runs one process trains together) and one outcome per run.

A single run is a job of one; ``innovwin sweep --ensemble K`` makes jobs of up to K runs of one shape, trained as one
stacked ensemble. Jobs and outcomes are plain frozen values, so they cross a spawned worker's pipe and Ray unchanged.

A job function (``job_fn(job) -> {key: summary, or the error of a run that failed alone}``) trains a job's runs
and must be importable by name (module-level), so that spawned workers and Ray tasks can load it; :func:`train_job`
is the sweep's.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Callable

STRAGGLER_WAIT_S = 60.0  # how long a job waits for a killed driver's straggler to leave its run directory


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its key, its resolved config (a flat dict) and its run directory."""

    key: str
    config: dict
    run_dir: str


@dataclass(frozen=True)
class Job:
    """The runs one process trains together (one, or the members of a stacked ensemble), longest first."""

    runs: tuple[Run, ...]

    @property
    def id(self) -> str:
        """The job's first run's key (a run is in one job at a time)."""
        return self.runs[0].key

    @property
    def keys(self) -> list[str]:
        return [run.key for run in self.runs]

    def failed(self, error: str, seconds: float) -> list["Outcome"]:
        """Every run of the job failed with ``error`` (a job trains or fails as one)."""
        return [Outcome(run.key, None, error, seconds / len(self.runs)) for run in self.runs]

    def preempted(self, reason: str) -> list["Outcome"]:
        """Every run of the job lost with its node or worker: queued again, no attempt spent."""
        return [Outcome(run.key, None, reason, 0.0, preempted=True) for run in self.runs]


@dataclass(frozen=True)
class Outcome:
    """How one run of a job ended: done with its summary, failed with its error (a traceback), or preempted (its
    node or worker was lost, ``error`` says how: not the run's fault); ``seconds`` is its share of its job's time."""

    key: str
    summary: dict | None
    error: str | None
    seconds: float
    preempted: bool = False

    @property
    def status(self) -> str:
        return "done" if self.error is None else "preempted" if self.preempted else "failed"


JobFn = Callable[[Job], dict]  # key -> summary dict, or an error (str)


def train_job(job: Job) -> dict[str, dict | str]:
    """The sweep's job function: train (or resume, or read the finished summaries of) a job's runs, one run alone,
    several as one stacked ensemble. A member that cannot resume (a corrupt state, a directory of another run) is
    refused before the others train, and fails alone (its error in place of its summary): the healthy ones train."""
    from innovwin.config import RunConfig
    from innovwin.store import rundir
    from innovwin.train.ensemble import train_ensemble

    configs = {run.key: RunConfig.from_record(run.config).resolved() for run in job.runs}
    failed = {}
    if len(job.runs) > 1:
        for run in job.runs:
            try:
                rundir.prepare(run.run_dir, configs[run.key])  # reads only
            except ValueError as error:
                failed[run.key] = f"ValueError: {error}"
    healthy = [run for run in job.runs if run.key not in failed]
    summaries = train_ensemble([configs[run.key] for run in healthy], [run.run_dir for run in healthy],
                               quiet=True) if healthy else []
    return {**dict(zip([run.key for run in healthy], summaries)), **failed}


def run_job(job_fn: JobFn, job: Job) -> list[Outcome]:
    """Run ``job`` in this process: one outcome per run; an exception fails every run of the job.

    Each run directory's own lock (:func:`innovwin.store.rundir.locked`, which training holds) is the one lock per
    run. A straggler of a killed driver may still hold it; the job waits for it to leave (up to
    :data:`STRAGGLER_WAIT_S`) rather than fail an attempt at once, and a run still busy after that is refused by
    training's lock, never written twice: a failed attempt, retried later.
    """
    start = time.perf_counter()
    try:
        _wait_for_stragglers(job)
        summaries = job_fn(job)
        if not isinstance(summaries, dict) or not all(isinstance(summaries.get(key), (dict, str)) for key in job.keys):
            raise TypeError("a job function returns {key: summary dict, or the error of a run that failed alone} "
                            "for every run of its job")
    except Exception:  # a failed job is recorded, the sweep goes on
        return job.failed(traceback.format_exc(), time.perf_counter() - start)
    seconds = (time.perf_counter() - start) / len(job.runs)
    return [Outcome(key, None, summaries[key], seconds) if isinstance(summaries[key], str) else
            Outcome(key, summaries[key], None, seconds) for key in job.keys]


def _wait_for_stragglers(job: Job) -> None:
    from innovwin.store import rundir

    for run in job.runs:
        with rundir.locked(run.run_dir, "innovwin sweep (waiting to start)", wait_s=STRAGGLER_WAIT_S):
            pass
