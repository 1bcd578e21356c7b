"""Attaching a sweep to a Ray cluster and checking its nodes before any run goes there.

- :func:`connect`: the address (``--ray-address``, else ``RAY_ADDRESS``, else a private local Ray), checked by a TCP
  connect first so that a wrong one is one line within seconds; the runtime env (``--ray-runtime-env``, default: ship
  the installed innovwin package to an existing cluster).
- :class:`Preflight`: a preflight task pinned to each new node reports its innovwin (version, commit, native
  extension), torch, GPUs and whether it sees the store (a token file the driver wrote). A node that differs from the
  driver, lacks innovwin or a device the runs need, or (``--ray-storage shared``) does not see the store is refused
  with one line and gets no runs, so it spends no attempts.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STORAGES = ("auto", "shared", "sync")  # --ray-storage: per node by the preflight, asserted shared, always synced
CONNECT_TIMEOUT_S = 5.0  # the TCP check of an address
ATTACH_TIMEOUT_S = 10.0  # then ray.init's, on an existing cluster
PROBE_TIMEOUT_S = 60.0  # a node that has not run its preflight by then is refused
TOKEN = ".ray-preflight"  # the file in the store that a node sharing the store's disk sees


@dataclass(frozen=True)
class Node:
    """An alive node that passed the preflight: its Ray id, a readable name, its slots and whether it shares the
    store's disk (tasks write the store directly) or not (tasks sync through the writer, innovwin.sweeps.ray_sync)."""

    id: str
    name: str
    cpus: int
    gpus: int
    shared: bool


def cluster_address(address: str | None) -> str:
    """``--ray-address``, else ``RAY_ADDRESS`` (``ray job submit`` sets it), else "local" (a private Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def connect(ray, address: str | None, runtime_env: str | dict | None) -> bool:
    """``ray.init`` on the cluster at ``address`` (:func:`cluster_address`); False when Ray was up already (the
    caller's). ValueError, one line, for an unreachable address or a bad runtime env."""
    if ray.is_initialized():
        return False
    address = cluster_address(address)
    if address not in ("local", "auto"):
        check_reachable(address)
    env = parse_runtime_env(runtime_env, remote=address != "local")
    ended, failed = threading.Event(), []

    def attach():
        try:
            ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
        except BaseException as error:
            failed.append(error)
        finally:
            ended.set()

    if address == "local":  # a private Ray starts here (and only from the main thread)
        attach()
    else:  # in a thread: a port that takes the connection but never answers as Ray would hang it for minutes
        threading.Thread(target=attach, name="innovwin-ray-attach", daemon=True).start()
        if not ended.wait(ATTACH_TIMEOUT_S):
            raise ValueError(f"no Ray cluster answered at {address!r} within {ATTACH_TIMEOUT_S:.0f} s (a port of "
                             "something else? the cluster's auth token missing here?)")
    if failed:
        first = (str(failed[0]).strip().splitlines() or [type(failed[0]).__name__])[0]
        raise ValueError(f"cannot attach to the Ray cluster at {address!r}: {first}") from None
    return True


def check_reachable(address: str) -> None:
    """A TCP connect to HOST:PORT (of ``HOST:PORT`` or ``ray://HOST:PORT``): Ray itself retries a wrong address for
    minutes, printing C++ warnings."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ValueError(f"cannot reach a Ray cluster at {hostport} ({error.strerror or error}); is the head node "
                         "up (ray start --head) and the address right?") from None


def parse_runtime_env(text: str | dict | None, *, remote: bool) -> dict | None:
    """``--ray-runtime-env``: JSON text, or a JSON/YAML file. Default: on an existing cluster, the installed
    innovwin package as ``py_modules`` (its native extension works only on nodes of the driver's platform and
    Python), so nodes need only Python, torch and numpy; a private local Ray needs nothing."""
    if isinstance(text, dict):
        return text
    if text is None:
        import innovwin

        return {"py_modules": [str(Path(innovwin.__file__).parent)]} if remote else None
    path = Path(text)
    try:
        if path.is_file():
            if path.suffix in (".yaml", ".yml"):
                import yaml

                env = yaml.safe_load(path.read_text())
            else:
                env = json.loads(path.read_text())
        else:
            env = json.loads(text)
    except (ValueError, ImportError) as error:
        raise ValueError(f"--ray-runtime-env: not JSON text or a JSON/YAML file ({error})") from None
    if not isinstance(env, dict):
        raise ValueError(f"--ray-runtime-env must be a mapping (runtime_env fields), got {type(env).__name__}")
    return env


def write_token(store_path) -> str:
    """Put a fresh token in the store: a node that reads it back shares the store's disk."""
    token = secrets.token_hex(8)
    (Path(store_path) / TOKEN).write_text(token)
    return token


def remove_token(store_path) -> None:
    (Path(store_path) / TOKEN).unlink(missing_ok=True)


def node_facts(token_path: str, token: str) -> dict:
    """The preflight task's report of the node it runs on (it imports innovwin, so a node without it fails here)."""
    import torch

    import innovwin
    from innovwin.store.provenance import git_commit

    try:
        sees = Path(token_path).read_text() == token
    except OSError:
        sees = False
    return {"innovwin": innovwin.__version__, "git": (git_commit() or {}).get("commit"),
            "native": innovwin.native_available(), "torch": torch.__version__, "gpus": torch.cuda.device_count(),
            "sees_store": sees, "host": socket.gethostname()}


class Preflight:
    """The preflight of nodes as they appear (:func:`node_facts` pinned to each): started at once, read when done;
    only the sweep's start waits for it, a node that joins later is read by the driver's next look."""

    def __init__(self, ray, store_path, token: str, storage: str, needs_gpu: bool):
        self.ray, self.storage, self.needs_gpu = ray, storage, needs_gpu
        self.args = (str(Path(store_path) / TOKEN), token)
        self.here = node_facts(*self.args)
        self.pending: dict = {}  # object ref -> (the node's record, when its preflight started)

    def start(self, nodes: list[dict]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = self.ray.remote(node_facts)
        for node in nodes:
            ref = probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False)).remote(*self.args)
            self.pending[ref] = (node, time.monotonic())

    def probing(self) -> set[str]:
        return {node["NodeID"] for node, _ in self.pending.values()}

    def results(self, timeout: float = 0.0) -> tuple[list[Node], list[tuple[str, bool]], set[str]]:
        """The preflights ended within ``timeout`` seconds: the nodes that pass, one line per node refused (with
        whether it was for not seeing the store), and the ids of every node settled (a node that left counts)."""
        if not self.pending:
            return [], [], set()
        ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=timeout)
        passed, refused, settled = [], [], set()
        for ref in list(self.pending):
            node, started = self.pending[ref]
            if ref not in ready and time.monotonic() - started < PROBE_TIMEOUT_S:
                continue
            del self.pending[ref]
            settled.add(node["NodeID"])
            if ref in ready:
                verdict = self._verdict(ref, node)
            else:
                self.ray.cancel(ref, force=True)
                verdict = (f"node {node_name(node)}: refused: its preflight did not finish in "
                           f"{PROBE_TIMEOUT_S:.0f} s", False)
            if isinstance(verdict, Node):
                passed.append(verdict)
            elif verdict is not None:
                refused.append(verdict)
        return passed, refused, settled

    def _verdict(self, ref, node: dict) -> Node | tuple[str, bool] | None:
        name = node_name(node)
        try:
            facts = self.ray.get(ref)
        except self.ray.exceptions.TaskUnschedulableError:
            return None  # it left the cluster before its preflight ran
        except self.ray.exceptions.RayError as error:
            return f"node {name}: refused: innovwin cannot run there ({last_line(error)})", False
        problem = mismatch(self.here, facts, self.storage, self.needs_gpu)
        if problem:
            return f"node {name}: refused: {problem}", not facts["sees_store"] and self.storage == "shared"
        resources = node.get("Resources") or {}
        return Node(node["NodeID"], name, int(resources.get("CPU", 0)), int(resources.get("GPU", 0)),
                    facts["sees_store"] and self.storage != "sync")


def mismatch(driver: dict, node: dict, storage: str, needs_gpu: bool) -> str | None:
    """Why a node's facts (:func:`node_facts`) rule it out, or None: results must not depend on where a run ran."""
    for field in ("innovwin", "torch", "native"):
        if node[field] != driver[field]:
            return f"{field} {node[field]} there, {driver[field]} here"
    if driver["git"] and node["git"] and node["git"] != driver["git"]:
        return f"innovwin commit {node['git'][:12]} there, {driver['git'][:12]} here"
    if needs_gpu and not node["gpus"]:
        return "the runs need a GPU and it has none"
    if storage == "shared" and not node["sees_store"]:
        return "it does not see the store's directory (--ray-storage shared); mount it there or use --ray-storage sync"
    return None


def node_name(node: dict) -> str:
    return f"{node.get('NodeName') or node.get('NodeManagerAddress')} ({node['NodeID'][:8]})"


def last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
