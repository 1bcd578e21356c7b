"""Fault injection: what a user's mistakes, a killed process, a full or read-only disk and damaged files do.

Each test injects one fault and checks what docs/reliability.md promises: the command refuses with one line that
names the path or field and exits 2 (never a traceback), nothing valid is lost, and the recovery it names works.
The full-disk and read-only tests mount a small tmpfs or a read-only bind mount in a private mount namespace
(``unshare -m``); where the machine does not allow that they are skipped, with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from innovwin import bits, cli, config as config_module, tasks
from innovwin._native_loader import native
from innovwin.analysis import clocks
from innovwin.config import RunConfig
from innovwin.search import NearestIndex, nearest_numpy
from innovwin.store import RunStore, rundir
from innovwin.train.driver import train

RUN = dict(task="parity:h=4,w=4,g=2", arch="dit", n_train=16, depth=1, width=32, heads=2, batch=16, steps=24,
           first_eval=4, evals_per_decade=4, eval_samples=32, sampler_steps=4, loss_samples=32, bootstrap=50,
           device="cpu")
FLAGS = [f"--{name.replace('_', '-')}={value}" for name, value in RUN.items()]
BASINS = ["--probes", "2", "--n-sigmas", "2", "--draws", "1", "--steps", "2"]
REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """A command in-process: (exit code, stderr, stdout). A refusal must be exactly one line."""
    code = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    if code == 2:
        assert captured.err.count("\n") == 1, captured.err
    return code, captured.err, captured.out


def rows_without_time(run_dir) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "eval_seconds"} for row in rundir.read_metrics(run_dir)]


def summary_without_time(run_dir) -> dict:
    return {k: v for k, v in rundir.read_json(Path(run_dir) / rundir.SUMMARY).items() if k not in ("timing", "out_dir")}


def files_of(folder: Path) -> dict:
    """Every file's bytes, less the lock's (it names its latest holder)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished tiny DiT run (DiT, so that basins runs on it too); tests damage copies of it."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(RunConfig(**RUN), out, quiet=True)
    return out


@pytest.fixture
def run_copy(base_run, tmp_path) -> Path:
    return Path(shutil.copytree(base_run, tmp_path / "run"))


def make_store(base_run: Path, where: Path) -> tuple[Path, str]:
    """A store holding the base run as its one finished run (as a sweep would have left it)."""
    config = RunConfig(**RUN).resolved()
    key = config.key()
    with RunStore(where, write=True) as store:
        store.add({key: config.to_dict()})
        store.claim(key)
        shutil.copytree(base_run, store.run_dir(key))
        store.finish(key, rundir.read_json(base_run / rundir.SUMMARY))
    return where, key


# --- 1. one process per run directory -----------------------------------------------------------
def test_a_locked_run_directory_refuses_train_and_basins(capsys, run_copy):
    before = files_of(run_copy)
    with rundir.locked(run_copy, "a test"):
        for argv in (["train", "--quiet", *FLAGS, "--out", run_copy], ["basins", run_copy, *BASINS]):
            code, err, _ = run_cli(capsys, *argv)
            assert code == 2 and "is in use (a test, pid" in err
    assert files_of(run_copy) == before
    assert run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)[0] == 0  # released on exit


def test_a_concurrent_train_is_refused_and_a_killed_holder_frees_the_lock(capsys, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-m", "innovwin", "train", "--quiet", *FLAGS, "--steps=100000",
                               "--out", str(out)], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ((out / rundir.LOCK).exists() and (out / rundir.LOCK).read_text()):
            assert holder.poll() is None and time.monotonic() < deadline, "the first train never took the lock"
            time.sleep(0.1)
        code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, "--steps=100000", "--out", out)
        assert code == 2 and f"(innovwin train, pid {holder.pid})" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with rundir.locked(out, "after the kill"):  # the kernel dropped the dead holder's lock
        pass


# --- 2. torn, garbled and deleted rows --------------------------------------------------------------
def damaged_metrics(text: str):
    """(name, damaged text) for every row: cut at its start, in its middle, before its newline; garbled; the
    whole file deleted (None)."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"][:-1]
    for number, start in enumerate(starts):
        end = text.index("\n", start)
        for where, cut in (("start", start), ("middle", (start + end) // 2), ("end", end)):
            yield f"row {number} cut at its {where}", text[:cut]
        yield f"row {number} garbled", text[:start] + "#" + text[start + 1:]
    yield "file deleted", None


def test_a_torn_garbled_or_missing_row_is_restored_from_the_state(capsys, run_copy, base_run):
    metrics = run_copy / rundir.METRICS
    original = metrics.read_bytes()
    summary = summary_without_time(base_run)
    for name, text in damaged_metrics(original.decode()):
        if text is None:
            metrics.unlink()
        else:
            metrics.write_text(text)
            if "middle" in name or "garbled" in name:  # a reader refuses the row rather than skip it
                with pytest.raises(ValueError, match="torn or garbled"):
                    rundir.read_metrics(run_copy)
        code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)
        assert code == 0 and "restored from state.pt" in err, name
        assert metrics.read_bytes() == original, name
        assert summary_without_time(run_copy) == summary, name


def test_a_torn_row_of_an_interrupted_run_is_evaluated_again(monkeypatch, tmp_path, base_run):
    saves, save_torch = [], rundir.save_torch

    def save_then_stop(path, obj):  # the process dies right after its third saved state
        save_torch(path, obj)
        saves.append(obj["step"])
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "save_torch", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(RunConfig(**RUN), tmp_path / "run", quiet=True)
    monkeypatch.setattr(rundir, "save_torch", save_torch)
    metrics = tmp_path / "run" / rundir.METRICS
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - 40])  # the last saved row, torn
    train(RunConfig(**RUN), tmp_path / "run", quiet=True)
    assert rows_without_time(tmp_path / "run") == rows_without_time(base_run)


def test_a_state_without_rows_and_a_damaged_file_is_refused(capsys, run_copy):
    state = rundir.load_state(run_copy, RunConfig(**RUN).key())
    del state["metrics"]  # as an older innovwin saved it
    rundir.save_torch(run_copy / rundir.STATE, state)
    metrics = run_copy / rundir.METRICS
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-1]))
    code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)
    assert code == 2 and "metrics.jsonl is damaged" in err and "--force" in err


# --- 3. a full disk, a read-only directory ------------------------------------------------------------
def namespace_skip_reason() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount in a private mount namespace here ({probe.stderr.strip() or probe.returncode})"
    return None


NO_MOUNTS = namespace_skip_reason()
needs_mounts = pytest.mark.skipif(NO_MOUNTS is not None, reason=str(NO_MOUNTS))


STEPS = """
import contextlib, io, json, subprocess, sys
from innovwin import cli
for kind, what, name in json.loads(sys.argv[1]):
    if kind == "sh":
        subprocess.run(what, shell=True, check=True)
        continue
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(what)
    with open(f"{sys.argv[2]}/{name}.json", "w") as handle:
        json.dump([code, err.getvalue()], handle)
"""


def in_namespace(steps: list, out: Path) -> dict[str, tuple[int, str]]:
    """Run steps in one process in a private mount namespace (its mounts vanish with it): ("sh", command) runs a
    shell command, ("cli", argv, name) a command whose (exit code, stderr) is returned under ``name``."""
    steps = [(step[0], [str(a) for a in step[1]] if step[0] == "cli" else step[1], step[2] if step[2:] else "")
             for step in steps]
    subprocess.run(["unshare", "-m", sys.executable, "-c", STEPS, json.dumps(steps), str(out)], cwd=REPO,
                   check=True, timeout=300)
    return {step[2]: tuple(json.loads((out / f"{step[2]}.json").read_text())) for step in steps if step[0] == "cli"}


@needs_mounts
def test_a_full_disk_is_one_line_leaves_no_temporary_and_resumes_exactly(tmp_path, base_run):
    disk = tmp_path / "disk"
    disk.mkdir()
    train_run = ["train", "--quiet", *FLAGS, "--out", disk / "run"]
    results = in_namespace([
        ("sh", f"mount -t tmpfs -o size=700k none {disk}"),
        ("cli", train_run, "full"),
        ("sh", f"find {disk} -name '*.tmp' > {tmp_path / 'temporaries'}"),
        ("sh", f"mount -o remount,size=16m {disk}"),
        ("cli", train_run, "freed"),
        ("sh", f"cp -r {disk / 'run'} {tmp_path / 'run'}"),
    ], tmp_path)
    code, err = results["full"]
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and str(disk / "run") in err, err
    assert (tmp_path / "temporaries").read_text() == ""
    assert results["freed"] == (0, "")
    assert rows_without_time(tmp_path / "run") == rows_without_time(base_run)


@pytest.mark.slow
@needs_mounts
def test_a_full_disk_in_a_sweep_is_one_line_and_the_next_sweep_finishes(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    spec = tmp_path / "spec.toml"
    spec.write_text("[base]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in RUN.items() if k != "n_train")
                    + "[grid]\nn_train = [16]\n")
    sweep = ["sweep", spec, "--store", disk / "store", "--workers", "1"]
    results = in_namespace([
        ("sh", f"mount -t tmpfs -o size=1m none {disk}"),
        ("sh", f"dd if=/dev/zero of={disk / 'filler'} bs=1k count=990 2> /dev/null"),
        ("cli", sweep, "full"),
        ("sh", f"rm {disk / 'filler'}; mount -o remount,size=16m {disk}"),
        ("cli", sweep, "freed"),
        ("sh", f"find {disk} -name '*.tmp' > {tmp_path / 'temporaries'}"),
    ], tmp_path)
    code, err = results["full"]
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and str(disk / "store") in last, err
    assert "No space left on device" in last or "SQLite" in last, err
    code, err = results["freed"]
    assert code == 0 and "1 done" in err, err
    assert (tmp_path / "temporaries").read_text() == ""


@needs_mounts
def test_a_read_only_store_reports_and_writes_are_one_line(tmp_path, base_run):
    read_only = tmp_path / "ro"
    store, _ = make_store(base_run, read_only / "store")
    results = in_namespace([
        ("sh", f"mount --bind -o ro {read_only} {read_only}"),
        ("cli", ["report", store, "--out", tmp_path / "report", "--n-boot", "0"], "report"),
        ("cli", ["report", store, "--out", read_only / "report", "--n-boot", "0"], "report_ro"),
        ("cli", ["train", "--quiet", *FLAGS, "--out", read_only / "run"], "train"),
    ], tmp_path)
    assert results["report"] == (0, "")
    assert (tmp_path / "report" / "index.html").exists()
    for name, path in (("report_ro", read_only / "report"), ("train", read_only / "run")):
        code, err = results[name]
        assert code == 2 and err == f"innovwin {name.split('_')[0]}: error: {path}: Read-only file system\n", err


# --- 4. files where directories belong, and the reverse --------------------------------------------
def test_files_in_place_of_directories_are_one_line(capsys, tmp_path, base_run):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    store, _ = make_store(base_run, tmp_path / "store")
    no_snapshots = Path(shutil.copytree(base_run, tmp_path / "no_snapshots"))
    shutil.rmtree(no_snapshots / "snapshots")
    (no_snapshots / "snapshots").write_text("not a folder")
    summary_folder = Path(shutil.copytree(base_run, tmp_path / "summary_folder"))
    (summary_folder / "summary.json").unlink()
    (summary_folder / "summary.json").mkdir()
    cases = [
        (["train", "--quiet", *FLAGS, "--out", a_file], f"{a_file} exists and is not a directory"),
        (["train", "--quiet", *FLAGS, "--out", a_file / "run"], f"{a_file / 'run'}: Not a directory"),
        (["train", "--quiet", *FLAGS, "--out", no_snapshots], f"{no_snapshots / 'snapshots'}: File exists"),
        (["train", "--quiet", *FLAGS, "--out", summary_folder], f"{summary_folder / 'summary.json'}: Is a directory"),
        (["sweep", "--preset", "quick", "--store", a_file], f"{a_file} exists and is not a directory"),
        (["report", a_file, "--out", tmp_path / "report"], "is not a run store"),
        (["report", store, "--out", a_file], f"{a_file}: File exists"),
        (["basins", a_file, *BASINS], "is not a run directory"),
    ]
    for argv, message in cases:
        code, err, _ = run_cli(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
    assert a_file.read_text() == "mine"


def test_a_temporary_left_by_a_killed_run_is_removed_and_a_failed_write_leaves_none(monkeypatch, capsys, run_copy):
    left = run_copy / rundir.EVALS / ".step_00000024.npz.4242.tmp"
    left.write_bytes(b"half a file")
    assert run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)[0] == 0
    assert not left.exists()

    def no_space(*args):
        raise OSError(28, "No space left on device", str(args[1]))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        rundir.write_json(run_copy / "x.json", {"a": 1})
    assert [p.name for p in run_copy.iterdir() if p.name.endswith(".tmp")] == []


# --- 5. every per-run file truncated or garbled ----------------------------------------------------
RUN_FILES = ["config.json", "metrics.jsonl", "state.pt", "summary.json", "evals/step_00000024.npz",
             "snapshots/step_00000024.pt"]


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_a_damaged_run_file_is_named_or_repaired_by_every_command(capsys, tmp_path, base_run, name, damage):
    store, key = make_store(base_run, tmp_path / "store")
    run_dir = store / "runs" / key
    path = run_dir / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(b ^ 0x5A for b in data))
    commands = {"train": ["train", "--quiet", *FLAGS, "--out", run_dir],
                "basins": ["basins", run_dir, *BASINS, "--snapshots", "24", "--device", "cpu"],
                "report": ["report", store, "--out", tmp_path / "report", "--n-boot", "0"]}
    for command, argv in commands.items():
        code, err, _ = run_cli(capsys, *argv)
        assert code in (0, 2), (command, err)
        if code == 2:  # refused: the message names the damaged file
            assert Path(name).name in err, (command, err)
        elif command == "train" and name == "metrics.jsonl":  # repaired from state.pt
            assert path.read_bytes() == data
    if name in ("state.pt", "config.json"):  # nothing to resume from: train must refuse, not start over
        assert run_cli(capsys, *commands["train"])[0] == 2


def test_the_report_refuses_metrics_cut_at_a_row_boundary(capsys, tmp_path, base_run):
    store, key = make_store(base_run, tmp_path / "store")
    metrics = store / "runs" / key / rundir.METRICS
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:-2]))
    code, err, _ = run_cli(capsys, "report", store, "--out", tmp_path / "report", "--n-boot", "0")
    assert code == 2 and "metrics.jsonl ends at step" in err, err


def test_a_garbled_basins_file_is_named(capsys, run_copy):
    (run_copy / "basins.jsonl").write_bytes(b'{"step": 4, "sn')
    code, err, _ = run_cli(capsys, "basins", run_copy, *BASINS)
    assert code == 2 and "basins.jsonl is garbled" in err, err


def test_the_report_reads_each_runs_summary_and_flags_a_store_that_disagrees(capsys, tmp_path, base_run):
    store, key = make_store(base_run, tmp_path / "store")
    own = rundir.read_json(store / "runs" / key / rundir.SUMMARY)
    with sqlite3.connect(store / "runs.sqlite") as db:
        db.execute("UPDATE runs SET summary = ? WHERE key = ?",
                   (json.dumps({**own, "tau_rule": 999999.0, "tau_rule_censored": False}), key))
    assert run_cli(capsys, "report", store, "--out", tmp_path / "report", "--n-boot", "0")[0] == 0
    (row,) = list(__import__("csv").DictReader(open(tmp_path / "report" / "runs.csv")))
    assert "differs from summary.json" in row["summary_check"]
    own_rule = clocks.read_clock(own, "tau_rule").value
    assert row["tau_rule"] == ("" if own_rule is None else str(own_rule))
    assert "disagrees with its run directory" in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.parametrize("column, value, message", [
    ("summary", "[1]", "summary of run"),
    ("summary", '{"final": 3}', "final is 3, not a metrics row"),
    ("config", '{"task": "parity:h=4,w=4,g=2"}', "config lacks arch"),
    ("config", "not json", "config of run"),
])
def test_malformed_store_rows_are_refused_by_key(capsys, tmp_path, base_run, column, value, message):
    store, key = make_store(base_run, tmp_path / "store")
    shutil.rmtree(store / "runs" / key)  # the report falls back on the store's copy
    with sqlite3.connect(store / "runs.sqlite") as db:
        db.execute(f"UPDATE runs SET {column} = ? WHERE key = ?", (value, key))
    code, err, _ = run_cli(capsys, "report", store, "--out", tmp_path / "report", "--n-boot", "0")
    assert code == 2 and message in err and key in err, err


# --- 6. numbers: non-finite, out of range, too large ----------------------------------------------------
FLOAT_FIELDS = [name for name, kind in config_module.FIELD_TYPES.items() if kind is float]
INT_FIELDS = [name for name, kind in config_module.FIELD_TYPES.items() if kind is int]


def test_the_field_lists_are_not_empty():
    assert "lr" in FLOAT_FIELDS and "temperature" in FLOAT_FIELDS and "batch" in INT_FIELDS


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_floats_are_refused_before_anything_is_deleted(capsys, run_copy, value):
    before = files_of(run_copy)
    for name in FLOAT_FIELDS:
        for argv in ([f"--{name.replace('_', '-')}={value}"], ["--set", f"{config_module.DOTTED[name]}={value}"]):
            code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, "--force", "--out", run_copy, *argv)
            assert code == 2 and name in err, err
    assert files_of(run_copy) == before


def test_negative_numbers_are_refused_by_name(capsys, tmp_path):
    for name in INT_FIELDS + FLOAT_FIELDS:  # no numeric field takes -1, but p_mean (a mean of ln sigma)
        if name == "p_mean":
            continue
        code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, f"--{name.replace('_', '-')}=-1",
                               "--out", tmp_path / "run")
        assert code == 2 and name in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--seed", str(10**24)], "seed must be an integer in 0.."),
    (["--seed", "-1"], "seed must be an integer in 0.."),
    (["--train-seed", str(2**64)], "train_seed must be an integer in 0.."),
    (["--task", "parity:h=-6,w=-6,g=2"], "parity: parameter h: expected an integer in 1..64, got -6"),
    (["--task", "linear:h=6,w=6,checks=sparse,m=3,weight=2,seed=-1"], "parameter seed: expected a seed >= 0"),
    (["--task", "parity:h=4,w=4,g=2", "--n-train", "256"], "is the whole valid set"),
    (["--device", "tpu"], "device must be auto, cpu or cuda"),
])
def test_bad_numbers_and_names_are_one_line(capsys, tmp_path, argv, message):
    code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, *argv, "--out", tmp_path / "run")
    assert code == 2 and message in err, err


def test_a_batch_too_large_to_allocate_is_one_line(capsys, tmp_path):
    code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, "--batch", str(10**13), "--out", tmp_path / "run")
    assert code == 2 and "out of memory" in err, err


def test_the_other_commands_check_their_numbers(capsys, tmp_path, base_run):
    store, _ = make_store(base_run, tmp_path / "store")
    cells = tasks.make("parity:h=4,w=4,g=2").sample(4, seed=0)
    cells[:, 0] ^= 1
    np.save(tmp_path / "bad.npy", cells)
    cases = [
        (["report", store, "--out", tmp_path / "r", "--n-boot", "-1"], 2, "--n-boot must be 0"),
        (["report", store, "--out", tmp_path / "r", "--n-boot", "1"], 2, "--n-boot must be 0"),
        (["sample", "parity:h=4,w=4,g=2", "--n", str(10**14)], 2, "--n must be in 0.."),
        (["validate", "parity:h=4,w=4,g=2", tmp_path / "bad.npy", "--show", "-1"], 2, "--show must be >= 0"),
        (["validate", "parity:h=4,w=4,g=2", tmp_path / "bad.npy", "--show", "9"], 1, ""),
        (["basins", base_run, *BASINS, "--device", "xla"], 2, "device must be auto, cpu or cuda"),
    ]
    for argv, expected, message in cases:
        code, err, out = run_cli(capsys, *argv)
        assert code == expected and message in err, (argv, err)
        if expected == 1:
            assert "4 of 4 samples are invalid" in out and "more" not in out


def test_a_sweep_refuses_runs_that_cannot_start_before_any_attempt(capsys, tmp_path):
    for axis, message in (("n_train = [16, 256]", "is the whole valid set"),
                          ("n_train = [16, 300]", "larger than the valid set"),
                          ("lr = [1e-3, inf]", "lr must be a finite number")):
        spec = tmp_path / "spec.toml"
        spec.write_text('[base]\ntask = "parity:h=4,w=4,g=2"\nsteps = 24\n[grid]\n' + axis + "\n")
        code, err, _ = run_cli(capsys, "sweep", spec, "--store", tmp_path / "store")
        assert code == 2 and message in err, err
        if (tmp_path / "store" / "runs.sqlite").exists():
            with RunStore(tmp_path / "store") as store:
                assert store.rows() == []


def test_the_end_of_run_printout_takes_open_interval_bounds():
    old = {"tau_rule": 30.0, "tau_rule_ci": [None, 40.0], "tau_rule_text": "30", "tau_mem": 50.0,
           "tau_mem_ci": [None, None], "tau_mem_text": "50", "final": {"step": 300}}  # an older summary's form
    assert "tau_rule  30 [open, 40]" in clocks.describe(old) and "tau_mem   50 [open, open]" in clocks.describe(old)
    new = {"tau_rule": {"estimate": 30.0, "bracket": [20.0, 40.0], "interval": [20.0, None], "censored": None},
           "tau_mem": {"estimate": None, "bracket": [300.0, None], "interval": [300.0, None], "censored": "right"}}
    assert "tau_rule  30 [20, open]" in clocks.describe(new) and "tau_mem   > 300" in clocks.describe(new)


# --- 7. the native entry points against their references, on arbitrary inputs -----------------------
requires_native = pytest.mark.skipif(native is None, reason="the C++ extension innovwin._native is not built")
words_of = st.integers(min_value=0, max_value=2**64 - 1)


def keys_strategy(max_rows: int, words: int):
    return st.lists(st.lists(words_of, min_size=words, max_size=words), min_size=1, max_size=max_rows).map(
        lambda rows: np.array(rows, dtype=np.uint64))


@requires_native
@settings(max_examples=60, deadline=None)
@given(data=st.data(), k=st.integers(2, 16), n_cells=st.integers(1, 80))
def test_native_pack_matches_the_reference_on_any_bytes(data, k, n_cells):
    cells = np.array(data.draw(st.lists(st.lists(st.integers(0, 255), min_size=n_cells, max_size=n_cells),
                                        min_size=1, max_size=6)), dtype=np.uint8)
    if cells.max() >= k:
        with pytest.raises(ValueError, match="outside the alphabet"):
            bits.pack(cells, k)
        with pytest.raises(ValueError, match="outside the alphabet"):
            bits.pack_numpy(cells, k)
    else:
        np.testing.assert_array_equal(bits.pack(cells, k), bits.pack_numpy(cells, k))


@requires_native
@settings(max_examples=60, deadline=None)
@given(data=st.data(), words=st.integers(1, 3), nibbles=st.booleans())
def test_native_search_matches_the_reference_on_any_keys(data, words, nibbles):
    queries = data.draw(keys_strategy(5, words))
    train_keys = data.draw(keys_strategy(9, words))
    k = data.draw(st.integers(1, len(train_keys)))
    got = native.hamming_topk(queries, train_keys, k, nibbles)
    expected = nearest_numpy(queries, train_keys, k, nibbles)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@requires_native
@settings(max_examples=40, deadline=None)
@given(data=st.data(), alphabet=st.sampled_from([2, 9]), n_cells=st.integers(1, 70))
def test_padding_never_counts_toward_a_distance(data, alphabet, n_cells):
    """Keys with garbage past n_cells search like the clean cells they hold (as the validators read them)."""
    per = 64 if alphabet == 2 else 16
    n_words = bits.n_words(n_cells, alphabet)
    used = n_cells - (n_words - 1) * per
    padding = np.uint64(0 if used == per else (2**64 - 1) ^ ((1 << used * (64 // per)) - 1))

    def clean_and_dirty(rows):
        garbage = data.draw(keys_strategy(rows, n_words))
        cells = np.minimum(bits.unpack(garbage, n_cells, alphabet), alphabet - 1)
        dirty = bits.pack(cells, alphabet)
        dirty[:, -1] |= garbage[:, -1] & padding
        return cells, dirty

    (train_cells, train_keys), (query_cells, query_keys) = clean_and_dirty(6), clean_and_dirty(4)
    expected = NearestIndex(train_cells, alphabet=alphabet).query(query_cells, k=1, backend="numpy")
    for backend in ("native", "numpy", "torch"):
        for index in (NearestIndex(train_keys, alphabet=alphabet, n_cells=n_cells),
                      NearestIndex(train_cells, alphabet=alphabet)):
            got = index.query(query_keys, k=1, backend=backend)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])


@requires_native
@pytest.mark.parametrize("spec", ["parity:h=4,w=5,g=2", "rule:h=3,w=3,g=3,pred=majority",
                                  "linear:h=5,w=5,checks=rowcol", "latin:n=5", "sudoku:n=4"])
def test_native_validators_match_the_reference_on_any_keys(spec):
    task = tasks.make(spec)

    @settings(max_examples=40, deadline=None)
    @given(keys=keys_strategy(8, task.n_words))
    def check(keys):
        np.testing.assert_array_equal(task.constraints_packed(keys, backend="native"),
                                      task.constraints_packed(keys, backend="numpy"))

    check()


def test_a_cell_query_against_a_key_index_needs_its_cell_count():
    train_cells = tasks.make("parity:h=6,w=6,g=2").sample(8, seed=0)
    with pytest.raises(ValueError, match="without n_cells"):
        NearestIndex(bits.pack(train_cells)).query(np.zeros((2, 40), np.uint8))
    with pytest.raises(ValueError, match="40 cells per sample but the training set has 36"):
        NearestIndex(bits.pack(train_cells), n_cells=36).query(np.zeros((2, 40), np.uint8))
    distances, _ = NearestIndex(bits.pack(train_cells), n_cells=36).query(train_cells, k=1)
    assert (distances == 0).all()


# --- 7. round 2: readers refuse what they cannot trust --------------------------------------------------
def rewrite_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def rewrite_metrics_row(run_dir: Path, index: int, change) -> None:
    lines = (run_dir / rundir.METRICS).read_text().splitlines()
    row = json.loads(lines[index])
    change(row)
    lines[index] = json.dumps(row)
    (run_dir / rundir.METRICS).write_text("\n".join(lines) + "\n")


def test_a_summary_clock_without_its_interval_is_refused_by_name(capsys, tmp_path, base_run):
    store, key = make_store(base_run, tmp_path / "store")
    rewrite_json(store / "runs" / key / rundir.SUMMARY, lambda s: [s[name].pop("interval") for name in clocks.CLOCKS])
    code, err, _ = run_cli(capsys, "report", store, "--out", tmp_path / "report", "--n-boot", "0")
    assert code == 2 and "summary.json is malformed" in err and "tau_rule" in err, err


def test_a_report_of_a_run_directory_refuses_a_summary_that_lost_its_clocks(capsys, tmp_path, run_copy):
    rewrite_json(run_copy / rundir.SUMMARY, lambda s: [s.pop(name) for name in clocks.CLOCKS])
    code, err, _ = run_cli(capsys, "report", run_copy, "--out", tmp_path / "report", "--n-boot", "0")
    assert code == 2 and "summary.json is malformed (no tau_rule; no tau_mem" in err, err


def test_a_report_of_a_run_directory_refuses_a_deleted_metrics_file(capsys, tmp_path, run_copy):
    (run_copy / rundir.METRICS).unlink()
    code, err, _ = run_cli(capsys, "report", run_copy, "--out", tmp_path / "report", "--n-boot", "0")
    assert code == 2 and "metrics.jsonl is missing" in err, err


def test_a_provenance_of_the_wrong_shape_is_refused_by_name(capsys, run_copy):
    (run_copy / "provenance.json").write_text('{"sessions": 5}')
    code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)
    assert code == 2 and "provenance.json is malformed (sessions is 5" in err, err


def test_a_progress_file_that_is_not_an_object_does_not_stop_the_sweep_view(tmp_path, run_copy):
    from io import StringIO

    from innovwin.sweeps.progress import SweepProgress

    (run_copy / "progress.json").write_text("[1, 2]")
    view = SweepProgress(StringIO(), {"k": 1.0}, 1, {"k": "k"})
    view.submitted("k", str(run_copy))
    view.show({"done": 0, "running": 1, "queued": 0, "failed": 0}, [])
    assert "running" in view.stream.getvalue()


def test_a_basins_line_that_is_not_an_object_is_refused_by_name(capsys, run_copy):
    (run_copy / "basins.jsonl").write_text("[1, 2]\n")
    code, err, _ = run_cli(capsys, "basins", run_copy, *BASINS)
    assert code == 2 and "basins.jsonl line 1 is malformed" in err, err


def test_a_metrics_row_missing_a_field_is_refused_by_name(run_copy):
    rewrite_metrics_row(run_copy, -1, lambda row: row.pop("valid_frac"))
    with pytest.raises(ValueError, match=r"metrics.jsonl line \d+ is malformed \(no valid_frac\)"):
        rundir.read_metrics(run_copy)


def test_a_metrics_row_with_a_nan_fraction_is_refused_by_name(run_copy):
    rewrite_metrics_row(run_copy, 0, lambda row: row.update(valid_frac=float("nan")))
    with pytest.raises(ValueError, match=r"metrics.jsonl line 1 is malformed \(valid_frac is nan"):
        rundir.read_metrics(run_copy)


# --- 8. round 2: every command checks before it writes --------------------------------------------------
def test_refine_checks_the_training_states_key_before_writing(capsys, run_copy):
    state = __import__("torch").load(run_copy / rundir.STATE, weights_only=True)
    rundir.save_torch(run_copy / rundir.STATE, {**state, "key": "0" * 16})
    before = files_of(run_copy)
    code, err, _ = run_cli(capsys, "refine", run_copy, "--evals", "2")
    assert code == 2 and "belongs to another run" in err and files_of(run_copy) == before, err


def test_refine_on_a_directory_that_is_not_a_run_leaves_no_lock(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, err, _ = run_cli(capsys, "refine", tmp_path)
    assert code == 2 and "is not a run directory" in err and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_basins_on_a_directory_that_is_not_a_run_leaves_no_lock(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    code, err, _ = run_cli(capsys, "basins", tmp_path, *BASINS)
    assert code == 2 and "is not a run directory" in err and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def small_spec(tmp_path: Path, base: str = "", grid: str = "n_train = [8, 16]") -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[base]\ntask = "parity:h=4,w=4,g=2"\nsteps = 24\ndevice = "cpu"\n{base}\n[grid]\n{grid}\n')
    return spec


@pytest.mark.parametrize("argv, message", [(["--workers", "0"], "workers must be >= 1"),
                                           (["--max-attempts", "-1"], "max_attempts must be >= 1"),
                                           (["--executor", "ray", "--workers", "0"], "workers must be >= 1")])
def test_a_sweep_refuses_its_own_numbers_before_creating_the_store(capsys, tmp_path, argv, message):
    code, err, _ = run_cli(capsys, "sweep", small_spec(tmp_path), "--store", tmp_path / "store", *argv)
    assert code == 2 and message in err and not (tmp_path / "store").exists(), err


def test_a_sweep_refuses_an_impossible_run_before_creating_the_store(capsys, tmp_path):
    code, err, _ = run_cli(capsys, "sweep", small_spec(tmp_path, grid="n_train = [16, 256]"), "--store",
                           tmp_path / "store")
    assert code == 2 and "is the whole valid set" in err and not (tmp_path / "store").exists(), err


def test_a_dry_run_refuses_what_the_sweep_would(capsys, tmp_path):
    code, err, _ = run_cli(capsys, "sweep", small_spec(tmp_path, grid="n_train = [16, 256]"), "--store",
                           tmp_path / "store", "--dry-run")
    assert code == 2 and "is the whole valid set" in err, err


# --- 9. round 2: a rerun never deletes a finished result first; measured rows are never dropped ------------
def test_a_finished_runs_rerun_keeps_its_summary_when_a_later_step_fails(capsys, run_copy):
    summary = (run_copy / rundir.SUMMARY).read_bytes()
    (run_copy / "log.txt").unlink()
    (run_copy / "log.txt").mkdir()  # the rerun cannot append its log line
    code, err, _ = run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)
    assert code == 2 and "log.txt" in err and (run_copy / rundir.SUMMARY).read_bytes() == summary, err


def test_a_plain_train_rerun_keeps_the_summarys_refined_steps(capsys, run_copy):
    rewrite_json(run_copy / rundir.SUMMARY, lambda s: s.update(refined={"tau_rule": [5, 6]}))
    assert run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)[0] == 0
    assert rundir.read_json(run_copy / rundir.SUMMARY)["refined"] == {"tau_rule": [5, 6]}


def refined_row_only_in_the_file(run_dir: Path) -> dict:
    """What a refine killed after writing metrics.jsonl and before state.pt leaves: a refined row (and its per-sample
    arrays) that only the file holds. Returns the row."""
    rows = rundir.read_metrics(run_dir)
    step = rows[1]["step"] + 1
    assert step < rows[2]["step"]
    refined = {**rows[1], "step": step, "refined": True}
    shutil.copy(rundir.step_path(run_dir, rundir.EVALS, rows[1]["step"], "npz"),
                rundir.step_path(run_dir, rundir.EVALS, step, "npz"))
    rundir.write_atomic(run_dir / rundir.METRICS, "".join(rundir.metrics_line(row) for row in
                                                           sorted(rows + [refined], key=lambda r: r["step"])).encode())
    return refined


def test_a_refined_row_that_state_pt_missed_survives_the_next_train(capsys, run_copy):
    refined = refined_row_only_in_the_file(run_copy)
    assert run_cli(capsys, "train", "--quiet", *FLAGS, "--out", run_copy)[0] == 0
    assert refined in rundir.read_metrics(run_copy)


def test_a_refine_rerun_puts_the_rows_state_pt_missed_into_it(capsys, run_copy):
    refined_row_only_in_the_file(run_copy)
    assert run_cli(capsys, "refine", run_copy, "--evals", "2")[0] == 0
    state = __import__("torch").load(run_copy / rundir.STATE, weights_only=True)
    assert state["metrics"] == (run_copy / rundir.METRICS).read_text()


def test_basins_with_other_settings_keeps_the_rows_measured_before(capsys, run_copy):
    from innovwin.analysis.basins import read_basins

    assert run_cli(capsys, "basins", run_copy, *BASINS, "--device", "cpu")[0] == 0
    before = read_basins(run_copy)
    assert run_cli(capsys, "basins", run_copy, *BASINS, "--device", "cpu", "--seed", "1", "--snapshots", "24")[0] == 0
    after = read_basins(run_copy)
    assert [row for row in after if row["seed"] != 1] == before and [row["step"] for row in after
                                                                       if row["seed"] == 1] == [24]


def test_runs_shows_the_clocks_of_a_run_refined_after_its_sweep(capsys, tmp_path, base_run):
    from innovwin.analysis.readout import one_line

    store, key = make_store(base_run, tmp_path / "store")
    crossed = {"estimate": 7.0, "bracket": [6, 8], "interval": [5.0, 9.0], "censored": None}
    rewrite_json(store / "runs" / key / rundir.SUMMARY, lambda s: s.update(tau_rule=crossed))
    code, _, out = run_cli(capsys, "runs", store)
    assert code == 0 and one_line(rundir.read_json(store / "runs" / key / rundir.SUMMARY)) in out, out


# --- 10. round 2: a sweep preflights every run; an ensemble member fails alone --------------------------
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_sweep_refuses_a_device_this_machine_lacks_before_the_store(capsys, tmp_path):
    spec = small_spec(tmp_path)
    spec.write_text(spec.read_text().replace('device = "cpu"', 'device = "cuda"'))
    code, err, _ = run_cli(capsys, "sweep", spec, "--store", tmp_path / "store")
    assert code == 2 and "torch sees no CUDA device" in err and not (tmp_path / "store").exists(), err


def test_a_sweep_refuses_a_store_whose_runs_folder_is_a_file(capsys, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "runs").write_text("mine")
    code, err, _ = run_cli(capsys, "sweep", small_spec(tmp_path), "--store", tmp_path / "store")
    assert code == 2 and "runs exists and is not a directory" in err, err
    assert not (tmp_path / "store" / "runs.sqlite").exists()


def test_an_ensemble_member_with_a_corrupt_state_fails_alone(tmp_path, base_run):
    from innovwin.sweeps.jobs import Job, Run, run_job, train_job

    configs = [RunConfig(**RUN, seed=seed).resolved() for seed in (0, 1)]
    runs = tuple(Run(config.key(), config.to_dict(), str(tmp_path / str(k))) for k, config in enumerate(configs))
    shutil.copytree(base_run, tmp_path / "0")
    (tmp_path / "0" / rundir.STATE).write_bytes(b"not a state")
    outcomes = {outcome.key: outcome for outcome in run_job(train_job, Job(runs))}
    assert outcomes[runs[0].key].status == "failed" and "corrupt" in outcomes[runs[0].key].error
    assert outcomes[runs[1].key].status == "done"


# --- 11. round 2: bounds and progress --------------------------------------------------------------------
def test_a_spec_of_too_many_seeds_is_refused_naming_the_bound():
    from innovwin.sweeps.spec import MAX_RUNS, parse_spec

    with pytest.raises(ValueError, match=f"1 <= K <= {MAX_RUNS}"):
        parse_spec({"base": {"task": "parity:h=4,w=4,g=2"}, "seeds": 100_000_000})


def test_a_grid_of_too_many_runs_is_refused_before_it_expands():
    from innovwin.sweeps.spec import MAX_RUNS, parse_spec

    with pytest.raises(ValueError, match=f"names {200 * 200} runs, more than the {MAX_RUNS}"):
        parse_spec({"base": {"task": "parity:h=4,w=4,g=2"}, "grid": {"n_train": list(range(1, 201)),
                                                                     "seed": list(range(200))}})


def test_sample_refuses_a_slow_exact_sampler_with_its_estimate(capsys):
    code, err, _ = run_cli(capsys, "sample", "latin:n=16", "--n", "1000000")
    assert code == 2 and "would take about" in err and "fit in 1 h" in err, err


def test_a_chunked_sampler_reports_progress_and_draws_the_same_samples():
    from innovwin.tasks.latin import CHAIN_BATCH

    task, calls = tasks.make("latin:n=3"), []
    cells = task.sample(CHAIN_BATCH + 5, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(CHAIN_BATCH, CHAIN_BATCH + 5), (CHAIN_BATCH + 5, CHAIN_BATCH + 5)]
    assert np.array_equal(cells, task.sample(CHAIN_BATCH + 5, seed=3))


# --- 12. round 2: messages name the file and the field ---------------------------------------------------
def test_sample_out_names_the_file_it_wrote(capsys, tmp_path):
    code, _, out = run_cli(capsys, "sample", "parity:h=4,w=4,g=2", "--n", "2", "--out", tmp_path / "x")
    assert code == 0 and f"to {tmp_path / 'x.npy'}" in out and (tmp_path / "x.npy").is_file(), out


def test_sample_seed_minus_one_names_the_flag(capsys):
    code, err, _ = run_cli(capsys, "sample", "parity:h=4,w=4,g=2", "--seed", "-1")
    assert code == 2 and "--seed must be >= 0" in err, err


def test_a_diverged_rows_refusal_names_its_fields():
    with pytest.raises(ValueError, match="measured train_loss = inf: training diverged"):
        rundir.metrics_line({"step": 4, "train_loss": float("inf"), "valid_frac": 0.0})
