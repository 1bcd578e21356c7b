"""Training and held-out sets: distinct valid samples of a task, as cells and as packed keys.

Draws are i.i.d. from ``task.sample``; keeping the first occurrence of each packed key turns
them into draws without replacement, so for a uniform sampler the training set is a uniformly
random n-subset of the valid set and the held-out set a uniformly random disjoint one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from innovwin import bits
from innovwin.tasks import Task, make
from innovwin.tasks.pace import sampling_progress

MAX_DRAW_FACTOR = 50  # give up after drawing this many times the requested count (plus a floor)
MIN_DRAWS = 10_000


@dataclass
class Dataset:
    task: Task
    seed: int
    train: np.ndarray  # uint8 (n, n_cells), distinct
    train_keys: np.ndarray  # uint64 (n, words)
    heldout: np.ndarray  # uint8 (n_heldout, n_cells), distinct, disjoint from train
    heldout_keys: np.ndarray
    hits: np.ndarray | None = None  # uint8 (n, n_cells): the held-out hits set (see hit_set), None when not drawn

    @property
    def chance_copy(self) -> float:
        """Probability that a uniform draw from the valid set is a training sample (N / |V|)."""
        return len(self.train) / self.task.n_valid if self.task.n_valid else 0.0


def first_distinct(keys: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of keys, in order of appearance."""
    rows = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1])))
    _, first = np.unique(rows.ravel(), return_index=True)
    return np.sort(first)


def make_dataset(task: Task | str, n: int, seed: int, n_heldout: int = 1024) -> Dataset:
    """``n`` distinct valid training samples and ``n_heldout`` distinct valid samples not among them."""
    task = make(task) if isinstance(task, str) else task
    n, n_heldout = int(n), int(n_heldout)
    if n < 1 or n_heldout < 0:
        raise ValueError(f"need n >= 1 and n_heldout >= 0, got n={n}, n_heldout={n_heldout}")
    total = n + n_heldout
    if task.n_valid is not None and total > task.n_valid:
        raise ValueError(
            f"{task.spec} has only {task.n_valid} valid configurations; "
            f"cannot draw n={n} + n_heldout={n_heldout} = {total} distinct ones"
        )
    max_draws = MAX_DRAW_FACTOR * total + MIN_DRAWS
    draws, keys = [], np.zeros((0, task.n_words), dtype=np.uint64)
    n_drawn, distinct = 0, np.zeros(0, dtype=np.int64)
    seeds = np.random.SeedSequence(seed)
    while len(distinct) < total:
        if n_drawn >= max_draws:
            raise ValueError(
                f"{task.spec}: found only {len(distinct)} distinct valid samples in {n_drawn} draws, "
                f"needed {total}; ask for fewer (n_valid={task.n_valid})"
            )
        batch = min(max(2 * (total - len(distinct)), 1024), max_draws - n_drawn)
        cells = task.sample(batch, seed=seeds.spawn(1)[0], progress=sampling_progress(task, batch))
        draws.append(cells)
        keys = np.concatenate([keys, bits.pack(cells, task.k)])
        n_drawn += batch
        distinct = first_distinct(keys)
    cells = np.concatenate(draws)[distinct[:total]]
    keys = keys[distinct[:total]]
    if not task.validate(cells).all():
        raise RuntimeError(f"{task.spec}: the sampler produced invalid configurations")
    return Dataset(task, seed, cells[:n], keys[:n], cells[n:], keys[n:])


def hit_set(dataset: Dataset, seed) -> np.ndarray | None:
    """As many distinct valid samples as the training set, none of them a training sample: what a generalizing
    model hits as often as the training set. A draw of its own (``seed``), filtered, so the training and held-out
    sets stay as they were; a uniformly random set when the sampler is uniform. None when the valid set has too
    few samples outside the training set."""
    task, n, taken = dataset.task, len(dataset.train), dataset.train_keys
    wanted = 2 * n
    try:
        draw = make_dataset(task, min(wanted, task.n_valid or wanted), seed, n_heldout=0)
    except ValueError:  # a sampler that cannot find that many distinct samples
        return None
    void = np.dtype((np.void, 8 * task.n_words))
    fresh = ~np.isin(draw.train_keys.view(void).ravel(), taken.view(void).ravel())
    return draw.train[fresh][:n] if fresh.sum() >= n else None


def run_dataset(config, task: Task) -> Dataset:
    """A run's training, held-out and hits sets: a pure function of its config (``n_train``, ``data_seed``,
    ``loss_samples``), so the analyses redraw exactly what the run trained on."""
    dataset = make_dataset(task, config.n_train, config.data_seed,
                           n_heldout=min(config.loss_samples, (task.n_valid or 10**18) - config.n_train))
    dataset.hits = hit_set(dataset, (config.data_seed, 1))
    return dataset
