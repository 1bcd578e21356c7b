"""The pieces of a cluster sweep that need no cluster: the scratch-to-store sync and its fence, the address check,
the runtime env, the preflight's verdicts, RAY_ADDRESS on the command line, and a preempted run in the driver."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from innovwin.cli import main
from innovwin.store.runstore import RunStore
from innovwin.sweeps import ray_cluster
from innovwin.sweeps.driver import run_sweep
from innovwin.sweeps.jobs import Outcome
from innovwin.sweeps.ray_sync import RunDirWriter, changed, scan


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
            if p.name != ".lock"}


def sync(writer, scratch, store_dir, sent, attempt="a#1"):
    changes, seen = changed(scratch, sent)
    return writer.push(str(store_dir), attempt, changes), seen, changes


def test_sync_mirrors_appends_whole_files_folders_and_deletions(tmp_path):
    scratch, store_dir = tmp_path / "scratch", tmp_path / "store" / "run"
    scratch.mkdir()
    writer = RunDirWriter()
    writer.open([str(store_dir)], "a#1")
    sent = scan(scratch)
    (scratch / "evals").mkdir()
    (scratch / "evals" / "step_00000020.npz").write_bytes(b"arrays")
    (scratch / "metrics.jsonl").write_text('{"step": 20}\n{"step": 3')  # a row being written: waits
    (scratch / "config.json").write_text("{}")
    ok, sent, changes = sync(writer, scratch, store_dir, sent)
    assert ok and (store_dir / "metrics.jsonl").read_text() == '{"step": 20}\n'
    assert (store_dir / "evals" / "step_00000020.npz").read_bytes() == b"arrays"
    with open(scratch / "metrics.jsonl", "a") as handle:
        handle.write('6}\n')
    ok, sent, changes = sync(writer, scratch, store_dir, sent)
    assert [(name, how) for name, how, _ in changes] == [("metrics.jsonl", "append")]
    # a resume rewrites metrics.jsonl whole (a new file) and drops an evaluation past its state
    (scratch / "metrics.tmp").write_text('{"step": 20}\n')
    os.replace(scratch / "metrics.tmp", scratch / "metrics.jsonl")
    (scratch / "evals" / "step_00000020.npz").unlink()
    ok, sent, changes = sync(writer, scratch, store_dir, sent)
    assert ok and tree(store_dir) == tree(scratch)
    assert sync(writer, scratch, store_dir, sent)[2] == []  # nothing changed, nothing sent


def test_the_training_state_is_read_first_and_sent_last(tmp_path):
    """Whatever a state.pt names was on disk before it: sent before it, so the store's copy resumes at any batch."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("state.pt", "metrics.jsonl", "summary.json", "progress.json"):
        (scratch / name).write_text("x\n")
    changes, _ = changed(scratch, {})
    assert changes[-1][0] == "state.pt"


def test_a_fenced_attempt_writes_nothing(tmp_path):
    store_dir = tmp_path / "run"
    writer = RunDirWriter()
    writer.open([str(store_dir)], "a#1")
    writer.open([str(store_dir)], "a#2")  # the run was handed to another attempt
    assert writer.push(str(store_dir), "a#1", [("log.txt", "append", b"late\n")]) is False
    assert writer.pull(str(store_dir), "a#1") is None and not store_dir.exists()
    writer.close([str(store_dir)], "a#2")
    assert writer.push(str(store_dir), "a#2", [("log.txt", "append", b"late\n")]) is False


def test_an_unreachable_address_is_one_line_within_seconds(tmp_path, monkeypatch, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    spec = tmp_path / "spec.toml"
    spec.write_text('[base]\ntask = "parity:h=4,w=4,g=2"\nsteps = 20\n[grid]\nseed = [0]\n')
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # implies --executor ray
    start = time.monotonic()
    assert main(["sweep", str(spec), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - start < 15 and len(err) == 1 and f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err[0]
    with pytest.raises(ValueError, match="expected auto, HOST:PORT"):
        ray_cluster.check_reachable("headnode")


def test_a_port_that_is_not_a_ray_cluster_is_one_line_within_seconds(tmp_path):
    """A port that takes the connection but never answers as Ray does (another service; a missing auth token acts
    alike): ray.init would wait for minutes; the sweep gives up after ATTACH_TIMEOUT_S (in its own process, as
    Ray's attempt goes on in a thread until the process ends)."""
    spec = tmp_path / "spec.toml"
    spec.write_text('[base]\ntask = "parity:h=4,w=4,g=2"\nsteps = 20\n[grid]\nseed = [0]\n')
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "innovwin", "sweep", str(spec), "--store", str(tmp_path / "s"),
                                 "--executor", "ray", "--ray-address", address], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert result.returncode == 2 and time.monotonic() - start < 30
    assert f"innovwin sweep: error: no Ray cluster answered at '{address}' within" in result.stderr


def test_ray_options_need_the_ray_executor(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('[base]\ntask = "parity:h=4,w=4,g=2"\nsteps = 20\n[grid]\nseed = [0]\n')
    argv = ["sweep", str(spec), "--store", str(tmp_path / "store"), "--ray-storage", "sync", "--dry-run"]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(argv) == 2 and "need --executor ray" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert main(argv) == 0  # RAY_ADDRESS implies the ray executor (a dry run attaches to nothing)


def test_runtime_env_from_json_text_or_file(tmp_path):
    assert ray_cluster.parse_runtime_env('{"env_vars": {"A": "1"}}', remote=True) == {"env_vars": {"A": "1"}}
    path = tmp_path / "env.json"
    path.write_text(json.dumps({"pip": ["numpy"]}))
    assert ray_cluster.parse_runtime_env(str(path), remote=True) == {"pip": ["numpy"]}
    shipped = ray_cluster.parse_runtime_env(None, remote=True)["py_modules"]
    assert len(shipped) == 1 and (Path(shipped[0]) / "__init__.py").is_file()
    assert ray_cluster.parse_runtime_env(None, remote=False) is None
    with pytest.raises(ValueError, match="not JSON text"):
        ray_cluster.parse_runtime_env("{not json", remote=True)
    with pytest.raises(ValueError, match="must be a mapping"):
        ray_cluster.parse_runtime_env("[1]", remote=True)


def test_the_preflight_refuses_a_node_that_differs():
    here = {"innovwin": "0.1.0", "git": "abc", "native": True, "torch": "2.5", "gpus": 0, "sees_store": True}
    assert ray_cluster.mismatch(here, here, "auto", needs_gpu=False) is None
    assert "torch 2.4 there, 2.5 here" in ray_cluster.mismatch(here, {**here, "torch": "2.4"}, "auto", False)
    assert "commit" in ray_cluster.mismatch(here, {**here, "git": "def"}, "auto", False)
    assert ray_cluster.mismatch(here, {**here, "git": None}, "auto", False) is None  # shipped: no checkout there
    assert "need a GPU" in ray_cluster.mismatch(here, here, "auto", needs_gpu=True)
    blind = {**here, "sees_store": False}
    assert ray_cluster.mismatch(here, blind, "auto", False) is None  # it syncs instead
    assert "does not see the store" in ray_cluster.mismatch(here, blind, "shared", False)


class Preempting:
    """An executor whose first job is lost with its node; the rest succeed."""

    capacity = 1

    def __init__(self, job_fn=None, **_):
        self.out, self.lost = [], False

    def submit(self, job):
        self.out.append(job)

    def wait(self, timeout):
        ran, self.out = self.out, []
        outcomes = []
        for job in ran:
            if not self.lost:
                self.lost = True
                Path(job.runs[0].run_dir).mkdir(parents=True)  # it had started
                outcomes += job.preempted("node n2 was lost")
            else:
                outcomes += [Outcome(run.key, {"tau_rule": None, "tau_mem": None, "final": {"step": 20}}, None, 0.1)
                             for run in job.runs]
        return outcomes

    def describe(self):
        return "preempting"

    def notes(self):
        return []

    def close(self):
        pass


def test_a_preempted_run_is_queued_again_without_spending_an_attempt(tmp_path, monkeypatch):
    from innovwin.sweeps import driver

    monkeypatch.setattr(driver, "make_executor", lambda name, job_fn, **kw: Preempting())
    from innovwin.config import RunConfig

    config = RunConfig.from_dict({"task": "parity:h=4,w=4,g=2", "steps": 20}).resolved()
    key = config.key()
    with RunStore(tmp_path / "store", write=True) as store:
        counts = run_sweep(store, {key: config.to_dict()}, max_attempts=1, names={key: "seed=0"}, poll_s=0.01)
        row = store.get(key)
        log = (store.run_dir(key, "seed=0") / "log.txt").read_text()
    assert counts["done"] == 1 and row["attempts"] == 1  # one attempt, though it was handed out twice
    assert "preempted: node n2 was lost; queued again, its attempt not counted" in log



def test_a_dead_tasks_scratch_is_removed_by_the_next_task_on_its_node(tmp_path, monkeypatch):
    import tempfile

    from innovwin.sweeps.ray_sync import scratch_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    living, held = scratch_dir()
    dead, lost = scratch_dir()
    lost.close()  # its worker died: the kernel let go of its lock
    (dead / "0").mkdir()
    third, mine = scratch_dir()
    assert living.is_dir() and not dead.exists() and third.is_dir()
    held.close()
    mine.close()
