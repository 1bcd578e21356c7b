"""Batched ensembles: K runs of one architecture and shape trained and evaluated in lock-step in one process.

On a GPU a tiny model's step is launch-bound; stacking K members' weights (:mod:`innovwin.models.stacked`) runs
their K steps in the kernels of one (:class:`~innovwin.train.stacked.Ensemble`). Each member is still a run of its
own: its own config and key (seeds, task rule of the same shape, N, lr, weight decay, warmup, clip, EMA decay),
training set, generators, optimizer state, run directory, metrics.jsonl, snapshots and clocks. Its state.pt has the
single run's format (plus ``ensemble``: K), and its summary.json records ``ensemble: {"size": K, "index": k}``.

An ensemble and a single run are one training session (:func:`~innovwin.train.driver.train_runs`): the same loop,
run directory life, states and losses. An ensemble of one is the single run, with its arithmetic (a stacked matmul
may round differently from the single run's addmm). Members' states are saved together (:func:`rundir.save_states`),
so a killed ensemble resumes every member from one step, bit for bit. Members found at different steps (a sweep
resumed with another grouping) finish one by one as single runs, whose state format is the same.
"""
from __future__ import annotations

import time
from pathlib import Path

from innovwin import objectives, tasks
from innovwin.config import SHARED, RunConfig
from innovwin.train.driver import check_run, train, train_runs

def signature(config: RunConfig) -> dict:
    """What must be equal across an ensemble's members (the grouping key of ``innovwin sweep --ensemble``): the
    fields each declares shared (:data:`innovwin.config.SHARED`: the architecture and its size, the batch, the step
    and evaluation schedule, the sampler, Adam's betas, where and how they compute), the task's shape (cells and
    alphabet) and whether they keep an EMA. Every other field is a member's own."""
    task = tasks.make(config.task)
    return {**{name: getattr(config, name) for name in SHARED}, "task shape": (task.n_cells, task.k),
            "ema (on/off)": config.ema is not None}


def check_members(configs: list[RunConfig]) -> list[tuple[RunConfig, object]]:
    """Resolve every member (as :func:`check_run`) and refuse an ensemble that cannot train in lock-step."""
    if len(configs) < 1:
        raise ValueError("an ensemble needs K >= 1 members, got none")
    checked = [check_run(config) for config in configs]
    first = signature(checked[0][0])
    for k, (config, _) in enumerate(checked[1:], 1):
        differ = [name for name, value in signature(config).items() if first[name] != value]
        if differ:
            raise ValueError(f"ensemble member {k} differs from member 0 in {', '.join(differ)}: the members of one "
                             "ensemble must have one architecture and shape")
    keys = [config.key() for config, _ in checked]
    if len(set(keys)) < len(keys):
        raise ValueError("an ensemble lists the same run twice")
    arch = checked[0][0].arch
    if len(checked) > 1 and not objectives.get(arch).stackable:
        raise ValueError(f"arch {arch!r} cannot be stacked: its backbone does not take a leading member dimension")
    return checked


def train_ensemble(configs: list[RunConfig], out_dirs: list, *, quiet: bool = False,
                   force: bool = False) -> list[dict]:
    """Train (or resume) the runs ``configs`` in ``out_dirs`` as one stacked ensemble (one: the single run); their
    summaries, in order."""
    if len(configs) != len(out_dirs):
        raise ValueError(f"{len(configs)} configs but {len(out_dirs)} run directories")
    started = time.perf_counter()
    checked = check_members(configs)
    out_dirs = [Path(out_dir) for out_dir in out_dirs]
    if len({out_dir.resolve() for out_dir in out_dirs}) < len(out_dirs):
        raise ValueError("two members of an ensemble share a run directory")
    summaries = train_runs(checked, out_dirs, quiet=quiet, force=force, started=started)
    if summaries is None:  # members at different steps: each finishes alone
        return [train(config, out_dir, quiet=quiet) for (config, _), out_dir in zip(checked, out_dirs)]
    return summaries
