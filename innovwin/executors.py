"""Executors: run a sweep's queued runs and record each result in the store as it lands.

``run_sweep`` is the driver loop, the same for every executor: queue the runs, hand the
longest ones out first, write each result to the store the moment it returns, print a live
summary line. Executors only start runs and report them back:

- ``LocalExecutor``: long-lived worker processes (spawned, so CUDA and torch threads start
  clean). With GPUs each worker is pinned to one through ``CUDA_VISIBLE_DEVICES`` (more
  workers than GPUs share them round-robin); on CPU, workers x threads per run = cores.
- ``RayExecutor``: Ray core tasks that ask for their share of a GPU (or their CPUs), on a
  local Ray instance or an existing cluster (``--ray-address auto|HOST:PORT|ray://...``).
  The store directory must be on a filesystem the nodes share: runs write their run
  directories there, while only the driver writes the SQLite table.

A run function has the signature ``run_fn(config_dict, run_dir) -> summary dict`` and must
be importable by name (module-level) so that workers can load it.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Callable

from innovwin.store import RunStore

EXECUTORS = ("local", "ray")
STOP_GRACE_S = 30.0  # how long a stopped sweep waits for runs to save their state
RunFn = Callable[[dict, str], dict]


def train_run(config: dict, run_dir: str) -> dict:
    """The default run function: train (or resume, or return the finished summary of) one run."""
    from innovwin.config import RunConfig
    from innovwin.train import train

    return train(RunConfig.from_dict(config), run_dir, quiet=True)


def estimate_cost(config: dict) -> float:
    """Relative cost of a run, for longest-first ordering and the ETA: tokens x parameters
    over training steps plus the evaluations' network calls (a DiT sample costs two calls per
    Heun step, a GPT sample one pass)."""
    tokens = _n_cells(config["task"])
    params = config["depth"] * (4 + 2 * config["mlp_ratio"]) * config["width"] ** 2
    n_evals = 1 + config["evals_per_decade"] * math.log10(max(config["steps"] / config["first_eval"], 1.0))
    calls = 2 * config["sampler_steps"] if config["arch"] == "dit" else 1
    samples = 3 * config["steps"] * config["batch"] + n_evals * config["eval_samples"] * calls
    return float(samples * tokens * params)


@functools.lru_cache(maxsize=None)
def _n_cells(task_spec: str) -> int:
    from innovwin.tasks import make

    return make(task_spec).n_cells


def execute(run_fn: RunFn, config: dict, run_dir: str) -> tuple[str, object, float]:
    """Run one run in this process: ("done", summary, seconds) or ("failed", traceback, seconds).

    An exclusive lock beside the run directory makes a second attempt wait for a straggler of
    a killed driver instead of writing the same directory at the same time.
    """
    start = time.perf_counter()
    Path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{run_dir}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            summary = run_fn(config, run_dir)
            if not isinstance(summary, dict):
                raise TypeError(f"run function returned {type(summary).__name__}, not a summary dict")
            return "done", summary, time.perf_counter() - start
        except Exception:  # a failed run is recorded, the sweep goes on
            return "failed", traceback.format_exc(), time.perf_counter() - start


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids this process may use: its CUDA_VISIBLE_DEVICES, or every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


# --- local processes -------------------------------------------------------------------
def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the driver dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn, gpu: str | None, threads: int, run_fn: RunFn) -> None:
    _die_with_parent()
    os.setpgrp()  # out of the terminal's process group: Ctrl-C reaches the driver, which stops the runs
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(threads)
    try:
        while (task := conn.recv()) is not None:
            conn.send(execute(run_fn, *task))
    except KeyboardInterrupt:  # the driver stopped the sweep; train saved its state first
        pass


class LocalExecutor:
    """A fixed set of worker processes, each running one run at a time."""

    def __init__(self, run_fn: RunFn, workers: int | None = None, n_runs: int | None = None):
        gpus = visible_gpus()
        cores = cpu_count()
        if workers is None:
            workers = len(gpus) if gpus else cores
            workers = max(1, min(workers, n_runs or workers))
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.run_fn = run_fn
        self.threads = max(1, cores // workers)
        self.devices = [gpus[i % len(gpus)] for i in range(workers)] if gpus else [None] * workers
        self.capacity = workers
        self._context = multiprocessing.get_context("spawn")
        self._workers = [None] * workers  # slot -> (process, connection)
        self._busy: dict[int, str] = {}  # slot -> key

    def describe(self) -> str:
        where = f"GPUs {','.join(sorted(set(self.devices)))}" if self.devices[0] is not None else "CPU"
        return f"local: {self.capacity} workers on {where}, {self.threads} threads per run"

    def submit(self, key: str, config: dict, run_dir: str) -> None:
        slot = next(i for i in range(self.capacity) if i not in self._busy)
        if self._workers[slot] is None:
            self._workers[slot] = self._start(slot)
        self._workers[slot][1].send((config, run_dir))
        self._busy[slot] = key

    def _start(self, slot: int):
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.devices[slot], self.threads,
                                                                   self.run_fn), daemon=True)
        process.start()
        child.close()
        return process, parent

    def wait(self, timeout: float) -> list[tuple[str, str, object, float]]:
        """Results that arrived within ``timeout``: (key, status, summary or error, seconds)."""
        watched = {}
        for slot in self._busy:
            process, conn = self._workers[slot]
            watched[conn] = watched[process.sentinel] = slot
        results = []
        for ready in multiprocessing.connection.wait(list(watched), timeout):
            slot = watched[ready]
            if slot not in self._busy:
                continue  # both its pipe and its sentinel fired
            key = self._busy.pop(slot)
            process, conn = self._workers[slot]
            try:
                results.append((key, *conn.recv()))
            except (EOFError, OSError):
                process.join(timeout=5)
                results.append((key, "failed", f"worker process died (exit code {process.exitcode})", 0.0))
                self._workers[slot] = None
        return results

    def close(self) -> None:
        """Stop every worker. A run in flight gets SIGTERM, on which ``train`` saves its state before it
        exits (so the next sweep resumes it from there); a worker that does not stop in time is killed."""
        workers = [(slot, *worker) for slot, worker in enumerate(self._workers) if worker is not None]
        for slot, process, conn in workers:  # tell every worker first, then wait for all of them
            if slot in self._busy:
                process.terminate()
            else:
                try:
                    conn.send(None)
                except OSError:
                    process.kill()
        deadline = time.monotonic() + STOP_GRACE_S
        for slot, process, conn in workers:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self._workers = [None] * self.capacity
        self._busy.clear()


# --- Ray -------------------------------------------------------------------------------
def _ray_task(run_fn: RunFn, config: dict, run_dir: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    return execute(run_fn, config, run_dir)


class RayExecutor:
    """Ray core tasks; only the driver (this process) touches the store."""

    def __init__(self, run_fn: RunFn, workers: int | None = None, address: str | None = None,
                 n_runs: int | None = None):
        try:
            import ray
        except ModuleNotFoundError:
            raise ValueError("the ray executor needs Ray: pip install 'innovwin[ray]'") from None
        self.ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
            except ConnectionError as error:
                raise ValueError(f"cannot reach a Ray cluster at {address!r}: {error}") from None
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if gpus:
            self.capacity = workers or gpus
            self.threads = 1
            options = {"num_gpus": min(1.0, gpus / self.capacity), "num_cpus": 1}
        else:  # threads per run: the cluster's share, but no more than one node has
            node_cpus = max([int((node.get("Resources") or {}).get("CPU", 0)) for node in ray.nodes()
                             if node.get("Alive")] or [cpus])
            self.capacity = max(1, min(workers or cpus, n_runs or cpus))
            self.threads = max(1, min(cpus // self.capacity, node_cpus))
            options = {"num_cpus": self.threads}
        self.resources = (gpus, cpus)
        self.run_fn = run_fn
        self._remote = ray.remote(_ray_task).options(max_retries=0, **options)
        self._busy: dict = {}  # object ref -> key

    def describe(self) -> str:
        gpus, cpus = self.resources
        return f"ray: {self.capacity} tasks at a time on a cluster of {cpus} CPUs, {gpus} GPUs"

    def submit(self, key: str, config: dict, run_dir: str) -> None:
        self._busy[self._remote.remote(self.run_fn, config, run_dir, self.threads)] = key

    def wait(self, timeout: float) -> list[tuple[str, str, object, float]]:
        if not self._busy:
            return []
        ready, _ = self.ray.wait(list(self._busy), num_returns=1, timeout=timeout)
        results = []
        for ref in ready:
            key = self._busy.pop(ref)
            try:
                results.append((key, *self.ray.get(ref)))
            except self.ray.exceptions.RayError as error:  # the task's worker or node died
                results.append((key, "failed", f"ray task failed: {error}", 0.0))
        return results

    def close(self) -> None:
        """Cancel the tasks in flight: a cancel interrupts the task like Ctrl-C, so ``train`` saves its
        state; tasks still running after the grace period are killed."""
        refs = list(self._busy)
        for ref in refs:
            self.ray.cancel(ref)
        if refs:
            _, running = self.ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
            for ref in running:
                self.ray.cancel(ref, force=True)
        self._busy.clear()
        if self._owns_ray:
            self.ray.shutdown()


# --- the driver loop -------------------------------------------------------------------
class Progress:
    """The live summary line: done / running / queued / failed, and the time left."""

    def __init__(self, stream, costs: dict[str, float], capacity: int):
        self.stream = stream
        self.costs = costs
        self.capacity = capacity
        self.start = time.monotonic()
        self.seconds_per_cost: list[tuple[float, float]] = []  # (seconds, cost) of runs done here
        self.tty = bool(stream) and hasattr(stream, "isatty") and stream.isatty()
        self.last_counts = None

    def finished(self, key: str, seconds: float) -> None:
        if seconds > 0:
            self.seconds_per_cost.append((seconds, self.costs.get(key, 0.0)))

    def eta(self, left: list[str]) -> float | None:
        seconds, cost = (sum(column) for column in zip(*self.seconds_per_cost)) if self.seconds_per_cost else (0, 0)
        if not left or cost <= 0:
            return None if left else 0.0
        return seconds / cost * sum(self.costs.get(key, 0.0) for key in left) / min(self.capacity, len(left))

    def show(self, counts: dict[str, int], left: list[str], final: bool = False) -> None:
        if not self.stream or (not self.tty and not final and counts == self.last_counts):
            return  # a log file gets a line per change, a terminal a line that ticks
        self.last_counts = dict(counts)
        eta = self.eta(left)
        line = (f"[sweep] {counts['done']} done · {counts['running']} running · {counts['queued']} queued · "
                f"{counts['failed']} failed · {_duration(time.monotonic() - self.start)} elapsed · "
                f"ETA {'?' if eta is None else _duration(eta)}")
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r\033[K" if self.tty else "") + line + end)
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def make_executor(name: str, run_fn: RunFn, *, workers=None, ray_address=None, n_runs=None):
    if name == "local":
        if ray_address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor(run_fn, workers, n_runs)
    if name == "ray":
        return RayExecutor(run_fn, workers, ray_address, n_runs)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


def run_sweep(store: RunStore, runs: dict[str, dict], *, executor: str = "local", workers: int | None = None,
              ray_address: str | None = None, max_attempts: int = 3, run_fn: RunFn = train_run,
              stream=None, poll_s: float = 1.0) -> dict[str, int]:
    """Run every run of ``runs`` not done yet; returns the final status counts of these runs.

    Done runs are skipped, interrupted ones resume (``run_fn`` finds their training state in
    their run directory), failed ones are retried until they have had ``max_attempts``.
    ``stream`` (e.g. sys.stderr) gets the live summary line; None runs quietly.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    store.requeue_orphans()
    costs = {key: estimate_cost(config) for key, config in runs.items()}
    store.add(runs, costs)
    queue = store.pending(runs, max_attempts)
    if not queue:
        counts = store.counts(runs)
        if stream:
            stream.write(f"[sweep] nothing to run: {counts['done']} done, {counts['failed']} failed "
                         f"(after {max_attempts} attempts)\n")
        return counts
    pool = make_executor(executor, run_fn, workers=workers, ray_address=ray_address, n_runs=len(queue))
    progress = Progress(stream, costs, pool.capacity)
    if stream:
        stream.write(f"[sweep] {len(queue)} of {len(runs)} runs to do · {pool.describe()}\n")
    in_flight: set[str] = set()
    previous_sigterm = _raise_on_sigterm()
    try:
        while queue or in_flight:
            while queue and len(in_flight) < pool.capacity:
                key = queue.pop(0)
                store.claim(key)
                pool.submit(key, runs[key], str(store.run_dir(key)))
                in_flight.add(key)
            progress.show(store.counts(runs), queue + sorted(in_flight))
            for key, status, payload, seconds in pool.wait(poll_s):
                in_flight.discard(key)
                if status == "done":
                    store.finish(key, payload)
                    progress.finished(key, seconds)
                else:
                    store.fail(key, str(payload))
                    if store.get(key)["attempts"] < max_attempts:
                        queue.append(key)
        counts = store.counts(runs)
        progress.show(counts, [], final=True)
        return counts
    finally:
        pool.close()
        for key in in_flight:  # interrupted, not failed: back in the queue for the next sweep
            store.release(key)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _raise_on_sigterm():
    """SIGTERM stops a sweep like Ctrl-C: workers stopped, unfinished runs queued again.
    Returns the previous handler (None off the main thread, where signals are left alone)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None
