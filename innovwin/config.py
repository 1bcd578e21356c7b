"""One run's configuration: plain data in named groups, loadable from TOML, every field overridable.

Fields live in one flat frozen dataclass (fast to read, one hash for the run key); each belongs to a group —
task, model, objective, optim, eval, clocks, seeds, runtime — and has a dotted name (``optim.lr``,
``objective.sampler_steps``; the task spec is ``task.spec``). Files and command lines may use the dotted name,
the bare field name (``lr``), or nested TOML tables (``[optim]`` ``lr = 3e-4``); ``config.json`` is written
nested. :func:`canonical_name` is the one place a name is checked (with the one did-you-mean).

The defaults are the README's main command: a small CPU run that crosses both clocks in a few minutes. It is a
GPT: a small DiT needs far more steps to learn even G=2 parity, and its evaluation costs 35 network calls per sample
where the GPT's costs one cached pass (see benches/bench_train.py). A config is *resolved* once the per-purpose
seeds are filled in from ``seed``; ``key()`` hashes the resolved config's flat fields, so two configs that train
the same run share a key (and the grouping changed no run's key).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass

from innovwin import objectives
from innovwin.objectives import diffusion_settings
from innovwin.naming import did_you_mean
from innovwin.tomlfile import read_toml

DTYPES = ("auto", "float32", "bfloat16")
SEED_FIELDS = ("data_seed", "init_seed", "sampling_seed", "train_seed")
MAX_SEED = 2**62 - 1  # seed fills data_seed..train_seed with 4*seed+3 at most, and torch takes seeds below 2**64
EDM = diffusion_settings.DEFAULTS


@dataclass(frozen=True)
class RunConfig:
    # what to learn
    task: str = "parity:h=6,w=6,g=2"
    n_train: int = 128
    # the model
    arch: str = "gpt"
    depth: int = 2
    width: int = 64
    heads: int = 4
    mlp_ratio: int = 4
    # seeds: `seed` fills every per-purpose seed left at None (data_seed = 4*seed, init_seed = 4*seed+1, ...)
    seed: int = 0
    data_seed: int | None = None
    init_seed: int | None = None
    sampling_seed: int | None = None
    train_seed: int | None = None
    # optimization: AdamW, linear warmup then a constant rate (decay would confound tau_mem)
    steps: int = 2000
    batch: int = 64
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0  # 0 turns clipping off
    ema: float | None = None  # EMA decay; when set, evaluations use the EMA weights
    # evaluation
    evals_per_decade: int = 8
    first_eval: int = 10
    eval_samples: int = 256
    temperature: float = 1.0  # GPT sampling temperature
    near_copy_radius: int = 2  # Hamming distance counted as a near copy
    ratio_copy: float = 1 / 3  # DiT ratio test: copy when d(NN1) < ratio_copy * d(NN2)
    loss_samples: int = 256  # held-out and training samples in each loss evaluation
    snapshots: bool = True  # keep the model weights at every evaluation step
    # the diffusion objective (EDM): defaults, meaning and scale convention in objectives/diffusion_settings.py
    data_scale: float = EDM["data_scale"]
    sigma_data: float | None = EDM["sigma_data"]  # None: the encoding's exact RMS
    p_mean: float = EDM["p_mean"]
    p_std: float = EDM["p_std"]
    sigma_min: float = EDM["sigma_min"]
    sigma_max: float = EDM["sigma_max"]
    rho: float = EDM["rho"]
    sampler_steps: int = EDM["sampler_steps"]
    s_churn: float = EDM["s_churn"]  # 0: the deterministic Heun sampler
    s_tmin: float = EDM["s_tmin"]
    s_tmax: float | None = EDM["s_tmax"]  # None: no upper bound
    s_noise: float = EDM["s_noise"]
    # clocks
    rule_threshold: float = 0.9
    mem_threshold: float = 0.1
    bootstrap: int = 1000  # resamples for the clocks' intervals; 0 turns them off
    # where
    device: str = "auto"
    dtype: str = "auto"  # training precision; auto: bf16 autocast on CUDA, float32 elsewhere
    compile: bool | None = None  # torch.compile the training step; None: on CUDA only

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        _check_seeds(self)
        checks = [
            (self.arch in objectives.names(),
             f"arch must be one of {', '.join(objectives.names())}, got {self.arch!r}{did_you_mean(self.arch, objectives.names())}"),
            (self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            (self.device in ("auto", "cpu") or self.device.startswith("cuda"),
             f"device must be auto, cpu or cuda[:i], got {self.device!r}"),
            (self.n_train > 0, f"n_train must be > 0, got {self.n_train}"),
            (self.steps > 0, f"steps must be > 0, got {self.steps}"),
            (self.eval_samples > 0, f"eval_samples must be > 0, got {self.eval_samples}"),
            (self.batch > 0, f"batch must be > 0, got {self.batch}"),
            (min(self.depth, self.width, self.heads, self.mlp_ratio) > 0,
             "depth, width, heads and mlp_ratio must be > 0"),
            (self.width % self.heads == 0, f"width {self.width} is not divisible by heads {self.heads}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
            (self.weight_decay >= 0 and self.warmup >= 0 and self.grad_clip >= 0,
             "weight_decay, warmup and grad_clip must be >= 0"),
            (self.ema is None or 0 < self.ema < 1, f"ema must be a decay in (0, 1) or unset, got {self.ema}"),
            (self.evals_per_decade > 0 and self.first_eval > 0, "evals_per_decade and first_eval must be > 0"),
            (self.sampler_steps > 0 and self.temperature > 0, "sampler_steps and temperature must be > 0"),
            (self.near_copy_radius >= 0, f"near_copy_radius must be >= 0, got {self.near_copy_radius}"),
            (0 < self.ratio_copy < 1, f"ratio_copy must be in (0, 1), got {self.ratio_copy}"),
            (self.loss_samples > 0, f"loss_samples must be > 0, got {self.loss_samples}"),
            (0 < self.rule_threshold <= 1, f"rule_threshold must be in (0, 1], got {self.rule_threshold}"),
            (0 < self.mem_threshold <= 1, f"mem_threshold must be in (0, 1], got {self.mem_threshold}"),
            (self.bootstrap >= 0, f"bootstrap must be >= 0, got {self.bootstrap}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        diffusion_settings.check(self)

    # --- conversions -------------------------------------------------------------------
    def resolved(self) -> "RunConfig":
        """The same run with its task spec canonical and every per-purpose seed filled in from ``seed``.

        Raises ValueError for an unknown or malformed task spec.
        """
        from innovwin import tasks

        filled = {name: 4 * self.seed + i for i, name in enumerate(SEED_FIELDS) if getattr(self, name) is None}
        return dataclasses.replace(self, task=tasks.make(self.task).spec, **filled)

    def to_dict(self) -> dict:
        """Flat: field name -> value (what the run key hashes and the store keeps)."""
        return dataclasses.asdict(self)

    def to_nested(self) -> dict:
        """Grouped: group -> {short name -> value}, in group order (what config.json shows)."""
        nested: dict[str, dict] = {group: {} for group in GROUPS}
        for name, value in self.to_dict().items():
            group, _, short = DOTTED[name].partition(".")
            nested[group][short] = value
        return nested

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from flat, dotted or nested (group tables) names; unknown names are refused with the nearest."""
        return cls(**flatten(values))

    @classmethod
    def from_record(cls, values: dict) -> "RunConfig":
        """A config as a run directory or a store recorded it: fields it lacks were added since, and are read as
        the value that run was made with (:data:`ADDED`), not today's default. A ``key`` entry is ignored."""
        return cls(**with_added(flatten({name: value for name, value in values.items() if name != "key"})))

    @classmethod
    def from_toml(cls, path) -> "RunConfig":
        """Load a TOML file of ``[group]`` tables or top-level ``name = value`` lines."""
        return cls.from_dict(read_toml(path, "config"))

    def override(self, **values) -> "RunConfig":
        """A copy with some fields changed (flat or dotted names, checked like ``from_dict``)."""
        return dataclasses.replace(self, **flatten(values))

    def key(self) -> str:
        """Stable 16-hex-digit hash of the resolved config: equal keys, equal runs (see :data:`BEFORE`)."""
        reads = objectives.get(self.arch).settings
        values = {**self.resolved().to_dict(), **{name: old for name, old in BEFORE.items() if name not in reads}}
        values = {name: value for name, value in values.items() if name not in ADDED or value != ADDED[name]}
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# Each field's group, in the order config.json and --help show them; a field's dotted name is GROUP.FIELD, except
# the task spec (task.spec).
GROUPS = {
    "task": ("task", "n_train"),
    "model": ("arch", "depth", "width", "heads", "mlp_ratio"),
    "objective": ("temperature", *diffusion_settings.FIELDS),
    "optim": ("steps", "batch", "lr", "beta1", "beta2", "weight_decay", "warmup", "grad_clip", "ema"),
    "eval": ("evals_per_decade", "first_eval", "eval_samples", "loss_samples", "near_copy_radius", "ratio_copy",
             "snapshots"),
    "clocks": ("rule_threshold", "mem_threshold", "bootstrap"),
    "seeds": ("seed", *SEED_FIELDS),
    "runtime": ("device", "dtype", "compile"),
}
# The run-key rule for the objective's settings. BEFORE holds the value each had in every run keyed before it was a
# field (ADDED) or before it was the DiT's alone (sampler_steps). key() hashes a setting the run's architecture does
# not read (objectives.get(arch).settings: a GPT has no noise schedule) as its BEFORE value, so it never splits or
# moves a run, and leaves an added field out while it holds its BEFORE value, so adding a field moved no existing
# run's key. A recorded config that lacks an added field reads as that value (RunConfig.from_record): an old run
# directory loads, reports and resumes with the settings it was made with, and a new default is hashed.
BEFORE = {"sampler_steps": 18, "data_scale": 1.0, "sigma_data": None, "p_mean": -1.2, "p_std": 1.2, "sigma_min": 0.002,
          "sigma_max": 80.0, "rho": 7.0, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": None, "s_noise": 1.0}
ADDED = {name: value for name, value in BEFORE.items() if name != "sampler_steps"}
# What each field means, in its unit, with the values it allows: the one text `innovwin train --help` shows beside
# the flag (choices and defaults are added there from the field itself). A new field needs a line here (a test checks).
HELP = {
    "task": "the rule or puzzle to learn, a spec NAME:key=value,... (`innovwin tasks` lists them)",
    "n_train": "training-set size N (distinct rule-valid samples)",
    "arch": "architecture: a backbone and its objective",
    "depth": "transformer blocks",
    "width": "model width (channels per token)",
    "heads": "attention heads (must divide width)",
    "mlp_ratio": "MLP hidden width as a multiple of width",
    "seed": "the run's seed; fills every per-purpose seed left unset (data 4s, init 4s+1, sampling 4s+2, train 4s+3)",
    "data_seed": "seed of the training and held-out sets (default: from seed)",
    "init_seed": "seed of the weight initialization (default: from seed)",
    "sampling_seed": "seed of the evaluations' fixed starting noises and of the clocks' bootstrap (default: from seed)",
    "train_seed": "seed of the batches and training noises (default: from seed)",
    "steps": "training steps (optimizer updates)",
    "batch": "training samples per step",
    "lr": "AdamW learning rate after warmup (constant: a decay would bend tau_mem)",
    "beta1": "AdamW beta1, in [0, 1)",
    "beta2": "AdamW beta2, in [0, 1)",
    "weight_decay": "AdamW decoupled weight decay (>= 0)",
    "warmup": "steps of linear learning-rate warmup (0: none)",
    "grad_clip": "gradient-norm clipping threshold (0: no clipping)",
    "ema": "EMA decay in (0, 1); when set, evaluations use the EMA weights (none: off)",
    "evals_per_decade": "evaluations per decade of steps (log-spaced schedule)",
    "first_eval": "step of the first evaluation",
    "eval_samples": "samples generated at each evaluation (the clocks' sampling error shrinks as 1/sqrt of it)",
    "loss_samples": "held-out and training samples in each loss evaluation",
    "near_copy_radius": "Hamming distance (cells) up to which a sample counts as a near copy",
    "ratio_copy": "DiT ratio test, in (0, 1): a copy when d(NN1) < ratio_copy * d(NN2)",
    "snapshots": "keep the evaluated weights at every evaluation (the basin analysis reads them)",
    "temperature": "GPT sampling temperature (> 0)",
    "rule_threshold": "tau_rule: sample-level validity this high, at two evaluations in a row, in (0, 1]",
    "mem_threshold": "tau_mem: copy rate above chance (N/|V|) this high, in (0, 1]",
    "bootstrap": "bootstrap resamples of the generations for the clocks' intervals (0: none)",
    "device": "auto (CUDA when present), cpu or cuda[:i]",
    "dtype": "training precision; auto: bfloat16 autocast on CUDA, float32 elsewhere",
    "compile": "torch.compile the training step (none: on CUDA only)",
    **diffusion_settings.HELP,  # the EDM settings' meanings live with their defaults
}
DOTTED = {name: f"{group}.{'spec' if name == 'task' else name}" for group, names in GROUPS.items() for name in names}
FROM_DOTTED = {dotted: name for name, dotted in DOTTED.items()}
FIELD_TYPES: dict[str, type] = {}  # field name -> its scalar type (int, float, str, bool); filled below


def with_added(flat: dict) -> dict:
    """A recorded flat config with each field added since it was recorded, at the value its run was made with."""
    return {**{name: old for name, old in ADDED.items() if name not in flat}, **flat}


def field_names() -> list[str]:
    return [field.name for field in dataclasses.fields(RunConfig)]


def differences(configs: list[dict], ignore=()) -> list[str]:
    """Each config's values of the fields (``ignore`` aside) that differ among ``configs``, in field order, e.g.
    ``n_train=512 seed=0``; "" for every config when none differs. Names runs by what tells them apart."""
    order = {name: i for i, name in enumerate(field_names())}
    names = sorted({name for config in configs for name in config} - set(ignore),
                   key=lambda name: (order.get(name, len(order)), name))
    varying = [name for name in names if len({repr(config.get(name)) for config in configs}) > 1]
    return [" ".join(f"{name}={config.get(name)}" for name in varying) for config in configs]


def canonical_name(name: str) -> str:
    """The field a flat (``lr``) or dotted (``optim.lr``) name means; ValueError with the nearest name otherwise."""
    if name in FIELD_TYPES:
        return name
    if name in FROM_DOTTED:
        return FROM_DOTTED[name]
    raise ValueError(f"unknown config key {name!r}{did_you_mean(name, [*FROM_DOTTED, *FIELD_TYPES])}")


def check_field_name(name: str) -> None:
    canonical_name(name)


def flatten(values: dict) -> dict:
    """Flat field name -> value from a mapping of flat or dotted names and ``group = {short: value}`` tables."""
    flat: dict = {}
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict):
            items = [(f"{key}.{short}", inner) for short, inner in value.items()]
        else:
            items = [(key, value)]
        for name, inner in items:
            field = canonical_name(name)
            if field in flat:
                raise ValueError(f"config key {name!r} is given twice (as {DOTTED[field]} and {field})")
            flat[field] = inner
    return flat


def optional(name: str) -> bool:
    """True for fields that may be unset (None)."""
    return type(None) in typing.get_args(_hints()[name])


def parse_value(name: str, text: str):
    """Parse a command-line string into field ``name``'s type ("none" unsets an optional field)."""
    name = canonical_name(name)
    kind = FIELD_TYPES[name]
    if optional(name) and text.strip().lower() in ("none", "null", ""):
        return None
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} expects {kind.__name__}, got {text!r}") from None


def _hints() -> dict:
    return typing.get_type_hints(RunConfig)


def _scalar_type(hint) -> type:
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if args else hint


def _check_types(config: RunConfig) -> None:
    """Refuse values of the wrong type; ints are accepted (and converted) for float fields."""
    for name, kind in FIELD_TYPES.items():
        value = getattr(config, name)
        if value is None and optional(name):
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, name, float(value))
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")


def _check_finite(config: RunConfig) -> None:
    """Refuse inf and NaN in every float field (JSON cannot hold them, and no range check below catches inf)."""
    for name, kind in FIELD_TYPES.items():
        value = getattr(config, name)
        if kind is float and value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")


def _check_seeds(config: RunConfig) -> None:
    """Seeds in the range every generator takes, named (numpy and torch would refuse them anonymously)."""
    for name in ("seed", *SEED_FIELDS):
        value, top = getattr(config, name), MAX_SEED // 4 if name == "seed" else MAX_SEED
        if value is not None and not 0 <= value <= top:
            raise ValueError(f"{name} must be an integer in 0..{top}, got {value}")


FIELD_TYPES.update({name: _scalar_type(hint) for name, hint in _hints().items()})
