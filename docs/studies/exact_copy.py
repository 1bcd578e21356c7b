"""tau_mem two ways for the GPT: from the sampled copy rate (copy_frac, M generations per evaluation) and from the
exact expected copy rate (copy_prob: the probability mass on the training set, teacher forcing, no sampling noise).

    python docs/studies/exact_copy.py STORE [STORE ...] [--out docs/figures/exact-copy]

For every GPT run of the stores: both clocks with their intervals (the sampled one's joins the bracket with the
paired bootstrap; the exact one's is its bracket), then tau_mem = a * N^alpha by censored maximum likelihood both
ways over each group of runs. Runs written before summaries kept ``tau_mem_exact`` get it from their metrics rows,
as the summary would compute it. Writes ``<out>.json`` and ``<out>.md`` (the tables of docs/reproduction.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from innovwin.analysis import clocks
from innovwin.analysis.fits import FIT_PLAN, fit_groups
from innovwin.analysis.records import load_rows, run_metrics, run_records

CLOCKS = ("tau_mem", "tau_mem_exact")


def with_exact(record):
    """``record`` with its exact tau_mem, computed from its rows where its summary predates it."""
    if record.mem_exact is not None:
        return record
    exact = clocks.tau_mem_exact(run_metrics(record), record.config.mem_threshold)
    return dataclasses.replace(record, mem_exact=exact)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+")
    parser.add_argument("--out", default="docs/figures/exact-copy")
    args = parser.parse_args(argv)
    records = [with_exact(r) for store in args.stores for r in run_records(load_rows(store)) if r.arch == "gpt"]
    records = [r for r in records if r.mem_exact is not None]
    if not records:
        raise SystemExit("no GPT run with an exact copy rate in these stores")
    runs = [{"store": str(Path(r.run_dir).parents[1]), "name": r.name, "n_train": r.n_train, "seed": r.seed,
             **{name: {"text": r.clock(name).render_interval(), "bounds": list(r.clock(name).bounds())}
                for name in CLOCKS}} for r in records]
    by = next(by for clock, against, by in FIT_PLAN if clock == "tau_mem" and against == "n_train")
    fits = [row for name in CLOCKS for row in fit_groups(records, name, "n_train", by)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": runs, "fits": fits}, indent=1, default=str) + "\n")
    lines = ["| store | run | τ_mem, sampled (95%) | τ_mem, exact (bracket) |", "|---|---|---|---|"]
    lines += [f"| {Path(run['store']).name} | {run['name']} | {run['tau_mem']['text']} | {run['tau_mem_exact']['text']} |"
              for run in runs]
    lines += ["", "| clock | group | α (censored ML, 95%) | runs (open) | σ of log τ |", "|---|---|---|---|---|"]
    for fit in fits:
        ends = ", ".join("open" if end is None else f"{end:.2f}" for end in (fit["ml_alpha_lo"], fit["ml_alpha_hi"]))
        alpha = "—" if fit["ml_alpha"] is None else f"{fit['ml_alpha']:.2f} [{ends}]"
        sigma = "" if fit["ml_sigma"] is None else f"{fit['ml_sigma']:.3f}"
        lines.append(f"| {fit['clock']} | {fit['task']} d{fit['depth']} w{fit['width']} {fit['variant']} | {alpha} "
                     f"| {fit['ml_n']} ({fit['ml_n_right']}) | {sigma} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
