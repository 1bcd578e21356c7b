"""Sweeps on a real Ray cluster of two nodes started as separate processes: a head node, and a second node in its own
mount namespace where the store's parent directory is another (empty) directory, with its own working directory, HOME
and temp dir: a node without the shared disk. The sweep attaches through RAY_ADDRESS only."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_sweep import REAL_SPEC

from innovwin.store.runstore import RunStore

ray = pytest.importorskip("ray")

# long enough to kill the second node mid-run (evaluations at 20, 36, 63, 112, 200, 356, 632, 1000), and one run
# more than the head finishes before the second node has joined on two busy cores
CLUSTER_SPEC = REAL_SPEC.replace("steps = 100", "steps = 1000").replace("[16, 32, 64]", "[16, 32, 64, 128]")
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # a test cluster of its own: no token, no stats


def can_unshare() -> str | None:
    """Why a private mount namespace cannot be made here (None: it can)."""
    if not shutil.which("unshare"):
        return "no unshare command"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare -m is not allowed here ({probe.stderr.strip()})"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (a node started with start_new_session: raylet, GCS, workers)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


class Cluster:
    """A head node and extra nodes, each its own process session, all killed by :meth:`stop`."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a limit
        self.nodes: list[subprocess.Popen] = []

    def ray_start(self, name: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus", "1", "--block",
                "--disable-usage-stats", "--temp-dir", str(self.temp / name), *args]

    def start_head(self) -> None:
        self._spawn(self.ray_start("head", "--head", "--port", str(self.port), "--include-dashboard=false"), "head")

    def start_node(self, name: str, hide: list[Path]) -> subprocess.Popen:
        """A node in its own mount namespace with an empty directory over each of ``hide``, its own working
        directory, HOME and TMPDIR."""
        home, empty = self.root / name / "home", self.root / name / "empty"
        for folder in (home, empty):
            folder.mkdir(parents=True, exist_ok=True)
        mounts = " && ".join(f"mount --bind {empty} {path}" for path in hide)
        start = " ".join(self.ray_start(name, "--address", self.address))
        script = f"{mounts} && cd {home} && HOME={home} TMPDIR={home} exec {start}"
        return self._spawn(["unshare", "-m", "--propagation", "private", "sh", "-c", script], name)

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")
        node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **ENV}, cwd=self.root)
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        """Until ``count`` nodes are alive (asked by a short driver of its own)."""
        code = (f"import ray, time\nray.init(address={self.address!r}, logging_level='ERROR')\n"
                f"deadline = time.time() + {timeout}\n"
                f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.time() < deadline: time.sleep(0.3)\n"
                f"print(sum(n['Alive'] for n in ray.nodes()))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 30,
                                env={**os.environ, **ENV})
        assert result.stdout.strip().endswith(str(count)), (result.stdout + result.stderr)[-2000:] + self.logs()

    def logs(self) -> str:
        return "".join(f"\n--- {path.name}\n{path.read_text()[-1500:]}" for path in self.root.glob("*.log"))

    def stop(self) -> None:
        for node in self.nodes:
            kill_session(node.pid)
            node.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path):
    reason = can_unshare()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(tmp_path)
    try:
        cluster.start_head()
        cluster.wait_for_nodes(1)
        yield cluster
    finally:
        cluster.stop()


def sweep(spec: Path, store: Path, *extra: str, address: str | None = None, cwd: Path) -> subprocess.Popen:
    """`innovwin sweep` in its own session, its console in cwd/STORE_NAME.log (see :func:`finish`)."""
    env = {**os.environ, **ENV}
    env.pop("RAY_ADDRESS", None)
    if address:
        env["RAY_ADDRESS"] = address
    with open(cwd / f"{store.name}.log", "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "innovwin", "sweep", str(spec), "--store", str(store),
                                   *extra], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)
    driver.log = cwd / f"{store.name}.log"
    return driver


def finish(driver: subprocess.Popen, timeout: float) -> str:
    """The sweep's console once it ended (killed, with whatever it left, after ``timeout``)."""
    try:
        driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        kill_session(driver.pid)
        driver.wait()
    return driver.log.read_text()


def synced_state_step(store: Path) -> tuple[Path, int] | None:
    """The run directory trained on the node without the shared disk (its log names a scratch directory) and the
    step of the state.pt the store holds for it, once there is one."""
    import torch

    for log in (store / "runs").glob("*/log.txt"):
        if "innovwin-scratch" in log.read_text() and (log.parent / "state.pt").exists():
            try:
                return log.parent, torch.load(log.parent / "state.pt", weights_only=True)["step"]
            except Exception:  # being replaced this instant
                return None
    return None


def comparable(store: Path) -> dict:
    """Each run's summary less what depends on time or place, its evaluation rows less their timings, its files."""
    with RunStore(store) as reader:
        rows = reader.rows()
    found = {}
    for row in rows:
        run_dir = Path(row["run_dir"])
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary == row["summary"] and summary.pop("out_dir") == str(run_dir)
        summary.pop("timing")
        summary["final"] = {k: v for k, v in summary["final"].items() if "seconds" not in k}
        metrics = [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
                   for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name != ".lock")
        found[row["key"]] = (summary, metrics, files, row["status"], row["attempts"])
    return found


@pytest.mark.slow
def test_sweep_on_a_cluster_without_shared_disk_survives_a_lost_node(cluster, tmp_path):
    """The second node joins the sweep under way and gets a run; kill it while that run is mid-way: the run resumes
    on the head from the state it synced, no attempt is spent, every run directory is complete in the driver's store
    and the results equal a local sweep's."""
    shared = tmp_path / "shared"  # the store's parent: another (empty) directory on the second node
    shared.mkdir()
    spec, store = tmp_path / "spec.toml", shared / "store"
    spec.write_text(CLUSTER_SPEC)
    driver = sweep(spec, Path(os.path.relpath(store, tmp_path)), address=cluster.address, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "runs to do" not in driver.log.read_text() and driver.poll() is None:
        time.sleep(0.2)
    assert "on 1 nodes" in driver.log.read_text(), finish(driver, 5) + cluster.logs()
    cluster.start_node("node2", hide=[shared])  # joins the sweep under way
    deadline, found = time.monotonic() + 120, None
    while time.monotonic() < deadline and driver.poll() is None:
        found = synced_state_step(store)
        if found and found[1] >= 112:
            break
        time.sleep(0.2)
    assert found and found[1] >= 112, finish(driver, 5) + cluster.logs()
    killed_dir, killed_step = found
    live = json.loads((killed_dir / "progress.json").read_text())  # its live progress reached the store too
    assert live["state"] == "running" and live["step"] >= killed_step
    kill_session(cluster.nodes[1].pid)
    output = finish(driver, 240)
    assert driver.returncode == 0, output + cluster.logs()
    assert "syncs to the store (no shared disk)" in output and "writes the store" in output
    assert f"preempted {killed_dir.name.rsplit('-', 1)[0].replace('n_train', 'n_train=')}" in output, output
    assert "queued again, its attempt not counted" in (killed_dir / "log.txt").read_text()
    resumed = [line for line in (killed_dir / "log.txt").read_text().splitlines() if " resume " in line]
    assert resumed and int(resumed[-1].split(" from step ")[1].split()[0]) >= killed_step, output
    assert not (store / ".ray-preflight").exists()

    local = tmp_path / "local"
    assert finish(sweep(spec, local, "--workers", "2", cwd=tmp_path), 240)
    cluster_runs, local_runs = comparable(store), comparable(local)
    assert set(cluster_runs) == set(local_runs) and len(local_runs) == 4
    for key, (summary, metrics, files, status, attempts) in cluster_runs.items():
        assert (status, attempts) == ("done", 1)  # the node's loss spent no attempt
        assert (summary, metrics, files) == local_runs[key][:3], key  # every file there, the same results


@pytest.mark.slow
def test_a_node_without_innovwin_is_refused_by_the_preflight(cluster, tmp_path):
    """A node whose Python cannot import innovwin (its source hidden there) and that does not see the store: with
    innovwin shipped (the default) it runs the preflight, so a sweep that asserts a shared store refuses before
    training, naming it; with nothing shipped it is refused in one line and gets no run: no attempt is spent on it."""
    import innovwin

    shared = tmp_path / "shared"
    shared.mkdir()
    spec, store = tmp_path / "spec.toml", shared / "store"
    spec.write_text(REAL_SPEC.replace("n_train = [16, 32, 64]", "n_train = [16, 32]").replace("steps = 100",
                                                                                              "steps = 40"))
    cluster.start_node("bare", hide=[Path(innovwin.__file__).parent, shared])
    cluster.wait_for_nodes(2)
    driver = sweep(spec, store, "--ray-storage", "shared", address=cluster.address, cwd=tmp_path)
    output = finish(driver, 120)
    assert driver.returncode == 2 and "does not see the store's directory" in output, output
    with RunStore(store) as reader:
        assert reader.rows() == []

    output = finish(sweep(spec, store, "--ray-runtime-env", "{}", address=cluster.address, cwd=tmp_path), 120)
    refused = [line for line in output.splitlines() if "refused" in line]
    assert len(refused) == 1 and "innovwin cannot run there (ModuleNotFoundError" in refused[0], output
    with RunStore(store) as reader:
        assert [(row["status"], row["attempts"]) for row in reader.rows()] == [("done", 1)] * 2, output
