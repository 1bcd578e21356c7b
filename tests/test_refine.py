"""refine on a real short run: the bracket narrows, the replay is checked, reruns change nothing, bad input is
one line and exit 2."""
import json
import shutil

import numpy as np
import pytest
import torch

from innovwin.analysis import clocks
from innovwin.cli import main
from innovwin.config import RunConfig
from innovwin.store import rundir
from innovwin.train.driver import train
from innovwin.train.refine import check_request, inner_steps, refine

# a tiny GPT that learns 4x4 G=2 parity (tau_rule near step 50) and starts to copy its 16 samples (near step 80)
RUN = RunConfig(task="parity:h=4,w=4,g=2", n_train=16, depth=1, width=32, heads=2, batch=16, steps=120, first_eval=10,
                evals_per_decade=4, eval_samples=64, loss_samples=32, bootstrap=50, device="cpu", lr=3e-3, warmup=10)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "run"
    train(RUN, out, quiet=True)
    yield out
    torch.set_num_threads(threads)


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_inner_steps_are_log_spaced_inside_the_bracket():
    assert inner_steps(32, 56, 8) == [34, 36, 39, 41, 44, 46, 49, 53]
    assert inner_steps(10, 13, 8) == [11, 12]  # fewer integers than asked: all of them
    assert inner_steps(0, 10, 3) == [2, 3, 6]  # a left-censored bracket starts at step 1


def test_refine_narrows_the_bracket_fourfold_and_reruns_change_nothing(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    before = clocks.read_clock(json.loads((run / rundir.SUMMARY).read_text()), "tau_rule")
    summary = refine(run, "rule", 8)
    after = clocks.read_clock(summary, "tau_rule")
    (lo, hi), (new_lo, new_hi) = before.bracket, after.bracket
    assert lo <= new_lo < after.value <= new_hi <= hi
    assert (hi - lo) / (new_hi - new_lo) >= 4, (before.bracket, after.bracket)
    rows = rundir.read_metrics(run)
    assert [row["step"] for row in rows] == sorted(row["step"] for row in rows)
    assert sum(bool(row.get("refined")) for row in rows) == len(summary["refined"]["tau_rule"]) == 8
    assert json.loads((run / rundir.SUMMARY).read_text()) == json.loads(json.dumps(summary))
    metrics = (run / rundir.METRICS).read_bytes()
    assert clocks.read_clock(refine(run, "rule", 8), "tau_rule") == after  # done already: nothing to do
    assert (run / rundir.METRICS).read_bytes() == metrics
    # state.pt keeps the refined rows: the same train command again restores none of the older file
    assert clocks.read_clock(train(RUN, run, quiet=True), "tau_rule") == after
    assert (run / rundir.METRICS).read_bytes() == metrics


def test_a_replay_that_does_not_reproduce_the_run_writes_nothing(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    lo = clocks.read_clock(json.loads((run / rundir.SUMMARY).read_text()), "tau_rule").bracket[0]
    arrays = rundir.load_eval_samples(run, [int(lo)])
    rundir.save_eval_samples(run, int(lo), {name: values[0] for name, values in arrays.items()}
                             | {"keys": arrays["keys"][0] ^ np.uint64(1)})
    metrics = (run / rundir.METRICS).read_bytes()
    assert main(["refine", str(run), "--clock", "rule"]) == 2
    assert "does not reproduce its evaluation" in capsys.readouterr().err
    assert (run / rundir.METRICS).read_bytes() == metrics


@pytest.mark.parametrize("args, message", [
    (["--evals", "0"], "--evals must be >= 1"),
    (["--clock", "rule"], "has not finished"),
])
def test_bad_input_is_one_line_exit_2(finished, tmp_path, capsys, args, message):
    run = copy_of(finished, tmp_path)
    rows = rundir.read_metrics(run)
    (run / rundir.METRICS).write_text("".join(json.dumps(row) + "\n" for row in rows[:-1]))
    metrics = (run / rundir.METRICS).read_bytes()
    assert main(["refine", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert (run / rundir.METRICS).read_bytes() == metrics
    assert main(["refine", str(tmp_path / "missing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_refine_keeps_an_ensemble_members_place_in_its_summary(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    summary = json.loads((run / rundir.SUMMARY).read_text())
    rundir.write_json(run / rundir.SUMMARY, {**summary, "ensemble": {"size": 2, "index": 1}})
    assert refine(run, "mem", 2)["ensemble"] == {"size": 2, "index": 1}


def test_refine_refuses_a_clock_that_until_cannot_wait_for():
    with pytest.raises(ValueError, match="--clock must be one of rule, mem, both, got 'budget'"):
        check_request("budget", 8)


def test_a_damaged_refined_file_is_restored_and_its_note_counts_the_refined_rows(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    refine(run, "mem", 2)
    rows = rundir.read_metrics(run)
    (run / rundir.METRICS).write_text("".join(json.dumps(row) + "\n" for row in rows[:-1]))
    capsys.readouterr()
    train(RUN, run, quiet=True)
    assert f"its {len(rows)} rows up to step {RUN.steps} were restored" in capsys.readouterr().err


def test_refining_a_store_visits_a_run_once_though_rows_of_its_earlier_budgets_remain(tmp_path, monkeypatch, capsys):
    """Two rows keyed before the budget left the key (one run at steps 100 and 200) are one run: refined once."""
    import json

    import innovwin.train.refine as refine_module
    from innovwin.cli import main
    from innovwin.config import RunConfig
    from innovwin.store.runstore import RunStore

    unresolved = {"tau_rule": {"estimate": 50.0, "bracket": [40.0, 60.0], "interval": [30.0, 90.0], "censored": None},
                  "tau_mem": {"estimate": 70.0, "bracket": [60.0, 80.0], "interval": [50.0, 100.0], "censored": None}}
    with RunStore(tmp_path, write=True) as store:
        for steps, key in ((100, "a" * 16), (200, "b" * 16)):
            config = RunConfig(n_train=8, steps=steps).resolved().to_dict()
            store.db.execute("INSERT INTO runs (key, config, status, attempts, summary, cost, added) "
                             "VALUES (?, ?, 'done', 1, ?, 1.0, ?)", (key, json.dumps(config), json.dumps(unresolved),
                                                                     float(steps)))
    visited = []
    monkeypatch.setattr(refine_module, "refine", lambda run_dir, clock, evals: visited.append(run_dir) or unresolved)
    assert main(["refine", str(tmp_path)]) == 0
    assert len(visited) == 1 and "refined 1 unresolved run(s)" in capsys.readouterr().out
