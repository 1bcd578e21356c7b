"""The sweep driver loop, the same for every executor: queue the runs, hand the longest ones out first, write each
result to the store the moment it returns, show the live progress (innovwin.sweeps.progress)."""
from __future__ import annotations

import functools
import json
import math
import signal

from innovwin.store import RunStore
from innovwin.sweeps.executors import RunFn, make_executor, train_run
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
def run_sweep(store: RunStore, runs: dict[str, dict], *, executor: str = "local", workers: int | None = None,
              ray_address: str | None = None, max_attempts: int = 3, run_fn: RunFn = train_run,
              stream=None, poll_s: float = 1.0, names: dict[str, str] | None = None) -> dict[str, int]:
    """Run every run of ``runs`` not done yet; returns the final status counts of these runs.

    Done runs are skipped, interrupted ones resume (``run_fn`` finds their training state in
    their run directory), failed ones are retried until they have had ``max_attempts`` (the retry limit).
    ``stream`` (e.g. sys.stderr) gets the live progress; None runs quietly. ``names`` (key -> readable name,
    default :func:`run_names`) name the lines and the new run directories.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
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
    pool = make_executor(executor, run_fn, workers=workers, ray_address=ray_address, n_runs=len(queue))
    progress = SweepProgress(stream, costs, pool.capacity, names)
    if stream:
        stream.write(f"[sweep] {len(queue)} of {len(runs)} runs to do · {pool.describe()}\n")
    in_flight: set[str] = set()
    previous_sigterm = _raise_on_sigterm()
    try:
        while queue or in_flight:
            while queue and len(in_flight) < pool.capacity:
                key = queue.pop(0)
                store.claim(key)
                run_dir = str(store.run_dir(key, names.get(key, "")))
                pool.submit(key, runs[key], run_dir)
                progress.submitted(key, run_dir)
                in_flight.add(key)
            progress.show(store.counts(runs), queue)
            for key, status, payload, seconds in pool.wait(poll_s):
                in_flight.discard(key)
                if status == "done":
                    store.finish(key, payload)
                    progress.finished(key, status, payload, seconds)
                else:
                    store.fail(key, str(payload))
                    attempts = store.get(key)["attempts"]
                    if attempts < max_attempts:
                        queue.append(key)
                    progress.finished(key, status, payload, seconds, f"attempt {attempts}, retry limit {max_attempts}"
                                      + ("" if attempts < max_attempts else ": stays failed"))
        counts = store.counts(runs)
        progress.show(counts, [], final=True)
        return counts
    finally:
        pool.close()
        for key in in_flight:  # interrupted, not failed: back in the queue for the next sweep
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
