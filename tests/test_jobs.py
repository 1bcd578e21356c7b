"""Jobs, outcomes, the plan and the drive step of a sweep, in this process: a stand-in executor runs each job at once,
so these check the driver's bookkeeping (outcomes, retries, grouping, interruption) without spawning workers."""
import threading
import time

import pytest

from innovwin.config import RunConfig
from innovwin.store import rundir
from innovwin.store.runstore import RunStore
from innovwin.sweeps import jobs
from innovwin.sweeps.driver import drive
from innovwin.sweeps.jobs import Job, Outcome, Run, run_job
from innovwin.sweeps.plan import group_by_shape, plan_sweep


def configs(**axes):
    runs = [RunConfig(**dict(zip(axes, values))).resolved() for values in zip(*axes.values())]
    return {config.key(): config.to_dict() for config in runs}


def job_of(tmp_path, *seeds):
    return Job(tuple(Run(f"k{seed}", {"seed": seed}, str(tmp_path / f"run{seed}")) for seed in seeds))


def summaries(job):
    return {run.key: {"seed": run.config["seed"]} for run in job.runs}


def failing(job):
    raise RuntimeError("no luck")


class InProcess:
    """An executor (innovwin.sweeps.executors.Executor) that runs each job when it is waited for."""

    def __init__(self, job_fn, capacity=1, interrupt_after=None):
        self.job_fn, self.capacity, self.interrupt_after = job_fn, capacity, interrupt_after
        self.out, self.submitted, self.closed, self.most_out = [], [], False, 0

    def submit(self, job):
        self.out.append(job)
        self.submitted.append(job.keys)
        self.most_out = max(self.most_out, len(self.out))

    def wait(self, timeout):
        if self.interrupt_after is not None and len(self.submitted) > self.interrupt_after:
            raise KeyboardInterrupt
        ran, self.out = self.out, []
        return [outcome for job in ran for outcome in run_job(self.job_fn, job)]

    def describe(self):
        return "in process"

    def notes(self):
        return []

    def close(self):
        self.closed = True


# --- run_job: a job's outcomes -------------------------------------------------------------
def test_a_job_that_trains_gives_each_run_its_summary(tmp_path):
    outcomes = run_job(summaries, job_of(tmp_path, 0, 1))
    assert [(o.key, o.status, o.summary, o.error) for o in outcomes] == [
        ("k0", "done", {"seed": 0}, None), ("k1", "done", {"seed": 1}, None)]


def test_a_job_that_raises_fails_every_run_with_the_traceback(tmp_path):
    outcomes = run_job(failing, job_of(tmp_path, 0, 1))
    assert [(o.key, o.status, o.summary) for o in outcomes] == [("k0", "failed", None), ("k1", "failed", None)]
    assert {o.error.strip().splitlines()[-1] for o in outcomes} == {"RuntimeError: no luck"}


def test_a_job_function_that_returns_no_summary_for_a_run_fails_the_job(tmp_path):
    outcomes = run_job(lambda job: {"k0": {}}, job_of(tmp_path, 0, 1))
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert "returns {key: summary dict, or the error of a run that failed alone} for every run" in outcomes[0].error


def test_a_run_gets_its_share_of_its_job_s_time(tmp_path):
    def slow(job):
        time.sleep(0.2)
        return summaries(job)

    outcomes = run_job(slow, job_of(tmp_path, 0, 1))
    assert outcomes[0].seconds == outcomes[1].seconds and 0.1 <= outcomes[0].seconds < 0.2


def hold_lock(run_dir, seconds):
    """A straggler: another holder of ``run_dir``'s lock for ``seconds``; returns once it holds it."""
    holding = threading.Event()

    def straggle():
        with rundir.locked(run_dir, "straggler"):
            holding.set()
            time.sleep(seconds)

    thread = threading.Thread(target=straggle)
    thread.start()
    holding.wait()
    return thread


def test_a_job_waits_for_a_straggler_to_leave_its_run_directory(tmp_path):
    job = job_of(tmp_path, 0)
    straggler = hold_lock(job.runs[0].run_dir, 0.5)
    outcome, = run_job(summaries, job)
    straggler.join()
    assert outcome.status == "done" and outcome.seconds >= 0.4


def test_a_straggler_that_stays_fails_the_attempt_without_touching_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "STRAGGLER_WAIT_S", 0.2)
    job = job_of(tmp_path, 0)
    straggler = hold_lock(job.runs[0].run_dir, 1.0)
    called = []
    outcome, = run_job(lambda job: called.append(job) or summaries(job), job)
    straggler.join()
    assert outcome.status == "failed" and "is in use (straggler" in outcome.error and called == []


def test_outcomes_and_jobs_cross_a_process_boundary(tmp_path):
    import pickle

    job = job_of(tmp_path, 0, 1)
    outcome = Outcome("k0", {"seed": 0}, None, 1.5)
    assert pickle.loads(pickle.dumps(job)) == job and pickle.loads(pickle.dumps(outcome)) == outcome


# --- the plan --------------------------------------------------------------------------------
def test_grouping_keeps_the_order_and_never_mixes_shapes():
    shapes = {"a": "x", "b": "x", "c": "y", "d": "x", "e": "x", "f": "x"}
    assert group_by_shape(list(shapes), shapes, 2) == [["a", "b"], ["c"], ["d", "e"], ["f"]]
    assert group_by_shape(list(shapes), shapes, 1) == [[key] for key in shapes]


def test_a_plan_queues_every_new_run_longest_first(tmp_path):
    runs = configs(batch=[100, 300, 200])
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, runs, max_attempts=1)
        assert [[runs[key]["batch"] for key in job.keys] for job in plan.jobs] == [[300], [200], [100]]
        assert store.counts(runs)["queued"] == 3


def test_a_plan_names_each_run_directory(tmp_path):
    runs = configs(batch=[100, 300])
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, runs, max_attempts=1)
    assert sorted(run.run_dir for job in plan.jobs for run in job.runs) == sorted(
        str(tmp_path / "runs" / f"batch{runs[key]['batch']}-{key}") for key in runs)


def test_a_plan_groups_runs_of_one_shape_into_jobs(tmp_path):
    runs = configs(seed=[0, 1, 2, 0], width=[32, 32, 32, 64])
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, runs, max_attempts=1, ensemble=2)
    assert sorted(sorted(runs[key]["width"] for key in job.keys) for job in plan.jobs) == [[32], [32, 32], [64]]


def test_a_plan_leaves_out_done_runs_and_failed_runs_out_of_attempts(tmp_path):
    runs = configs(seed=[0, 1, 2])
    done, failed_once, failed_twice = runs
    with RunStore(tmp_path, write=True) as store:
        store.add(runs)
        for key in runs:
            store.claim(key)
        store.finish(done, {})
        store.fail(failed_once, "boom")
        store.fail(failed_twice, "boom")
        store.claim(failed_twice)
        store.fail(failed_twice, "boom")
        assert [job.keys for job in plan_sweep(store, runs, max_attempts=2).jobs] == [[failed_once]]


@pytest.mark.parametrize("arguments, message", [({"max_attempts": 0}, "max_attempts must be >= 1"),
                                                ({"max_attempts": 1, "ensemble": 0}, "--ensemble must be >= 1")])
def test_a_bad_plan_is_refused_before_the_store_is_written(tmp_path, arguments, message):
    with RunStore(tmp_path, write=True) as store:
        with pytest.raises(ValueError, match=message):
            plan_sweep(store, configs(seed=[0]), **arguments)
        assert store.rows() == []


# --- driving ---------------------------------------------------------------------------------
def test_driving_records_each_outcome_in_the_store(tmp_path):
    runs = configs(seed=[0, 1])
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, runs, max_attempts=1)
        assert drive(store, plan, InProcess(summaries), max_attempts=1) == {
            "queued": 0, "running": 0, "done": 2, "failed": 0}
        assert {row["key"]: (row["summary"], row["attempts"]) for row in store.rows()} == {
            key: ({"seed": config["seed"]}, 1) for key, config in runs.items()}


def test_a_failed_job_is_retried_as_one_job_until_the_retry_limit(tmp_path):
    runs = configs(seed=[0, 1])
    pool = InProcess(failing)
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, runs, max_attempts=3, ensemble=2)
        assert drive(store, plan, pool, max_attempts=3)["failed"] == 2
        assert {row["attempts"] for row in store.rows()} == {3}
    assert pool.submitted == [plan.jobs[0].keys] * 3


def test_the_executor_never_gets_more_jobs_than_its_capacity(tmp_path):
    pool = InProcess(summaries, capacity=2)
    with RunStore(tmp_path, write=True) as store:
        drive(store, plan_sweep(store, configs(seed=[0, 1, 2]), max_attempts=1), pool, max_attempts=1)
    assert len(pool.submitted) == 3 and pool.most_out == 2


def test_an_interrupted_sweep_queues_its_runs_again_without_counting_the_attempt(tmp_path):
    runs = configs(seed=[0, 1])
    pool = InProcess(summaries, interrupt_after=0)
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, runs, max_attempts=1)
        with pytest.raises(KeyboardInterrupt):
            drive(store, plan, pool, max_attempts=1)
        assert {(row["status"], row["attempts"]) for row in store.rows()} == {("queued", 0)}
    assert pool.closed
