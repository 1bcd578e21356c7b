"""The training driver: a real (tiny) run of each architecture, exact resume, and every bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from innovwin import cli
from innovwin.config import RunConfig
from innovwin.store import provenance, rundir, runlog
from innovwin.train import driver as train_module
from innovwin.train.driver import eval_steps, train

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


@pytest.mark.parametrize("arch", ["dit", "gpt"])
def test_a_short_run_writes_every_file(tmp_path, arch):
    summary = train(tiny(arch=arch), tmp_path, quiet=True)
    rows = rundir.read_metrics(tmp_path)
    assert [row["step"] for row in rows] == eval_steps(tiny())
    for row in rows:
        assert set(row) == ROW_KEYS
        assert 0 <= row["valid_frac"] <= 1 and row["n_samples"] == 32
        assert row["chance_copy"] == 16 / 256
        assert (row["ratio_copy_frac"] is None) == (arch == "gpt")
        assert (row["copy_prob"] is None) == (row["heldout_copy_prob"] is None) == (arch != "gpt")
        assert 0 <= row["heldout_hit_frac"] <= 1
        assert row["novel_valid_frac"] <= row["valid_frac"]
    assert SUMMARY_KEYS <= set(summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["final"] == rows[-1] and summary["timing"]["steps_per_s"] > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["key"] == tiny(arch=arch).key() and config["task"]["spec"] == "parity:h=4,w=4,g=2"
    assert rundir.snapshot_steps(tmp_path) == eval_steps(tiny())
    task, model = rundir.load_snapshot(tmp_path, 24)
    assert task.spec == "parity:h=4,w=4,g=2" 
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["step"] == 24 and torch.equal(state["model"]["blocks.0.mlp.0.weight"],
                                               model.state_dict()["blocks.0.mlp.0.weight"])
    samples = rundir.load_eval_samples(tmp_path, eval_steps(tiny()))
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


def test_a_run_keeps_its_provenance_log_loss_and_progress(uninterrupted_dir):
    session, = json.loads((uninterrupted_dir / provenance.PROVENANCE).read_text())["sessions"]
    assert session["torch"] == torch.__version__ and session["device"] == "cpu" and session["host"]
    assert session["from_step"] == 0 and session["to_step"] == 24 and session["started"] <= session["ended"]
    assert session["innovwin"] and (session["git"] is None or len(session["git"]["commit"]) == 40)
    losses = runlog.read_loss(uninterrupted_dir)
    assert [row["step"] for row in losses] == [10, 20] and all(row["loss"] > 0 for row in losses)
    log = (uninterrupted_dir / runlog.LOG).read_text()
    assert "start " in log and "step 24: train loss" in log and "tau_rule" in log
    progress = runlog.read_progress(uninterrupted_dir)
    assert progress["state"] == "done" and progress["step"] == progress["steps"] == 24


def test_killed_between_row_and_state_resumes_identically(tmp_path, monkeypatch, capsys, uninterrupted,
                                                          uninterrupted_dir):
    real_save = rundir.save_torch
    states = []

    def dies_on_third_state(path, obj):
        if path.name == rundir.STATE:
            if len(states) == 2:
                raise Killed  # the row for this step is already in metrics.jsonl, the state is not saved
            states.append(obj["step"])
        real_save(path, obj)

    monkeypatch.setattr(rundir, "save_torch", dies_on_third_state)
    with pytest.raises(Killed):
        train(tiny(ema=0.9), tmp_path, quiet=True)
    assert len(rundir.read_metrics(tmp_path)) == 3  # one row past the saved state
    monkeypatch.setattr(rundir, "save_torch", real_save)
    train(tiny(ema=0.9), tmp_path, quiet=False)
    assert without_wall_clock(rundir.read_metrics(tmp_path)) == uninterrupted
    assert runlog.read_loss(tmp_path) == runlog.read_loss(uninterrupted_dir)
    assert f"resume {tmp_path} from step {states[-1]} of 24" in capsys.readouterr().out
    sessions = json.loads((tmp_path / provenance.PROVENANCE).read_text())["sessions"]
    assert [(s["from_step"], s["to_step"]) for s in sessions] == [(0, None), (states[-1], 24)]


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
    real_step = train_module.Trainer.train_step

    def interrupted_at_step_9(self):
        real_step(self)
        if self.step == 9:
            os.kill(os.getpid(), signal.SIGINT)  # the loop honours it before step 10

    monkeypatch.setattr(train_module.Trainer, "train_step", interrupted_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(ema=0.9), tmp_path, quiet=True)
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 9
    monkeypatch.setattr(train_module.Trainer, "train_step", real_step)
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


def test_a_directory_of_other_files_is_refused_unless_forced(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, err, _ = run_cli(capsys, *TINY_FLAGS, "--out", str(tmp_path))
    assert code == 2 and "not a run directory" in err
    code, _, _ = run_cli(capsys, *TINY_FLAGS, "--out", str(tmp_path), "--force")
    assert code == 0 and (tmp_path / "notes.txt").read_text() == "mine"  # --force removes only run files
    assert (tmp_path / "summary.json").exists()


def test_rerunning_a_finished_run_changes_nothing(capsys, finished_run):
    rows = rundir.read_metrics(finished_run)
    code, _, out = run_cli(capsys, *TINY_FLAGS, "--out", str(finished_run))
    assert code == 0 and rundir.read_metrics(finished_run) == rows
    assert out.startswith("tau_rule") and str(finished_run) in out


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
