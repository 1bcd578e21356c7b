"""Training until the clocks are measured against fixed budgets: a preset as it was before issue 27 (``fixed``: its
hand-set steps, until = budget), as it ships now (``until``: until = "both", a generous steps) and with budgets the
sweep predicts (``auto``: steps = "auto", max_steps = the largest generous steps, safety 1.5), one after the other
in one session.

Each variant is the command a user runs (``innovwin sweep SPEC --store DIR --workers W``) into a fresh store.
Recorded per variant: the total training steps (each run's ``stop.trained``), the wall time, the load before and
after (the machine is shared), the runs censored per clock, every run's clocks with their intervals, and the fitted
alpha of tau_rule and tau_mem against N (least squares on crossed runs, and the censored maximum-likelihood fit on
every run); then whether the two variants agree (each clock's intervals overlap, each alpha's intervals overlap).

    python benches/bench_until.py --preset quick [--workers W] [--keep DIR] [--out FILE]
    python benches/bench_until.py --preset mem-vs-n --keep stores/bench   # ~1 h on 2 cores

``--keep DIR`` keeps the three stores (DIR/PRESET-VARIANT) for ``innovwin predict STORE --check`` and the report.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import RESULTS, machine  # noqa: E402

from innovwin.analysis.fits import fit_all  # noqa: E402
from innovwin.analysis.records import load_rows, run_records  # noqa: E402

# Each preset's lines before issue 27 (``fixed``) and with budgets the sweep predicts (``auto``): TOML lines that
# replace the preset's line of the same field (the first one; a None value deletes it), then lines added at the top.
VARIANTS = {
    "quick": {
        "fixed": ({"until": '"budget"', "steps": "2000"}, []),
        "until": ({}, []),
        "auto": ({"steps": '"auto"'}, ["max_steps = 8000", "safety = 1.5"]),
    },
    "mem-vs-n": {
        "fixed": ({"until": '"budget"', "steps": "[800, 1000, 1500, 2500, 4000, 7000]"}, []),
        "until": ({}, []),
        "auto": ({"steps": None, "device": '"cpu"\nsteps = "auto"'}, ["max_steps = 16000", "safety = 1.5"]),
    },
}


def spec_text(preset: str, variant: str) -> str:
    """The preset's TOML with the variant's changes."""
    text = resources.files("innovwin.sweeps.presets").joinpath(f"{preset}.toml").read_text()
    changes, top = VARIANTS[preset][variant]
    for name, value in changes.items():
        text = re.sub(rf"^{name} = .*$\n?", "" if value is None else f"{name} = {value}\n", text, count=1, flags=re.M)
    return "\n".join(top + [text])


def load() -> dict:
    return {"loadavg": list(os.getloadavg()), "uptime": subprocess.run(["uptime"], capture_output=True,
                                                                       text=True).stdout.strip()}


def measure(preset: str, variant: str, root: Path, workers: int | None) -> dict:
    spec, store = root / f"{preset}-{variant}.toml", root / f"{preset}-{variant}"
    spec.write_text(spec_text(preset, variant))
    before = load()
    start = time.perf_counter()
    with open(root / f"{preset}-{variant}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "innovwin", "sweep", str(spec), "--store", str(store)]
                       + ([] if workers is None else ["--workers", str(workers)]), check=True, stdout=log,
                       stderr=subprocess.STDOUT)
    wall_s = time.perf_counter() - start
    rows = {row["key"]: row for row in load_rows(store)}
    runs = []
    for record in run_records(list(rows.values())):
        stop = rows[record.key]["summary"].get("stop") or {}
        runs.append({"n_train": record.n_train, "steps": record.config.steps, "until": record.config.until,
                     "trained": stop.get("trained", record.config.steps), "stop": stop or None,
                     **{name: {"value": clock.value, "censored": clock.censoring, "bounds": list(clock.bounds())}
                        for name, clock in (("tau_rule", record.rule), ("tau_mem", record.mem))}})
    fits = [{key: row.get(key) for key in ("clock", "against", "alpha", "alpha_lo", "alpha_hi", "n_points",
                                            "n_censored", "ml_alpha", "ml_alpha_lo", "ml_alpha_hi", "ml_n",
                                            "ml_n_right")}
            for row in fit_all(run_records(list(rows.values()))) if row["against"] == "n_train"]
    return {"spec": spec.read_text(), "workers": workers or os.cpu_count(), "wall_s": wall_s, "load_before": before, "load_after": load(),
            "total_steps": sum(run["trained"] for run in runs),
            "censored": {name: sum(run[name]["censored"] == "right" for run in runs) for name in ("tau_rule", "tau_mem")},
            "runs": runs, "fits": fits}


def overlap(a, b) -> bool:
    """Two [lo, hi] intervals (None: open) share a point."""
    lo_a, hi_a = a[0] if a[0] is not None else -math.inf, a[1] if a[1] is not None else math.inf
    lo_b, hi_b = b[0] if b[0] is not None else -math.inf, b[1] if b[1] is not None else math.inf
    return max(lo_a, lo_b) <= min(hi_a, hi_b)


def agreement(fixed: dict, other: dict) -> dict:
    """Whether ``other``'s clocks and alphas overlap ``fixed``'s, and the share of training steps it saves."""
    by_n = {run["n_train"]: run for run in fixed["runs"]}
    clocks = {f"{name} N={run['n_train']}": overlap(by_n[run["n_train"]][name]["bounds"], run[name]["bounds"])
              for run in other["runs"] for name in ("tau_rule", "tau_mem")}
    fits = {}
    for a, b in zip(fixed["fits"], other["fits"]):
        for kind in ("", "ml_"):
            if a[f"{kind}alpha"] is not None and b[f"{kind}alpha"] is not None:
                fits[f"{kind or 'ls_'}alpha {a['clock']}"] = overlap(
                    (a[f"{kind}alpha_lo"], a[f"{kind}alpha_hi"]), (b[f"{kind}alpha_lo"], b[f"{kind}alpha_hi"]))
    return {"clocks_overlap": clocks, "alphas_overlap": fits,
            "steps_saved": 1 - other["total_steps"] / fixed["total_steps"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(VARIANTS), default="quick")
    parser.add_argument("--workers", type=int, help="runs at a time (default: the sweep's, one per core)")
    parser.add_argument("--keep", help="keep the stores here (default: a temporary directory)")
    parser.add_argument("--out", help="default: benches/results/bench_until-PRESET-cpu-2core-shared.json")
    args = parser.parse_args(argv)
    out = Path(args.out or RESULTS / f"bench_until-{args.preset}-cpu-2core-shared.json")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        root.mkdir(parents=True, exist_ok=True)
        variants = {variant: measure(args.preset, variant, root, args.workers) for variant in VARIANTS[args.preset]}
    result = {"machine": machine(), "preset": args.preset, "variants": variants,
              "agreement": {variant: agreement(variants["fixed"], variants[variant])
                            for variant in variants if variant != "fixed"}}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({name: {k: v[k] for k in ("wall_s", "total_steps", "censored")}
                      for name, v in result["variants"].items()}, indent=1))
    print(json.dumps(result["agreement"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
