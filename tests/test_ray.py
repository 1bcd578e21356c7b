"""The Ray executor on a real local Ray instance: a small real sweep killed midway, then completed."""
import os
import signal
import subprocess
import sys
import time

import pytest
from test_sweep import REAL_SPEC, done_runs

from innovwin.store.runstore import RunStore
from innovwin.sweeps.driver import run_sweep
from innovwin.sweeps.spec import load_spec

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_sweep_killed_midway_then_completed(tmp_path):
    spec_path, store = tmp_path / "spec.toml", tmp_path / "store"
    spec_path.write_text(REAL_SPEC)
    command = [sys.executable, "-m", "innovwin", "sweep", str(spec_path), "--store", str(store),
               "--executor", "ray", "--workers", "2"]
    # its own session, so that Ray's helper processes can be stopped with it
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and done_runs(store) < 1 and driver.poll() is None:
            time.sleep(0.2)
        assert done_runs(store) >= 1, driver.communicate(timeout=5)[0].decode()[-2000:]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver's Ray processes (raylet, GCS, workers)
        except ProcessLookupError:
            pass
    with RunStore(store) as reader:
        before = {row["key"]: row for row in reader.rows()}
    finished = {key for key, row in before.items() if row["status"] == "done"}
    assert 1 <= len(finished) < 3

    runs = load_spec(spec_path).expand()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with RunStore(store, write=True) as writer:
            counts = run_sweep(writer, runs, executor="ray", stream=None, poll_s=0.2)
            after = {row["key"]: row for row in writer.rows()}
    finally:
        ray.shutdown()
    assert counts == {"queued": 0, "running": 0, "done": 3, "failed": 0}
    for key in finished:
        assert after[key]["attempts"] == 1 and after[key]["summary"] == before[key]["summary"]
    assert all(row["summary"]["final"]["step"] == 100 for row in after.values())
