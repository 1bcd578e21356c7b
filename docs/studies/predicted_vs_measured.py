"""Predictions written down before their runs, against what the runs then measured.

    innovwin predict STORE --set n_train=1024 --json > predictions/n1024.json     # before the run
    innovwin sweep ...                                                           # the run
    python docs/studies/predicted_vs_measured.py predictions/*.json --store STORE [--store ...] [--out FILE]

Each saved prediction (``innovwin predict --json``) is matched to every finished run of the stores that has the
predicted settings (its seeds, each a row), and judged as ``innovwin predict --check`` judges a left-out run
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
from innovwin.analysis.predict import Prediction, judged, target
from innovwin.analysis.records import load_rows, run_records


def matching(records, settings: dict) -> list:
    """The records with every known value of the predicted run (``variant`` fields compared on the config)."""
    new = target(settings)
    return [r for r in records
            if all(getattr(r, name) == value for name, value in new.items() if name != "variant")
            and all(getattr(r.config, name) == value for name, value in new["variant"].items())]


def rows_for(path: Path, records) -> list[dict]:
    saved = json.loads(path.read_text())
    rows = []
    for found in saved["predictions"]:
        prediction = Prediction(**{**found, "fit": None})
        for record in matching(records, saved["settings"]):
            clock = record.clock(prediction.clock)
            rows.append({"prediction": path.name, "run": record.name, "seed": record.seed, "clock": prediction.clock,
                         "observed": clock.render_interval(), **judged(clock, prediction)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| prediction | run | seed | clock | predicted (95% PI) | measured | inside | |log10 error| |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        error = "" if row["log10_error"] is None else f"{row['log10_error']:.2f}"
        lines.append(f"| {row['prediction']} | {row['run']} | {row['seed']} | {CLOCK_SYMBOLS[row['clock']]} "
                     f"| {row['estimate']:.0f} [{row['lo']:.0f}, {row['hi']:.0f}] | {row['observed']} "
                     f"| {'yes' if row['covered'] else '**no**'} | {error} |")
    measured = [row for row in rows if row["log10_error"] is not None]
    bounds = [row for row in rows if row["log10_error"] is None]
    text = f"\nHit rate: {sum(row['covered'] for row in measured)} of {len(measured)} measured clocks inside their 95% " \
           f"prediction interval"
    if measured:
        text += f" (median |log10 error| {median(row['log10_error'] for row in measured):.2f})"
    if bounds:  # a bound that meets the interval is no test of it; one past it is a miss
        text += f"; {sum(row['covered'] for row in bounds)} of {len(bounds)} censored clocks consistent with theirs"
    lines.append(text + ".")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="+", type=Path)
    parser.add_argument("--store", action="append", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    records = [record for store in args.store for record in run_records(load_rows(store))]
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
