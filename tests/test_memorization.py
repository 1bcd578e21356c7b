"""Memorization baselines that need no |V| (held-out hits) and no sampling (a GPT's exact copy probability)."""
import numpy as np
import pytest
import torch

from innovwin import tasks
from innovwin.analysis.memorization import excess
from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.objectives.autoregressive import log_prob, sample
from innovwin.store import rundir
from innovwin.tasks.dataset import run_dataset
from innovwin.train.driver import train


class UniformValid:
    """A generator that samples the valid set uniformly (the task's own sampler): it memorizes nothing."""

    def __init__(self, task):
        self.task = task

    def eval_start(self, n, generator, device):
        return n

    def features(self, cells):
        return None

    def loss_inputs(self, sets, generator, device):
        return {name: (cells,) for name, cells in sets.items()}

    def loss(self, net, cells):
        return torch.zeros(len(cells))

    def generate(self, net, n):
        return torch.from_numpy(self.task.sample(n, seed=7)), None


def test_held_out_hits_agree_with_the_chance_baseline_for_a_uniform_sampler():
    config = RunConfig(task="parity:h=4,w=4,g=2", n_train=64, eval_samples=4096, loss_samples=8).resolved()
    task = tasks.make(config.task)
    dataset = run_dataset(config, task)
    assert len(dataset.hits) == 64
    row, samples = Evaluator(task, dataset, config, UniformValid(task), torch.device("cpu"))(None, 1)
    chance = 64 / 256
    error = 4 * np.sqrt(chance * (1 - chance) / 4096)
    assert abs(row["copy_frac"] - chance) < error and abs(row["heldout_hit_frac"] - chance) < error
    assert row["copy_prob"] is None  # no sample_probability on this objective
    found = excess(samples["copy"], samples["heldout_hit"], n_resamples=500)
    assert found["interval"][0] <= 0 <= found["interval"][1]  # no memorization, and the interval says so


def test_excess_counts_copies_over_hits():
    copy = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    hit = np.array([0, 0, 0, 1, 0, 0, 0, 0], bool)
    found = excess(copy, hit, n_resamples=200)
    assert found["excess"] == pytest.approx(0.25) and found["interval"][0] < 0.25 < found["interval"][1]
    with pytest.raises(ValueError, match="1-d"):
        excess([], [])


@pytest.fixture(scope="module")
def trained_gpt(tmp_path_factory):
    """A tiny GPT trained until it copies part of its 16 samples (copy probability near 0.3)."""
    config = RunConfig(task="parity:h=4,w=4,g=2", n_train=16, depth=1, width=32, heads=2, batch=16, steps=100,
                       first_eval=100, eval_samples=64, loss_samples=16, bootstrap=0, device="cpu", lr=3e-3,
                       warmup=10)
    out = tmp_path_factory.mktemp("gpt") / "run"
    summary = train(config, out, quiet=True)
    _, model = rundir.load_snapshot(out, 100)
    return config.resolved(), model, summary


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_copy_rate_converges_to_the_exact_copy_probability(trained_gpt, temperature):
    config, model, _ = trained_gpt
    train_cells = torch.from_numpy(run_dataset(config, tasks.make(config.task)).train)
    exact = float(log_prob(model, train_cells, temperature).exp().double().sum())
    m = 4096
    generated = sample(model, m, temperature, torch.Generator().manual_seed(1))
    copies = (generated[:, None, :] == train_cells[None]).all(-1).any(-1).double().mean().item()
    assert 0.05 < exact < 0.95  # a model that copies some of the time: the comparison means something
    assert abs(copies - exact) < 4 * np.sqrt(exact * (1 - exact) / m), (copies, exact)


def test_the_run_records_copy_probability_and_memorization(trained_gpt):
    _, _, summary = trained_gpt
    final = summary["final"]
    assert 0 < final["copy_prob"] < 1 and 0 <= final["heldout_copy_prob"] < final["copy_prob"]
    memorized = summary["memorization"]
    assert memorized["copy_frac"] == final["copy_frac"] and memorized["heldout_hit_frac"] == final["heldout_hit_frac"]
    assert memorized["excess"] == pytest.approx(final["copy_frac"] - final["heldout_hit_frac"])
