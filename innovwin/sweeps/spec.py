"""A sweep spec: one TOML file that names a grid of runs.

    name = "quick"                 # optional, shown in reports
    seeds = [0, 1]                 # optional: every run once per seed (or seeds = 3: seeds 0, 1, 2)
    [base]                         # RunConfig fields shared by every run
    task = "parity:h=6,w=6,g=2"
    steps = 2000
    [grid]                         # Cartesian product of these axes
    n_train = [64, 128, 256]
    [zip]                          # optional: axes that move together (equal lengths)
    depth = [2, 4]
    width = [64, 128]

``steps = "auto"`` in [base] (with the spec-level ``max_steps``, the cap, required, and ``safety``, default that of
``innovwin predict``) has each run's budget predicted as the sweep goes (:mod:`innovwin.sweeps.budgets`); its runs
expand with the cap as their steps until the driver hands them out.

Several zipped groups are written ``[[zip]]`` (one table per group). Expansion yields resolved
RunConfig dicts keyed by ``RunConfig.key()``, so the same run named twice is one run (twice with two budgets: refused).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from innovwin.config import SEED_FIELDS, UNKEYED, RunConfig, differences, flatten
from innovwin.naming import did_you_mean
from innovwin.sweeps.budgets import AutoBudget
from innovwin.tomlfile import parse_toml, read_toml

SPEC_KEYS = ("name", "description", "seeds", "base", "grid", "zip", "max_steps", "safety")
AUTO = "auto"  # steps = "auto": budgets predicted as the sweep goes
MAX_RUNS = 10_000  # the most runs a spec may name: expanding and checking each costs memory and time up front
# (about 20 ms a run on one core: some minutes for this many)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict
    grid: dict[str, list]
    zips: list[dict[str, list]] = field(default_factory=list)
    seeds: list[int] | None = None
    auto: AutoBudget | None = None  # steps = "auto": the cap and safety factor

    def size(self) -> int:
        """How many runs the spec names (before runs named twice are merged), computed without expanding it."""
        return math.prod(len(options) for options in self.grid.values()) * math.prod(
            len(next(iter(group.values()))) for group in self.zips) * len(self.seeds or [None])

    def expand(self) -> dict[str, dict]:
        """Every run of the sweep: key -> resolved config dict, in grid order (a new dict each call; the runs are
        expanded once: each costs milliseconds, a large sweep minutes)."""
        return dict(self._runs)

    @functools.cached_property
    def _runs(self) -> dict[str, dict]:
        axes = [[dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]]
        for group in self.zips:
            axes.append([dict(zip(group, values)) for values in zip(*group.values())])
        if self.seeds is not None:
            axes.append([{"seed": seed} for seed in self.seeds])
        runs: dict[str, dict] = {}
        for parts in itertools.product(*axes):
            values = dict(self.base)
            for part in parts:
                values.update(part)
            config = RunConfig.from_dict(values).resolved()
            earlier = runs.setdefault(config.key(), config.to_dict())
            stops = [name for name in UNKEYED if earlier[name] != getattr(config, name)]
            if stops:  # one run with two budgets: silently keeping the first would drop the other
                raise ValueError(f"two runs of the spec differ only in {', '.join(stops)}, which decide where a run "
                                 "stops, not which run it is: give each run one value")
        return runs


def run_names(runs: dict[str, dict]) -> dict[str, str]:
    """key -> the run's readable name: the values of the fields that vary among ``runs`` (the per-purpose seeds,
    which follow ``seed``, aside), e.g. ``n_train=512 seed=0``; "" for a sweep of one run."""
    return dict(zip(runs, differences(list(runs.values()), SEED_FIELDS)))


def parse_spec(values: dict, source: str = "spec") -> SweepSpec:
    """Check a decoded TOML mapping and build the spec; every problem names its key."""
    for key in values:
        if key not in SPEC_KEYS:
            raise ValueError(f"{source}: unknown key {key!r}{did_you_mean(key, SPEC_KEYS)}; "
                             f"a sweep spec has {', '.join(SPEC_KEYS)}")
    base = _config_names(_table(values, "base", source), f"{source}: [base]")
    grid = _axes(_table(values, "grid", source), "[grid]", source)
    if "grid" in values and not grid:
        raise ValueError(f"{source}: [grid] is empty; give it at least one axis, e.g. n_train = [64, 128]")
    zips_raw = values.get("zip", [])
    zips_raw = [zips_raw] if isinstance(zips_raw, dict) else zips_raw
    if not isinstance(zips_raw, list) or not all(isinstance(group, dict) for group in zips_raw):
        raise ValueError(f"{source}: zip must be a table [zip] or tables [[zip]] of equal-length lists")
    zips = []
    for group in zips_raw:
        axes = _axes(group, "[zip]", source)
        if not axes:
            raise ValueError(f"{source}: a [zip] table is empty")
        lengths = {name: len(options) for name, options in axes.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{source}: [zip] axes must have equal lengths, got {lengths}")
        zips.append(axes)
    names = list(grid) + [name for group in zips for name in group]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{source}: axis {repeated[0]!r} appears more than once in [grid] / [zip]")
    seeds = values.get("seeds")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if not 1 <= seeds <= MAX_RUNS:
            raise ValueError(f"{source}: seeds = K needs 1 <= K <= {MAX_RUNS} (K seeds, 0 to K-1; {MAX_RUNS} runs "
                             f"is the most a sweep expands to), got {seeds}")
        seeds = list(range(seeds))
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                              for s in seeds):
            raise ValueError(f"{source}: seeds must be a count K or a non-empty list of integers, got {seeds!r}")
        if "seed" in names:
            raise ValueError(f"{source}: give seeds either as `seeds = [...]` or as a seed axis, not both")
    if not names and seeds is None:
        raise ValueError(f"{source}: the sweep has no [grid], [zip] or seeds: it names a single run "
                         "(use `innovwin train` for that)")
    name = values.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise ValueError(f"{source}: name must be a string, got {name!r}")
    auto = _auto(values, base, names, source)
    if auto is not None:
        base = {**base, "steps": auto.max_steps}
    spec = SweepSpec(name=name, base=base, grid=grid, zips=zips, seeds=seeds, auto=auto)
    if spec.size() > MAX_RUNS:
        raise ValueError(f"{source}: the sweep names {spec.size()} runs, more than the {MAX_RUNS} a sweep expands to "
                         "(innovwin.sweeps.spec.MAX_RUNS); split it into several sweeps")
    spec.expand()  # refuse bad values (wrong types, out of range) now, before anything is stored
    return spec


def load_spec(path) -> SweepSpec:
    """Read a sweep spec from a TOML file."""
    return parse_spec(read_toml(path, "sweep spec"), str(path))


def presets() -> list[str]:
    """Names of the sweep specs shipped in ``innovwin/sweeps/presets``."""
    return sorted(entry.name[:-5] for entry in resources.files("innovwin.sweeps.presets").iterdir()
                  if entry.name.endswith(".toml"))


def load_preset(name: str) -> SweepSpec:
    available = presets()
    if name not in available:
        raise ValueError(f"unknown preset {name!r}{did_you_mean(name, available)}; presets: {', '.join(available)}")
    data = resources.files("innovwin.sweeps.presets").joinpath(f"{name}.toml").read_bytes()
    return parse_spec(parse_toml(data, f"preset {name}"), f"preset {name}")


def _auto(values: dict, base: dict, axes: list[str], source: str) -> AutoBudget | None:
    """The spec's ``steps = "auto"`` with its cap and safety factor, or None; refused, named, when incomplete."""
    if base.get("steps") != AUTO:
        extra = [key for key in ("max_steps", "safety") if key in values]
        if extra:
            raise ValueError(f'{source}: {extra[0]} goes with steps = "auto" in [base]')
        return None
    if "steps" in axes:
        raise ValueError(f'{source}: steps = "auto" in [base] and a steps axis: give one')
    cap = values.get("max_steps")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ValueError(f'{source}: steps = "auto" needs max_steps = N (the most a run may train, N >= 1), '
                         f"got {cap!r}")
    from innovwin.analysis.predict import SAFETY  # here: `innovwin --help` lists the presets without torch

    safety = values.get("safety", SAFETY)
    if not isinstance(safety, (int, float)) or isinstance(safety, bool) or not safety >= 1:
        raise ValueError(f"{source}: safety must be a number >= 1 (the budget is the predicted upper end times it), "
                         f"got {safety!r}")
    return AutoBudget(cap, float(safety))


def _table(values: dict, key: str, source: str) -> dict:
    table = values.get(key, {})
    if not isinstance(table, dict):
        raise ValueError(f"{source}: {key} must be a table [{key}], got {type(table).__name__}")
    return table


def _axes(table: dict, where: str, source: str) -> dict[str, list]:
    axes = _config_names(table, f"{source}: {where}")
    for name, options in axes.items():
        if not isinstance(options, list):
            raise ValueError(f"{source}: {where} axis {name!r} must be a list of values, got {options!r}")
        if not options:
            raise ValueError(f"{source}: {where} axis {name!r} is empty; give it at least one value")
    return axes


def _config_names(table: dict, where: str) -> dict:
    """The table with flat field names (it may use dotted names or [group] sub-tables); bad names name ``where``."""
    try:
        return flatten(table)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
