"""RunConfig: validation, TOML loading, CLI parsing and the stable key."""
import pytest

from innovwin.config import parse_value
from innovwin.config import RunConfig


def test_defaults_are_valid_and_key_is_stable():
    assert RunConfig().key() == RunConfig().key()
    assert len(RunConfig().key()) == 16


def test_key_hashes_the_resolved_config():
    derived = RunConfig(seed=3)
    explicit = RunConfig(seed=3, data_seed=12, init_seed=13, sampling_seed=14, train_seed=15)
    assert derived.key() == explicit.key()
    assert RunConfig(seed=3).key() != RunConfig(seed=4).key()
    assert RunConfig(lr=2e-3).key() != RunConfig().key()


def test_seeds_resolve_to_distinct_values():
    resolved = RunConfig(seed=2, init_seed=99).resolved()
    assert (resolved.data_seed, resolved.init_seed, resolved.sampling_seed, resolved.train_seed) == (8, 99, 10, 11)


def test_unknown_key_names_the_nearest_field():
    with pytest.raises(ValueError, match="did you mean 'n_train'"):
        RunConfig.from_dict({"n_trian": 10})
    with pytest.raises(ValueError, match="unknown config key 'zzz'"):
        RunConfig().override(zzz=1)


@pytest.mark.parametrize("values, message", [
    ({"steps": 0}, "steps must be > 0"),
    ({"n_train": -1}, "n_train must be > 0"),
    ({"eval_samples": 0}, "eval_samples must be > 0"),
    ({"arch": "rnn"}, "arch must be one of"),
    ({"width": 30, "heads": 4}, "not divisible"),
    ({"lr": "fast"}, "lr must be float"),
    ({"steps": 1.5}, "steps must be int"),
    ({"device": "tpu"}, "device must be"),
])
def test_bad_values_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(values)


def test_ints_are_accepted_for_floats():
    assert RunConfig.from_dict({"lr": 1}).lr == 1.0


def test_from_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('task = "parity:h=4,w=4,g=2"\narch = "gpt"\nsteps = 50\nema = 0.99\n')
    config = RunConfig.from_toml(path)
    assert (config.task, config.arch, config.steps, config.ema) == ("parity:h=4,w=4,g=2", "gpt", 50, 0.99)
    assert RunConfig.from_dict(config.to_dict()) == config


def test_from_toml_refuses_bad_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read config"):
        RunConfig.from_toml(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("steps = = 3\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        RunConfig.from_toml(broken)


def test_parse_value():
    assert parse_value("lr", "3e-4") == 3e-4
    assert parse_value("steps", "12") == 12
    assert parse_value("ema", "none") is None
    assert parse_value("snapshots", "false") is False
    with pytest.raises(ValueError, match="steps expects int"):
        parse_value("steps", "many")


def test_every_field_declares_what_it_is():
    """Group, meaning, ensemble role, report role and sampler flag: every list of fields by kind derives from these."""
    import dataclasses

    from innovwin import fieldspec

    for field in dataclasses.fields(RunConfig):
        meta = field.metadata
        assert meta["group"] in fieldspec.GROUP_ORDER, field.name
        assert isinstance(meta["help"], str) and meta["help"].strip(), field.name
        assert meta["ensemble"] in fieldspec.ENSEMBLE_ROLES, field.name
        assert meta["report"] in fieldspec.REPORT_ROLES, field.name
        assert isinstance(meta["sampler"], bool) and isinstance(meta["added"], bool), field.name
        assert isinstance(meta["keyed"], bool), field.name


def test_the_lists_of_fields_by_kind_follow_the_declarations():
    from innovwin import config
    from innovwin.objectives import diffusion_settings

    assert set(config.BEFORE) == set(diffusion_settings.FIELDS) | {"until", "margin"}
    assert set(config.BEFORE) - set(config.ADDED) == {"sampler_steps"}
    assert config.UNKEYED == ("steps", "until", "margin")  # where a run stops is not part of the run
    assert {"arch", "depth", "width", "heads", "batch", "steps", "sampler_steps"} <= set(config.SHARED)
    assert not {"seed", "n_train", "lr", "p_mean", "task"} & set(config.SHARED)
    assert {"seed", "data_seed", "steps", "n_train", "device"} <= config.POOLED
    assert not {"lr", "heads", "rule_threshold", "p_mean", "sigma_max"} & config.POOLED  # another experiment
    assert set(config.SAMPLER) <= set(config.GROUPS["objective"]) | set(config.GROUPS["eval"])
    assert not {"p_mean", "lr", "data_scale"} & set(config.SAMPLER)  # training reads them


def test_every_field_has_one_group_and_a_dotted_name():
    from innovwin.config import DOTTED, GROUPS, field_names

    grouped = [name for names in GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(field_names()) and len(grouped) == len(set(grouped))
    assert DOTTED["lr"] == "optim.lr" and DOTTED["task"] == "task.spec"


def test_flat_dotted_and_nested_names_build_the_same_config_and_key():
    flat = RunConfig.from_dict({"lr": 0.01, "n_train": 64, "task": "parity:h=4,w=4,g=2"})
    dotted = RunConfig.from_dict({"optim.lr": 0.01, "task.n_train": 64, "task.spec": "parity:h=4,w=4,g=2"})
    nested = RunConfig.from_dict({"optim": {"lr": 0.01}, "task": {"n_train": 64, "spec": "parity:h=4,w=4,g=2"}})
    assert flat == dotted == nested and flat.key() == nested.key()
    assert RunConfig.from_dict(flat.to_nested()) == flat  # what config.json holds reads back
    assert RunConfig().earlier_key() == "2e218524196cfa55"  # grouping the fields changed no run's key


@pytest.mark.parametrize("values, message", [
    ({"optim.lrr": 1.0}, "did you mean 'optim.lr'"),
    ({"optim": {"lr": 0.1}, "lr": 0.2}, "given twice"),
    ({"model": {"widht": 3}}, "did you mean 'model.width'"),
])
def test_bad_names_are_refused_with_the_nearest(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(values)


def test_nested_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[optim]\nlr = 0.002\nsteps = 30\n[model]\narch = "dit"\n')
    config = RunConfig.from_toml(path)
    assert (config.lr, config.steps, config.arch) == (0.002, 30, "dit")


def test_the_budget_is_not_part_of_the_run_key():
    assert RunConfig(steps=300).key() == RunConfig(steps=1200).key() == RunConfig(until="both", margin=5).key()
    assert RunConfig().key() == "2a808792df5a3761"  # moved when steps left the key; earlier_key is the old one


def test_the_earlier_key_hashes_the_budget():
    assert RunConfig(steps=300).earlier_key() != RunConfig(steps=1200).earlier_key()
    assert RunConfig(until="both").earlier_key() == RunConfig().earlier_key()


@pytest.mark.parametrize("values, message", [
    ({"until": "clocks"}, "until must be one of budget, rule, mem, both"),
    ({"margin": -1}, "margin must be >= 0"),
])
def test_bad_stops_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(values)


def test_a_config_recorded_before_until_trains_to_its_budget():
    old = RunConfig(steps=500).to_nested()
    del old["optim"]["until"], old["optim"]["margin"]
    assert (RunConfig.from_record(old).until, RunConfig.from_record(old).steps) == ("budget", 500)
