"""The training driver on real (tiny) runs of each architecture: the files a run writes, one behaviour a test;
exact resume after a kill or a stop; every bad input; the console output, pinned in one snapshot."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from innovwin import cli
from innovwin.analysis import clocks
from innovwin.config import RunConfig
from innovwin.store import provenance, rundir, runlog
from innovwin.train import until
from innovwin.train.driver import eval_steps, train
from innovwin.train.members import Trainer

ROW_KEYS = {"step", "train_loss", "valid_frac", "constraint_frac", "copy_frac", "chance_copy", "near_copy_frac",
            "ratio_copy_frac", "novel_valid_frac", "unique_frac", "mean_nn_dist", "heldout_loss", "train_eval_loss",
            "eval_seconds", "n_samples", "heldout_hit_frac", "copy_prob", "heldout_copy_prob"}
SUMMARY_KEYS = {"tau_rule", "tau_mem", "window", "window_state", "window_reason", "final", "timing", "config"}
# 4x4 grids, 2^8 valid: small enough that a tiny model trains in a second.
TINY = dict(task="parity:h=4,w=4,g=2", n_train=16, depth=1, width=32, heads=2, batch=16, steps=24, first_eval=4,
            evals_per_decade=4, eval_samples=32, sampler_steps=4, loss_samples=32, bootstrap=50, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and then do not fight other processes for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes) -> RunConfig:
    return RunConfig(**{**TINY, **changes})


def test_eval_steps_are_log_spaced_distinct_and_end_at_the_last_step():
    steps = eval_steps(RunConfig(first_eval=10, evals_per_decade=4, steps=1500))
    assert steps == [10, 18, 32, 56, 100, 178, 316, 562, 1000, 1500]
    assert eval_steps(RunConfig(first_eval=1, evals_per_decade=8, steps=10)) == [1, 2, 3, 4, 6, 7, 10]
    assert eval_steps(RunConfig(first_eval=50, steps=20)) == [20]


@pytest.fixture(scope="module", params=["dit", "gpt"])
def short_run(request, tmp_path_factory, one_thread):
    """A finished tiny run of each architecture: (its directory, the summary train returned)."""
    out = tmp_path_factory.mktemp(f"short-{request.param}")
    return out, train(tiny(arch=request.param), out, quiet=True)


def test_rows_are_written_at_the_evaluation_steps(short_run):
    out, _ = short_run
    assert [row["step"] for row in rundir.read_metrics(out)] == eval_steps(tiny())


def test_a_row_holds_every_metric(short_run):
    out, _ = short_run
    assert [set(row) for row in rundir.read_metrics(out)] == [ROW_KEYS] * len(eval_steps(tiny()))


def test_row_rates_are_fractions_of_the_evaluation_samples(short_run):
    out, _ = short_run
    for row in rundir.read_metrics(out):
        assert row["n_samples"] == 32
        assert 0 <= row["novel_valid_frac"] <= row["valid_frac"] <= 1
        assert 0 <= row["heldout_hit_frac"] <= 1


def test_the_chance_copy_rate_is_the_training_share_of_the_valid_set(short_run):
    out, _ = short_run
    assert {row["chance_copy"] for row in rundir.read_metrics(out)} == {16 / 256}


def test_the_ratio_test_is_the_dits_and_the_copy_probability_the_gpts(short_run):
    out, summary = short_run
    arch = summary["config"]["arch"]
    for row in rundir.read_metrics(out):
        assert (row["ratio_copy_frac"] is None) == (arch == "gpt")
        assert (row["copy_prob"] is None) == (row["heldout_copy_prob"] is None) == (arch != "gpt")


def test_summary_json_is_the_returned_summary(short_run):
    out, summary = short_run
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_the_summary_has_the_clocks_the_last_row_and_a_rate(short_run):
    out, summary = short_run
    assert SUMMARY_KEYS <= set(summary)
    assert summary["final"] == rundir.read_metrics(out)[-1]
    assert summary["timing"]["steps_per_s"] > 0 and "ensemble" not in summary


def test_config_json_names_the_run_by_key_and_task(short_run):
    out, summary = short_run
    config = json.loads((out / "config.json").read_text())
    assert config["key"] == tiny(arch=summary["config"]["arch"]).key()
    assert config["task"]["spec"] == "parity:h=4,w=4,g=2"


def test_a_snapshot_of_each_evaluation_loads_with_its_task(short_run):
    out, _ = short_run
    assert rundir.snapshot_steps(out) == eval_steps(tiny())
    task, _ = rundir.load_snapshot(out, 24)
    assert task.spec == "parity:h=4,w=4,g=2"


def test_the_state_holds_the_last_step_and_the_evaluated_weights(short_run):
    out, _ = short_run
    state = torch.load(out / "state.pt", weights_only=True)
    _, model = rundir.load_snapshot(out, 24)
    assert state["step"] == 24 and not (out / rundir.STATE_NEXT).exists()
    assert all(torch.equal(state["model"][name], weights) for name, weights in model.state_dict().items())


def test_the_per_sample_arrays_average_to_the_rows(short_run):
    out, _ = short_run
    rows = rundir.read_metrics(out)
    samples = rundir.load_eval_samples(out, eval_steps(tiny()))
    assert samples["valid"].shape == (len(rows), 32)
    np.testing.assert_allclose(samples["valid"].mean(1), [row["valid_frac"] for row in rows])
    np.testing.assert_allclose(samples["copy"].mean(1), [row["copy_frac"] for row in rows])


def without_wall_clock(rows):
    return [{k: v for k, v in row.items() if k != "eval_seconds"} for row in rows]


class Killed(Exception):
    """Stands in for SIGKILL: the process stops at this instant, with nothing cleaned up."""


@pytest.fixture(scope="module")
def uninterrupted_dir(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(tiny(ema=0.9), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_dir):
    return without_wall_clock(rundir.read_metrics(uninterrupted_dir))


def log_lines(run_dir) -> list[str]:
    """log.txt's lines less their time stamps."""
    return [line.split("  ", 1)[1] for line in (run_dir / runlog.LOG).read_text().splitlines()]


def test_a_run_records_its_session_in_provenance(uninterrupted_dir):
    session, = json.loads((uninterrupted_dir / provenance.PROVENANCE).read_text())["sessions"]
    assert session["torch"] == torch.__version__ and session["device"] == "cpu" and session["host"]
    assert session["from_step"] == 0 and session["to_step"] == 24 and session["started"] <= session["ended"]
    assert session["innovwin"] and (session["git"] is None or len(session["git"]["commit"]) == 40)


def test_loss_jsonl_has_the_mean_loss_of_every_ten_steps(uninterrupted_dir):
    losses = runlog.read_loss(uninterrupted_dir)
    assert [row["step"] for row in losses] == [10, 20] and all(row["loss"] > 0 for row in losses)


def test_log_txt_has_the_start_each_evaluation_and_the_clocks(uninterrupted_dir):
    lines = log_lines(uninterrupted_dir)
    steps = eval_steps(tiny())
    assert lines[0].startswith(f"start {uninterrupted_dir}: ")
    assert [line.split(":")[0] for line in lines[1:1 + len(steps)]] == [f"step {step}" for step in steps]
    summary = rundir.read_json(uninterrupted_dir / rundir.SUMMARY)
    assert lines[1 + len(steps):] == [*clocks.describe(summary).splitlines(), until.describe(summary)]


def test_progress_json_ends_done_at_the_last_step(uninterrupted_dir):
    progress = runlog.read_progress(uninterrupted_dir)
    assert (progress["state"], progress["step"], progress["steps"], progress["eval_step"]) == ("done", 24, 24, 24)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, one_thread):
    """A run killed after its third row, before that row's state was saved, then the same train again: (its
    directory, the step its saved state was at)."""
    out = tmp_path_factory.mktemp("killed")
    real_save = rundir.save_torch
    states = []

    def dies_on_third_state(path, obj):
        if path.name == rundir.STATE_NEXT:
            if len(states) == 2:
                raise Killed  # the row for this step is already in metrics.jsonl, the state is not saved
            states.append(obj["step"])
        real_save(path, obj)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rundir, "save_torch", dies_on_third_state)
        with pytest.raises(Killed):
            train(tiny(ema=0.9), out, quiet=True)
    assert len(rundir.read_metrics(out)) == 3  # one row past the saved state
    train(tiny(ema=0.9), out, quiet=True)
    return out, states[-1]


def test_killed_between_row_and_state_resumes_identically(killed_and_resumed, uninterrupted):
    out, _ = killed_and_resumed
    assert without_wall_clock(rundir.read_metrics(out)) == uninterrupted


def test_a_resumed_run_writes_the_same_loss_log(killed_and_resumed, uninterrupted_dir):
    out, _ = killed_and_resumed
    assert runlog.read_loss(out) == runlog.read_loss(uninterrupted_dir)


def test_a_resumed_run_records_a_second_session_from_its_state(killed_and_resumed):
    out, saved_step = killed_and_resumed
    sessions = json.loads((out / provenance.PROVENANCE).read_text())["sessions"]
    assert [(s["from_step"], s["to_step"]) for s in sessions] == [(0, None), (saved_step, 24)]


def test_killed_while_moving_its_state_into_place_resumes_from_that_state(tmp_path, monkeypatch, uninterrupted):
    """The state is written whole beside state.pt, then moved: a kill between leaves it to be moved on resume."""
    real_replace = rundir.os.replace
    moves = []

    def dies_on_second_move(src, dst):
        if str(src).endswith(rundir.STATE_NEXT):
            moves.append(src)
            if len(moves) == 2:
                raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(rundir.os, "replace", dies_on_second_move)
    with pytest.raises(Killed):
        train(tiny(ema=0.9), tmp_path, quiet=True)
    monkeypatch.undo()
    assert (tmp_path / rundir.STATE_NEXT).exists()
    train(tiny(ema=0.9), tmp_path, quiet=True)
    assert without_wall_clock(rundir.read_metrics(tmp_path)) == uninterrupted
    assert not (tmp_path / rundir.STATE_NEXT).exists()


def test_killed_while_starting_leaves_a_directory_the_same_command_resumes(tmp_path, monkeypatch, uninterrupted):
    """A kill just after the run directory's first file: it must be one that names the run (config.json)."""
    real_mkdir = type(tmp_path).mkdir

    def dies_on_first_folder(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if path.parent == tmp_path:
            raise Killed  # the first folder inside the run directory exists, nothing after it does

    monkeypatch.setattr(type(tmp_path), "mkdir", dies_on_first_folder)
    with pytest.raises(Killed):
        train(tiny(ema=0.9), tmp_path, quiet=True)
    monkeypatch.setattr(type(tmp_path), "mkdir", real_mkdir)
    train(tiny(ema=0.9), tmp_path, quiet=True)
    assert without_wall_clock(rundir.read_metrics(tmp_path)) == uninterrupted


def test_sigint_between_evaluations_saves_and_resumes_identically(tmp_path, monkeypatch, uninterrupted):
    real_step = Trainer.train_step

    def interrupted_at_step_9(self):
        real_step(self)
        if self.step == 9:
            os.kill(os.getpid(), signal.SIGINT)  # the loop honours it before step 10

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(ema=0.9), tmp_path, quiet=True)
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 9
    monkeypatch.setattr(Trainer, "train_step", real_step)
    train(tiny(ema=0.9), tmp_path, quiet=True)
    assert without_wall_clock(rundir.read_metrics(tmp_path)) == uninterrupted


def run_cli(capsys, *args):
    code = cli.main(["train", "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.err, captured.out


def snapshot_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("finished")
    train(tiny(steps=8), out, quiet=True)
    return out


TINY_FLAGS = ["--task", "parity:h=4,w=4,g=2", "--n-train", "16", "--depth", "1", "--width", "32", "--heads", "2",
              "--batch", "16", "--steps", "8", "--first-eval", "4", "--evals-per-decade", "4", "--eval-samples", "32",
              "--set", "sampler_steps=4", "--set", "loss_samples=32", "--set", "bootstrap=50", "--device", "cpu"]


@pytest.mark.parametrize("flags, message", [
    (["--task", "chess:n=8"], "unknown task 'chess'"),
    (["--arch", "rnn"], "arch must be one of"),
    (["--n-train", "0"], "n_train must be > 0"),
    (["--n-train", "300"], "larger than the valid set"),
    (["--steps", "0"], "steps must be > 0"),
    (["--eval-samples", "0"], "eval_samples must be > 0"),
    (["--set", "n_trian=8"], "unknown config key 'n_trian' (did you mean 'n_train'?)"),
    (["--config", "/nonexistent/run.toml"], "cannot read config"),
    (["--lr", "fast"], "lr expects float"),
    (["--width", "64"], "holds a different run"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_overwritten(capsys, finished_run, flags, message):
    before = snapshot_of(finished_run)
    code, err, _ = run_cli(capsys, *TINY_FLAGS, "--out", str(finished_run), *flags)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert snapshot_of(finished_run) == before


def test_corrupt_state_is_refused_and_kept(capsys, tmp_path, finished_run):
    for path in finished_run.iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "state.pt").write_bytes(b"not a torch file")
    before = snapshot_of(tmp_path)
    code, err, _ = run_cli(capsys, *TINY_FLAGS, "--out", str(tmp_path))
    assert code == 2 and "corrupt" in err and err.count("\n") == 1
    assert snapshot_of(tmp_path) == before


def test_a_directory_of_other_files_is_refused(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, err, _ = run_cli(capsys, *TINY_FLAGS, "--out", str(tmp_path))
    assert code == 2 and "not a run directory" in err and not (tmp_path / "config.json").exists()


def test_force_trains_beside_other_files_and_keeps_them(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, _ = run_cli(capsys, *TINY_FLAGS, "--out", str(tmp_path), "--force")
    assert code == 0 and (tmp_path / "notes.txt").read_text() == "mine"  # --force removes only run files
    assert [row["step"] for row in rundir.read_metrics(tmp_path)] == eval_steps(tiny(steps=8))


# what every session writes anew: its provenance, its log lines, its live progress, the summary's timing
WRITTEN_ON_EVERY_SESSION = {provenance.PROVENANCE, runlog.LOG, runlog.PROGRESS, rundir.SUMMARY, rundir.LOCK}


def test_rerunning_a_finished_run_changes_nothing_it_measured(capsys, finished_run):
    before, summary = snapshot_of(finished_run), rundir.read_json(finished_run / rundir.SUMMARY)
    code, _, _ = run_cli(capsys, *TINY_FLAGS, "--out", str(finished_run))
    after = snapshot_of(finished_run)
    changed = {str(path) for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert code == 0 and changed <= WRITTEN_ON_EVERY_SESSION
    assert {**rundir.read_json(finished_run / rundir.SUMMARY), "timing": None} == {**summary, "timing": None}


def test_sigkill_and_the_same_command_again_give_the_uninterrupted_metrics(capsys, tmp_path):
    flags = [*TINY_FLAGS, "--steps", "600"]
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    process = subprocess.Popen([sys.executable, "-m", "innovwin", "train", "--quiet", *flags, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(rundir.read_metrics(killed)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert not (killed / "summary.json").exists() and len(rundir.read_metrics(killed)) >= 3
    assert (killed / "state.pt").exists()  # so the second command resumes rather than starts over
    assert run_cli(capsys, *flags, "--out", str(killed))[0] == 0
    assert run_cli(capsys, *flags, "--out", str(reference))[0] == 0
    assert without_wall_clock(rundir.read_metrics(killed)) == without_wall_clock(rundir.read_metrics(reference))


# what a run prints when it ends (the clocks, where the run is, its files, what to do next)
ENDING = """\
tau_rule  > 8
tau_mem   > 8
window    unresolved
          neither clock reached by step 8
stopped   at step 8 of 8: the budget
run       RUN_DIR  (S s, R steps/s, E% in evaluation)
files     metrics.jsonl (one row per evaluation), summary.json (clocks, window), loss.jsonl, log.txt, \
provenance.json, snapshots/ (weights), evals/ (per-sample arrays)
next      innovwin report RUN_DIR --out REPORT_DIR
"""
CONSOLE = ("start RUN_DIR: gpt on parity:h=4,w=4,g=2, N = 16, 8 steps, on cpu\n" + ENDING
           + "resume RUN_DIR from step 8 of 8 (its saved training state)\n" + ENDING)


def test_the_console_output_of_a_run_and_its_rerun(capsys, tmp_path):
    """What `innovwin train` prints (stdout; the progress bar is on stderr), starting a run and rerunning it; the
    directory and the times are placeholders."""
    for _ in range(2):
        assert cli.main(["train", *TINY_FLAGS, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out.replace(str(tmp_path / "run"), "RUN_DIR")
    assert re.sub(r"\(\d+ s, \d+ steps/s, \d+% in evaluation\)", "(S s, R steps/s, E% in evaluation)", out) == CONSOLE
