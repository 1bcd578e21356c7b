"""Predictions written down before their runs, against what the runs then measured.

    innovwin predict STORE --set n_train=1024 --json > predictions/n1024.json     # before the run
    innovwin sweep ...                                                           # the run
    python docs/studies/predicted_vs_measured.py predictions/*.json --store STORE [--store ...] [--out FILE]

Each saved prediction (``innovwin predict --json``) is matched to every finished run of the stores it is for (its
fitted group at its x, and any other setting it names, e.g. a seed; each seed a row; a run found in several stores
counts once), and judged as ``innovwin predict --check`` judges a left-out run
(:func:`innovwin.analysis.predict.judged`): inside the 95% prediction interval or not (a censored clock: whether what
is known of it meets the interval), and the |log10 error| of a measured clock. Prints a Markdown table with the hit
rate over measured clocks (a censored one is counted apart: a bound that meets the interval does not test it);
``--out`` also writes it with the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median

from innovwin.analysis.fits import CLOCK_SYMBOLS
from innovwin.analysis.predict import AXIS_NAMES, Prediction, judged, target
from innovwin.analysis.records import group_by, load_rows, run_records


def matching(records, saved: dict, found: dict) -> list:
    """The records a prediction is for: in its fitted group (task, arch, depth, width, ...), at its x (the N,
    complexity or depth it was made at), and equal in every other setting it names (a seed among them)."""
    settings = target(saved["settings"])
    wanted = {**{name: value for name, value in found["group"].items() if name != "variant"},
              found["against"]: found["x"], **{name: value for name, value in settings.items() if name != "variant"}}
    seed = saved["settings"].get("seed")
    return [r for r in records
            if all(getattr(r, name) == value for name, value in wanted.items())
            and all(getattr(r.config, name) == value for name, value in settings["variant"].items())
            and (seed is None or r.seed == int(seed))]


def rows_for(path: Path, records) -> list[dict]:
    saved = json.loads(path.read_text())
    rows = []
    for found in saved["predictions"]:
        prediction = Prediction(**{**found, "fit": None})
        for record in matching(records, saved, found):
            clock = record.clock(prediction.clock)
            rows.append({"prediction": path.name, "run": record.name, "seed": record.seed, "clock": prediction.clock,
                         "against": prediction.against,
                         "observed": clock.render_interval(), **judged(clock, prediction)})
    return rows


def distinct(records) -> list:
    """One record per run: the same key in several stores is one run (trained identically), the one trained
    furthest kept."""
    kept = {}
    for record in records:
        if record.key not in kept or record.last_step > kept[record.key].last_step:
            kept[record.key] = record
    return list(kept.values())


def table(rows: list[dict]) -> str:
    lines = ["| prediction | run | seed | clock | predicted (95% PI) | measured | inside | |log10 error| |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        error = "" if row["log10_error"] is None else f"{row['log10_error']:.2f}"
        lines.append(f"| {row['prediction']} | {row['run']} | {row['seed']} | {CLOCK_SYMBOLS[row['clock']]} "
                     f"| {row['estimate']:.0f} [{row['lo']:.0f}, {row['hi']:.0f}] | {row['observed']} "
                     f"| {'yes' if row['covered'] else '**no**'} | {error} |")
    lines.append(f"\nHit rate: {hit_rate(rows)}.")
    for axis, found in group_by(rows, ("against",)).items():
        lines.append(f"- predicted along {AXIS_NAMES[axis[0]]}: {hit_rate(found)}")
    return "\n".join(lines)


def hit_rate(rows: list[dict]) -> str:
    """How many measured clocks fell inside their interval, and how many censored ones were consistent with it (a
    bound that meets the interval is no test of it; one past it is a miss)."""
    measured = [row for row in rows if row["log10_error"] is not None]
    bounds = [row for row in rows if row["log10_error"] is None]
    text = f"{sum(row['covered'] for row in measured)} of {len(measured)} measured clocks inside their 95% " \
           f"prediction interval"
    if measured:
        text += f" (median |log10 error| {median(row['log10_error'] for row in measured):.2f})"
    if bounds:
        text += f"; {sum(row['covered'] for row in bounds)} of {len(bounds)} censored clocks consistent with theirs"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", type=Path)
    parser.add_argument("--store", action="append", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    records = distinct([record for store in args.store for record in run_records(load_rows(store))])
    rows = [row for path in args.predictions for row in rows_for(path, records)]
    if not rows:
        raise SystemExit("no finished run of these stores has the predicted settings")
    text = table(rows)
    print(text)
    if args.out:
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
