"""`innovwin sweep` (run a grid of runs into a store) and `innovwin report` (tables, fits, figures)."""
from __future__ import annotations

import argparse
import os
import sys

from innovwin.cli import subcommand

MIN_BOOT = 100  # report --n-boot: with fewer, a 95% interval's ends are set by a handful of resamples


def add_parser(subparsers) -> None:
    from innovwin.sweeps.executors import EXECUTORS, GPU_ENSEMBLE
    from innovwin.sweeps.ray_cluster import STORAGES
    from innovwin.sweeps.spec import presets

    sweep = subcommand(
        subparsers, "sweep", run_sweep_command,
        "run a grid of runs into a store (skips done runs, resumes interrupted ones)",
        "Expand a sweep spec (TOML: [base], [grid], [zip], seeds) into runs and run the ones not done yet, showing "
        "each running run's progress and an ETA, and the findings at the end. Safe to kill and rerun: done runs "
        "are kept, interrupted runs resume. steps = \"auto\" in [base], with max_steps = CAP (and safety = F) in "
        "the spec, predicts each run's budget from the runs finished before it (docs/budgets.md).")
    sweep.add_argument("spec", nargs="?", help="sweep spec TOML file (or use --preset)")
    sweep.add_argument("--preset", help=f"a shipped spec instead of a file: {', '.join(presets())}")
    sweep.add_argument("--store", required=True, help="store directory (created if missing)")
    sweep.add_argument("--executor", choices=EXECUTORS,
                       help="local processes, or Ray tasks (default: ray with --ray-address or where RAY_ADDRESS "
                            "is set, as under `ray job submit`; else local)")
    sweep.add_argument("--workers", type=int,
                       help="runs at a time (default: one per GPU, else one per core; "
                            "more than the GPUs puts several runs on each)")
    sweep.add_argument("--ray-address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                                             "(default: RAY_ADDRESS, else start a local Ray instance)")
    sweep.add_argument("--ray-storage", choices=STORAGES, default="auto",
                       help="how runs on Ray nodes reach the store: auto (each node writes it directly where it "
                            "sees the store's directory, else syncs through the driver), shared (every node must "
                            "see it: a node that does not is refused before training), sync (every node syncs)")
    sweep.add_argument("--ray-runtime-env", metavar="JSON_OR_FILE",
                       help="Ray runtime_env (JSON text, or a JSON/YAML file) for the sweep's tasks (default on an "
                            "existing cluster: ship the installed innovwin as py_modules; '{}' ships nothing)")
    sweep.add_argument("--max-attempts", type=int, default=3, metavar="N",
                       help="retry limit: tries per run (a failed run is retried until it has had N)")
    sweep.add_argument("--ensemble", type=int, metavar="K",
                       help="train up to K runs of one shape as one stacked ensemble in one process (default: "
                            f"{GPU_ENSEMBLE} where the runs go has a GPU (the cluster's, for Ray), where one tiny run "
                            "leaves it idle; 1 on CPU, where it does not pay)")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the expanded grid and what would run (nothing is trained or written)")

    report = subcommand(
        subparsers, "report", run_report_command, "findings, tables, scaling fits and figures of a store or a run",
        "Write the findings, CSV/Markdown tables, fits and SVG/PNG figures of every finished run in a store (or of "
        "one run directory), and an index.html that opens with the answer.")
    report.add_argument("store", metavar="STORE_OR_RUN_DIR",
                        help="store directory written by `innovwin sweep`, or a run directory of `innovwin train`")
    report.add_argument("--out", required=True, help="output directory")
    report.add_argument("--n-boot", type=int, default=1000,
                        help=f"bootstrap resamples for the fits' intervals: 0 (none) or at least {MIN_BOOT} "
                             "(default 1000)")


def run_sweep_command(args: argparse.Namespace) -> int:
    from innovwin.store.runstore import RunStore
    from innovwin.sweeps.driver import run_sweep
    from innovwin.sweeps.plan import check_sweep
    from innovwin.sweeps.spec import load_preset, load_spec, run_names

    if (args.spec is None) == (args.preset is None):
        raise ValueError("give either a spec file or --preset NAME")
    if args.ensemble is not None and args.ensemble < 1:
        raise ValueError(f"--ensemble must be >= 1, got {args.ensemble}")
    spec = load_spec(args.spec) if args.spec else load_preset(args.preset)
    runs = spec.expand()
    names = run_names(runs)
    executor = args.executor or ("ray" if args.ray_address or os.environ.get("RAY_ADDRESS") else "local")
    if executor != "ray" and (args.ray_storage != "auto" or args.ray_runtime_env is not None):
        raise ValueError("--ray-storage and --ray-runtime-env need --executor ray")
    # the sweep's own checks, before the store is created (and in a dry run, which must refuse what the sweep would)
    check_sweep(runs, args.store, max_attempts=args.max_attempts, ensemble=args.ensemble or 1, workers=args.workers,
                executor=executor, ray_address=args.ray_address)
    if args.dry_run:
        return print_dry_run(spec.name, runs, names, args, spec.auto)
    store_path = os.path.abspath(args.store)  # what Ray's nodes are sent: their working directories are not ours
    with RunStore(store_path, write=True) as store:
        counts = run_sweep(store, runs, executor=executor, workers=args.workers, ray_address=args.ray_address,
                           max_attempts=args.max_attempts, stream=sys.stderr, names=names, ensemble=args.ensemble,
                           auto=spec.auto, ray_runtime_env=args.ray_runtime_env, ray_storage=args.ray_storage)
        rows = [row for row in store.rows() if row["key"] in runs]
    print_findings(rows)
    print(f"[sweep] {spec.name}: {counts['done']}/{len(runs)} runs done in {args.store}; "
          f"next: innovwin report {args.store} --out REPORT_DIR")
    return 1 if counts["failed"] else 0


def print_dry_run(name: str, runs: dict, names: dict, args, auto=None) -> int:
    """The grid as it expands, each run's state in the store (when it exists) and its directory; under
    ``steps = "auto"``, in the order the runs go and with the budget each would get now."""
    from pathlib import Path

    from innovwin.store.runstore import DB_NAME, RunStore, run_dir_name
    from innovwin.sweeps.budgets import auto_order, budget_for, is_upper_bound
    from innovwin.sweeps.plan import estimate_cost

    known, rows = {}, []
    dirs = {key: Path(args.store) / "runs" / run_dir_name(key, names[key]) for key in runs}
    if (Path(args.store) / DB_NAME).exists():
        with RunStore(args.store) as store:
            rows = store.rows()
            known = {row["key"]: row for row in rows}
            dirs = {key: store.run_dir(key, names[key]) for key in runs}
    costs = {key: estimate_cost(config) for key, config in runs.items()}
    total = sum(costs.values()) or 1.0
    print(f"sweep {name}: {len(runs)} runs into {args.store} (dry run: nothing is trained or written)")
    todo = 0
    order = auto_order(runs, list(runs)) if auto is not None else sorted(runs, key=lambda key: -costs[key])
    for key in order:
        row = known.get(key)
        state = row["status"] if row else "new"
        if state == "done" and asked_again(row["config"], runs[key], auto):
            state = "again"  # a done run asked with another stop: it trains on, or answers from its rows
        will_run = state in ("new", "queued", "running", "again") or (
            state == "failed" and row["attempts"] < args.max_attempts)
        todo += will_run
        share = f"{'≤' if is_upper_bound(runs[key], auto) else ' '}{100 * costs[key] / total:3.0f}%"
        print(f"  {'run ' if will_run else 'skip'}  {names[key] or key:<30} {state:<8} {share} of the work  {dirs[key]}")
        if auto is not None and will_run and not (row and row["summary"]):
            steps, source = budget_for(runs[key], rows, auto)
            print(f"        steps auto: {steps} now = {source}")
    order_text = "in increasing N, complexity, depth; budgets as runs finish" if auto else "longest first"
    print(f"{todo} of {len(runs)} would run ({order_text}), retry limit {args.max_attempts}")
    return 0


def asked_again(stored: dict, asked: dict, auto) -> bool:
    """Whether a done run's stop (steps, until, margin) is asked otherwise than it was made, which queues it again
    (:meth:`innovwin.store.runstore.RunStore.add`); under ``steps = "auto"`` a finished run keeps its budget."""
    from innovwin.config import UNKEYED

    return any(stored.get(name) != asked.get(name) for name in UNKEYED if not (auto is not None and name == "steps"))


def print_findings(rows: list[dict]) -> None:
    from innovwin.report.build import findings

    print("[sweep] findings:")
    for line in findings(rows):
        print(f"  {line}")


def run_report_command(args: argparse.Namespace) -> int:
    from innovwin.report.build import build_report

    if args.n_boot != 0 and args.n_boot < MIN_BOOT:
        raise ValueError(f"--n-boot must be 0 (no intervals) or at least {MIN_BOOT} (with fewer, a 95% interval's "
                         f"ends are set by a handful of resamples), got {args.n_boot}")
    index = build_report(args.store, args.out, n_boot=args.n_boot)
    print("findings:")
    for line in (index.parent / "headline.txt").read_text().splitlines():
        print(f"  {line}")
    print(f"report: {index}")
    return 0
