"""The diffusion objective's settings: every EDM setting a config field that is recorded, used, validated and
sweepable; the scale convention; the stochastic sampler; old runs keep their keys and settings."""
import json

import numpy as np
import pytest
import torch

from innovwin import cli, tasks
from innovwin.config import ADDED as ALL_ADDED
from innovwin.config import BEFORE as ALL_BEFORE
from innovwin.config import RunConfig
from innovwin.objectives import diffusion as edm
from innovwin.objectives import diffusion_settings
from innovwin.store import rundir
from innovwin.sweeps.spec import parse_spec
from innovwin.train.driver import train

TINY = dict(task="parity:h=4,w=4,g=2", n_train=16, depth=1, width=32, heads=2, batch=16, steps=12, first_eval=4,
            evals_per_decade=4, eval_samples=32, sampler_steps=4, loss_samples=32, bootstrap=0, device="cpu",
            arch="dit")
PARITY = tasks.make("parity:h=4,w=4,g=2")
# the diffusion settings among the fields added since runs were first keyed (until and margin are the others)
BEFORE = {name: value for name, value in ALL_BEFORE.items() if name in diffusion_settings.FIELDS}
ADDED = {name: value for name, value in ALL_ADDED.items() if name in diffusion_settings.FIELDS}
# a value of each added setting other than its old one (s_tmin/s_tmax so that churn still happens somewhere)
CHANGED = dict(data_scale=0.5, sigma_data=0.7, p_mean=0.3, p_std=1.0, sigma_min=0.004, sigma_max=40.0, rho=5.0,
               s_churn=10.0, s_tmin=0.05, s_tmax=20.0, s_noise=1.003)


class SpyDenoiser:
    """D(x; s) = x / (1 + s^2), recording every sigma it is called at."""

    sigma_data = 1.0

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma):
        self.sigmas.append(float(sigma.reshape(-1)[0]))
        return x / (1 + sigma.reshape(-1, *[1] * (x.ndim - 1)) ** 2)


def test_every_setting_is_a_field_with_help_and_changed_covers_the_added_ones():
    config = RunConfig()
    assert set(diffusion_settings.FIELDS) == set(diffusion_settings.HELP)
    assert all(hasattr(config, name) for name in diffusion_settings.FIELDS)
    assert set(ADDED) == set(CHANGED) and set(BEFORE) == set(ADDED) | {"sampler_steps"}


# --- run keys and old runs -----------------------------------------------------------------
def test_gpt_and_default_dit_keys_did_not_move():
    assert RunConfig().earlier_key() == "2e218524196cfa55"
    assert RunConfig(arch="dit", **BEFORE).earlier_key() == "bf458aa8a025798e"  # the old default DiT run
    assert RunConfig(p_mean=0.3, s_churn=5.0, sampler_steps=10).key() == RunConfig().key()  # a GPT reads none


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_each_setting_changes_a_dit_key(name):
    assert RunConfig(arch="dit", **{name: CHANGED[name]}).key() != RunConfig(arch="dit").key()


def test_a_config_recorded_before_the_settings_reads_as_the_old_values():
    config = RunConfig(arch="dit", p_mean=0.3, sampler_steps=18)
    old = config.to_nested()
    for name in ADDED:
        del old["objective"][name]
    restored = RunConfig.from_record(old)
    assert all(getattr(restored, name) == value for name, value in ADDED.items())
    assert restored.earlier_key() == "bf458aa8a025798e"  # the default DiT run's key before the settings existed
    assert RunConfig.from_record({**config.to_nested(), "key": config.key()}) == config


def test_an_old_run_directory_resumes_only_with_its_own_sampler(tmp_path):
    config = RunConfig(**{**TINY, **ADDED}).resolved()  # made with the old defaults, before the fields existed
    old = config.to_nested()
    for name in ADDED:
        del old["objective"][name]
    tmp_path.joinpath(rundir.CONFIG).write_text(json.dumps({**old, "key": config.key()}))
    assert rundir.prepare(tmp_path, config) is None  # the same run: no state yet, nothing refused
    with pytest.raises(ValueError, match=r"differs in p_mean, sigma_max\)"):
        rundir.prepare(tmp_path, RunConfig(**TINY))  # today's defaults are another sampler: refused, not resumed
    with pytest.raises(ValueError, match=r"differs in s_churn"):
        rundir.prepare(tmp_path, config.override(s_churn=1.0))


# --- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("values, message", [
    (dict(sigma_min=0.0), "sigma_min must be > 0"),
    (dict(sigma_min=2.0, sigma_max=1.0), "sigma_min must be <= sigma_max"),
    (dict(sigma_data=0.0), "sigma_data must be > 0"),
    (dict(data_scale=-1.0), "data_scale must be > 0"),
    (dict(p_std=-0.1), "p_std must be >= 0"),
    (dict(rho=0.0), "rho must be > 0"),
    (dict(s_churn=-1.0), "s_churn must be >= 0"),
    (dict(s_tmin=2.0, s_tmax=1.0), "s_tmin must be <= s_tmax"),
    (dict(s_noise=0.0), "s_noise must be > 0"),
])
def test_bad_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(arch="dit", **values)


def test_a_bad_setting_on_the_command_line_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--arch", "dit", "--set", "objective.sigma_min=-1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "sigma_min must be > 0" in err
    assert not out.exists()


def test_settings_are_sweep_axes():
    spec = parse_spec({"name": "t", "base": {**TINY}, "grid": {"objective.p_mean": [-1.2, -0.5],
                                                              "objective.s_churn": [0.0, 10.0]}})
    runs = spec.expand()
    assert len(runs) == 4
    assert sorted((c["p_mean"], c["s_churn"]) for c in runs.values()) == [(-1.2, 0.0), (-1.2, 10.0), (-0.5, 0.0),
                                                                          (-0.5, 10.0)]


# --- the objective uses them -----------------------------------------------------------------
def test_training_noise_follows_p_mean_p_std_in_units_of_the_scale():
    objective = edm.Diffusion(PARITY, RunConfig(**{**TINY, **CHANGED}))
    x0 = objective.encode(torch.from_numpy(PARITY.sample(20_000, seed=0)))
    assert x0.abs().unique().tolist() == [0.5]
    sigma, _ = objective.training_inputs(x0, torch.Generator().manual_seed(0))[1:]
    log_rel = (sigma / 0.5).log()
    assert log_rel.mean().item() == pytest.approx(0.3, abs=0.03)
    assert log_rel.std().item() == pytest.approx(1.0, abs=0.03)
    assert objective.sigma_data == 0.7
    assert edm.Diffusion(PARITY, RunConfig(**TINY, data_scale=0.5)).sigma_data == 0.5  # unset: the exact RMS


def test_the_sampler_follows_the_schedule_and_churns_only_in_its_window():
    settings = RunConfig(**{**TINY, **CHANGED, "sampler_steps": 8})
    objective = edm.Diffusion(PARITY, settings)
    spy = SpyDenoiser()
    objective.denoiser = lambda net: spy
    start = objective.eval_start(3, torch.Generator().manual_seed(0), "cpu")
    assert start[1].shape == (8, 3, 16, 1)
    objective.sample(None, start)
    plain = edm.sigma_schedule(8, 0.5 * 0.004, 0.5 * 40.0, 5.0).tolist()
    gamma = min(10.0 / 8, 2**0.5 - 1)
    churned = [s * (1 + gamma) if 0.5 * 0.05 <= s <= 0.5 * 20.0 else s for s in plain[:-1]]
    first_calls = [spy.sigmas[0]] + [spy.sigmas[i] for i in range(1, len(spy.sigmas)) if i % 2 == 0]
    assert first_calls == pytest.approx(churned, rel=1e-6)
    outside = [c == p for c, p in zip(churned, plain)]
    assert outside[0] and outside[-1] and not all(outside)  # the window leaves out both ends here
    assert len(spy.sigmas) == 2 * 8 - 1


def test_churn_zero_is_the_deterministic_heun_sampler_bit_for_bit():
    nonlinear = lambda x, s: torch.tanh(3 * x) / (1 + s.reshape(-1, 1, 1))  # noqa: E731
    noise = torch.randn(64, 16, 1, generator=torch.Generator().manual_seed(3))
    sigmas = edm.sigma_schedule(18)
    reference = edm.heun(nonlinear, noise * sigmas[0], sigmas)  # the sampler before churn existed
    churn = torch.randn(18, 64, 16, 1, generator=torch.Generator().manual_seed(4))
    for noises in (None, churn):
        got = edm.stochastic_heun(nonlinear, noise * sigmas[0], sigmas, noises, s_churn=0.0)
        assert torch.equal(got, reference)
    assert not torch.equal(edm.stochastic_heun(nonlinear, noise * sigmas[0], sigmas, churn, s_churn=5.0), reference)
    with pytest.raises(ValueError, match="churn_noises"):
        edm.stochastic_heun(nonlinear, noise * sigmas[0], sigmas, None, s_churn=5.0)


def test_churn_keeps_the_exact_gaussian_denoiser_on_its_distribution():
    sd = 0.5
    exact = lambda x, s: x * (sd**2 / (s**2 + sd**2)).reshape(-1, 1)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(20_000, 4, generator=gen, dtype=torch.float64)
    churn = torch.randn(144, 20_000, 4, generator=gen, dtype=torch.float64)
    out = edm.sample(exact, noise, 144, churn_noises=churn, s_churn=40.0)
    assert out.std().item() == pytest.approx(sd, rel=0.02)  # 12% wide at 18 steps, 2% at 72: it converges
    assert abs(torch.corrcoef(torch.stack([out[:, 0], noise[:, 0]]))[0, 1].item()) < 0.9  # not a fixed map


# --- the scale convention --------------------------------------------------------------------
def test_half_scale_data_with_half_sigma_data_is_the_same_model(tmp_path):
    """±1 bits with sigma_data 1 and ±0.5 bits with sigma_data 0.5, every other setting equal (they are in units
    of the scale): the same training losses and the same decoded samples."""
    torch.set_num_threads(1)
    settings = dict(TINY, s_churn=5.0)
    runs = {scale: tmp_path / f"a{scale}" for scale in (1.0, 0.5)}
    for scale, out in runs.items():
        train(RunConfig(**settings, data_scale=scale, sigma_data=scale), out, quiet=True)
    one, half = (rundir.read_metrics(out) for out in runs.values())
    assert [r["step"] for r in one] == [r["step"] for r in half]
    for a, b in zip(one, half):
        for field in ("train_loss", "heldout_loss", "train_eval_loss"):
            assert b[field] == pytest.approx(a[field], rel=1e-5), (a["step"], field)
        assert (a["valid_frac"], a["copy_frac"]) == (b["valid_frac"], b["copy_frac"])
    steps = [r["step"] for r in one]
    keys = [rundir.load_eval_samples(out, steps)["keys"] for out in runs.values()]
    np.testing.assert_array_equal(keys[0], keys[1])
    changed = RunConfig(**settings, data_scale=0.5, sigma_data=0.5, p_mean=-1.2 + np.log(0.5))
    train(changed, tmp_path / "absolute", quiet=True)  # the same absolute noise at half scale is another model
    assert rundir.read_metrics(tmp_path / "absolute")[-1]["train_loss"] != pytest.approx(one[-1]["train_loss"],
                                                                                      rel=1e-5)


# --- re-evaluating snapshots under another sampler -------------------------------------------------
def test_reevaluating_with_the_runs_own_sampler_reproduces_its_rows(tmp_path):
    from innovwin.analysis.reevaluate import reevaluate

    torch.set_num_threads(1)
    train(RunConfig(**TINY), tmp_path, quiet=True)
    recorded = rundir.read_metrics(tmp_path)
    rows, samples = reevaluate(tmp_path)
    drop = ("eval_seconds", "train_loss")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
           [{k: v for k, v in r.items() if k not in drop} for r in recorded]
    assert samples["valid"].shape == (len(recorded), TINY["eval_samples"])
    churned, _ = reevaluate(tmp_path, [recorded[-1]["step"]], s_churn=5.0, sampler_steps=6)
    assert churned[0]["n_samples"] == TINY["eval_samples"]
    with pytest.raises(ValueError, match="only sampler settings"):
        reevaluate(tmp_path, p_mean=0.0)


def test_the_command_line_records_every_setting(tmp_path, capsys):
    flags = ["--task", "parity:h=4,w=4,g=2", "--n-train", "16", "--depth", "1", "--width", "32", "--heads", "2",
             "--batch", "16", "--steps", "4", "--first-eval", "4", "--eval-samples", "16", "--loss-samples", "16",
             "--bootstrap", "0", "--device", "cpu", "--quiet"]
    settings = [f"--set=objective.{name}={value}" for name, value in {**CHANGED, "sampler_steps": 3}.items()]
    assert cli.main(["train", "--arch", "dit", *flags, *settings, "--out", str(tmp_path)]) == 0
    recorded = json.loads((tmp_path / rundir.CONFIG).read_text())["objective"]
    assert {name: recorded[name] for name in CHANGED} == CHANGED and recorded["sampler_steps"] == 3


def test_report_of_an_old_run_directory_shows_its_own_key_and_settings(tmp_path):
    """A DiT run directory written before the EDM fields existed reports its own sampler (p_mean -1.2, sigma_max
    80) and key, not today's defaults: every reader goes through rundir.read_config."""
    from innovwin.report.build import load_rows

    config = RunConfig(**{**TINY, **ADDED}).resolved()
    old = config.to_nested()
    for name in ADDED:
        del old["objective"][name]
    tmp_path.joinpath(rundir.CONFIG).write_text(json.dumps({**old, "key": config.key()}))
    (row,) = load_rows(tmp_path)
    assert row["key"] == config.key() != RunConfig(**TINY).key()
    assert (row["config"]["p_mean"], row["config"]["sigma_max"]) == (-1.2, 80.0)
