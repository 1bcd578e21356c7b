"""Planning a sweep, before anything runs: refuse runs that could never start, cost every run, record the runs in
the store, and queue the ones still to do as jobs, longest first (:func:`innovwin.sweeps.driver.drive` runs them).
A sweep with ``steps = "auto"`` queues them in the order of :func:`innovwin.sweeps.budgets.auto_order` instead, and
the driver decides each one's budget when it hands it out."""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from innovwin.store import RunStore
from innovwin.sweeps.budgets import AutoBudget, auto_order, extends
from innovwin.sweeps.executors import EXECUTORS
from innovwin.sweeps.jobs import Job, Run
from innovwin.sweeps.spec import run_names


@dataclass(frozen=True)
class Plan:
    """A sweep's runs (key -> config), their readable names and costs, and the jobs still to do, longest first."""

    runs: dict[str, dict]
    names: dict[str, str]
    costs: dict[str, float]
    jobs: list[Job]
    job_size: int  # the most runs one job trains together (``--ensemble``)
    auto: AutoBudget | None = None  # steps = "auto": every run's budget is decided when it is handed out


def plan_sweep(store: RunStore, runs: dict[str, dict], *, max_attempts: int, ensemble: int = 1,
               names: dict[str, str] | None = None, workers: int | None = None, executor: str = "local",
               ray_address: str | None = None, auto: AutoBudget | None = None) -> Plan:
    """Check and cost ``runs`` (:func:`check_sweep`), add the new ones to the store (rows a dead driver left running
    are queued again) and group the runs still to do (queued, or failed with attempts left) into jobs of up to
    ``ensemble`` runs of one shape. ``names`` (key -> readable name, default :func:`run_names`) name new run
    directories. ``auto``: ``runs`` hold the cap as their steps; a stored run keeps the budget it was given, or is
    extended to the cap (:func:`innovwin.sweeps.budgets.extends`), and the queue follows the auto order."""
    check_sweep(runs, store.path, max_attempts=max_attempts, ensemble=ensemble, workers=workers, executor=executor,
                ray_address=ray_address)
    store.requeue_orphans()
    names = run_names(runs) if names is None else names
    if auto is not None:
        runs = given_budgets(store, runs, auto)
    costs = {key: estimate_cost(config) for key, config in runs.items()}
    store.add(runs, costs)
    queue = store.pending(runs, max_attempts)
    if auto is not None:
        queue = auto_order(runs, queue)
    shapes = _shapes(runs, queue) if ensemble > 1 else dict.fromkeys(queue)
    jobs = [Job(tuple(Run(key, runs[key], str(store.run_dir(key, names.get(key, "")).absolute())) for key in group))
            for group in group_by_shape(queue, shapes, ensemble)]
    return Plan(runs, names, costs, jobs, ensemble, auto)


def given_budgets(store: RunStore, runs: dict[str, dict], auto: AutoBudget) -> dict[str, dict]:
    """``runs`` with each stored run's budget as it was given (a rerun of the sweep does not ask the cap of a done
    run, which would train it on), or the cap for a finished run to extend; runs not tried yet keep the cap."""
    stored = {row["key"]: row for row in store.rows() if row["key"] in runs}
    given = dict(runs)
    for key, row in stored.items():
        if row["summary"] is not None:
            kept = {**runs[key], "steps": row["config"]["steps"]}
            given[key] = auto.capped(kept) if extends(kept, row["summary"], auto) else kept
    return given


def group_by_shape(keys: list[str], shapes: dict, size: int) -> list[list[str]]:
    """``keys`` (in order) in groups of up to ``size`` of one shape: each group starts at the first key not grouped
    yet and takes the next ones of its shape, so the groups keep the keys' order (longest first)."""
    groups, filling = [], {}
    for key in keys:
        group = filling.get(shapes[key])
        if group is None or len(group) == size:
            group = filling[shapes[key]] = []
            groups.append(group)
        group.append(key)
    return groups


def _shapes(runs: dict[str, dict], keys: list[str]) -> dict:
    """key -> what the members of one stacked ensemble must share (:func:`innovwin.train.ensemble.signature`), as
    text so that it can key a dict."""
    from innovwin.config import RunConfig
    from innovwin.train.ensemble import signature

    return {key: json.dumps(signature(RunConfig.from_record(runs[key])), sort_keys=True, default=repr) for key in keys}


def check_sweep(runs: dict[str, dict], store_path, *, max_attempts: int, ensemble: int = 1,
                workers: int | None = None, executor: str = "local", ray_address: str | None = None) -> None:
    """Everything about a sweep that can be refused before anything is written (the store included): the driver's
    numbers, the store's layout and every run (:func:`preflight`). ``sweep --dry-run`` runs it too."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1 (--max-attempts), got {max_attempts}")
    if ensemble < 1:
        raise ValueError(f"--ensemble must be >= 1, got {ensemble}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 (--workers), got {workers}")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if ray_address is not None and executor != "ray":
        raise ValueError("--ray-address needs --executor ray")
    for path in (Path(store_path), Path(store_path) / "runs"):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory: the store needs it as one; move it aside")
    preflight(runs, devices=executor == "local")


def preflight(runs: dict[str, dict], *, devices: bool = True) -> None:
    """Refuse the sweep, before any run is queued or any attempt spent, when a run could never start (n_train
    not below |V|, a device this machine lacks when ``devices``: the local executor's runs train here): it would
    fail every attempt the same way."""
    from innovwin.config import RunConfig
    from innovwin.runtime import resolve_device
    from innovwin.train.driver import check_run

    checked_devices = set()
    for key, config in runs.items():
        try:
            check_run(RunConfig.from_record(config))
            if devices and config["device"] not in checked_devices:
                resolve_device(config["device"])
                checked_devices.add(config["device"])
        except ValueError as error:
            raise ValueError(f"run {key} ({config['task']}, n_train {config['n_train']}) cannot run: {error}") from None


def estimate_cost(config: dict) -> float:
    """Relative cost of a run, for longest-first ordering and the ETA: tokens x parameters
    over training steps plus the evaluations' network calls (a DiT sample costs two calls per
    Heun step, a GPT sample one pass: the objective says). It assumes the whole budget: where ``steps`` is the most
    a run trains (:func:`innovwin.sweeps.budgets.is_upper_bound`), the cost and the ETA are upper bounds, and the
    sweep's view and dry run say so."""
    tokens = _n_cells(config["task"])
    params = config["depth"] * (4 + 2 * config["mlp_ratio"]) * config["width"] ** 2
    n_evals = 1 + config["evals_per_decade"] * math.log10(max(config["steps"] / config["first_eval"], 1.0))
    calls = _calls_per_sample(json.dumps(config, sort_keys=True))
    samples = 3 * config["steps"] * config["batch"] + n_evals * config["eval_samples"] * calls
    return float(samples * tokens * params)


@functools.lru_cache(maxsize=None)
def _calls_per_sample(config_json: str) -> int:
    """Network calls per generated sample, as the run's objective counts them."""
    from innovwin import objectives, tasks
    from innovwin.config import RunConfig

    config = RunConfig.from_record(json.loads(config_json))
    return objectives.get(config.arch).build_objective(tasks.make(config.task), config).network_calls_per_sample()


@functools.lru_cache(maxsize=None)
def _n_cells(task_spec: str) -> int:
    from innovwin.tasks import make

    return make(task_spec).n_cells
