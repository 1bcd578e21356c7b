"""Memorization measured against held-out hits: copy_frac - heldout_hit_frac, with its interval.

The hits set is as large as the training set, drawn like it and disjoint from it (innovwin.tasks.dataset.hit_set).
A model that generalizes without memorizing generates a training sample as often as a hits-set sample, so the
excess of copies over hits is memorization, and it needs no |V| (where |V| is known, both rates sit near the
chance baseline N/|V| for a model that samples the valid set uniformly). Each generation is a copy, a hit or
neither, so the interval is a bootstrap over the generations of that one evaluation.
"""
from __future__ import annotations

import numpy as np

from innovwin.analysis.clocks import CI_LEVEL


def excess(copy, hit, *, n_resamples: int = 1000, seed: int = 0, level: float = CI_LEVEL) -> dict:
    """``{"excess", "interval", "copy_frac", "heldout_hit_frac"}`` of one evaluation's boolean (samples,) arrays."""
    difference = np.asarray(copy, dtype=np.float64) - np.asarray(hit, dtype=np.float64)
    if difference.ndim != 1 or difference.size == 0:
        raise ValueError(f"copy and hit must be 1-d arrays of one evaluation's samples, got {difference.shape}")
    rng = np.random.default_rng(seed)
    m = difference.size
    means = rng.multinomial(m, np.full(m, 1.0 / m), size=max(n_resamples, 1)) @ difference / m
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"excess": float(difference.mean()), "interval": [float(lo), float(hi)] if n_resamples > 0 else None,
            "copy_frac": float(np.mean(copy)), "heldout_hit_frac": float(np.mean(hit))}
