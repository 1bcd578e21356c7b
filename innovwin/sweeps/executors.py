"""Executors: run a sweep's jobs (:mod:`innovwin.sweeps.jobs`) and hand each run's outcome back to the driver.

Executors only start jobs and report their outcomes; the driver loop that feeds them and records the outcomes in
the store is :func:`innovwin.sweeps.driver.drive`. What an executor must provide is :class:`Executor`.

- ``LocalExecutor``: long-lived worker processes (spawned, so CUDA and torch threads start
  clean). With GPUs each worker is pinned to one through ``CUDA_VISIBLE_DEVICES`` (more
  workers than GPUs share them round-robin); on CPU, workers x threads per job = cores.
- ``RayExecutor``: Ray core tasks that ask for their share of a GPU (or their CPUs), on a
  local Ray instance or an existing cluster (``--ray-address auto|HOST:PORT|ray://...``, or
  ``RAY_ADDRESS``), each pinned to a node that passed the preflight (innovwin.sweeps.ray_cluster).
  A node that shares the store's disk writes its runs' directories there; one that does not
  trains in a scratch directory synced to a writer on the driver's node (innovwin.sweeps.ray_sync).
  Only the driver writes the SQLite table.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from typing import Protocol

from innovwin.sweeps.jobs import Job, JobFn, Outcome, run_job

EXECUTORS = ("local", "ray")
STOP_GRACE_S = 30.0  # how long a stopped sweep waits for runs to save their state
GPU_ENSEMBLE = 8  # the default --ensemble where the runs go has GPUs (an estimate until measured: benches/gpu_ensemble.py)


class Executor(Protocol):
    """What the sweep driver needs of an executor."""

    capacity: int  # jobs it runs at a time

    def submit(self, job: Job) -> None:
        """Start ``job`` (the driver submits only while fewer than ``capacity`` jobs are out)."""

    def wait(self, timeout: float) -> list[Outcome]:
        """The outcomes of the jobs that ended within ``timeout`` seconds: all of a job's runs at once."""

    def describe(self) -> str:
        """One line: where the jobs run and how many at a time."""

    def notes(self) -> list[str]:
        """Lines to show since the last call (a Ray cluster's nodes joining, refused, lost)."""

    def close(self) -> None:
        """Stop the jobs still out (each saves its training state first) and release the workers."""


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


def _worker_main(conn, gpu: str | None, threads: int, job_fn: JobFn) -> None:
    _die_with_parent()
    os.setpgrp()  # out of the terminal's process group: Ctrl-C reaches the driver, which stops the runs
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(threads)
    try:
        while (job := conn.recv()) is not None:
            conn.send(run_job(job_fn, job))
    except KeyboardInterrupt:  # the driver stopped the sweep; train saved its state first
        pass


class LocalExecutor:
    """A fixed set of worker processes, each running one job at a time."""

    def __init__(self, job_fn: JobFn, workers: int | None = None, n_jobs: int | None = None):
        gpus = visible_gpus()
        cores = cpu_count()
        if workers is None:
            workers = len(gpus) if gpus else cores
            workers = max(1, min(workers, n_jobs or workers))
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.job_fn = job_fn
        self.threads = max(1, cores // workers)
        self.devices = [gpus[i % len(gpus)] for i in range(workers)] if gpus else [None] * workers
        self.capacity = workers
        self._context = multiprocessing.get_context("spawn")
        self._workers = [None] * workers  # slot -> (process, connection)
        self._busy: dict[int, Job] = {}  # slot -> its job

    def describe(self) -> str:
        where = f"GPUs {','.join(sorted(set(self.devices)))}" if self.devices[0] is not None else "CPU"
        return f"local: {self.capacity} workers on {where}, {self.threads} threads per run"

    def notes(self) -> list[str]:
        return []

    def submit(self, job: Job) -> None:
        slot = next(i for i in range(self.capacity) if i not in self._busy)
        if self._workers[slot] is None:
            self._workers[slot] = self._start(slot)
        self._workers[slot][1].send(job)
        self._busy[slot] = job

    def _start(self, slot: int):
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.devices[slot], self.threads,
                                                                   self.job_fn), daemon=True)
        process.start()
        child.close()
        return process, parent

    def wait(self, timeout: float) -> list[Outcome]:
        watched = {}
        for slot in self._busy:
            process, conn = self._workers[slot]
            watched[conn] = watched[process.sentinel] = slot
        outcomes = []
        for ready in multiprocessing.connection.wait(list(watched), timeout):
            slot = watched[ready]
            if slot not in self._busy:
                continue  # both its pipe and its sentinel fired
            job = self._busy.pop(slot)
            process, conn = self._workers[slot]
            try:
                outcomes.extend(conn.recv())
            except (EOFError, OSError):
                process.join(timeout=5)
                outcomes.extend(job.failed(f"worker process died (exit code {process.exitcode})", 0.0))
                self._workers[slot] = None
        return outcomes

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
REFRESH_S = 3.0  # how often the Ray executor reads the cluster's nodes again (joined, lost)
LOSS_GRACE_S = 20.0  # how long a crashed worker's node is watched before the crash counts as the run's


def _ray_task(job_fn: JobFn, job: Job, threads: int, writer=None, attempt: str | None = None) -> list[Outcome]:
    """A job on a Ray node: in the store directly, or (``writer``: the node does not share the store's disk) in a
    scratch directory synced to the writer (:mod:`innovwin.sweeps.ray_sync`)."""
    import functools

    import torch

    torch.set_num_threads(threads)
    if writer is None:
        return run_job(job_fn, job)
    import ray

    from innovwin.sweeps.ray_sync import synced_job

    return synced_job(ray, writer, attempt, job, functools.partial(run_job, job_fn))


class RayExecutor:
    """Ray core tasks, each pinned to a node that passed the preflight (:mod:`innovwin.sweeps.ray_cluster`); only
    the driver (this process) touches the store's table. The nodes are read again every :data:`REFRESH_S`: a node
    that joins is checked and gets runs, a run lost with its node is preempted (queued again, no attempt spent)."""

    def __init__(self, job_fn: JobFn, workers: int | None = None, address: str | None = None, *, store_path,
                 runtime_env=None, storage: str = "auto", needs_gpu: bool = False):
        try:
            import ray
        except ModuleNotFoundError:
            raise ValueError("the ray executor needs Ray: pip install 'innovwin[ray]'") from None
        from innovwin.sweeps import ray_cluster

        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if storage not in ray_cluster.STORAGES:
            raise ValueError(f"--ray-storage must be one of {', '.join(ray_cluster.STORAGES)}, got {storage!r}")
        self.ray, self.job_fn, self.workers = ray, job_fn, workers
        self.store_path, self.storage, self.needs_gpu = os.path.abspath(store_path), storage, needs_gpu
        self._owns_ray = ray_cluster.connect(ray, address, runtime_env)
        self.token = ray_cluster.write_token(self.store_path)
        self.nodes: dict[str, object] = {}  # node id -> Node, the nodes that passed the preflight and are alive
        self.refused: set[str] = set()
        self._notes: list[str] = []
        self._busy: dict = {}  # object ref -> (its job, its node id, its attempt)
        self._attempts = 0
        self._writer = None
        self._checked = 0.0
        try:
            self._preflight = ray_cluster.Preflight(ray, self.store_path, self.token, storage, needs_gpu)
            refused = self._refresh(wait=ray_cluster.PROBE_TIMEOUT_S)  # the nodes there now, before anything runs
            if storage == "shared" and any(store for _, store in refused):
                raise ValueError(next(line for line, store in refused if store))
            if not self.nodes:
                raise ValueError("no node of the Ray cluster can run the sweep: " +
                                 "; ".join(line for line, _ in refused))
        except BaseException:
            self.close()
            raise

    # --- the cluster as it is now ------------------------------------------------------------------------
    def _refresh(self, wait: float = 0.0) -> list[tuple[str, bool]]:
        """Read the alive nodes, start the preflight of new ones and take in the preflights ended (within ``wait``
        seconds). Returns the lines of the nodes refused now (and whether it was for not seeing the store)."""
        self._checked = time.monotonic()
        alive = [node for node in self.ray.nodes() if node.get("Alive")]
        for gone in set(self.nodes) - {node["NodeID"] for node in alive}:
            self._notes.append(f"[sweep] node {self.nodes.pop(gone).name} left the cluster")
        known = {*self.nodes, *self.refused, *self._preflight.probing()}
        self._preflight.start([node for node in alive if node["NodeID"] not in known])
        passed, refused, settled = self._preflight.results(wait)
        for node in passed:
            self.nodes[node.id] = node
            how = "writes the store" if node.shared else "syncs to the store (no shared disk)"
            self._notes.append(f"[sweep] node {node.name}: {node.cpus} CPUs, {node.gpus} GPUs, {how}")
        self.refused |= settled - {node.id for node in passed}
        self._notes += [f"[sweep] {line}" for line, _ in refused]
        return refused

    @property
    def gpus(self) -> int:
        return sum(node.gpus for node in self.nodes.values())

    @property
    def threads(self) -> int:
        """Threads per run on CPU: one (a run per core), or the cores over ``--workers`` (no more than a node has);
        one beside a GPU."""
        cpus = sum(node.cpus for node in self.nodes.values())
        if self.gpus or self.workers is None or not cpus:
            return 1
        return max(1, min(cpus // self.workers, max(node.cpus for node in self.nodes.values())))

    def _slots(self, node) -> int:
        if self.gpus:
            share = -(-self.workers // self.gpus) if self.workers else 1  # runs per GPU
            return node.gpus * share
        return node.cpus // self.threads

    @property
    def capacity(self) -> int:
        slots = sum(self._slots(node) for node in self.nodes.values())
        return min(slots, self.workers or slots)  # none while no node can take a run: the driver waits

    def describe(self) -> str:
        cpus = sum(node.cpus for node in self.nodes.values())
        return (f"ray: {self.capacity} tasks at a time on {len(self.nodes)} nodes ({cpus} CPUs, {self.gpus} GPUs), "
                f"{self.threads} threads per run")

    def notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    # --- jobs ------------------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        running = [node for _, node, _ in self._busy.values()]
        node = max(self.nodes.values(), key=lambda node: self._slots(node) - running.count(node.id))
        if self.gpus:
            options = {"num_gpus": node.gpus / self._slots(node), "num_cpus": 1}  # its share of one GPU
        else:
            options = {"num_cpus": self.threads}
        remote = self.ray.remote(_ray_task).options(
            max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False), **options)
        self._attempts += 1
        attempt = f"{job.id}#{self._attempts}"
        if node.shared:
            ref = remote.remote(self.job_fn, job, self.threads)
        else:
            writer = self._writer_actor()
            self.ray.get(writer.open.remote(job_dirs(job), attempt))
            ref = remote.remote(self.job_fn, job, self.threads, writer, attempt)
        self._busy[ref] = (job, node.id, attempt)

    def _writer_actor(self):
        """The writer of the store's run directories for nodes without the shared disk: on this (the driver's)
        node, which has the store."""
        if self._writer is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            from innovwin.sweeps.ray_sync import RunDirWriter

            here = self.ray.get_runtime_context().get_node_id()
            self._writer = self.ray.remote(RunDirWriter).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        return self._writer

    def wait(self, timeout: float) -> list[Outcome]:
        if time.monotonic() - self._checked >= REFRESH_S:
            self._refresh()
        if not self._busy:
            time.sleep(timeout)  # nothing out: no node could take a job yet
            return []
        ready, _ = self.ray.wait(list(self._busy), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            job, node, attempt = self._busy.pop(ref)
            if self._writer is not None:
                self._writer.close.remote(job_dirs(job), attempt)  # fenced: a straggler writes nothing more
            try:
                outcomes.extend(self.ray.get(ref))
            except self.ray.exceptions.RayError as error:
                outcomes.extend(self._lost(job, node, error))
        return outcomes

    def _lost(self, job: Job, node_id: str, error) -> list[Outcome]:
        """A task that did not return: preempted when its node was lost (not the run's doing), else a failed attempt
        (a worker that crashed on a node still alive may have been the run's own crash: it spends an attempt)."""
        name = self.nodes[node_id].name if node_id in self.nodes else node_id[:8]
        deadline = time.monotonic() + LOSS_GRACE_S  # a worker's crash may reach us before its node's death does
        while True:
            alive = {node["NodeID"] for node in self.ray.nodes() if node.get("Alive")}
            if isinstance(error, self.ray.exceptions.NodeDiedError) or node_id not in alive:
                self.nodes.pop(node_id, None)
                return job.preempted(f"node {name} was lost")
            if not isinstance(error, self.ray.exceptions.WorkerCrashedError) or time.monotonic() > deadline:
                return job.failed(f"ray task failed on node {name}: {error}", 0.0)
            time.sleep(0.5)

    def close(self) -> None:
        """Cancel the tasks in flight: a cancel interrupts the task like Ctrl-C, so ``train`` saves its state (and a
        synced task sends it); tasks still running after the grace period are killed."""
        refs = list(self._busy)
        for ref in refs:
            self.ray.cancel(ref)
        if refs:
            _, running = self.ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
            for ref in running:
                self.ray.cancel(ref, force=True)
        self._busy.clear()
        from innovwin.sweeps.ray_cluster import remove_token

        remove_token(self.store_path)
        if self._writer is not None:
            self.ray.kill(self._writer)
            self._writer = None
        if self._owns_ray:
            self.ray.shutdown()


def job_dirs(job: Job) -> list[str]:
    return [run.run_dir for run in job.runs]


def make_executor(name: str, job_fn: JobFn, *, workers=None, ray_address=None, n_jobs=None, store_path=None,
                  ray_runtime_env=None, ray_storage: str = "auto", needs_gpu: bool = False) -> Executor:
    """The executor ``name`` (``--executor``), sized for ``n_jobs`` jobs when ``workers`` is not given (a local one;
    a Ray one follows its cluster's nodes, and needs the absolute ``store_path``)."""
    if name == "local":
        if ray_address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor(job_fn, workers, n_jobs)
    if name == "ray":
        return RayExecutor(job_fn, workers, ray_address, store_path=store_path, runtime_env=ray_runtime_env,
                           storage=ray_storage, needs_gpu=needs_gpu)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
