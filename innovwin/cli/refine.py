"""``innovwin refine RUN|STORE``: evaluate more often inside a clock's bracket (see innovwin.train.refine)."""
from __future__ import annotations

import argparse
from pathlib import Path

from innovwin.config import UNTIL
from innovwin.store.runstore import DB_NAME


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "refine", help="narrow the clocks' brackets of a run, or of a store's unresolved runs",
        description="Replay a finished run's training from step 0 (checked to reproduce its stored evaluations) "
                    "and evaluate K more times between the two evaluations around a clock's crossing. On a store: "
                    "every finished run whose window verdict is unresolved (an earlier budget of a run counts once), "
                    "both clocks. Run again to finish an "
                    "interrupted refinement; a finished one is not repeated.")
    parser.add_argument("path", metavar="RUN|STORE", help="a run directory, or a sweep store")
    parser.add_argument("--clock", choices=[name for name in UNTIL if name != "budget"], default="both",
                        help="which clock's bracket to refine (default: both; a store always refines both)")
    parser.add_argument("--evals", type=int, default=8, metavar="K", help="evaluations per bracket (default: 8)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="CPU threads for torch (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from innovwin.analysis import clocks
    from innovwin.train.refine import check_request, refine

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    check_request(args.clock, args.evals)  # before a store is opened for writing
    torch.set_num_threads(args.threads)
    path = Path(args.path)
    if not (path / DB_NAME).exists():
        summary = refine(path, args.clock, args.evals)
        tell_store(path, summary)
        print(clocks.describe(summary))
        return 0
    from innovwin.store.runstore import RunStore

    with RunStore(path, write=True) as store:
        unresolved = [row for row in store.rows() if row["status"] == "done" and row["summary"]
                      and not row["superseded_by"] and clocks.window(*clocks.read_clocks(row["summary"])).state == "unresolved"]
        for row in unresolved:
            summary = refine(store.run_dir(row["key"]), "both", args.evals)
            store.finish(row["key"], summary)  # the store's copy is the run's summary.json
            verdict = clocks.window(*clocks.read_clocks(summary)).state
            print(f"{row['key']}  {verdict}  tau_rule {clocks.read_clock(summary, 'tau_rule').render_interval()}"
                  f"  tau_mem {clocks.read_clock(summary, 'tau_mem').render_interval()}")
    print(f"refined {len(unresolved)} unresolved run(s) in {path}")
    return 0


def tell_store(run_dir: Path, summary: dict) -> None:
    """A sweep store's run directory (``STORE/runs/NAME-KEY``) refined alone: its store row takes the new summary, so
    that `runs`, `sweep` and `report` show the refined clocks."""
    from innovwin.store.runstore import RunStore

    store_path = run_dir.resolve().parent.parent
    if not (store_path / DB_NAME).exists():
        return
    with RunStore(store_path, write=True) as store:
        row = store.get(run_dir.name[-16:])
        if row is not None and row["status"] == "done" and Path(row["run_dir"]).resolve() == run_dir.resolve():
            store.finish(row["key"], summary)
