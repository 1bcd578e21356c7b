"""Sweep specs (grid, zip, seeds, bad input), the console of `innovwin sweep`, and a real sweep killed midway and run
to completion."""
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from innovwin.cli import main
from innovwin.config import RunConfig
from innovwin.store.runstore import RunStore
from innovwin.sweeps import driver
from innovwin.sweeps.spec import load_preset, load_spec, parse_spec, presets

SPEC = """
name = "demo"
seeds = [0, 1]
[base]
task = "parity:h=6,w=6,g=2"
steps = 50
[grid]
n_train = [16, 32, 64]
arch = ["dit", "gpt"]
[zip]
depth = [1, 2]
width = [32, 64]
"""


def write(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_expansion_is_grid_times_zip_times_seeds(tmp_path):
    spec = load_spec(write(tmp_path, SPEC))
    runs = spec.expand()
    assert spec.name == "demo" and len(runs) == 3 * 2 * 2 * 2
    sizes = {(c["depth"], c["width"]) for c in runs.values()}
    assert sizes == {(1, 32), (2, 64)}  # zipped, not crossed
    for key, config in runs.items():
        assert RunConfig.from_dict(config).key() == key
        assert config["steps"] == 50 and config["data_seed"] == 4 * config["seed"]  # resolved
    # the same run named twice is one run
    twice = SPEC.replace("n_train = [16, 32, 64]", "n_train = [16, 16]")
    assert len(parse_spec(__import__("tomllib").loads(twice)).expand()) == 1 * 2 * 2 * 2


def test_seeds_as_a_count(tmp_path):
    counted = load_spec(write(tmp_path, SPEC.replace("seeds = [0, 1]", "seeds = 2")))
    assert counted.seeds == [0, 1] and counted.expand() == load_spec(write(tmp_path, SPEC, "b.toml")).expand()


def test_several_zip_groups(tmp_path):
    text = """
[base]
steps = 20
[[zip]]
depth = [1, 2]
width = [32, 64]
[[zip]]
n_train = [8, 16, 32]
batch = [8, 16, 32]
"""
    runs = load_spec(write(tmp_path, text)).expand()
    assert len(runs) == 2 * 3
    assert all(c["batch"] == c["n_train"] for c in runs.values())


@pytest.mark.parametrize("text, message", [
    ("[base\nsteps = 3", "is not valid TOML"),
    ("[base]\nstepz = 3\n[grid]\nseed = [1]", "unknown config key 'stepz' \\(did you mean 'steps'\\?\\)"),
    ("[grid]\nn_trian = [1, 2]", "\\[grid\\]: unknown config key 'n_trian' \\(did you mean 'n_train'\\?\\)"),
    ("[gird]\nn_train = [1, 2]", "unknown key 'gird' \\(did you mean 'grid'\\?\\)"),
    ("[grid]", "\\[grid\\] is empty"),
    ("[grid]\nn_train = []", "axis 'n_train' is empty"),
    ("[grid]\nn_train = 5", "must be a list"),
    ("[base]\nsteps = 3", "no \\[grid\\], \\[zip\\] or seeds"),
    ("[zip]\ndepth = [1, 2]\nwidth = [32]", "equal lengths"),
    ("[grid]\ndepth = [1]\n[zip]\ndepth = [2]", "appears more than once"),
    ("seeds = []\n[grid]\ndepth = [1]", "seeds must be a count K or a non-empty list"),
    ("seeds = 0\n[grid]\ndepth = [1]", "seeds = K needs 1 <= K"),
    ("seeds = 2\n[grid]\nseed = [1]", "not both"),
    ("[grid]\nn_train = [0, 4]", "n_train must be > 0"),
])
def test_bad_specs_name_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_spec(write(tmp_path, text))


def test_cli_bad_input_exits_2_and_keeps_the_store(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["sweep", str(write(tmp_path, "[grid]\nn_trian = [1]")), "--store", str(store)]) == 2
    assert "did you mean 'n_train'" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.toml"), "--store", str(store)]) == 2
    assert main(["sweep", "--preset", "quik", "--store", str(store)]) == 2
    assert "did you mean 'quick'" in capsys.readouterr().err
    # a corrupt store: refused, byte for byte untouched
    store.mkdir(exist_ok=True)
    (store / "runs.sqlite").write_bytes(b"not a database" * 200)
    assert main(["sweep", str(write(tmp_path, SPEC)), "--store", str(store)]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert (store / "runs.sqlite").read_bytes() == b"not a database" * 200
    # a store in use by another driver
    other = tmp_path / "busy"
    with RunStore(other, write=True):
        assert main(["sweep", str(write(tmp_path, SPEC)), "--store", str(other)]) == 2
    assert "in use by another sweep" in capsys.readouterr().err


def test_dry_run_prints_the_grid_and_writes_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["sweep", str(write(tmp_path, SPEC)), "--store", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep demo: 24 runs") and out[-1] == "24 of 24 would run (longest first), retry limit 3"
    assert sum(line.strip().startswith("run ") for line in out) == 24 and not store.exists()
    assert any("n_train=64 arch=dit depth=2 width=64 seed=1" in line and
               "runs/n_train64-arch_dit-depth2-width64-seed1-" in line for line in out)


def test_presets_load():
    assert "quick" in presets()
    for name in presets():
        assert len(load_preset(name).expand()) >= 2


REAL_SPEC = """
name = "tiny"
[base]
task = "parity:h=4,w=4,g=2"
depth = 1
width = 16
heads = 2
steps = 100
batch = 16
first_eval = 20
evals_per_decade = 4
eval_samples = 32
loss_samples = 32
sampler_steps = 4
bootstrap = 20
snapshots = false
device = "cpu"
[grid]
n_train = [16, 32, 64]
"""


@pytest.mark.slow
def test_real_sweep_killed_midway_then_completed(tmp_path):
    """SIGKILL the driver once the first run is done; the rerun keeps it and finishes the rest."""
    spec, store = write(tmp_path, REAL_SPEC), tmp_path / "store"
    command = [sys.executable, "-m", "innovwin", "sweep", str(spec), "--store", str(store), "--workers", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and done_runs(store) < 1:
            time.sleep(0.2)
        assert done_runs(store) >= 1, driver.communicate(timeout=5)[0].decode()[-2000:]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    with RunStore(store) as reader:
        before = {row["key"]: row for row in reader.rows()}
    finished = {key for key, row in before.items() if row["status"] == "done"}
    assert finished and len(finished) < len(before)  # killed midway (the others running or queued)

    assert main(["sweep", str(spec), "--store", str(store), "--workers", "2"]) == 0
    with RunStore(store) as reader:
        after = {row["key"]: row for row in reader.rows()}
    assert len(after) == 3 and all(row["status"] == "done" for row in after.values())
    for key in finished:  # kept as it was, not run again
        assert after[key]["attempts"] == 1 and after[key]["summary"] == before[key]["summary"]
    for row in after.values():
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert summary["final"]["step"] == 100 == row["summary"]["final"]["step"]


def done_runs(store):
    try:
        with RunStore(store) as reader:
            return reader.counts()["done"]
    except ValueError:  # not created yet
        return 0


def seed_job(job):
    """Stand-in job function of the snapshot: seed 1 fails on its first attempt, seed 2 on every attempt."""
    summaries = {}
    for run in job.runs:
        tries = Path(run.run_dir) / "tries"
        tries.write_text((tries.read_text() if tries.exists() else "") + "x")
        seed = run.config["seed"]
        if seed == 2 or (seed == 1 and len(tries.read_text()) == 1):
            raise RuntimeError(f"seed {seed} fails")
        summaries[run.key] = {"tau_rule": 10.0 * (seed + 1), "tau_mem": None, "final": {"step": 100}}
    return summaries


SWEEP_LOG = """\
[sweep] 3 of 3 runs to do · local: 1 workers on CPU, N threads per run
[sweep] 0 done · 1 running · 2 queued · 0 failed · T elapsed · ETA ?
[sweep] done seed=0 in T: τ_rule 10 · τ_mem > 100 · window open at the end, ≥ 1.00 decades (x10.0)
[sweep] 1 done · 1 running · 1 queued · 0 failed · T elapsed · ETA T
[sweep] failed seed=2 (attempt 1, retry limit 2): RuntimeError: seed 2 fails
[sweep] 1 done · 1 running · 0 queued · 1 failed · T elapsed · ETA T
[sweep] failed seed=1 (attempt 1, retry limit 2): RuntimeError: seed 1 fails
[sweep] failed seed=2 (attempt 2, retry limit 2: stays failed): RuntimeError: seed 2 fails
[sweep] done seed=1 in T: τ_rule 20 · τ_mem > 100 · window open at the end, ≥ 0.70 decades (x5.0)
[sweep] 2 done · 0 running · 0 queued · 1 failed · T elapsed · ETA T
[sweep] nothing to run: 2 done, 1 failed (retry limit 2 reached)
"""
SWEEP_FINDINGS = """\
[sweep] findings:
  τ_mem against N: not fitted (N does not vary within any group of runs)
  τ_rule 10 to 20 steps in 2 of 2 runs
  windows: 0 open, 2 open at the end, 0 closed, 0 unresolved
  runs: 2 finished, 1 failed, 0 not run yet
[sweep] snap: 2/3 runs done in TMP/store; next: innovwin report TMP/store --out REPORT_DIR
"""


def test_sweep_console_snapshot(tmp_path, capsys, monkeypatch):
    """What `innovwin sweep` prints, run twice (times, thread count and the temporary path blanked): the plan, a
    count line per change, a line per finished or failed run with its clocks or error, the findings and what to do
    next (on stdout); the second time, nothing to run. One worker on CPU, so the order of the lines is fixed."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(driver, "run_sweep", functools.partial(driver.run_sweep, job_fn=seed_job, poll_s=0.05))
    spec = write(tmp_path, 'name = "snap"\n[base]\ntask = "parity:h=4,w=4,g=2"\nsteps = 100\n'
                           '[grid]\nseed = [0, 1, 2]\n')
    argv = ["sweep", str(spec), "--store", str(tmp_path / "store"), "--workers", "1", "--ensemble", "1",
            "--max-attempts", "2"]
    assert [main(argv), main(argv)] == [1, 1]
    captured = capsys.readouterr()

    def blanked(text):
        text = re.sub(r"\d+ threads per run", "N threads per run", text.replace(str(tmp_path), "TMP"))
        return re.sub(r"\b\d+(h\d+m|m\d+s|s)\b", "T", text)

    assert (blanked(captured.err), blanked(captured.out)) == (SWEEP_LOG, SWEEP_FINDINGS * 2)


def test_a_spec_naming_one_run_with_two_budgets_is_refused(tmp_path):
    """steps is not part of a run: a grid over it names one run twice, and keeping the first would drop the other."""
    with pytest.raises(ValueError, match="differ only in steps"):
        parse_spec({"base": {"task": "parity:h=4,w=4,g=2"}, "grid": {"steps": [300, 1200]}}).expand()
