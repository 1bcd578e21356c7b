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
from innovwin.sweeps.driver import run_sweep
from innovwin.sweeps.plan import estimate_cost
from innovwin.sweeps.executors import LocalExecutor, cpu_count


def configs(**axes):
    (name, values), = axes.items()
    runs = [RunConfig(**{name: value}).resolved() for value in values]
    return {config.key(): config.to_dict() for config in runs}


def counting_run(run) -> dict:
    """Stand-in run: records each call; seed 1 fails on its first attempt, seed 2 kills its worker on
    its first attempt, seed 3 always fails."""
    run_dir, seed = Path(run.run_dir), run.config["seed"]
    run_dir.mkdir(parents=True, exist_ok=True)
    calls = run_dir / "calls"
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    if seed == 1 and len(calls.read_text()) == 1:
        raise RuntimeError("first attempt fails")
    if seed == 2 and len(calls.read_text()) == 1:
        os._exit(3)
    if seed == 3:
        raise RuntimeError("always fails")
    return {"tau_rule": 10.0 * (seed + 1), "tau_mem": None, "seed": seed, "final": {"step": 100},
            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


def counting_job(job) -> dict:
    return {run.key: counting_run(run) for run in job.runs}


def calls(store, key):
    return len((store.run_dir(key) / "calls").read_text())


def test_table_lifecycle_and_longest_first(tmp_path):
    runs = configs(batch=[100, 300, 200])
    cost = {key: estimate_cost(config) for key, config in runs.items()}
    with RunStore(tmp_path, write=True) as store:
        assert store.add(runs, cost) == 3 and store.add(runs, cost) == 0
        order = store.pending(runs, max_attempts=2)
        assert [runs[key]["batch"] for key in order] == [300, 200, 100]
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
    pool = LocalExecutor(counting_job, workers=5)
    assert pool.devices == ["3", "5", "3", "5", "3"]
    assert LocalExecutor(counting_job).devices == ["3", "5"]  # default: one worker per GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu = LocalExecutor(counting_job, n_jobs=1)
    assert cpu.devices == [None] and cpu.capacity == 1 and cpu.threads == cpu_count()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One stand-in sweep of seeds 0-3 on one worker pinned to GPU 7 (torch sees no GPU here), retry limit 2:
    the store's path and each seed's key."""
    path = tmp_path_factory.mktemp("swept")
    runs = configs(seed=[0, 1, 2, 3])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUDA_VISIBLE_DEVICES", "7")
        with RunStore(path, write=True) as store:
            run_sweep(store, runs, workers=1, max_attempts=2, job_fn=counting_job, poll_s=0.2)
    return path, runs, {config["seed"]: key for key, config in runs.items()}


def swept_row(swept, seed):
    path, _, key_of = swept
    with RunStore(path) as store:
        return store.get(key_of[seed])


def test_a_sweep_ends_with_every_run_done_or_out_of_attempts(swept):
    path, runs, _ = swept
    with RunStore(path) as store:
        assert store.counts(runs) == {"queued": 0, "running": 0, "done": 3, "failed": 1}


def test_a_run_that_succeeds_is_tried_once(swept):
    row = swept_row(swept, 0)
    assert (row["status"], row["attempts"], row["summary"]["tau_rule"]) == ("done", 1, 10.0)


def test_a_failed_run_is_retried_and_its_error_cleared(swept):
    row = swept_row(swept, 1)
    assert (row["status"], row["attempts"], row["error"], row["summary"]["tau_rule"]) == ("done", 2, None, 20.0)


def test_a_dead_worker_fails_its_run_and_the_retry_finishes_it(swept):
    row = swept_row(swept, 2)
    assert (row["status"], row["attempts"], row["summary"]["tau_rule"]) == ("done", 2, 30.0)


def test_a_run_that_always_fails_stays_failed_at_the_retry_limit(swept):
    row = swept_row(swept, 3)
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert row["error"].strip().splitlines()[-1] == "RuntimeError: always fails"


def test_each_attempt_calls_the_job_function_once(swept):
    path, _, key_of = swept
    with RunStore(path) as store:
        assert [calls(store, key_of[seed]) for seed in (0, 1, 2, 3)] == [1, 2, 2, 2]


def test_workers_run_on_their_pinned_gpu(swept):
    assert swept_row(swept, 0)["summary"]["gpu"] == "7"


def test_run_directories_are_named_by_what_sets_each_run_apart(swept):
    path, _, key_of = swept
    assert sorted(entry.name for entry in (path / "runs").iterdir() if entry.is_dir()) == sorted(
        f"seed{seed}-{key}" for seed, key in key_of.items())


def test_rerunning_a_finished_sweep_runs_nothing(swept):
    path, runs, key_of = swept
    with RunStore(path, write=True) as store:
        before = store.rows()
        assert run_sweep(store, runs, max_attempts=2, job_fn=counting_job) == store.counts(runs)
        assert store.rows() == before
        assert [calls(store, key_of[seed]) for seed in (0, 1, 2, 3)] == [1, 2, 2, 2]


def test_runs_lists_a_swept_store(swept, capsys):
    """`innovwin runs STORE`: one entry per run, named, with status, clocks or error, and directory."""
    path, _, key_of = swept
    assert main(["runs", str(path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == f"{path}: 4 runs, 3 done, 0 running, 0 queued, 1 failed"
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
            run_sweep(store, runs, max_attempts=0, job_fn=counting_job, stream=None)
        with pytest.raises(ValueError, match="workers must be >= 1"):
            run_sweep(store, runs, workers=0, job_fn=counting_job, stream=None)
        with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
            run_sweep(store, runs, ray_address="auto", job_fn=counting_job, stream=None)
        with pytest.raises(ValueError, match="unknown executor"):
            run_sweep(store, runs, executor="slurm", job_fn=counting_job, stream=None)
        assert store.rows() == []  # refused before the run was stored, let alone ran


def store_with_two_earlier_budgets(path, adopt=True):
    """A store holding one run trained to 300 and 600 steps under its earlier keys (steps keyed), asked again
    today (``adopt``): returns today's key and the two earlier keys."""
    short, long = (RunConfig(n_train=16, steps=steps).resolved() for steps in (300, 600))
    with RunStore(path, write=True) as store:
        for config in (short, long):
            store.add({config.earlier_key(): config.to_dict()})
            store.finish(config.earlier_key(), {"tau_rule": None, "tau_mem": None})
        if adopt:
            store.add({long.key(): long.to_dict()})
    return long.key(), short.earlier_key(), long.earlier_key()


def test_earlier_budget_rows_of_an_adopted_run_are_superseded_by_it(tmp_path):
    key, short, _ = store_with_two_earlier_budgets(tmp_path)
    with RunStore(tmp_path) as store:
        marked = {row["key"]: row["superseded_by"] for row in store.rows()}
    assert marked == {key: None, short: key}


def test_earlier_budget_rows_not_adopted_yet_are_counted_once(tmp_path):
    _, short, long = store_with_two_earlier_budgets(tmp_path, adopt=False)
    with RunStore(tmp_path) as store:
        marked = {row["key"]: row["superseded_by"] for row in store.rows()}
    assert marked == {long: None, short: long}


def test_runs_lists_a_run_with_earlier_budget_rows_once(tmp_path, capsys):
    key, short, _ = store_with_two_earlier_budgets(tmp_path)
    assert main(["runs", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].startswith(f"{tmp_path}: 1 runs, 1 done") and short not in listing


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/nfs nfs4 rw,relatime 0 0
/dev/sdb1 /mnt/nfs/local\\040disk xfs rw 0 0
"""


@pytest.mark.parametrize("path, kind", [("/home/me/store", "ext4"), ("/mnt/nfs/store", "nfs4"),
                                        ("/mnt/nfs", "nfs4"), ("/mnt/nfsx/store", "ext4"),
                                        ("/mnt/nfs/local disk/store", "xfs")])
def test_filesystem_type_is_the_longest_mount_above_the_path(path, kind):
    from innovwin.store.runstore import filesystem_type, on_network_filesystem

    assert filesystem_type(path, MOUNTS) == kind
    assert on_network_filesystem(path, MOUNTS) == (kind == "nfs4")


def test_a_store_on_a_network_filesystem_uses_the_rollback_journal(tmp_path, monkeypatch):
    """WAL (local disk) until the store is opened for writing on a network file system, which switches the file to
    the rollback journal; a reader opened meanwhile (as from another host) reads the committed rows."""
    import innovwin.store.runstore as runstore

    with RunStore(tmp_path, write=True) as store:
        store.add(configs(seed=[0]))
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.setattr(runstore, "on_network_filesystem", lambda path: True)
    with RunStore(tmp_path, write=True) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        store.add(configs(seed=[1]))
        with RunStore(tmp_path) as reader:
            assert len(reader.rows()) == 2
    assert not (tmp_path / "runs.sqlite-wal").exists()
