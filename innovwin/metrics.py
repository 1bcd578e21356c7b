"""One evaluation: generate M samples, decode, validate, search the training set, summarize in one row.

Everything that must not change between evaluations is fixed once per run in :class:`Evaluator`: the DiT's
starting noises (or the GPT's sampling seed), the training-set search index, and the noise levels and noises of
the held-out and training losses. Successive rows then differ only because the model did.

Row keys (metrics.jsonl): step, train_loss (filled in by the driver), valid_frac (sample level),
constraint_frac (group level), copy_frac (decoded sample equals a training sample), chance_copy (N/|V|, null
when |V| is unknown), near_copy_frac (nearest training sample within Hamming distance r), ratio_copy_frac (DiT:
d(NN1) < ratio * d(NN2) in L2 on the undecoded outputs; null for GPT), novel_valid_frac (valid and not a copy),
unique_frac (distinct samples / M), mean_nn_dist (mean Hamming distance to the nearest training sample),
heldout_loss and train_eval_loss (DSM loss for DiT, NLL per cell for GPT, on fixed subsets), eval_seconds,
n_samples.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from innovwin import bits, edm
from innovwin.memorization import NearestIndex, nearest_l2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Evaluator:
    """The fixed parts of a run's evaluations; call it with a model to get one row and its per-sample arrays."""

    def __init__(self, task, dataset, config, model, device: torch.device):
        self.task, self.config, self.device = task, config, torch.device(device)
        self.arch = model.arch
        self.n_train = len(dataset.train)
        self.k_nn = min(2, self.n_train)
        self.chance_copy = self.n_train / task.n_valid if task.n_valid else None
        self.index = NearestIndex(dataset.train, alphabet=task.k, device=self.device)
        generator = torch.Generator().manual_seed(config.sampling_seed)  # CPU: the same draws on any device
        train_cells = torch.from_numpy(dataset.train[: config.loss_samples])
        heldout_cells = torch.from_numpy(dataset.heldout[: config.loss_samples])
        if self.arch == "dit":
            self.noise = torch.randn((config.eval_samples, *model.sample_shape), generator=generator).to(self.device)
            self.train_flat = model.encode(torch.from_numpy(dataset.train)).flatten(1).to(self.device)
            self.loss_inputs = {}
            longest = model.encode(train_cells if len(train_cells) >= len(heldout_cells) else heldout_cells)
            sigma, noise = edm.training_noise(longest, generator)  # one draw, paired across the two sets
            for name, cells in (("train", train_cells), ("heldout", heldout_cells)):
                n = len(cells)
                self.loss_inputs[name] = tuple(t.to(self.device) for t in (model.encode(cells), sigma[:n], noise[:n]))
        else:
            self.loss_inputs = {"train": (train_cells.to(self.device),), "heldout": (heldout_cells.to(self.device),)}

    @torch.no_grad()
    def generate(self, model) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoded cells (M, n_cells) on the device, and (DiT) the undecoded outputs flattened (M, D)."""
        if self.arch == "dit":
            x = edm.sample(model, self.noise, steps=self.config.sampler_steps)
            return model.decode(x), x.float().flatten(1)
        generator = torch.Generator(self.device).manual_seed(self.config.sampling_seed)
        return model.sample(self.config.eval_samples, temperature=self.config.temperature, generator=generator), None

    @torch.no_grad()
    def losses(self, model) -> dict:
        out = {}
        for name, inputs in self.loss_inputs.items():
            if len(inputs[0]) == 0:
                out[name] = None
            elif self.arch == "dit":
                out[name] = float(edm.loss_at(model, *inputs).mean())
            else:
                out[name] = float(model.nll(*inputs).mean())
        return out

    def __call__(self, model, step: int) -> tuple[dict, dict]:
        """Evaluate ``model`` (already in eval mode) at ``step``: (metrics row, per-sample arrays)."""
        _sync(self.device)
        start = time.perf_counter()
        cells, flat = self.generate(model)
        dist, idx = self.index.query(cells, k=self.k_nn)
        cells_np = cells.cpu().numpy()
        dist, idx = dist.cpu().numpy(), idx.cpu().numpy()
        keys = bits.pack(cells_np, self.task.k)
        constraints = self.task.constraints(cells_np)
        valid = constraints.all(axis=1)
        copy = dist[:, 0] == 0
        ratio_copy = None
        if flat is not None and self.k_nn == 2:
            l2, _ = nearest_l2(flat, self.train_flat, k=2)
            l2 = l2.cpu().numpy()
            ratio_copy = l2[:, 0] < self.config.ratio_copy * l2[:, 1]
        losses = self.losses(model)
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
        }
        samples = {"valid": valid, "copy": copy, "nn_dist": dist.astype(np.int16), "nn_idx": idx.astype(np.int32),
                   "keys": keys}
        if ratio_copy is not None:
            samples["ratio_copy"] = ratio_copy
        return row, samples
