"""Run directories without a shared disk: a task trains in a node-local scratch directory and streams what changes
to a writer actor on the driver's node, which owns the store's run directories.

Why this way: Ray's object store already moves bytes between nodes, so nothing but Ray is needed (no NFS, no
bucket), and one writer per store is also the fence: it takes a run's files only from the attempt the driver handed
the run to last (:meth:`RunDirWriter.open`), so a straggler of a lost node cannot write after its run went elsewhere.

What is sent (a :class:`Syncer` thread every :data:`SYNC_EVERY_S`, and once more when the job ends, whichever way):
append-only files (metrics.jsonl, loss.jsonl, log.txt) as their new complete lines, every other file whole (each is
written atomically, :mod:`innovwin.store.files`), deletions, in an order that keeps the store's copy resumable at
every batch: state.pt is read first and sent last, so the rows, arrays and snapshots it names are there before it.
A run retried on another node first pulls its directory (:meth:`RunDirWriter.pull`) and resumes from the last
state.pt that arrived. The summary names the store's run directory, not the scratch one.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from pathlib import Path

from innovwin.store.files import write_atomic
from innovwin.store.metrics import METRICS, STATE
from innovwin.store.runlog import LOG, LOSS

SYNC_EVERY_S = 1.0
SCRATCH = "innovwin-scratch"  # the folder of the node's temp dir that holds the synced tasks' scratch directories
HELD = ".held"
APPENDED = (METRICS, LOSS, LOG)  # appended by training; rewritten whole (a new file) only when a run resumes
LAST = (STATE, "state.next.pt")  # read first, sent last
SKIPPED = (".lock",)


class RunDirWriter:
    """The Ray actor (pinned to the driver's node) that writes the store's run directories for tasks on nodes that do
    not share its disk. ``open`` names the attempt a run directory accepts files from; every other is refused."""

    def __init__(self):
        self.current: dict[str, str] = {}  # run directory -> the attempt it accepts

    def open(self, run_dirs: list[str], attempt: str) -> None:
        for run_dir in run_dirs:
            self.current[run_dir] = attempt

    def close(self, run_dirs: list[str], attempt: str) -> None:
        """Fence ``attempt`` off (its job ended or was lost); a later ``open`` fences it off anyway."""
        for run_dir in run_dirs:
            if self.current.get(run_dir) == attempt:
                del self.current[run_dir]

    def pull(self, run_dir: str, attempt: str) -> dict[str, bytes | None] | None:
        """The run directory's files (relative path -> bytes, None for a folder), None when ``attempt`` is fenced
        off."""
        if self.current.get(run_dir) != attempt:
            return None
        root = Path(run_dir)
        files = {}
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_dir():
                files[str(path.relative_to(root))] = None
            elif path.is_file() and path.name not in SKIPPED and not path.name.endswith(".tmp"):
                files[str(path.relative_to(root))] = path.read_bytes()
        return files

    def push(self, run_dir: str, attempt: str, changes: list[tuple[str, str, bytes]]) -> bool:
        """Apply ``changes`` ((relative path, "mkdir" | "append" | "write" | "delete", bytes), in order); False (nothing
        written) when ``attempt`` is fenced off."""
        if self.current.get(run_dir) != attempt:
            return False
        root = Path(run_dir)
        for name, how, data in changes:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if how == "mkdir":
                path.mkdir(exist_ok=True)
            elif how == "append":
                with open(path, "ab") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            elif how == "write":
                write_atomic(path, data)
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return True


class Fenced(RuntimeError):
    """The writer refused this attempt's files: the driver handed its run to another attempt."""


class Syncer:
    """Mirrors scratch run directories (scratch -> store run directory) to the writer, in a thread and at ``stop``."""

    def __init__(self, ray, writer, attempt: str, dirs: dict[Path, str]):
        self.ray, self.writer, self.attempt, self.dirs = ray, writer, attempt, dirs
        self.sent: dict[Path, dict[str, tuple]] = {scratch: scan(scratch) for scratch in dirs}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="innovwin-sync", daemon=True)

    def start(self) -> "Syncer":
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(SYNC_EVERY_S):
            try:
                self.sync()
            except BaseException as error:  # kept for stop(), which raises it in the task
                self.error = error
                return

    def stop(self) -> None:
        """End the thread and send what is left (blocking)."""
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error
        self.sync()

    def sync(self) -> None:
        for scratch, run_dir in self.dirs.items():
            changes, seen = changed(scratch, self.sent[scratch])
            if changes and not self.ray.get(self.writer.push.remote(run_dir, self.attempt, changes)):
                raise Fenced(f"{run_dir} was handed to another attempt; this one stops writing it")
            self.sent[scratch] = seen


def scan(root: Path) -> dict[str, tuple | None]:
    """relative path -> (inode, size, mtime) of the files worth sending, None for a folder."""
    found = {}
    for path in root.rglob("*"):
        if path.name in SKIPPED or path.name.endswith(".tmp"):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.is_dir():
            found[str(path.relative_to(root))] = None
        elif path.is_file():
            found[str(path.relative_to(root))] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return found


def changed(root: Path, sent: dict[str, tuple]) -> tuple[list[tuple[str, str, bytes]], dict[str, tuple]]:
    """What to send of ``root`` since ``sent`` (see the module), and the new ``sent``."""
    last = {}
    for name in LAST:  # read before the rest: whatever it names is on disk already
        path = root / name
        if path.is_file():
            stat = path.stat()
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if sent.get(name) != key:
                last[name] = (key, read(path))
    now = scan(root)
    changes, seen = [], {}
    for name, key in sorted(now.items()):
        if name in LAST:
            continue
        before = sent.get(name)
        if key is None:  # a folder
            if name not in sent:
                changes.append((name, "mkdir", b""))
            seen[name] = None
        elif name in APPENDED:
            data = read(root / name)
            if data is None:
                continue
            whole = data[:data.rfind(b"\n") + 1]  # complete lines only: a line being written waits
            grew = before is not None and before[0] == key[0] and before[1] <= len(whole)
            if before is not None and grew:
                if len(whole) > before[1]:
                    changes.append((name, "append", whole[before[1]:]))
            else:
                changes.append((name, "write", whole))
            seen[name] = (key[0], len(whole), key[2])
        elif before != key:
            data = read(root / name)
            if data is not None:
                changes.append((name, "write", data))
                seen[name] = key
        else:
            seen[name] = key
    for name, (key, data) in last.items():
        if data is not None:
            changes.append((name, "write", data))
            seen[name] = key
    for name in LAST:
        if name in sent and name not in last and (root / name).is_file():
            seen[name] = sent[name]
    changes += [(name, "delete", b"") for name in sent if name not in seen and not (root / name).exists()]
    return changes, seen


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:  # moved or deleted since the scan: the next sync sees how it ended
        return None


def synced_job(ray, writer, attempt: str, job, run) -> list:
    """Run ``job`` (its runs' directories in the store) with ``run(job) -> outcomes`` in a scratch directory of this
    node, pulled from and synced to ``writer``; the outcomes, their summaries naming the store's directories."""
    from dataclasses import replace

    from innovwin.store.files import write_json
    from innovwin.store.rundir import SUMMARY
    from innovwin.sweeps.jobs import Job

    scratch_root, held = scratch_dir()
    try:
        dirs = {}
        for index, each in enumerate(job.runs):
            scratch = scratch_root / str(index) / Path(each.run_dir).name
            files = ray.get(writer.pull.remote(each.run_dir, attempt))
            if files is None:
                raise Fenced(f"{each.run_dir} was handed to another attempt before this one started")
            for name, data in files.items():
                (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                if data is None:
                    (scratch / name).mkdir(exist_ok=True)
                else:
                    (scratch / name).write_bytes(data)
            scratch.mkdir(parents=True, exist_ok=True)
            dirs[scratch] = each.run_dir
        syncer = Syncer(ray, writer, attempt, dirs).start()
        local = {each.key: str(scratch) for scratch, each in zip(dirs, job.runs)}
        try:
            outcomes = run(Job(tuple(replace(each, run_dir=local[each.key]) for each in job.runs)))
            for outcome in outcomes:  # the summary names the store's run directory, as a local sweep's does
                if outcome.summary is not None:
                    outcome.summary["out_dir"] = dirs[Path(local[outcome.key])]
                    write_json(Path(local[outcome.key]) / SUMMARY, outcome.summary)
        finally:
            syncer.stop()
        return outcomes
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)
        held.close()


def scratch_dir():
    """A new scratch directory in this node's temp dir, and the open file whose lock (flock) says its task lives.
    Those of tasks that died (a lost worker leaves its scratch behind, unlocked by the kernel) are removed first."""
    root = Path(tempfile.gettempdir()) / SCRATCH
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        if old.name.startswith("."):
            continue  # being made (locked, then named)
        try:
            with open(old / HELD, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # its task lives (or it went meanwhile)
            continue
    made = Path(tempfile.mkdtemp(prefix=".", dir=root))
    held = open(made / HELD, "a")
    fcntl.flock(held, fcntl.LOCK_EX)
    scratch = made.with_name(made.name[1:])
    made.rename(scratch)
    return scratch, held
