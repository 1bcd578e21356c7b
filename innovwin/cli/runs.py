"""`innovwin runs STORE`: a store's runs, one entry each: readable name, status, attempts, clocks, directory."""
from __future__ import annotations

import argparse

from innovwin.cli import subcommand

DESCRIPTION = ("One entry per run of a store: the grid values that set it apart (e.g. n_train=512 seed=0), its status "
               "and attempts, its clocks with their 95% intervals and window when done, its error's last line when "
               "failed, and its run directory. Rows of a run trained to an earlier budget under its earlier key "
               "count as that run and are not listed.")


def add_parser(subparsers) -> None:
    parser = subcommand(subparsers, "runs", run_runs_command, "list a store's runs: name, status, clocks, window, "
                        "directory", DESCRIPTION)
    parser.add_argument("store", metavar="STORE", help="store directory written by `innovwin sweep`")
    parser.add_argument("--status", choices=("queued", "running", "done", "failed"), help="only runs in this state")


def run_runs_command(args: argparse.Namespace) -> int:
    from collections import Counter

    from innovwin.analysis.readout import one_line
    from innovwin.analysis.records import run_summary
    from innovwin.store.runstore import RunStore
    from innovwin.sweeps.spec import run_names

    with RunStore(args.store) as store:
        rows = store.rows()
    superseded = sum(bool(row["superseded_by"]) for row in rows)
    rows = [row for row in rows if not row["superseded_by"]]  # an earlier budget of a listed run
    names = run_names({row["key"]: row["config"] for row in rows})
    counts = Counter(row["status"] for row in rows)
    print(f"{args.store}: {len(rows)} runs, " + ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "queued",
                                                                                       "failed"))
          + (f" ({superseded} earlier-budget rows of the same runs not listed)" if superseded else ""))
    width = max([len(names[row["key"]] or row["key"]) for row in rows] + [4])
    for row in rows:
        if args.status and row["status"] != args.status:
            continue
        if row["status"] == "done":
            detail = one_line(run_summary(row)[0])  # the run's own summary.json (refined since, maybe)
        elif row["status"] == "failed":
            detail = "error: " + ((row["error"] or "").strip().splitlines() or ["?"])[-1]
        else:
            detail = ""
        print(f"{names[row['key']] or row['key']:<{width}}  {row['status']:<7} attempts {row['attempts']}  "
              f"{detail}\n{'':<{width}}  {row['run_dir']}")
    return 0
