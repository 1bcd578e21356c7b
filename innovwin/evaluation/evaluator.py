"""One evaluation: generate M samples, decode, validate, search the training set, summarize in one row.

Everything that must not change between evaluations is fixed once per run in :class:`Evaluator`: what the
objective generates from (a DiT's starting noises, a GPT's sampling seed), the training-set search index, and the
inputs of the held-out and training losses. Successive rows then differ only because the model did. Generations
are packed once, on the device that made them; validation and search read the packed words.

Row keys (metrics.jsonl): step, train_loss (filled in by the driver), valid_frac (sample level),
constraint_frac (group level), copy_frac (decoded sample equals a training sample), chance_copy (N/|V|, null
when |V| is unknown), near_copy_frac (nearest training sample within Hamming distance r), ratio_copy_frac (DiT:
d(NN1) < ratio * d(NN2) in L2 on the undecoded outputs; null for GPT), novel_valid_frac (valid and not a copy),
unique_frac (distinct samples / M), mean_nn_dist (mean Hamming distance to the nearest training sample),
heldout_loss and train_eval_loss (DSM loss for DiT, NLL per cell for GPT, on fixed subsets), eval_seconds,
n_samples; heldout_hit_frac (generations equal to a sample of the hits set, as large as the training set and
disjoint from it: the copy rate a model that does not memorize would have; null when the valid set is too small),
copy_prob and heldout_copy_prob (for an objective with ``sample_probability``, e.g. the GPT's: the exact
expected copy rate on the training and hits sets, no sampling noise; null otherwise).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from innovwin import bits
from innovwin.objectives.protocol import ExactProbability
from innovwin.search import NearestIndex, nearest_l2


def _rows(keys: np.ndarray) -> np.ndarray:
    """Packed keys (n, words) as one comparable value per row, for set membership."""
    keys = np.ascontiguousarray(keys)
    return keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).ravel()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Evaluator:
    """The fixed parts of a run's evaluations; call it with a model to get one row and its per-sample arrays."""

    def __init__(self, task, dataset, config, objective, device: torch.device):
        self.task, self.config, self.objective, self.device = task, config, objective, torch.device(device)
        self.n_train = len(dataset.train)
        self.k_nn = min(2, self.n_train)
        self.chance_copy = self.n_train / task.n_valid if task.n_valid else None
        self.index = NearestIndex(dataset.train, alphabet=task.k, device=self.device)
        generator = torch.Generator().manual_seed(config.sampling_seed)  # CPU: the same draws on any device
        self.start = objective.eval_start(config.eval_samples, generator, self.device)
        features = objective.features(torch.from_numpy(dataset.train))
        self.train_features = None if features is None else features.to(self.device)
        sets = {"train": torch.from_numpy(dataset.train[: config.loss_samples]),
                "heldout": torch.from_numpy(dataset.heldout[: config.loss_samples])}
        self.loss_inputs = objective.loss_inputs(sets, generator, self.device)
        self.hit_keys = None if dataset.hits is None else _rows(bits.pack(dataset.hits, task.k))
        self.probability_sets = {"copy_prob": dataset.train, "heldout_copy_prob": dataset.hits}

    @torch.no_grad()
    def copy_probabilities(self, model) -> dict:
        """Sum of the exact sample probabilities over the training and hits sets, where the objective has them."""
        exact = isinstance(self.objective, ExactProbability)
        return {name: None if not exact or cells is None
                else float(self.objective.sample_probability(model, torch.from_numpy(cells).to(self.device))
                           .double().sum())
                for name, cells in self.probability_sets.items()}

    @torch.no_grad()
    def losses(self, model) -> dict:
        return {name: float(self.objective.loss(model, *inputs).mean()) if len(inputs[0]) else None
                for name, inputs in self.loss_inputs.items()}

    def __call__(self, model, step: int) -> tuple[dict, dict]:
        """Evaluate ``model`` (already in eval mode) at ``step``: (metrics row, per-sample arrays)."""
        _sync(self.device)
        start = time.perf_counter()
        cells, outputs = self.objective.generate(model, self.start)
        return self.score(model, step, cells, outputs, time.perf_counter() - start)

    def score(self, model, step: int, cells, outputs, generate_seconds: float) -> tuple[dict, dict]:
        """The row and per-sample arrays of generations made from ``self.start`` (by ``model``, or by a stacked
        ensemble that generated every member's at once); ``model`` gives the losses."""
        start = time.perf_counter() - generate_seconds
        packed = bits.pack_torch(cells, self.task.k)  # packed once, where the samples are: 8 bytes a 6x6 sample
        dist, idx = self.index.query(packed, k=self.k_nn)
        keys = packed.cpu().numpy().view(np.uint64)
        dist, idx = dist.cpu().numpy(), idx.cpu().numpy()
        constraints = self.task.constraints_packed(keys)
        valid = constraints.all(axis=1)
        copy = dist[:, 0] == 0
        ratio_copy = None
        if outputs is not None and self.train_features is not None and self.k_nn == 2:
            l2, _ = nearest_l2(outputs, self.train_features, k=2)
            l2 = l2.cpu().numpy()
            ratio_copy = l2[:, 0] < self.config.ratio_copy * l2[:, 1]
        hit = None if self.hit_keys is None else np.isin(_rows(keys), self.hit_keys)
        losses = self.losses(model)
        probabilities = self.copy_probabilities(model)
        _sync(self.device)
        row = {
            "step": step,
            "train_loss": None,
            "valid_frac": float(valid.mean()),
            "constraint_frac": float(constraints.mean()),
            "copy_frac": float(copy.mean()),
            "chance_copy": self.chance_copy,
            "near_copy_frac": float((dist[:, 0] <= self.config.near_copy_radius).mean()),
            "ratio_copy_frac": None if ratio_copy is None else float(ratio_copy.mean()),
            "novel_valid_frac": float((valid & ~copy).mean()),
            "unique_frac": len(np.unique(keys, axis=0)) / len(keys),
            "mean_nn_dist": float(dist[:, 0].mean()),
            "heldout_loss": losses["heldout"],
            "train_eval_loss": losses["train"],
            "eval_seconds": time.perf_counter() - start,
            "n_samples": len(keys),
            "heldout_hit_frac": None if hit is None else float(hit.mean()),
            **probabilities,
        }
        samples = {"valid": valid, "copy": copy, "nn_dist": dist.astype(np.int16), "nn_idx": idx.astype(np.int32),
                   "keys": keys}
        if ratio_copy is not None:
            samples["ratio_copy"] = ratio_copy
        if hit is not None:
            samples["heldout_hit"] = hit
        return row, samples
