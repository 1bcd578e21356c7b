"""The sweep driver, the same for every executor: plan (:mod:`innovwin.sweeps.plan`), then drive: hand the jobs out
longest first, write each run's outcome to the store the moment it returns, retry failed runs, show the live
progress (:mod:`innovwin.sweeps.progress`), and queue unfinished runs again when stopped. Under ``steps = "auto"`` it
gives each run its budget as it hands it out and extends a censored run once (:mod:`innovwin.sweeps.budgets`)."""
from __future__ import annotations

import signal
from pathlib import Path

from innovwin.store import RunStore
from innovwin.store.runlog import RunLog
from innovwin.sweeps.budgets import AutoBudget, budget_for, extends, is_upper_bound
from innovwin.sweeps.executors import GPU_ENSEMBLE, Executor, make_executor, visible_gpus
from innovwin.sweeps.jobs import Job, JobFn, Outcome, Run, train_job
from innovwin.sweeps.plan import Plan, estimate_cost, plan_sweep
from innovwin.sweeps.progress import SweepProgress


def run_sweep(store: RunStore, runs: dict[str, dict], *, executor: str = "local", workers: int | None = None,
              ray_address: str | None = None, max_attempts: int = 3, job_fn: JobFn = train_job,
              stream=None, poll_s: float = 1.0, names: dict[str, str] | None = None, ensemble: int | None = 1,
              auto: AutoBudget | None = None, ray_runtime_env=None, ray_storage: str = "auto") -> dict[str, int]:
    """Run every run of ``runs`` not done yet; returns the final status counts of these runs.

    Done runs are skipped, interrupted ones resume (``job_fn`` finds their training state in
    their run directory), failed ones are retried until they have had ``max_attempts`` (the retry limit).
    ``ensemble`` > 1 trains up to that many runs of one shape as one job (a stacked ensemble); the store, the run
    directories and the summaries are the same. ``stream`` (e.g. sys.stderr) gets the live progress; None runs
    quietly. ``names`` (key -> readable name, default :func:`innovwin.sweeps.spec.run_names`) name the lines and the
    new run directories. ``auto`` (the spec's ``steps = "auto"``): budgets predicted as runs finish. ``ensemble``
    None: :data:`GPU_ENSEMBLE` where the runs go has GPUs (the cluster, for Ray), else 1. ``ray_runtime_env`` and
    ``ray_storage``: see :mod:`innovwin.sweeps.ray_cluster`.
    """
    pool = None
    if executor == "ray":  # the cluster first: its devices set the default ensemble, its nodes the capacity
        pool = make_executor(executor, job_fn, workers=workers, ray_address=ray_address, store_path=store.path,
                             ray_runtime_env=ray_runtime_env, ray_storage=ray_storage,
                             needs_gpu=any(config["device"].startswith("cuda") for config in runs.values()))
    try:
        if ensemble is None:
            ensemble = GPU_ENSEMBLE if (pool.gpus if pool else visible_gpus()) else 1
        plan = plan_sweep(store, runs, max_attempts=max_attempts, ensemble=ensemble, names=names, workers=workers,
                          executor=executor, ray_address=ray_address, auto=auto)
    except BaseException:
        if pool:
            pool.close()
        raise
    if not plan.jobs:
        if pool:
            pool.close()
        counts = store.counts(runs)
        if stream:
            limit = f" (retry limit {max_attempts} reached)" if counts["failed"] else ""
            stream.write(f"[sweep] nothing to run: {counts['done']} done, {counts['failed']} failed{limit}\n")
        return counts
    pool = pool or make_executor(executor, job_fn, workers=workers, n_jobs=len(plan.jobs))
    return drive(store, plan, pool, max_attempts=max_attempts, stream=stream, poll_s=poll_s)


def drive(store: RunStore, plan: Plan, pool: Executor, *, max_attempts: int, stream=None,
          poll_s: float = 1.0) -> dict[str, int]:
    """Feed ``plan``'s jobs to ``pool`` and record their outcomes until every run is done or out of attempts;
    returns the final status counts. Closes ``pool``. Ctrl-C or SIGTERM stops the jobs out (each saves its state)
    and puts their runs back in the queue, their attempts not counted."""
    queue = list(plan.jobs)
    bounded = {key for key, config in plan.runs.items() if is_upper_bound(config, plan.auto)}
    progress = SweepProgress(stream, plan.costs, pool.capacity * plan.job_size, plan.names, bounded)
    if stream:
        grouped = f" · stacked ensembles of up to {plan.job_size}" if plan.job_size > 1 else ""
        to_do = sum(len(job.runs) for job in queue)
        stream.write(f"[sweep] {to_do} of {len(plan.runs)} runs to do · {pool.describe()}{grouped}\n")
    out: dict[str, Job] = {}  # key -> its job, for every run submitted and not returned
    previous_sigterm = _raise_on_sigterm()
    try:
        while queue or out:
            while queue and len({job.id for job in out.values()}) < pool.capacity:
                job = queue.pop(0)
                if plan.auto is not None:
                    job = budgeted(store, job, plan.auto, progress)
                for run in job.runs:
                    store.claim(run.key)
                    progress.submitted(run.key, run.run_dir)
                    out[run.key] = job
                pool.submit(job)
            for line in pool.notes():
                progress.say(line)
            progress.show(store.counts(plan.runs), [key for job in queue for key in job.keys])
            retries = {}  # job id -> its runs to try again
            for outcome in pool.wait(poll_s):
                job = out.pop(outcome.key)
                run, = (run for run in job.runs if run.key == outcome.key)
                if not record(store, outcome, max_attempts, progress):
                    retries.setdefault(job.id, []).append(run)
                elif plan.auto is not None and extends(run.config, outcome.summary, plan.auto):
                    queue.insert(0, extended(store, run, plan.auto, progress))
            queue.extend(Job(tuple(runs)) for runs in retries.values())
        counts = store.counts(plan.runs)
        progress.show(counts, [], final=True)
        return counts
    finally:
        pool.close()
        for key in out:  # interrupted, not failed: queued again
            store.release(key)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def record(store: RunStore, outcome: Outcome, max_attempts: int, progress: SweepProgress) -> bool:
    """Write one run's outcome to the store and show its line; False when the run failed with attempts left, or was
    preempted (to be tried again)."""
    if outcome.preempted:  # queued again, its attempt not counted; said in the sweep's log and the run's
        store.release(outcome.key)
        line = f"preempted: {outcome.error}; queued again, its attempt not counted"
        if Path(progress.run_dirs[outcome.key]).is_dir():  # lost before it wrote anything: said only here
            RunLog(progress.run_dirs[outcome.key], 0, 0).line(line)
        progress.started.pop(outcome.key, None)
        progress.say(f"[sweep] {line.replace('preempted', f'preempted {progress.name(outcome.key)}', 1)}")
        return False
    if outcome.error is None:
        store.finish(outcome.key, outcome.summary)
        progress.finished(outcome.key, "done", outcome.summary, outcome.seconds)
        return True
    store.fail(outcome.key, outcome.error)
    attempts = store.get(outcome.key)["attempts"]
    settled = attempts >= max_attempts
    progress.finished(outcome.key, "failed", outcome.error, outcome.seconds,
                      f"attempt {attempts}, retry limit {max_attempts}" + (": stays failed" if settled else ""))
    return settled


def budgeted(store: RunStore, job: Job, auto: AutoBudget, progress: SweepProgress) -> Job:
    """``job`` with each run's budget: predicted from the runs finished in the store now, for a run never finished
    (one that was keeps the budget it was given, or the cap it is extended to); the members of a stacked ensemble
    share one budget (``steps`` is shared), the largest of theirs. Recorded in the store's config, said in the log."""
    rows = store.rows()
    finished = {row["key"] for row in rows if row["summary"] is not None}
    found = {run.key: budget_for(run.config, rows, auto) if run.key not in finished else (run.config["steps"], "")
             for run in job.runs}
    shared = max(steps for steps, _ in found.values())
    runs = []
    for run in job.runs:
        steps, source = found[run.key]
        if source:
            ensemble = f" (its ensemble's largest: {shared})" if shared != steps else ""
            progress.say(f"[sweep] budget {progress.name(run.key)}: steps {steps} = {source}{ensemble}")
        run = Run(run.key, {**run.config, "steps": shared}, run.run_dir)
        store.add({run.key: run.config})  # records the budget given (a changed stop updates the row)
        progress.costs[run.key] = estimate_cost(run.config)  # the ETA from the budget given, not the cap
        runs.append(run)
    return Job(tuple(runs))


def extended(store: RunStore, run: Run, auto: AutoBudget, progress: SweepProgress) -> Job:
    """The job that trains a censored run on to the cap (it resumes from its state), recorded in the store."""
    config = auto.capped(run.config)
    store.add({run.key: config})  # queues the done row again with the cap
    progress.say(f"[sweep] extend {progress.name(run.key)}: censored at its budget {run.config['steps']}; "
                 f"once more, up to max_steps {auto.max_steps}")
    return Job((Run(run.key, config, run.run_dir),))


def _raise_on_sigterm():
    """SIGTERM stops a sweep like Ctrl-C: workers stopped, unfinished runs queued again.
    Returns the previous handler (None off the main thread, where signals are left alone)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None
