"""Executors: run a sweep's jobs (:mod:`innovwin.sweeps.jobs`) and hand each run's outcome back to the driver.

Executors only start jobs and report their outcomes; the driver loop that feeds them and records the outcomes in
the store is :func:`innovwin.sweeps.driver.drive`. What an executor must provide is :class:`Executor`.

- ``LocalExecutor``: long-lived worker processes (spawned, so CUDA and torch threads start
  clean). With GPUs each worker is pinned to one through ``CUDA_VISIBLE_DEVICES`` (more
  workers than GPUs share them round-robin); on CPU, workers x threads per job = cores.
- ``RayExecutor``: Ray core tasks that ask for their share of a GPU (or their CPUs), on a
  local Ray instance or an existing cluster (``--ray-address auto|HOST:PORT|ray://...``).
  The store directory must be on a filesystem the nodes share: runs write their run
  directories there, while only the driver writes the SQLite table.
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


class Executor(Protocol):
    """What the sweep driver needs of an executor."""

    capacity: int  # jobs it runs at a time

    def submit(self, job: Job) -> None:
        """Start ``job`` (the driver submits only while fewer than ``capacity`` jobs are out)."""

    def wait(self, timeout: float) -> list[Outcome]:
        """The outcomes of the jobs that ended within ``timeout`` seconds: all of a job's runs at once."""

    def describe(self) -> str:
        """One line: where the jobs run and how many at a time."""

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
def _ray_task(job_fn: JobFn, job: Job, threads: int) -> list[Outcome]:
    import torch

    torch.set_num_threads(threads)
    return run_job(job_fn, job)


class RayExecutor:
    """Ray core tasks; only the driver (this process) touches the store."""

    def __init__(self, job_fn: JobFn, workers: int | None = None, address: str | None = None,
                 n_jobs: int | None = None):
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
            self.capacity = max(1, min(workers or cpus, n_jobs or cpus))
            self.threads = max(1, min(cpus // self.capacity, node_cpus))
            options = {"num_cpus": self.threads}
        self.resources = (gpus, cpus)
        self.job_fn = job_fn
        self._remote = ray.remote(_ray_task).options(max_retries=0, **options)
        self._busy: dict = {}  # object ref -> its job

    def describe(self) -> str:
        gpus, cpus = self.resources
        return f"ray: {self.capacity} tasks at a time on a cluster of {cpus} CPUs, {gpus} GPUs"

    def submit(self, job: Job) -> None:
        self._busy[self._remote.remote(self.job_fn, job, self.threads)] = job

    def wait(self, timeout: float) -> list[Outcome]:
        if not self._busy:
            return []
        ready, _ = self.ray.wait(list(self._busy), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            job = self._busy.pop(ref)
            try:
                outcomes.extend(self.ray.get(ref))
            except self.ray.exceptions.RayError as error:  # the task's worker or node died
                outcomes.extend(job.failed(f"ray task failed: {error}", 0.0))
        return outcomes

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


def make_executor(name: str, job_fn: JobFn, *, workers=None, ray_address=None, n_jobs=None) -> Executor:
    """The executor ``name`` (``--executor``), sized for ``n_jobs`` jobs when ``workers`` is not given."""
    if name == "local":
        if ray_address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor(job_fn, workers, n_jobs)
    if name == "ray":
        return RayExecutor(job_fn, workers, ray_address, n_jobs)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
