"""The run store (SQLite table + run directories) and the local executor's bookkeeping.

The run function here is a stand-in that writes a file instead of training, so these tests
check the driver loop (skip, retry, worker death, ordering) in a few seconds; the real sweep
with innovwin.train is in test_sweep.py.
"""
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from innovwin.cli import main
from innovwin.config import RunConfig
from innovwin.store.runstore import RunStore
from innovwin.sweeps.driver import estimate_cost, run_sweep
from innovwin.sweeps.executors import LocalExecutor, cpu_count


def configs(**axes):
    (name, values), = axes.items()
    runs = [RunConfig(**{name: value}).resolved() for value in values]
    return {config.key(): config.to_dict() for config in runs}


def counting_run(config: dict, run_dir: str) -> dict:
    """Stand-in run: records each call; seed 1 fails on its first attempt, seed 2 kills its worker on
    its first attempt, seed 3 always fails."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    calls = run_dir / "calls"
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    if config["seed"] == 1 and len(calls.read_text()) == 1:
        raise RuntimeError("first attempt fails")
    if config["seed"] == 2 and len(calls.read_text()) == 1:
        os._exit(3)
    if config["seed"] == 3:
        raise RuntimeError("always fails")
    return {"tau_rule": 10.0 * (config["seed"] + 1), "seed": config["seed"], "final": {"step": 100},
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


def calls(store, key):
    return len((store.run_dir(key) / "calls").read_text())


def test_table_lifecycle_and_longest_first(tmp_path):
    runs = configs(steps=[100, 300, 200])
    cost = {key: estimate_cost(config) for key, config in runs.items()}
    with RunStore(tmp_path, write=True) as store:
        assert store.add(runs, cost) == 3 and store.add(runs, cost) == 0
        order = store.pending(runs, max_attempts=2)
        assert [runs[key]["steps"] for key in order] == [300, 200, 100]
        first, second, third = order
        store.claim(first)
        store.finish(first, {"tau_rule": 5.0})
        store.claim(second)
        store.fail(second, "boom")
        store.claim(third)
        assert store.counts(runs) == {"queued": 0, "running": 1, "done": 1, "failed": 1}
        assert store.pending(runs, max_attempts=2) == [second]  # one attempt left
        assert store.pending(runs, max_attempts=1) == []
    # a driver killed while `third` ran: the next driver finds it running and queues it again
    with RunStore(tmp_path, write=True) as store:
        assert store.requeue_orphans() == 1
        assert store.get(third)["status"] == "queued" and store.get(third)["attempts"] == 1
        assert store.get(first)["summary"] == {"tau_rule": 5.0}
    with RunStore(tmp_path) as reader:
        assert [row["status"] for row in reader.rows() if row["key"] == second] == ["failed"]
        with pytest.raises(ValueError, match="read-only"):
            reader.claim(first)


def test_second_driver_is_refused_and_nothing_changes(tmp_path):
    runs = configs(seed=[0])
    with RunStore(tmp_path, write=True) as store:
        store.add(runs)
        with pytest.raises(ValueError, match=f"in use by another sweep \\(pid {os.getpid()}\\)"):
            RunStore(tmp_path, write=True)
        assert store.counts()["queued"] == 1
    with RunStore(tmp_path, write=True) as store:  # free again once the first one closed
        assert store.counts()["queued"] == 1


@pytest.mark.parametrize("content", [b"garbage" * 300, None])
def test_corrupt_or_foreign_store_is_refused_untouched(tmp_path, content):
    db = tmp_path / "runs.sqlite"
    if content is None:  # a valid SQLite file that is not a run table
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE people (name TEXT)")
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    with pytest.raises(ValueError, match="unreadable"):
        RunStore(tmp_path, write=True)
    assert db.read_bytes() == before
    assert not (tmp_path / "runs.sqlite-wal").exists()


def test_workers_are_pinned_round_robin_to_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    pool = LocalExecutor(counting_run, workers=5)
    assert pool.devices == ["3", "5", "3", "5", "3"]
    assert LocalExecutor(counting_run).devices == ["3", "5"]  # default: one worker per GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu = LocalExecutor(counting_run, n_runs=1)
    assert cpu.devices == [None] and cpu.capacity == 1 and cpu.threads == cpu_count()


def test_sweep_retries_survives_worker_death_and_skips_done(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # the worker is pinned to it (torch sees no GPU here)
    runs = configs(seed=[0, 1, 2, 3])
    key_of = {config["seed"]: key for key, config in runs.items()}
    with RunStore(tmp_path, write=True) as store:
        counts = run_sweep(store, runs, workers=1, max_attempts=2, run_fn=counting_run, stream=sys.stderr,
                           poll_s=0.2)
        assert counts == {"queued": 0, "running": 0, "done": 3, "failed": 1}
        assert [calls(store, key_of[seed]) for seed in (0, 1, 2, 3)] == [1, 2, 2, 2]
        assert store.get(key_of[1])["attempts"] == 2 and store.get(key_of[0])["attempts"] == 1
        assert store.get(key_of[2])["summary"]["tau_rule"] == 30.0  # its first worker died
        assert store.get(key_of[0])["summary"]["gpu"] == "7"
        failed = store.get(key_of[3])
        assert failed["status"] == "failed" and "always fails" in failed["error"]
        # rerunning the same sweep runs nothing: done runs stay done, failed ones are out of attempts
        assert run_sweep(store, runs, max_attempts=2, run_fn=counting_run, stream=sys.stderr) == counts
        assert [calls(store, key_of[seed]) for seed in (0, 1, 2, 3)] == [1, 2, 2, 2]
    log = capsys.readouterr().err
    assert "4 of 4 runs to do" in log and "3 done · 0 running · 0 queued · 1 failed" in log
    assert "nothing to run: 3 done, 1 failed (retry limit 2 reached)" in log
    # one line per finished run, named by what sets it apart, with its clocks; failures say where the limit is
    assert "[sweep] done seed=0 in " in log and ": τ_rule 10 · τ_mem > 100 · window open at the end" in log
    assert "[sweep] failed seed=1 (attempt 1, retry limit 2): RuntimeError: first attempt fails" in log
    assert "[sweep] failed seed=3 (attempt 2, retry limit 2: stays failed): RuntimeError: always fails" in log
    assert sorted(path.name for path in (tmp_path / "runs").iterdir() if path.is_dir()) == sorted(
        f"seed{seed}-{key_of[seed]}" for seed in range(4))
    # `innovwin runs STORE`: one entry per run, named, with status, clocks or error, and directory
    assert main(["runs", str(tmp_path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"{tmp_path}: 4 runs, 3 done, 0 running, 0 queued, 1 failed"
    assert any(line.startswith("seed=2 ") and "done    attempts 2  τ_rule 30" in line for line in listing)
    assert any(line.startswith("seed=3 ") and "error: RuntimeError: always fails" in line for line in listing)
    assert sum(line.strip().endswith(f"seed1-{key_of[1]}") for line in listing) == 1


def test_runs_of_a_store_written_before_run_names_keep_their_directories(tmp_path):
    runs = configs(seed=[0, 1])
    with RunStore(tmp_path, write=True) as store:
        store.add(runs)
        old, new = list(runs)
        (tmp_path / "runs" / old).mkdir(parents=True)  # an existing store's layout: runs/KEY
        assert store.run_dir(old, "seed=0") == tmp_path / "runs" / old
        assert store.run_dir(new, "seed=1") == tmp_path / "runs" / f"seed1-{new}"
        assert {row["key"]: row["run_dir"] for row in store.rows()}[old] == str(tmp_path / "runs" / old)


def test_bad_executor_arguments(tmp_path):
    runs = configs(seed=[0])
    with RunStore(tmp_path, write=True) as store:
        with pytest.raises(ValueError, match="max_attempts"):
            run_sweep(store, runs, max_attempts=0, run_fn=counting_run, stream=None)
        with pytest.raises(ValueError, match="workers must be >= 1"):
            run_sweep(store, runs, workers=0, run_fn=counting_run, stream=None)
        with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
            run_sweep(store, runs, ray_address="auto", run_fn=counting_run, stream=None)
        with pytest.raises(ValueError, match="unknown executor"):
            run_sweep(store, runs, executor="slurm", run_fn=counting_run, stream=None)
        assert store.counts()["queued"] == 1  # refused before anything ran
