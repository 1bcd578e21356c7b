"""The sweep driver loop, the same for every executor: queue the runs, hand the longest ones out first, write each
result to the store the moment it returns, show the live progress (innovwin.sweeps.progress)."""
from __future__ import annotations

import functools
import json
import math
import signal

from innovwin.store import RunStore
from innovwin.sweeps.executors import RunFn, make_executor, train_group, train_run
from innovwin.sweeps.progress import SweepProgress
from innovwin.sweeps.spec import run_names


def estimate_cost(config: dict) -> float:
    """Relative cost of a run, for longest-first ordering and the ETA: tokens x parameters
    over training steps plus the evaluations' network calls (a DiT sample costs two calls per
    Heun step, a GPT sample one pass: the objective says)."""
    tokens = _n_cells(config["task"])
    params = config["depth"] * (4 + 2 * config["mlp_ratio"]) * config["width"] ** 2
    n_evals = 1 + config["evals_per_decade"] * math.log10(max(config["steps"] / config["first_eval"], 1.0))
    calls = _calls_per_sample(json.dumps(config, sort_keys=True))
    samples = 3 * config["steps"] * config["batch"] + n_evals * config["eval_samples"] * calls
    return float(samples * tokens * params)


@functools.lru_cache(maxsize=None)
def _calls_per_sample(config_json: str) -> int:
    """Network calls per generated sample, as the run's objective counts them."""
    from innovwin import objectives, tasks
    from innovwin.config import RunConfig

    config = RunConfig.from_record(json.loads(config_json))
    return objectives.get(config.arch).build_objective(tasks.make(config.task), config).network_calls_per_sample()


@functools.lru_cache(maxsize=None)
def _n_cells(task_spec: str) -> int:
    from innovwin.tasks import make

    return make(task_spec).n_cells


def preflight(runs: dict[str, dict]) -> None:
    """Refuse the sweep, before any run is queued or any attempt spent, when a run could never start (n_train
    not below |V|, ...): it would fail every attempt the same way."""
    from innovwin.config import RunConfig
    from innovwin.train.driver import check_run

    for key, config in runs.items():
        try:
            check_run(RunConfig.from_dict(config))
        except ValueError as error:
            raise ValueError(f"run {key} ({config['task']}, n_train {config['n_train']}) cannot run: {error}") from None


# --- the driver loop -------------------------------------------------------------------
def take_group(queue: list[str], runs: dict[str, dict], size: int) -> list[str]:
    """Pop the queue's first run and up to ``size - 1`` later runs of its shape (one stacked ensemble)."""
    first = queue.pop(0)
    if size == 1:
        return [first]
    from innovwin.config import RunConfig
    from innovwin.train.ensemble import signature

    shape = signature(RunConfig.from_dict(runs[first]))
    group = [first] + [key for key in queue if signature(RunConfig.from_dict(runs[key])) == shape][:size - 1]
    for key in group[1:]:
        queue.remove(key)
    return group


def run_sweep(store: RunStore, runs: dict[str, dict], *, executor: str = "local", workers: int | None = None,
              ray_address: str | None = None, max_attempts: int = 3, run_fn: RunFn = train_run,
              stream=None, poll_s: float = 1.0, names: dict[str, str] | None = None, ensemble: int = 1,
              group_fn: RunFn = train_group) -> dict[str, int]:
    """Run every run of ``runs`` not done yet; returns the final status counts of these runs.

    Done runs are skipped, interrupted ones resume (``run_fn`` finds their training state in
    their run directory), failed ones are retried until they have had ``max_attempts`` (the retry limit).
    ``ensemble`` > 1 trains up to that many runs of one shape as one stacked ensemble (``group_fn``
    instead of ``run_fn``); the store, the run directories and the summaries are the same.
    ``stream`` (e.g. sys.stderr) gets the live progress; None runs quietly. ``names`` (key -> readable name,
    default :func:`run_names`) name the lines and the new run directories.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if ensemble < 1:
        raise ValueError(f"--ensemble must be >= 1, got {ensemble}")
    preflight(runs)
    store.requeue_orphans()
    names = run_names(runs) if names is None else names
    costs = {key: estimate_cost(config) for key, config in runs.items()}
    store.add(runs, costs)
    queue = store.pending(runs, max_attempts)
    if not queue:
        counts = store.counts(runs)
        if stream:
            limit = f" (retry limit {max_attempts} reached)" if counts["failed"] else ""
            stream.write(f"[sweep] nothing to run: {counts['done']} done, {counts['failed']} failed{limit}\n")
        return counts
    pool = make_executor(executor, run_fn if ensemble == 1 else group_fn, workers=workers, ray_address=ray_address,
                         n_runs=math.ceil(len(queue) / ensemble))
    progress = SweepProgress(stream, costs, pool.capacity * ensemble, names)
    if stream:
        grouped = f" · stacked ensembles of up to {ensemble}" if ensemble > 1 else ""
        stream.write(f"[sweep] {len(queue)} of {len(runs)} runs to do · {pool.describe()}{grouped}\n")
    in_flight: dict[str, list[str]] = {}  # submitted key -> the keys of its group
    previous_sigterm = _raise_on_sigterm()
    try:
        while queue or in_flight:
            while queue and len(in_flight) < pool.capacity:
                group = take_group(queue, runs, ensemble)
                members = []
                for key in group:
                    store.claim(key)
                    run_dir = str(store.run_dir(key, names.get(key, "")))
                    members.append((key, runs[key], run_dir))
                    progress.submitted(key, run_dir)
                if ensemble == 1:
                    pool.submit(*members[0])
                else:
                    pool.submit(group[0], {"members": members}, members[0][2])
                in_flight[group[0]] = group
            progress.show(store.counts(runs), queue)
            for first, status, payload, seconds in pool.wait(poll_s):
                group = in_flight.pop(first)
                for key in group:
                    if status == "done":
                        summary = payload if ensemble == 1 else payload["members"][key]
                        store.finish(key, summary)
                        progress.finished(key, status, summary, seconds / len(group))
                    else:
                        store.fail(key, str(payload))
                        attempts = store.get(key)["attempts"]
                        if attempts < max_attempts:
                            queue.append(key)
                        progress.finished(key, status, payload, seconds,
                                          f"attempt {attempts}, retry limit {max_attempts}"
                                          + ("" if attempts < max_attempts else ": stays failed"))
        counts = store.counts(runs)
        progress.show(counts, [], final=True)
        return counts
    finally:
        pool.close()
        for key in (key for group in in_flight.values() for key in group):  # interrupted, not failed: queued again
            store.release(key)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_on_sigterm():
    """SIGTERM stops a sweep like Ctrl-C: workers stopped, unfinished runs queued again.
    Returns the previous handler (None off the main thread, where signals are left alone)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None
