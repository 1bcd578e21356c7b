"""`innovwin basins RUN_DIR`: basin-of-attraction dissection of a DiT run's snapshots (see innovwin.analysis.basins)."""
from __future__ import annotations

import argparse
from pathlib import Path

from innovwin.analysis.basin_settings import DEFAULTS, PROBE_CLASSES
from innovwin.cli import subcommand


def add_parser(subparsers) -> None:
    parser = subcommand(
        subparsers, "basins", run_basins_command,
        "basins of attraction of training, novel and invalid points at each DiT snapshot",
        "For each snapshot: start probes at probe + sigma*eps, integrate the probability-flow ODE back to sigma 0 "
        "and see where they land. Writes basins.jsonl and basins_*.png into RUN_DIR.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a DiT run directory written by `innovwin train`")
    parser.add_argument("--probes", type=int, metavar="K",
                        help=f"probes per class (training, novel, invalid) (default: {DEFAULTS['n_probes']}, "
                             "or the run's training / held-out set size if smaller)")
    parser.add_argument("--sigmas", type=float, nargs="+", metavar="S",
                        help="explicit noise levels (overrides the log grid below)")
    parser.add_argument("--sigma-min", type=float, default=DEFAULTS["sigma_min"],
                        help="lowest noise level of the log grid (default: %(default)s)")
    parser.add_argument("--sigma-max", type=float, default=DEFAULTS["sigma_max"],
                        help="highest noise level of the log grid (default: %(default)s)")
    parser.add_argument("--n-sigmas", type=int, default=DEFAULTS["n_sigmas"],
                        help="levels in the log grid (default: %(default)s)")
    parser.add_argument("--draws", type=int, default=DEFAULTS["draws"], metavar="R",
                        help="noise draws per probe and level (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"],
                        help="Heun steps from each level down to 0 (default: %(default)s)")
    parser.add_argument("--snapshots", default="all",
                        help="'all' or comma-separated snapshot steps (default: all)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="probe and noise seed")
    parser.add_argument("--chunk", type=int, default=DEFAULTS["chunk"],
                        help="trajectories per batch (lower it if memory runs out)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:i]")


def run_basins_command(args: argparse.Namespace) -> int:
    from innovwin.analysis.basins import measure_run, sigma_grid
    from innovwin.report.basins_figures import FIGURES, plot_all
    from innovwin.store import rundir

    sigmas = args.sigmas if args.sigmas is not None else sigma_grid(args.sigma_min, args.sigma_max, args.n_sigmas)

    def report(row: dict) -> None:
        radii = "  ".join(f"{name} {row['classes'][name]['radius_median']:.3g}" for name in PROBE_CLASSES)
        print(f"[basins] step {row['step']:>8}  median radius: {radii}  ({row['seconds']:.1f} s)", flush=True)

    if not (Path(args.run_dir) / rundir.CONFIG).is_file():  # checked before the lock, which would leave a .lock
        raise ValueError(f"{args.run_dir} is not a run directory (no {rundir.CONFIG})")
    with rundir.locked(args.run_dir, "innovwin basins"):  # a train (or another basins) on it is refused meanwhile
        summary = rundir.read_summary(args.run_dir)  # checked before measuring: the figures mark its clocks
        rows = measure_run(args.run_dir, n_probes=args.probes, sigmas=sigmas, draws=args.draws, steps=args.steps,
                           snapshots=args.snapshots, seed=args.seed, chunk=args.chunk, device=args.device,
                           progress=report)
        plot_all(args.run_dir, rows, summary)
    print(f"[basins] wrote {rundir.BASINS} and {', '.join(FIGURES)} in {args.run_dir}")
    return 0
