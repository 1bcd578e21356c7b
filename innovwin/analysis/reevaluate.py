"""Evaluate a run's snapshots again with other sampler settings: what a sampler does to the clocks, without
retraining (training never reads the sampler, so the snapshots are the same whatever it is).

Only evaluation-side fields may change (:data:`innovwin.config.SAMPLER`, the fields declared ``sampler``); the rows
and per-sample arrays are those of :class:`innovwin.evaluation.Evaluator`, with the run's own training set and seeds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from innovwin import objectives, tasks
from innovwin.config import SAMPLER
from innovwin.evaluation import Evaluator
from innovwin.store import rundir
from innovwin.tasks.dataset import run_dataset


def reevaluate(run_dir, steps=None, **changes) -> tuple[list[dict], dict]:
    """Rows and stacked per-sample arrays of the snapshots at ``steps`` (default: all) under ``changes``."""
    refused = sorted(set(changes) - set(SAMPLER))
    if refused:
        raise ValueError(f"only sampler settings can change without retraining, not {', '.join(refused)}")
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir).override(**changes).resolved()
    task = tasks.make(config.task)
    objective = objectives.get(config.arch).build_objective(task, config)
    evaluator = Evaluator(task, run_dataset(config, task), config, objective, torch.device("cpu"))
    rows, arrays = [], []
    for step in steps if steps is not None else rundir.snapshot_steps(run_dir):
        row, samples = evaluator(rundir.load_snapshot(run_dir, step)[1], step)
        rows.append(row)
        arrays.append(samples)
    return rows, {name: np.stack([one[name] for one in arrays]) for name in arrays[0]}

