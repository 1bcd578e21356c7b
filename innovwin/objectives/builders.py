"""Backbone builders for the registry: the shapes a backbone gets from its task under its objective's encoding."""
from __future__ import annotations

from innovwin.models import GPT, DiT
from innovwin.naming import did_you_mean
from innovwin.objectives import diffusion

SIZE_KEYS = ("depth", "width", "heads", "mlp_ratio")


def _check_size_keys(arch: str, size: dict) -> None:
    for key in size:
        if key not in SIZE_KEYS:
            raise ValueError(f"unknown {arch} parameter {key!r}{did_you_mean(key, SIZE_KEYS)}; valid: {list(SIZE_KEYS)}")


def dit(task, **size) -> DiT:
    """A DiT over the task's cells, one token per cell in the diffusion encoding's channels."""
    _check_size_keys("dit", size)
    return DiT(task.n_cells, diffusion.channels(task.k), **size)


def gpt(task, **size) -> GPT:
    """A GPT over BOS + the task's cells, one token per cell value."""
    _check_size_keys("gpt", size)
    return GPT(task.n_cells, task.k, **size)

