"""Sweep overhead: seconds per run that the store and the executor add, local against Ray.

The runs do nothing (they return a summary at once), so the time per run *is* the overhead:
the SQLite bookkeeping, handing the run to a worker and taking its summary back. Baseline:
calling the run function in a loop. ``seconds_per_run`` includes starting the workers
(spawn + torch import; Ray reuses its worker processes); ``steady_seconds_per_run`` is the
interval between two results once they run, and ``sweep_of_2_s`` the cost of a tiny sweep:

    pytest benches/bench_sweep.py --benchmark-enable
"""
import sys
import time

import pytest

from innovwin.config import RunConfig
from innovwin.store.runstore import RunStore
from innovwin.sweeps.driver import run_sweep

N_RUNS = 40


def instant_run(config: dict, run_dir: str) -> dict:
    return {"tau_rule": None, "tau_mem": None, "seed": config["seed"]}


def instant_job(job) -> dict:
    return {run.key: instant_run(run.config, run.run_dir) for run in job.runs}


def sweep_runs(n=N_RUNS):
    configs = [RunConfig(seed=seed, steps=100).resolved() for seed in range(n)]
    return {config.key(): config.to_dict() for config in configs}


def per_run(benchmark, sweep_once) -> float:
    """Time sweeps of N_RUNS runs; extra_info gets the best time per run."""
    timings = []

    def target():
        start = time.perf_counter()
        sweep_once()
        timings.append(time.perf_counter() - start)

    benchmark.pedantic(target, rounds=3, iterations=1)
    benchmark.extra_info["seconds_per_run"] = min(timings) / N_RUNS
    return min(timings)


def test_baseline_direct_calls(benchmark, tmp_path):
    runs = sweep_runs()
    per_run(benchmark, lambda: [instant_run(config, str(tmp_path / key)) for key, config in runs.items()])


def test_store_only(benchmark, tmp_path):
    """The table's share: add, claim and finish every run, one transaction each (WAL, synchronous=NORMAL)."""
    counter = iter(range(10 ** 6))

    def sweep_once():
        with RunStore(tmp_path / str(next(counter)), write=True) as store:
            runs = sweep_runs()
            store.add(runs)
            for key in store.pending(runs, 1):
                store.claim(key)
                store.finish(key, instant_run(runs[key], str(store.run_dir(key))))

    per_run(benchmark, sweep_once)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_executor(benchmark, tmp_path, executor):
    if executor == "ray":
        ray = pytest.importorskip("ray")
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        benchmark.extra_info["ray_init_s"] = time.perf_counter() - start
    counter = iter(range(10 ** 6))
    steady = []
    try:
        def sweep_once(n=N_RUNS):
            with RunStore(tmp_path / str(next(counter)), write=True) as store:
                run_sweep(store, sweep_runs(n), executor=executor, workers=2, job_fn=instant_job,
                          stream=None, poll_s=0.05)
                finished = sorted(row["finished"] for row in store.rows())
            steady.append((finished[-1] - finished[0]) / (n - 1))

        start = time.perf_counter()
        sweep_once(2)  # a sweep of 2 runs: mostly starting workers (spawn + torch import, Ray worker processes)
        benchmark.extra_info["sweep_of_2_s"] = time.perf_counter() - start
        per_run(benchmark, sweep_once)
        # once the workers are up: the time between two results landing in the store
        benchmark.extra_info["steady_seconds_per_run"] = min(steady[1:])
    finally:
        if executor == "ray":
            ray.shutdown()
