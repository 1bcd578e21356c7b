"""The sweep's live view: an ETA scheduled from measured step rates that counts down, lines per run."""
import io
import time

import pytest

from innovwin.store.runlog import read_progress, write_progress
from innovwin.sweeps.progress import SweepProgress, schedule_eta


def test_schedule_puts_queued_runs_on_the_first_free_worker():
    assert schedule_eta([10.0, 30.0], [25.0, 5.0], capacity=2) == 35.0  # 25 after 10, then 5 after 30
    assert schedule_eta([], [10.0, 10.0, 10.0], capacity=2) == 20.0
    assert schedule_eta([5.0], [], capacity=4) == 5.0
    assert schedule_eta([], [], capacity=1) == 0.0


class Terminal(io.StringIO):
    def isatty(self):
        return True


def running(run_dir, step, steps=1000, rate=10.0, updated=None, **extra):
    write_progress(run_dir, {"step": step, "steps": steps, "steps_per_s": rate, "state": "running", "from_step": 0,
                             "valid_frac": extra.get("valid"), "copy_frac": extra.get("copy"),
                             "eval_step": step, "updated": time.time() if updated is None else updated})


def test_eta_comes_from_step_rates_and_counts_down(tmp_path):
    costs = {"a": 1.0, "b": 1.0, "c": 2.0}
    view = SweepProgress(io.StringIO(), costs, capacity=2, names={"a": "n_train=64", "b": "n_train=128"})
    for key in ("a", "b"):
        (tmp_path / key).mkdir()
        view.submitted(key, str(tmp_path / key))
    counts = {"done": 0, "running": 2, "queued": 1, "failed": 0}
    now = time.time()
    running(tmp_path / "a", 500, updated=now)  # 50 s left; 100 s for its 1000 steps: 100 s per unit cost
    running(tmp_path / "b", 900, updated=now)  # 10 s left
    progress = {key: read_progress(tmp_path / key) for key in ("a", "b")}
    eta, left = view.eta(["c"], progress)
    assert left["a"] == pytest.approx(50, abs=1) and left["b"] == pytest.approx(10, abs=1)
    assert eta == pytest.approx(10 + 200, abs=2)  # c (cost 2: 200 s) starts when b ends
    progress["b"]["updated"] -= 8  # eight seconds later, with no new file: the time left has gone down
    assert view.eta(["c"], progress)[1]["b"] == pytest.approx(2, abs=1)
    view.show(counts, ["c"])
    text = view.stream.getvalue()
    assert "n_train=64: step 500/1000 · 10.0 steps/s" in text and "ETA 3m" in text


def test_no_rate_yet_is_an_unknown_eta_not_a_guess(tmp_path):
    view = SweepProgress(io.StringIO(), {"a": 1.0}, capacity=1, names={})
    (tmp_path / "a").mkdir()
    view.submitted("a", str(tmp_path / "a"))
    assert view.eta([], {})[0] is None


def test_a_log_gets_one_line_per_change_and_a_terminal_a_block_redrawn(tmp_path):
    (tmp_path / "a").mkdir()
    log = SweepProgress(io.StringIO(), {"a": 1.0}, capacity=1, names={"a": "seed=0"})
    log.submitted("a", str(tmp_path / "a"))
    counts = {"done": 0, "running": 1, "queued": 0, "failed": 0}
    for step in (10, 20, 30, 300, 310):
        running(tmp_path / "a", step, valid=0.5, copy=0.0)
        log.show(counts, [])
    lines = log.stream.getvalue().splitlines()
    assert sum("seed=0: step" in line for line in lines) == 2  # quarter 0 (step 10) and quarter 1 (step 300)
    assert sum("running ·" in line for line in lines) == 2  # after each of those: the counts did not change
    log.finished("a", "done", {"tau_rule": 120.0, "tau_rule_ci": [100.0, 150.0], "tau_mem": None,
                               "tau_mem_censored": True, "tau_mem_text": "> 1000", "window_state": "open_at_end",
                               "window": None, "final": {"step": 1000}}, 12.0)
    assert log.stream.getvalue().splitlines()[-1] == ("[sweep] done seed=0 in 12s: τ_rule 120 [100, 150] · "
                                                      "τ_mem > 1000 · window open at the end, ≥ 0.92 decades (x8.3)")
    terminal = SweepProgress(Terminal(), {"a": 1.0}, capacity=1, names={"a": "seed=0"})
    terminal.submitted("a", str(tmp_path / "a"))
    terminal.show(counts, [])
    terminal.show(counts, [])
    assert terminal.stream.getvalue().count("\033[2F\033[J") == 1  # the two-line block drawn over itself


def test_budgets_that_are_upper_bounds_say_so(tmp_path):
    """A run that trains until its clocks are measured (or under steps = "auto") may stop before its budget: its line
    and the ETA say the time left is at most what the whole budget takes."""
    (tmp_path / "a").mkdir()
    view = SweepProgress(io.StringIO(), {"a": 1.0}, capacity=1, names={"a": "seed=0"}, bounded={"a"})
    view.submitted("a", str(tmp_path / "a"))
    running(tmp_path / "a", 500)
    state = read_progress(tmp_path / "a")
    assert view.run_line("a", state, 50.0) == "seed=0: step 500/≤1000 · 10.0 steps/s · at most 50s left"
    view.show({"done": 0, "running": 1, "queued": 0, "failed": 0}, [])
    assert "ETA ≤ 5" in view.stream.getvalue()
