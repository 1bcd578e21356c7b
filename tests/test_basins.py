"""Basin dissection: the exact memorizing denoiser, outcome classification, radii, and the command on a real run."""
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from innovwin import tasks
from innovwin.analysis import basins
from innovwin.config import RunConfig
from innovwin.tasks import dataset as data

TASK = "parity:h=4,w=4,g=2"


def encode_bits(cells: torch.Tensor) -> torch.Tensor:
    return (cells.float() * 2 - 1)[..., None]


def decode_bits(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 0] > 0).to(torch.uint8)


@pytest.fixture(scope="module")
def parity():
    task = tasks.make(TASK)
    dataset = data.make_dataset(task, 16, seed=3, n_heldout=32)
    return task, dataset


@pytest.fixture(scope="module")
def memorizer(parity):
    """The exact denoiser of the training set, dissected on a small grid."""
    task, dataset = parity
    probes = basins.make_probes(dataset.train, dataset.heldout, task.validate, task.k, n_probes=8, seed=1)
    denoiser = basins.EmpiricalDenoiser(encode_bits(torch.from_numpy(dataset.train)))
    sigmas = basins.sigma_grid(0.05, 5.0, 8)
    result = basins.measure(denoiser, encode_bits, decode_bits, probes, sigmas, draws=4, steps=8, seed=0)
    return probes, denoiser, sigmas, result


def test_empirical_denoiser_is_the_posterior_mean(parity):
    _, dataset = parity
    points = encode_bits(torch.from_numpy(dataset.train)).double()
    x = torch.randn(5, *points.shape[1:], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.7, 1.0, 2.0, 5.0], dtype=torch.float64)
    sq = (x[:, None] - points[None]).square().flatten(2).sum(-1)
    weights = torch.softmax(-sq / (2 * sigma[:, None] ** 2), dim=1)
    expected = torch.einsum("bn,nlc->blc", weights, points)
    got = basins.EmpiricalDenoiser(points.float())(x.float(), sigma.float())
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_memorizer_has_basins_only_around_training_points(memorizer):
    _, _, sigmas, result = memorizer
    train, novel, invalid = (result["classes"][name] for name in basins.PROBE_CLASSES)
    assert train["radius_median"] >= 1.0  # neighbouring configurations are >= 2 apart in the +-1 encoding
    assert train["zero_frac"] == 0.0
    for other in (novel, invalid):
        assert other["radius_median"] == 0.0 and other["zero_frac"] == 1.0
        assert other["return_prob"] == [0.0] * len(sigmas)
        assert other["outcomes"]["train"] == [1.0] * len(sigmas)  # the memorizer always lands on a training point
    assert train["return_prob"][0] == 1.0 and train["return_prob"][-1] < 0.5
    assert train["loss"][0] < 1e-3 < novel["loss"][0]  # training points denoise perfectly, novel ones do not


def test_rule_learner_gives_novel_points_basins_too(parity):
    """The exact denoiser of the whole valid set (the model that learned the rule and nothing else)."""
    task, _ = parity
    everything = data.make_dataset(task, 16, seed=3, n_heldout=task.n_valid - 16)
    valid_set = np.concatenate([everything.train, everything.heldout])
    probes = basins.make_probes(everything.train, everything.heldout, task.validate, task.k, n_probes=8, seed=1)
    denoiser = basins.EmpiricalDenoiser(encode_bits(torch.from_numpy(valid_set)))
    result = basins.measure(denoiser, encode_bits, decode_bits, probes, basins.sigma_grid(0.05, 5.0, 6), draws=2,
                            steps=6, seed=0)["classes"]
    assert result["novel"]["radius_median"] > 0.5 and result["train"]["radius_median"] > 0.5
    assert result["invalid"]["zero_frac"] == 1.0
    assert result["invalid"]["outcomes"]["invalid"] == [0.0] * 6  # every invalid start lands on a valid point


class IndependentBits:
    """The exact denoiser of independent uniform +-1 cells: D(x; s) = tanh(x / s^2), cell by cell."""

    sigma_data = 1.0

    def __call__(self, x, sigma):
        return torch.tanh(x / sigma.reshape(-1, 1, 1) ** 2)


def test_return_probability_matches_closed_form(parity):
    """Its ODE never moves a coordinate across 0, so a probe returns iff no noise coordinate flips its sign:
    P(return at sigma) = Phi(1/sigma)^n_cells for every probe, valid or not."""
    task, dataset = parity
    probes = basins.make_probes(dataset.train, dataset.heldout, task.validate, task.k, n_probes=16, seed=2)
    sigmas = basins.sigma_grid(0.2, 2.0, 5)
    result = basins.measure(IndependentBits(), encode_bits, decode_bits, probes, sigmas, draws=8, steps=4, seed=0)
    measured = np.mean([result["classes"][name]["return_prob"] for name in basins.PROBE_CLASSES], axis=0)
    phi = 0.5 * (1 + torch.erf(torch.tensor(1 / sigmas) / np.sqrt(2))).numpy()
    expected = phi ** task.n_cells
    standard_error = np.sqrt(expected * (1 - expected) / (3 * 16 * 8))
    assert np.all(np.abs(measured - expected) <= 4 * standard_error + 1e-9), (measured, expected)
    radius = basins.independent_bits_radius(task.n_cells)
    assert abs((0.5 * (1 + math.erf(1 / radius / math.sqrt(2)))) ** task.n_cells - 0.5) < 1e-12
    radii = np.concatenate([result["classes"][name]["radii"] for name in basins.PROBE_CLASSES])
    assert abs(np.median(radii) - radius) < 0.1 * radius  # coarse grid: interpolation error of a few percent


def test_measure_is_seeded_and_independent_of_chunking(memorizer):
    probes, denoiser, sigmas, result = memorizer
    again = basins.measure(denoiser, encode_bits, decode_bits, probes, sigmas, draws=4, steps=8, seed=0, chunk=250)
    for name in basins.PROBE_CLASSES:
        assert again["classes"][name]["radii"] == result["classes"][name]["radii"]
        assert again["classes"][name]["outcomes"] == result["classes"][name]["outcomes"]
        np.testing.assert_allclose(again["classes"][name]["loss"], result["classes"][name]["loss"], rtol=1e-4)


def test_probes(parity):
    task, dataset = parity
    probes = basins.make_probes(dataset.train, dataset.heldout, task.validate, task.k, n_probes=12, seed=0)
    train_keys = {row.tobytes() for row in dataset.train}
    assert all(row.tobytes() in train_keys for row in probes.cells["train"])
    assert not any(row.tobytes() in train_keys for row in probes.cells["novel"])
    assert task.validate(probes.cells["novel"]).all() and not task.validate(probes.cells["invalid"]).any()
    assert ((probes.cells["invalid"] != probes.cells["novel"]).sum(1) == 1).all()
    with pytest.raises(ValueError, match="only 16 training"):
        basins.make_probes(dataset.train, dataset.heldout, task.validate, task.k, n_probes=17, seed=0)


def test_classify_constructed_cases(parity):
    task, dataset = parity
    probes = basins.Probes({}, dataset.train, task.validate, task.k)
    probe, other_train, novel = dataset.train[0], dataset.train[1], dataset.heldout[0]
    broken = novel.copy()
    broken[0] ^= 1
    ends = np.stack([probe, other_train, novel, broken, broken])
    targets = np.stack([probe, probe, probe, probe, broken])
    codes = basins.classify(ends, targets, probes)
    assert [basins.OUTCOMES[c] for c in codes] == ["return", "train", "valid", "invalid", "return"]


def test_basin_radius_interpolates_in_log_sigma():
    sigmas = np.array([0.1, 1.0, 10.0])
    p = np.array([[1.0, 1.0, 1.0],  # always back: censored at the top
                  [0.0, 0.0, 0.0],  # never back
                  [1.0, 0.75, 0.25],  # crosses 0.5 halfway between 1 and 10 in log sigma
                  [0.25, 1.0, 0.0],  # the largest sigma counts, not the first crossing
                  [0.5, 0.5, 0.5]])  # exactly 0.5 counts as back
    radius, censored = basins.basin_radius(p, sigmas)
    np.testing.assert_allclose(radius, [10.0, 0.0, np.sqrt(10.0), np.sqrt(10.0), 10.0])
    assert censored.tolist() == [True, False, False, False, True]


@pytest.mark.parametrize("sigmas, message", [([0.5, 0.0], "> 0"), ([0.5, -1.0], "> 0"), ([0.001, 1.0], "end point"),
                                             ([], "at least one"), ([1.0, 1.0], "distinct")])
def test_bad_sigmas(sigmas, message):
    with pytest.raises(ValueError, match=message):
        basins.check_sigmas(sigmas)


# --- the command on a real (tiny) run ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from innovwin.config import RunConfig
    from innovwin.train.driver import train

    out = tmp_path_factory.mktemp("run")
    config = RunConfig(task=TASK, arch="dit", n_train=16, depth=1, width=16, heads=2, steps=30, batch=16, warmup=5,
                       first_eval=10, evals_per_decade=2, eval_samples=16, sampler_steps=4, loss_samples=32,
                       bootstrap=0, device="cpu")
    train(config, out, quiet=True)
    return out


def run_command(*argv) -> int:
    from innovwin import cli

    return cli.main(["basins", *map(str, argv)])


ARGS = ("--probes", 4, "--n-sigmas", 3, "--draws", 2, "--steps", 3, "--device", "cpu")


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    """A copy of the tiny run, for a test that writes into it."""
    return shutil.copytree(tiny_run, tmp_path / "run")


@pytest.fixture()
def dissected(run_copy):
    """The copy, dissected once with ARGS."""
    assert run_command(run_copy, *ARGS) == 0
    return run_copy


def test_command_writes_a_row_per_snapshot(dissected):
    from innovwin.store import rundir

    rows = basins.read_basins(dissected)
    assert [row["step"] for row in rows] == rundir.snapshot_steps(dissected)
    assert all(len(row["classes"][name]["return_prob"]) == 3 for row in rows for name in basins.PROBE_CLASSES)


def test_command_draws_the_figures_the_run_directory_lists(dissected):
    from innovwin.report.basins_figures import FIGURES
    from innovwin.store import rundir

    assert rundir.basin_figures(dissected) == sorted(dissected / name for name in FIGURES)
    assert all(path.stat().st_size > 0 for path in rundir.basin_figures(dissected))


def test_a_rerun_with_the_same_settings_keeps_every_row(dissected):
    rows = basins.read_basins(dissected)
    assert run_command(dissected, *ARGS) == 0
    assert basins.read_basins(dissected) == rows  # "seconds" included: none was measured again


def test_a_rerun_with_another_seed_measures_every_row_again_beside_the_old_ones(dissected):
    steps = [row["step"] for row in basins.read_basins(dissected)]
    assert run_command(dissected, *ARGS, "--seed", 1) == 0
    assert [(row["step"], row["seed"]) for row in basins.read_basins(dissected)] == sorted(
        [(step, 0) for step in steps] + [(step, 1) for step in steps])


def test_console_prose(run_copy, capsys):
    """The command's lines, radii and seconds masked (they vary with the machine), the run directory named RUN_DIR."""
    assert run_command(run_copy, *ARGS) == 0
    out = capsys.readouterr().out.replace(str(run_copy), "RUN_DIR")
    out = re.sub(r"(train|novel|invalid) \S+", r"\1 R", re.sub(r"\(\d+\.\d s\)", "(S s)", out))
    assert out == (
        "[basins] step       10  median radius: train R  novel R  invalid R  (S s)\n"
        "[basins] step       30  median radius: train R  novel R  invalid R  (S s)\n"
        "[basins] wrote basins.jsonl and basins_radius.png, basins_return.png, basins_loss_gap.png in RUN_DIR\n")


def test_reset_removes_the_basin_outputs_and_nothing_else(tmp_path):
    from innovwin.store import rundir

    for name in ("config.json", "basins.jsonl", "basins_radius.png", "basins_other.png", "notes.txt"):
        (tmp_path / name).write_text("x")
    rundir.reset(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def _copy_config(run_dir, to, **changes):
    to.mkdir()
    config = RunConfig.from_dict({k: v for k, v in json.loads((run_dir / "config.json").read_text()).items()
                                  if k != "key"}).override(**changes)
    (to / "config.json").write_text(json.dumps({**config.to_nested(), "key": config.key()}))
    return to


@pytest.mark.parametrize("case, message", [
    ("empty", "not a run directory"), ("gpt", "needs a diffusion run"), ("no_snapshots", "no model snapshots"),
    ("sigma_zero", "> 0"), ("too_many_probes", "only 16 training samples"), ("missing_step", "no snapshot at step"),
])
def test_command_refuses_bad_input(tiny_run, tmp_path, capsys, case, message):
    args = {
        "empty": [tmp_path],
        "gpt": [_copy_config(tiny_run, tmp_path / "gpt", arch="gpt")],
        "no_snapshots": [_copy_config(tiny_run, tmp_path / "bare")],
        "sigma_zero": [tiny_run, "--sigmas", 0, 1],
        "too_many_probes": [tiny_run, "--probes", 17],
        "missing_step": [tiny_run, "--snapshots", 7],
    }[case]
    assert run_command(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
