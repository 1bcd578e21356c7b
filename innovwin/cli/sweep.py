"""`innovwin sweep` (run a grid of runs into a store) and `innovwin report` (tables, fits, figures)."""
from __future__ import annotations

import argparse
import sys

MIN_BOOT = 100  # report --n-boot: with fewer, a 95% interval's ends are set by a handful of resamples
GPU_ENSEMBLE = 8  # the default --ensemble on a machine with a GPU (an estimate until measured: benches/gpu_ensemble.py)


def add_parser(subparsers) -> None:
    from innovwin.sweeps.executors import EXECUTORS
    from innovwin.sweeps.spec import presets

    sweep = subparsers.add_parser(
        "sweep", help="run a grid of runs into a store (skips done runs, resumes interrupted ones)",
        description="Expand a sweep spec (TOML: [base], [grid], [zip], seeds) into runs and run the ones "
                    "not done yet. Safe to kill and rerun: done runs are kept, interrupted runs resume.")
    sweep.add_argument("spec", nargs="?", help="sweep spec TOML file (or use --preset)")
    sweep.add_argument("--preset", help=f"a shipped spec instead of a file: {', '.join(presets())}")
    sweep.add_argument("--store", required=True, help="store directory (created if missing)")
    sweep.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local processes (default) or Ray tasks")
    sweep.add_argument("--workers", type=int,
                       help="runs at a time (default: one per GPU, else one per core; "
                            "more than the GPUs puts several runs on each)")
    sweep.add_argument("--ray-address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                                             "(default: start a local Ray instance)")
    sweep.add_argument("--max-attempts", type=int, default=3, help="tries per run before it stays failed")
    sweep.add_argument("--ensemble", type=int, metavar="K",
                       help="train up to K runs of one shape as one stacked ensemble in one process (default: "
                            f"{GPU_ENSEMBLE} with a GPU, where one tiny run leaves it idle; 1 on CPU, where it does "
                            "not pay)")
    sweep.set_defaults(func=run_sweep_command)

    report = subparsers.add_parser("report", help="tables, scaling fits and figures of a store",
                                   description="Write CSV/Markdown tables, fits and PNG figures of every "
                                               "finished run in a store, and an index.html showing them.")
    report.add_argument("store", help="store directory written by `innovwin sweep`")
    report.add_argument("--out", required=True, help="output directory")
    report.add_argument("--n-boot", type=int, default=1000,
                        help=f"bootstrap resamples for the fits' intervals: 0 (none) or at least {MIN_BOOT} "
                             "(default 1000)")
    report.set_defaults(func=run_report_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    from innovwin.store.runstore import RunStore
    from innovwin.sweeps.driver import run_sweep
    from innovwin.sweeps.spec import load_preset, load_spec

    if (args.spec is None) == (args.preset is None):
        raise ValueError("give either a spec file or --preset NAME")
    if args.ensemble is not None and args.ensemble < 1:
        raise ValueError(f"--ensemble must be >= 1, got {args.ensemble}")
    spec = load_spec(args.spec) if args.spec else load_preset(args.preset)
    runs = spec.expand()
    ensemble = args.ensemble
    if ensemble is None:
        from innovwin.sweeps.executors import visible_gpus

        ensemble = GPU_ENSEMBLE if visible_gpus() else 1
    with RunStore(args.store, write=True) as store:
        counts = run_sweep(store, runs, executor=args.executor, workers=args.workers,
                           ray_address=args.ray_address, max_attempts=args.max_attempts, stream=sys.stderr,
                           ensemble=ensemble)
        for row in store.rows():
            if row["key"] in runs and row["status"] == "failed":
                last_line = (row["error"] or "").strip().splitlines()[-1:] or ["?"]
                print(f"[sweep] failed {row['key']} after {row['attempts']} attempts: {last_line[0]}",
                      file=sys.stderr)
    print(f"[sweep] {spec.name}: {counts['done']}/{len(runs)} runs done in {args.store}; "
          f"next: innovwin report {args.store} --out REPORT_DIR")
    return 1 if counts["failed"] else 0


def run_report_command(args: argparse.Namespace) -> int:
    from innovwin.report.build import build_report

    if args.n_boot != 0 and args.n_boot < MIN_BOOT:
        raise ValueError(f"--n-boot must be 0 (no intervals) or at least {MIN_BOOT} (with fewer, a 95% interval's "
                         f"ends are set by a handful of resamples), got {args.n_boot}")
    index = build_report(args.store, args.out, n_boot=args.n_boot)
    print(f"report: {index}")
    return 0
