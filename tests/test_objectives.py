"""The objective protocol: an architecture registered from outside the package trains, evaluates, snapshots and
reports through the same driver, with no change to any other module."""
import json

import pytest
import torch
from torch import nn

from innovwin import objectives
from innovwin.config import RunConfig
from innovwin.store import rundir
from innovwin.train import train


class CellLogits(nn.Module):
    """A backbone with no interactions: one categorical per cell."""

    def __init__(self, n_cells: int, k: int, **size):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_cells, k))
        self._size = size

    def size_config(self) -> dict:
        return dict(self._size)


class IndependentCells:
    """Maximum likelihood of independent cells: learns the marginals, never the rule, never copies on purpose."""

    def __init__(self, task, config=None):
        self.seed = config.sampling_seed if config is not None else 0

    def network_calls_per_sample(self) -> int:
        return 1

    def encode(self, cells):
        return cells

    def features(self, cells):
        return None

    def training_inputs(self, cells, generator):
        return (cells,)

    def loss(self, net, cells):
        log_p = net.logits.log_softmax(-1)  # (n_cells, k)
        return -log_p.gather(1, cells.long().T).T.mean(1)

    def loss_inputs(self, sets, generator, device):
        return {name: (cells.to(device),) for name, cells in sets.items()}

    def eval_start(self, n, generator, device):
        return n

    @torch.no_grad()
    def generate(self, net, n):
        generator = torch.Generator().manual_seed(self.seed)
        probs = net.logits.softmax(-1)
        return torch.multinomial(probs, n, replacement=True, generator=generator).T.to(torch.uint8), None


def test_a_registered_objective_trains_evaluates_and_reloads(tmp_path):
    objectives.register(objectives.Arch("cells", "independent cells", lambda task, **size: CellLogits(
        task.n_cells, task.k, **size), IndependentCells))
    try:
        config = RunConfig(arch="cells", task="parity:h=4,w=4,g=2", n_train=16, steps=40, first_eval=10,
                           evals_per_decade=4, eval_samples=64, loss_samples=16, bootstrap=20, lr=0.05, device="cpu")
        summary = train(config, tmp_path, quiet=True)
        rows = rundir.read_metrics(tmp_path)
        assert [row["step"] for row in rows] == [10, 18, 32, 40]
        # every cell of a G=2 parity grid is a fair bit: the marginals stay near 1/2, so about 2^-8 of the
        # samples are valid, and the loss approaches ln 2 per cell
        assert rows[-1]["valid_frac"] < 0.2 and rows[-1]["ratio_copy_frac"] is None
        assert abs(rows[-1]["heldout_loss"] - 0.693) < 0.05
        assert summary["tau_rule"]["censored"] == "right" and json.loads((tmp_path / "config.json").read_text())["model"]["arch"] == "cells"
        _, model = rundir.load_snapshot(tmp_path, 40)
        assert isinstance(model, CellLogits)
    finally:
        objectives.registry.unregister("cells")


class WithoutFeatures(IndependentCells):
    features = None  # not a method: the protocol's required member is missing


@pytest.mark.parametrize("objective, stackable, missing", [(WithoutFeatures, False, "features"),
                                                            (IndependentCells, True, "join_starts")])
def test_an_objective_lacking_a_member_its_arch_needs_is_refused_by_name(objective, stackable, missing):
    arch = objectives.Arch("cells", "independent cells", CellLogits, objective, stackable=stackable)
    with pytest.raises(ValueError, match=f"objective {objective.__name__} lacks {missing} "):
        arch.build_objective(None)


def test_the_shipped_objectives_follow_the_protocol():
    from innovwin import tasks
    from innovwin.objectives.protocol import Denoising, ExactProbability, Objective, Stackable

    task = tasks.make("parity:h=4,w=4,g=2")
    dit, gpt = (objectives.get(name).build_objective(task) for name in ("dit", "gpt"))
    assert all(isinstance(one, Objective) and isinstance(one, Stackable) for one in (dit, gpt))
    assert [isinstance(one, ExactProbability) for one in (dit, gpt)] == [False, True]
    assert [isinstance(one, Denoising) for one in (dit, gpt)] == [True, False]
