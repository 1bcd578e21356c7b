"""Where and with what a run was computed: ``provenance.json`` in its run directory.

A run can be resumed on another machine or with another torch, so the file keeps one *session* per process that
trained it: the package version and git commit (when the package runs from a checkout, with ``dirty`` when it has
uncommitted changes), Python, torch, CUDA, the device's name, the host, the steps it covered and its start and end
times (UTC). A session killed before its end keeps ``ended: null``.
"""
from __future__ import annotations

import datetime
import platform
import socket
import subprocess
from pathlib import Path

from innovwin.store import schemas
from innovwin.store.files import read_json, write_json

PROVENANCE = "provenance.json"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit(path=None) -> dict | None:
    """{"commit", "dirty"} of the checkout holding ``path`` (this package by default); None outside one."""
    where = Path(path or __file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    """The software and hardware of this process for a run on ``device`` (a torch.device)."""
    import torch

    import innovwin

    cuda = device.type == "cuda"
    return {
        "innovwin": innovwin.__version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "native_extension": innovwin.native_available(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def read(run_dir) -> dict:
    """The run's provenance ({"sessions": [...]}, none before its first session); a damaged file is refused, named
    (a session appended to it would overwrite what it still holds)."""
    path = Path(run_dir) / PROVENANCE
    if not path.exists():
        return {"sessions": []}
    return schemas.check(read_json(path), str(path), schemas.PROVENANCE,
                         fix="move it aside to start a new record of the run's sessions")


def start_session(run_dir, device, from_step: int) -> None:
    """Append this process's session (its start, environment and first step) to the run's provenance."""
    record = read(run_dir)
    record["sessions"].append({"started": now(), "ended": None, "from_step": from_step, "to_step": None,
                               **environment(device)})
    write_json(Path(run_dir) / PROVENANCE, record)


def end_session(run_dir, to_step: int) -> None:
    """Close this process's session (the last one) at ``to_step``."""
    record = read(run_dir)
    if record["sessions"]:
        record["sessions"][-1].update(ended=now(), to_step=to_step)
        write_json(Path(run_dir) / PROVENANCE, record)
