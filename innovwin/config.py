"""One run's configuration: plain data in named groups, loadable from TOML, every field overridable.

Fields live in one flat frozen dataclass (fast to read, one hash for the run key); each belongs to a group —
task, model, objective, optim, eval, clocks, seeds, runtime — and has a dotted name (``optim.lr``,
``objective.sampler_steps``; the task spec is ``task.spec``). Files and command lines may use the dotted name,
the bare field name (``lr``), or nested TOML tables (``[optim]`` ``lr = 3e-4``); ``config.json`` is written
nested. :func:`canonical_name` is the one place a name is checked (with the one did-you-mean). Each field declares
what it is beside its default (:func:`innovwin.fieldspec.setting`: group, meaning, whether an ensemble's members share it, whether a
report pools runs that differ in it, whether it is evaluation-side, its value before it existed); every list of
fields by kind is derived from those declarations.

The defaults are the README's main command: a small CPU run that crosses both clocks in a few minutes. It is a
GPT: a small DiT needs far more steps to learn even G=2 parity, and its evaluation costs 15 network calls per sample
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
from innovwin.fieldspec import GROUP_ORDER, NEW, declared, setting
from innovwin.naming import did_you_mean
from innovwin.tomlfile import read_toml

DTYPES = ("auto", "float32", "bfloat16")
UNTIL = ("budget", "rule", "mem", "both")  # what a run trains until (train/until.py)
SEED_FIELDS = ("data_seed", "init_seed", "sampling_seed", "train_seed")
MAX_SEED = 2**62 - 1  # seed fills data_seed..train_seed with 4*seed+3 at most, and torch takes seeds below 2**64
EDM = diffusion_settings.DEFAULTS


def _edm(name: str, *, ensemble: str, sampler: bool, before, added: bool = True):
    """A diffusion setting: its default and meaning live in objectives/diffusion_settings.py."""
    return setting(EDM[name], "objective", diffusion_settings.HELP[name], ensemble=ensemble, report="variant",
                   sampler=sampler, before=before, added=added)


@dataclass(frozen=True)
class RunConfig:
    # what to learn
    task: str = setting("parity:h=6,w=6,g=2", "task",
                        "the rule or puzzle to learn, a spec NAME:key=value,... (`innovwin tasks` lists them)",
                        ensemble="member", report="axis", sampler=False)
    n_train: int = setting(128, "task", "training-set size N (distinct rule-valid samples)",
                           ensemble="member", report="axis", sampler=False)
    # the model
    arch: str = setting("gpt", "model", "architecture: a backbone and its objective",
                        ensemble="shared", report="axis", sampler=False)
    depth: int = setting(2, "model", "transformer blocks", ensemble="shared", report="axis", sampler=False)
    width: int = setting(64, "model", "model width (channels per token)",
                         ensemble="shared", report="axis", sampler=False)
    heads: int = setting(4, "model", "attention heads (must divide width)",
                         ensemble="shared", report="variant", sampler=False)
    mlp_ratio: int = setting(4, "model", "MLP hidden width as a multiple of width",
                             ensemble="shared", report="variant", sampler=False)
    # seeds: `seed` fills every per-purpose seed left at None (data_seed = 4*seed, init_seed = 4*seed+1, ...)
    seed: int = setting(0, "seeds", "the run's seed; fills every per-purpose seed left unset (data 4s, init 4s+1, "
                        "sampling 4s+2, train 4s+3)", ensemble="member", report="replicate", sampler=False)
    data_seed: int | None = setting(None, "seeds", "seed of the training and held-out sets (default: from seed)",
                                    ensemble="member", report="replicate", sampler=False)
    init_seed: int | None = setting(None, "seeds", "seed of the weight initialization (default: from seed)",
                                    ensemble="member", report="replicate", sampler=False)
    sampling_seed: int | None = setting(None, "seeds", "seed of the evaluations' fixed starting noises and of the "
                                        "clocks' bootstrap (default: from seed)",
                                        ensemble="member", report="replicate", sampler=False)
    train_seed: int | None = setting(None, "seeds", "seed of the batches and training noises (default: from seed)",
                                     ensemble="member", report="replicate", sampler=False)
    # optimization: AdamW, linear warmup then a constant rate (decay would confound tau_mem)
    # steps, until and margin pool and are not keyed: the rate is constant after warmup and the evaluation grid does
    # not depend on them, so a run trained to step s is the prefix of the same run trained longer; they only set
    # where it stops (more resumes it, fewer answers from its rows), and a clock past that end is censored
    steps: int = setting(2000, "optim", "the most training steps (optimizer updates) the run may take: more "
                         "resumes a run, fewer answers from its rows", ensemble="shared", report="pooled",
                         sampler=False, keyed=False)
    until: str = setting("budget", "optim", "train until: budget (all steps), or the clocks it names (rule, mem, "
                         "both) have closed intervals, then margin evaluations more; never past steps",
                         ensemble="member", report="pooled", sampler=False, before="budget", keyed=False)
    margin: int = setting(1, "optim", "evaluations trained past the one at which the clocks until waits for are "
                          "measured", ensemble="member", report="pooled", sampler=False, before=1, keyed=False)
    batch: int = setting(64, "optim", "training samples per step", ensemble="shared", report="variant", sampler=False)
    lr: float = setting(1e-3, "optim", "AdamW learning rate after warmup (constant: a decay would bend tau_mem)",
                        ensemble="member", report="variant", sampler=False)
    beta1: float = setting(0.9, "optim", "AdamW beta1, in [0, 1)", ensemble="shared", report="variant", sampler=False)
    beta2: float = setting(0.99, "optim", "AdamW beta2, in [0, 1)", ensemble="shared", report="variant", sampler=False)
    weight_decay: float = setting(0.0, "optim", "AdamW decoupled weight decay (>= 0)",
                                  ensemble="member", report="variant", sampler=False)
    warmup: int = setting(100, "optim", "steps of linear learning-rate warmup (0: none)",
                          ensemble="member", report="variant", sampler=False)
    grad_clip: float = setting(1.0, "optim", "gradient-norm clipping threshold (0: no clipping)",
                               ensemble="member", report="variant", sampler=False)
    # an ensemble's members each have their own decay, but all keep an EMA or none (train.ensemble.signature)
    ema: float | None = setting(None, "optim", "EMA decay in (0, 1); when set, evaluations use the EMA weights "
                                "(none: off)", ensemble="member", report="variant", sampler=False)
    # evaluation: where and how finely the same curves are measured pools (evaluating never changes training, and a
    # clock crossed by the first evaluation is an upper bound, not fitted); so do the loss set's size (no clock reads
    # a loss) and the near-copy and ratio-copy metrics (tau_mem counts exact copies only)
    evals_per_decade: int = setting(8, "eval", "evaluations per decade of steps (log-spaced schedule)",
                                    ensemble="shared", report="pooled", sampler=False)
    first_eval: int = setting(10, "eval", "step of the first evaluation",
                              ensemble="shared", report="pooled", sampler=False)
    eval_samples: int = setting(256, "eval", "samples generated at each evaluation (the clocks' sampling error "
                                "shrinks as 1/sqrt of it)", ensemble="shared", report="pooled", sampler=True)
    loss_samples: int = setting(256, "eval", "held-out and training samples in each loss evaluation",
                                ensemble="member", report="pooled", sampler=False)
    near_copy_radius: int = setting(2, "eval", "Hamming distance (cells) up to which a sample counts as a near copy",
                                    ensemble="member", report="pooled", sampler=False)
    ratio_copy: float = setting(1 / 3, "eval", "DiT ratio test, in (0, 1): a copy when d(NN1) < ratio_copy * d(NN2)",
                                ensemble="member", report="pooled", sampler=False)
    snapshots: bool = setting(True, "eval", "keep the evaluated weights at every evaluation (the basin analysis "
                              "reads them)", ensemble="member", report="pooled", sampler=False)
    # the objectives' settings: the GPT's temperature, then the diffusion objective's (EDM: defaults, meaning and
    # scale convention in objectives/diffusion_settings.py). One objective scores and samples every member of an
    # ensemble: they share the encoding, preconditioning and sampler; p_mean and p_std, the training noise draws,
    # stay each member's own.
    temperature: float = setting(1.0, "objective", "GPT sampling temperature (> 0)",
                                 ensemble="shared", report="variant", sampler=True)
    data_scale: float = _edm("data_scale", ensemble="shared", sampler=False, before=1.0)
    sigma_data: float | None = _edm("sigma_data", ensemble="shared", sampler=False, before=None)
    p_mean: float = _edm("p_mean", ensemble="member", sampler=False, before=-1.2)
    p_std: float = _edm("p_std", ensemble="member", sampler=False, before=1.2)
    sigma_min: float = _edm("sigma_min", ensemble="shared", sampler=True, before=0.002)
    sigma_max: float = _edm("sigma_max", ensemble="shared", sampler=True, before=80.0)
    rho: float = _edm("rho", ensemble="shared", sampler=True, before=7.0)
    # a field of every run, but the DiT's alone before the GPT's key ignored it
    sampler_steps: int = _edm("sampler_steps", ensemble="shared", sampler=True, before=18, added=False)
    s_churn: float = _edm("s_churn", ensemble="shared", sampler=True, before=0.0)
    s_tmin: float = _edm("s_tmin", ensemble="shared", sampler=True, before=0.0)
    s_tmax: float | None = _edm("s_tmax", ensemble="shared", sampler=True, before=None)
    s_noise: float = _edm("s_noise", ensemble="shared", sampler=True, before=1.0)
    # clocks (a threshold is a variant: it moves the clocks); the bootstrap's resamples are bookkeeping
    rule_threshold: float = setting(0.9, "clocks", "tau_rule: sample-level validity this high, at two evaluations "
                                    "in a row, in (0, 1]", ensemble="member", report="variant", sampler=False)
    mem_threshold: float = setting(0.1, "clocks", "tau_mem: copy rate above chance (N/|V|) this high, in (0, 1]",
                                   ensemble="member", report="variant", sampler=False)
    bootstrap: int = setting(1000, "clocks", "bootstrap resamples of the generations for the clocks' intervals "
                             "(0: none)", ensemble="member", report="pooled", sampler=False)
    # where and in which precision the same computation runs pools (dtype auto follows the device, so these fields
    # do not even record the precision used): numerical differences, not another experiment
    device: str = setting("auto", "runtime", "auto (CUDA when present), cpu or cuda[:i]",
                          ensemble="shared", report="pooled", sampler=False)
    dtype: str = setting("auto", "runtime", "training precision; auto: bfloat16 autocast on CUDA, float32 elsewhere",
                         ensemble="shared", report="pooled", sampler=False)
    compile: bool | None = setting(None, "runtime", "torch.compile the training step (none: on CUDA only)",
                                   ensemble="shared", report="pooled", sampler=False)

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
            (self.until in UNTIL, f"until must be one of {', '.join(UNTIL)}, got {self.until!r}"),
            (self.margin >= 0, f"margin must be >= 0, got {self.margin}"),
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
        """Stable 16-hex-digit hash of the resolved config: equal keys, equal runs (see :data:`BEFORE`); the
        budget (:data:`UNKEYED`) is not part of a run."""
        return self._hash(UNKEYED)

    def earlier_key(self) -> str:
        """The key this run had before the budget left the key (``steps`` hashed): how a run directory or a store
        row made before is found by the same command."""
        return self._hash(tuple(name for name in UNKEYED if name != "steps"))

    def _hash(self, leave_out) -> str:
        reads = objectives.get(self.arch).settings
        values = {**self.resolved().to_dict(), **{name: old for name, old in BEFORE.items()
                                                  if name not in reads and name in GROUPS["objective"]}}
        values = {name: value for name, value in values.items()
                  if name not in leave_out and (name not in ADDED or value != ADDED[name])}
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _declared(key: str) -> dict:
    return declared(RunConfig, key)


# Each field's group, in the order config.json and --help show them; a field's dotted name is GROUP.FIELD, except
# the task spec (task.spec).
GROUPS = {group: tuple(name for name, its in _declared("group").items() if its == group) for group in GROUP_ORDER}
# What each field means, in its unit, with the values it allows (choices and defaults are added by --help).
HELP = _declared("help")
# The run-key rule for added fields. BEFORE holds the value each had in every run keyed before it was a field
# (ADDED) or before it was the DiT's alone (sampler_steps). key() hashes an objective setting the architecture
# does not read (objectives.get(arch).settings: a GPT has no noise schedule) as its BEFORE value, so it never splits
# or moves a run, and leaves an added field out while it holds its BEFORE value, so adding a field moved no existing
# run's key. A recorded config that lacks an added field reads as that value (RunConfig.from_record): an old run
# directory loads, reports and resumes with the settings it was made with, and a new default is hashed.
BEFORE = {name: value for name, value in _declared("before").items() if value is not NEW}
ADDED = {name: value for name, value in BEFORE.items() if _declared("added")[name]}
# What the run key leaves out: where a run stops (a run trained further is the same run), see RunConfig.earlier_key.
UNKEYED = tuple(name for name, keyed in _declared("keyed").items() if not keyed)
# What the members of one stacked ensemble share (train.ensemble.signature adds the task's shape and EMA on/off).
SHARED = tuple(name for name, role in _declared("ensemble").items() if role == "shared")
# What a report pools: runs that differ only in these share one fit, colour, window-map cell and architecture pair.
POOLED = frozenset(name for name, role in _declared("report").items() if role != "variant")
# What may change when a run's snapshots are evaluated again (analysis.reevaluate): evaluation-side settings.
SAMPLER = tuple(name for name, evaluation_side in _declared("sampler").items() if evaluation_side)
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


def parse_value(name: str, text: str):
    """Parse a command-line string (``--set FIELD=VALUE``, a flag) into field ``name``'s type ("none" unsets an
    optional field)."""
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


def optional(name: str) -> bool:
    """True for fields that may be unset (None)."""
    return type(None) in typing.get_args(_hints()[name])


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
