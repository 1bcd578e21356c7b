"""`steps = "auto"` in a sweep spec: the order the runs go in, each run's budget predicted from the runs finished
before it (the cap without a fit), one extension of a censored run, the spec's refusals. A stand-in job function
measures tau_mem = 2 N (tau_rule = 20) when its budget reaches it and is censored at its budget otherwise."""
import math

import pytest
from test_jobs import InProcess

from innovwin.analysis.predict import SAFETY
from innovwin.config import RunConfig
from innovwin.store.runstore import RunStore
from innovwin.sweeps import budgets
from innovwin.sweeps.budgets import AutoBudget, auto_order
from innovwin.sweeps.driver import drive
from innovwin.sweeps.plan import plan_sweep
from innovwin.sweeps.spec import parse_spec

TASK = "parity:h=6,w=6,g=2"
CAP = 5000


def spec(**top):
    return parse_spec({"base": {"task": TASK, "steps": "auto"}, "grid": {"n_train": [64, 8, 16, 32, 128]},
                       "max_steps": CAP, **top})


def clock(value, last):
    if value > last:
        return {"estimate": None, "bracket": None, "interval": None, "censored": "right"}
    return {"estimate": value, "bracket": [0.9 * value, value], "interval": [0.85 * value, 1.1 * value],
            "censored": None}


class Measured:
    """A stand-in job function: tau_mem = 2 N, times ``jump`` at the largest N (a law that breaks)."""

    def __init__(self, jump=1.0):
        self.jump, self.budgets = jump, []

    def __call__(self, job):
        found = {}
        for run in job.runs:
            steps, n = run.config["steps"], run.config["n_train"]
            self.budgets.append((n, steps))
            mem = 2 * n * (self.jump if n == 128 else 1.0) * (1 + 0.03 * math.sin(n))
            reason = "budget" if mem > steps else "until"
            last = steps if reason == "budget" else int(mem * 1.2)
            found[run.key] = {"tau_rule": clock(20.0, last), "tau_mem": clock(mem, last), "final": {"step": last},
                              "stop": {"reason": reason, "step": last, "trained": last}}
        return found


def sweep(tmp_path, job_fn, auto_spec=None):
    auto_spec = auto_spec or spec()
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, auto_spec.expand(), max_attempts=1, auto=auto_spec.auto)
        drive(store, plan, InProcess(job_fn), max_attempts=1)
        return {row["config"]["n_train"]: row for row in store.rows()}


def test_the_runs_go_in_increasing_n_then_complexity_then_depth():
    runs = {f"k{i}": {"n_train": n, "task": task, "depth": depth} for i, (n, task, depth) in enumerate(
        [(32, "parity:h=4,w=4,g=4", 1), (16, TASK, 2), (32, TASK, 2), (32, TASK, 1), (16, TASK, 2)])}
    assert auto_order(runs, list(runs)) == ["k1", "k4", "k3", "k2", "k0"]


def test_a_plan_queues_auto_runs_in_that_order_with_the_cap(tmp_path):
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, spec().expand(), max_attempts=1, auto=spec().auto)
    assert [(job.runs[0].config["n_train"], job.runs[0].config["steps"]) for job in plan.jobs] == [
        (8, CAP), (16, CAP), (32, CAP), (64, CAP), (128, CAP)]


def test_without_a_fit_the_cap_is_the_budget_then_a_prediction_is(tmp_path):
    job_fn = Measured()
    rows = sweep(tmp_path, job_fn)
    assert job_fn.budgets[:4] == [(8, CAP), (16, CAP), (32, CAP), (64, CAP)]  # fewer than 4 runs: no fit
    n, steps = job_fn.budgets[4]
    assert n == 128 and 256 * SAFETY < steps < CAP  # tau_mem = 2 N's upper end times the safety factor
    assert rows[128]["config"]["steps"] == steps and rows[128]["status"] == "done"  # the budget given, recorded


def test_the_budget_is_the_predicted_upper_end_times_the_safety_factor(tmp_path):
    from innovwin.analysis.records import load_rows, run_records

    sweep(tmp_path, Measured(), parse_spec({"base": {"task": TASK, "steps": "auto"},
                                            "grid": {"n_train": [8, 16, 32, 64]}, "max_steps": CAP}))
    config = RunConfig(task=TASK, n_train=128).resolved().to_dict()
    steps, source = budgets.predicted_budget(config, run_records(load_rows(tmp_path)), AutoBudget(CAP, 2.0))
    upper = float(source.split("upper end ")[1].split()[0])
    assert steps == pytest.approx(2 * upper, abs=2) and "τ_mem" in source


def test_the_members_of_an_ensemble_share_the_largest_of_their_budgets(tmp_path):
    job_fn = Measured()
    wide = parse_spec({"base": {"task": TASK, "steps": "auto"}, "grid": {"n_train": [8, 16, 32, 64, 128, 256]},
                       "max_steps": CAP})
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, wide.expand(), max_attempts=1, ensemble=2, auto=wide.auto)
        drive(store, plan, InProcess(job_fn), max_attempts=1)
    assert [n for n, _ in job_fn.budgets] == [8, 16, 32, 64, 128, 256]
    last = {n: steps for n, steps in job_fn.budgets[4:]}
    assert last[128] == last[256] and 512 * SAFETY < last[256] < CAP  # 256's budget, the larger


def test_a_run_censored_at_its_budget_is_extended_once_to_the_cap(tmp_path):
    job_fn = Measured(jump=8.0)  # N = 128 learns 8 times later than the law says
    rows = sweep(tmp_path, job_fn, spec(safety=1.0))
    tried = [steps for n, steps in job_fn.budgets if n == 128]
    assert len(tried) == 2 and tried[0] < CAP and tried[1] == CAP
    assert rows[128]["config"]["steps"] == CAP and rows[128]["summary"]["stop"]["reason"] == "until"


def test_a_run_still_censored_at_the_cap_is_not_extended_again(tmp_path):
    job_fn = Measured(jump=40.0)  # tau_mem 10240 > the cap
    rows = sweep(tmp_path, job_fn, spec(safety=1.0))
    assert [steps for n, steps in job_fn.budgets if n == 128][1:] == [CAP]
    assert rows[128]["summary"]["stop"]["reason"] == "budget"


def test_a_rerun_keeps_each_run_s_budget_and_trains_nothing(tmp_path):
    sweep(tmp_path, Measured())
    again = Measured()
    rows = sweep(tmp_path, again)
    assert again.budgets == [] and {row["status"] for row in rows.values()} == {"done"}


@pytest.mark.parametrize("top, message", [
    ({"max_steps": None}, "needs max_steps = N"),
    ({"max_steps": 0}, "needs max_steps = N"),
    ({"safety": 0.5}, "safety must be a number >= 1"),
    ({"safety": "x"}, "safety must be a number >= 1")])
def test_bad_auto_specs_are_refused(top, message):
    values = {"base": {"task": TASK, "steps": "auto"}, "grid": {"n_train": [8, 16]}, "max_steps": 100, **top}
    values = {key: value for key, value in values.items() if value is not None}
    with pytest.raises(ValueError, match=message):
        parse_spec(values)


def test_a_cap_without_auto_is_refused():
    with pytest.raises(ValueError, match='max_steps goes with steps = "auto"'):
        parse_spec({"base": {"task": TASK, "steps": 100}, "grid": {"n_train": [8, 16]}, "max_steps": 100})


def test_a_tiny_real_auto_sweep_records_each_budget_given(tmp_path):
    """The real job function: two runs too few to fit train to the cap, which their config.json and store rows
    record as their steps."""
    from innovwin.store import rundir
    from innovwin.sweeps.jobs import train_job

    tiny = parse_spec({"base": {"task": TASK, "depth": 1, "width": 16, "heads": 2, "steps": "auto", "batch": 16,
                                "first_eval": 10, "evals_per_decade": 2, "eval_samples": 16, "loss_samples": 16,
                                "sampler_steps": 2, "bootstrap": 10, "snapshots": False, "device": "cpu"},
                       "grid": {"n_train": [16, 32]}, "max_steps": 40})
    with RunStore(tmp_path, write=True) as store:
        plan = plan_sweep(store, tiny.expand(), max_attempts=1, auto=tiny.auto)
        counts = drive(store, plan, InProcess(train_job), max_attempts=1)
        rows = store.rows()
    assert counts["done"] == 2
    assert [(row["config"]["steps"], rundir.read_config(row["run_dir"]).steps) for row in rows] == [(40, 40)] * 2


def test_a_dry_run_lists_auto_runs_in_their_order_with_the_budget_each_would_get(tmp_path, capsys):
    from innovwin.cli import main

    path = tmp_path / "spec.toml"
    path.write_text(f'max_steps = {CAP}\n[base]\ntask = "{TASK}"\nsteps = "auto"\n[grid]\nn_train = [32, 8, 16]\n')
    assert main(["sweep", str(path), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("  run")] == ["n_train=8", "n_train=16", "n_train=32"]
    assert sum(line.strip().startswith(f"steps auto: {CAP} now = the cap") for line in lines) == 3
    assert not (tmp_path / "store").exists()


def test_a_dry_run_shows_a_done_run_that_a_changed_budget_queues_again(tmp_path, capsys):
    """Asked more steps, a done run trains on: the dry run must not say "skip" for it."""
    from innovwin.cli import main
    from innovwin.sweeps.spec import load_spec

    path = tmp_path / "spec.toml"
    path.write_text(f'[base]\ntask = "{TASK}"\nsteps = 100\n[grid]\nn_train = [8, 16]\n')
    runs = load_spec(path).expand()
    with RunStore(tmp_path / "store", write=True) as store:
        store.add(runs)
        for key in runs:
            store.claim(key)
            store.finish(key, {"tau_rule": clock(20, 100), "tau_mem": clock(200, 100)})
    assert main(["sweep", str(path), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    assert "0 of 2 would run" in capsys.readouterr().out
    path.write_text(path.read_text().replace("steps = 100", "steps = 400"))
    assert main(["sweep", str(path), "--store", str(tmp_path / "store"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("  run ") and " again " in line for line in lines) == 2
    assert "2 of 2 would run" in lines[-1]
