"""The budget is not part of a run: a run extends from its state (and has the rows of a run trained straight), a
smaller budget is answered from its rows, ``until`` stops a run margin evaluations after its clocks are measured
(an ensemble member alone, the others going on unchanged), and runs keyed with their steps are still found."""

import pytest

from innovwin.config import RunConfig
from innovwin.store import rundir
from innovwin.store.runstore import RunStore
from innovwin.train import until
from innovwin.train.driver import default_out_dir, train
from innovwin.train.ensemble import train_ensemble

TINY = dict(task="parity:h=4,w=4,g=2", n_train=16, depth=1, width=32, heads=2, batch=16, steps=24, first_eval=4,
            evals_per_decade=4, eval_samples=32, sampler_steps=4, loss_samples=32, bootstrap=50, device="cpu")
# a tiny GPT whose clocks both close by step 71 (N = 8; N = 24 memorizes later), checked below
FAST = dict(TINY, steps=300, lr=1e-2, warmup=0, rule_threshold=0.5, eval_samples=64, margin=1)


def rows_of(run_dir):
    return [{k: v for k, v in row.items() if k != "eval_seconds"} for row in rundir.read_metrics(run_dir)]


def saved_step(run_dir):
    return rundir.load_state(run_dir, rundir.read_config(run_dir).key())["step"]


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """FAST with N = 8 trained to its whole budget: its rows, and its directory."""
    out = tmp_path_factory.mktemp("budget")
    train(RunConfig(**{**FAST, "n_train": 8}), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def until_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("until")
    return out, train(RunConfig(**{**FAST, "n_train": 8, "until": "both"}), out, quiet=True)


def expected_stop(config, run_dir):
    """The step ``margin`` evaluations after the first at which both clocks are measured, from a run's rows."""
    rows = rundir.read_metrics(run_dir)
    samples = rundir.load_eval_samples(run_dir, [row["step"] for row in rows])
    closed = next(i for i in range(len(rows))
                  if until.measured(config, rows[:i + 1], samples["valid"][:i + 1], samples["copy"][:i + 1]))
    return rows[closed + config.margin]["step"]


# --- the budget --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt", "dit"])
def test_a_run_extended_from_its_state_has_the_rows_of_a_run_trained_straight(tmp_path, arch):
    config = RunConfig(**{**TINY, "ema": 0.9, "arch": arch})
    train(config.override(steps=30), tmp_path / "extended", quiet=True)
    train(config.override(steps=120), tmp_path / "extended", quiet=True)
    train(config.override(steps=120), tmp_path / "straight", quiet=True)
    straight = {row["step"]: row for row in rows_of(tmp_path / "straight")}
    extended = rows_of(tmp_path / "extended")
    assert [row for row in extended if row["step"] in straight] == list(straight.values())
    assert [row["step"] for row in extended if row["step"] not in straight] == [30]  # the first budget's last row


def test_a_smaller_budget_is_answered_from_the_rows_without_training(tmp_path):
    config = RunConfig(**TINY)
    train(config.override(steps=60), tmp_path, quiet=True)
    before = (tmp_path / rundir.METRICS).read_bytes()
    summary = train(config.override(steps=30), tmp_path, quiet=True)
    assert (tmp_path / rundir.METRICS).read_bytes() == before and saved_step(tmp_path) == 60
    answered = max(row["step"] for row in rundir.read_metrics(tmp_path) if row["step"] <= 30)
    assert answered < 30  # the test means something: no evaluation at the budget asked
    assert summary["stop"] == {"reason": "budget", "step": answered, "trained": 60}
    assert summary["final"]["step"] == answered


def test_a_run_answered_for_a_smaller_budget_reports_its_rows_up_to_its_stop(tmp_path):
    from innovwin.analysis.records import load_rows, run_metrics, run_records

    config = RunConfig(**TINY)
    train(config.override(steps=60), tmp_path, quiet=True)
    summary = train(config.override(steps=30), tmp_path, quiet=True)
    (record,) = run_records(load_rows(tmp_path))
    assert [row["step"] for row in run_metrics(record)][-1] == summary["stop"]["step"]


def test_a_run_answered_from_its_rows_trains_on_when_asked_more(tmp_path):
    config = RunConfig(**TINY)
    train(config.override(steps=60), tmp_path, quiet=True)
    train(config.override(steps=30), tmp_path, quiet=True)
    assert train(config.override(steps=90), tmp_path, quiet=True)["stop"] == {"reason": "budget", "step": 90,
                                                                                "trained": 90}


# --- until -------------------------------------------------------------------------------------------------------
def test_until_stops_margin_evaluations_after_the_clocks_are_measured(budget_run, until_run):
    out, summary = until_run
    config = RunConfig(**{**FAST, "n_train": 8, "until": "both"}).resolved()  # the run's bootstrap seed
    stop = expected_stop(config, budget_run)
    assert stop < FAST["steps"]  # the test means something: the clocks close before the budget
    assert summary["stop"] == {"reason": "until", "step": stop, "trained": stop}


def test_a_run_stopped_by_until_has_the_rows_of_its_budget_run(budget_run, until_run):
    out, summary = until_run
    assert rows_of(out) == [row for row in rows_of(budget_run) if row["step"] <= summary["stop"]["step"]]


def test_a_run_stopped_by_until_is_not_trained_further_when_asked_again(until_run):
    out, summary = until_run
    again = train(RunConfig(**{**FAST, "n_train": 8, "until": "both"}), out, quiet=True)
    assert again["stop"] == summary["stop"] and saved_step(out) == summary["stop"]["step"]


def test_a_rerun_of_a_run_stopped_by_until_never_deletes_its_summary(until_run, monkeypatch):
    """It trains nothing, so the summary it would drop stays until the rerun writes it again (a failed write of
    the log leaves the finished result where it was)."""
    import innovwin.train.lifecycle as lifecycle

    out, summary = until_run
    monkeypatch.setattr(lifecycle.RunLife, "finish", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        train(RunConfig(**{**FAST, "n_train": 8, "until": "both"}), out, quiet=True)
    assert rundir.read_summary(out)["stop"] == summary["stop"]


def test_refine_works_inside_the_stop_of_a_run_stopped_by_until(until_run, tmp_path):
    import shutil

    from innovwin.train.refine import refine

    out, summary = until_run
    copy = shutil.copytree(out, tmp_path / "copy")
    refined = refine(copy, "mem", evals=2)
    assert refined["stop"] == summary["stop"]
    assert max(row["step"] for row in rundir.read_metrics(copy)) == summary["stop"]["step"]


def test_a_run_that_reaches_its_budget_first_says_so(tmp_path):
    summary = train(RunConfig(**{**FAST, "n_train": 8, "until": "both", "steps": 30}), tmp_path, quiet=True)
    assert summary["stop"] == {"reason": "budget", "step": 30, "trained": 30}
    assert "before until = both was met" in until.describe(summary)


def test_an_ensemble_member_that_stops_leaves_and_the_others_rows_do_not_change(tmp_path):
    """Member 0 (N = 8) stops at its clocks; member 1 (N = 24) goes on alone in the stack, as it would have."""
    configs = [RunConfig(**{**FAST, "n_train": 8, "until": "both"}), RunConfig(**{**FAST, "n_train": 24, "seed": 1})]
    stopping = train_ensemble(configs, [tmp_path / "s0", tmp_path / "s1"], quiet=True)
    full = [config.override(until="budget") for config in configs]
    train_ensemble(full, [tmp_path / "f0", tmp_path / "f1"], quiet=True)
    stop = stopping[0]["stop"]["step"]
    assert stopping[0]["stop"]["reason"] == "until" and stop < stopping[1]["stop"]["step"] == FAST["steps"]
    assert rows_of(tmp_path / "s0") == [row for row in rows_of(tmp_path / "f0") if row["step"] <= stop]
    assert rows_of(tmp_path / "s1") == rows_of(tmp_path / "f1")


# --- runs keyed with their steps ---------------------------------------------------------------------------------
def keyed_with_steps(run_dir):
    """Make a finished run directory look as innovwin wrote it before steps left the key."""
    config = rundir.read_config(run_dir)
    state = rundir.load_state(run_dir, config.key())
    rundir.save_torch(run_dir / rundir.STATE, {**state, "key": config.earlier_key()})
    rundir.write_json(run_dir / rundir.CONFIG, {**config.to_nested(), "key": config.earlier_key()})
    return config


def test_a_state_saved_under_the_earlier_key_resumes_and_is_rekeyed(tmp_path):
    config = RunConfig(**TINY)
    train(config, tmp_path, quiet=True)
    keyed_with_steps(tmp_path)
    train(config.override(steps=40), tmp_path, quiet=True)
    assert saved_step(tmp_path) == 40
    assert rundir.load_state(tmp_path, config.key())["key"] == config.key()


def test_a_run_directory_named_by_the_earlier_key_is_found_by_the_same_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = RunConfig(**TINY).resolved()
    slug = config.task.replace(":", "-").replace(",", "-").replace("=", "")
    old = tmp_path / "runs" / f"{config.arch}-{slug}-N{config.n_train}-{config.earlier_key()[:8]}"
    train(config, old, quiet=True)
    keyed_with_steps(old)
    assert default_out_dir(config).resolve() == old.resolve()
    assert default_out_dir(config.override(steps=50)).resolve() == old.resolve()  # any budget finds the run


def test_a_store_row_keyed_with_steps_is_found_with_its_directory(tmp_path):
    config = RunConfig(**TINY).resolved()
    with RunStore(tmp_path, write=True) as store:
        store.add({config.earlier_key(): config.to_dict()})
        store.finish(config.earlier_key(), {"tau_rule": None})
        (tmp_path / "runs" / f"n_train16-{config.earlier_key()}").mkdir(parents=True)
        assert store.add({config.key(): config.to_dict()}) == 0
        row = store.get(config.key())
    assert row["status"] == "done" and row["run_dir"] == str(tmp_path / "runs" / f"n_train16-{config.key()}")


def test_a_done_store_row_asked_for_more_steps_is_queued_again(tmp_path):
    config = RunConfig(**TINY).resolved()
    longer = config.override(steps=48)
    with RunStore(tmp_path, write=True) as store:
        store.add({config.key(): config.to_dict()})
        store.finish(config.key(), {"tau_rule": None})
        store.add({longer.key(): longer.to_dict()})
        row = store.get(config.key())
    assert (row["status"], row["config"]["steps"]) == ("queued", 48)


def test_a_store_row_recorded_before_until_is_not_queued_again(tmp_path):
    config = RunConfig(**TINY).resolved()
    old = {name: value for name, value in config.to_dict().items() if name not in ("until", "margin")}
    with RunStore(tmp_path, write=True) as store:
        store.add({config.key(): old})
        store.finish(config.key(), {"tau_rule": None})
        store.add({config.key(): config.to_dict()})
        assert store.get(config.key())["status"] == "done"
