"""`innovwin predict STORE --set FIELD=VALUE ...`: the clocks of a run not yet made, from the store's censored fits,
with a 95% prediction interval and a suggested budget; `--check`: how well those fits predict each run left out."""
from __future__ import annotations

import argparse
import json

from innovwin.cli import set_items, subcommand

def add_parser(subparsers) -> None:
    parser = subcommand(
        subparsers, "predict", run_predict_command,
        "predict a new run's clocks and budget from a store's fits; --check: leave-one-out",
        "Predict tau_rule and tau_mem of a run not yet made from the censored maximum-likelihood fits of a store's "
        "runs (every run and seed of the group the new run belongs to): the estimate, a 95%% prediction interval "
        "(the law's uncertainty at the new x plus the runs' scatter around it), the fit it comes from, and a budget "
        "(the later clock's upper end times --safety). --check predicts every run from the others of its group "
        "instead and prints how many land inside their interval.")
    parser.add_argument("store", metavar="STORE", help="store directory written by `innovwin sweep`")
    parser.add_argument("--set", metavar="FIELD=VALUE", action="append", default=[],
                        help="what the new run sets, e.g. --set n_train=4096 or --set task=parity:h=6,w=6,g=4 "
                             "(repeatable; an unset field matches any value)")
    parser.add_argument("--safety", type=float, default=None, metavar="FACTOR",
                        help="the budget is the later clock's upper end times this (default 1.5)")
    parser.add_argument("--check", action="store_true", help="leave-one-out over the store's runs instead")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def run_predict_command(args: argparse.Namespace) -> int:
    from innovwin.analysis import predict
    from innovwin.analysis.records import load_rows, run_records

    if args.check == bool(args.set):
        raise ValueError("give either --set FIELD=VALUE (the run to predict) or --check")
    records = run_records(load_rows(args.store))
    if args.check:
        rows = predict.leave_one_out(records)
        summary = predict.check_summary(rows)
        print(json.dumps({"summary": summary, "runs": rows}, indent=1) if args.json
              else "\n".join(predict.check_lines(summary)))
        return 0
    safety = predict.SAFETY if args.safety is None else args.safety
    result = predict.predict(records, set_items(args.set), safety=safety)
    print(json.dumps(predict.to_json(result), indent=1) if args.json else "\n".join(predict.render(result)))
    return 0
