"""Claim 2b, tau_rule falls with depth: each pair of depths compared over every seed, censored runs included.

    python docs/studies/depth_verdict.py STORE [--earlier FILE] [--task T] [--out docs/figures/depth-g4]

A run that never learned the rule is right-censored at its last step, so comparing medians or fitting a law would
drop or distort exactly the runs that matter. Each pair of depths is compared as two survival curves of "steps
until tau_rule": the log-rank statistic (observed minus expected learnings at the shallower depth, summed over the
steps where some run learned), with an exact p-value from every relabelling of the runs between the two depths
(the seeds are few, so the normal approximation is not used). The verdict is three-valued: "falls" (the deeper
learns sooner) or "rises" where p < 0.05 two-sided, else "unresolved". Beside it, for the effect size, each
depth's runs that learned by the shortest budget of a run that never learned (so every run is known there), and the
censored maximum-likelihood
tau_rule ∝ depth^alpha of the pair where both depths have a run that learned.

--earlier adds runs that are no longer in a store, from the numbers published for them: a JSON list of
{"depth", "seed", "tau_rule" (null when never learned), "last_step"}. Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from innovwin.analysis.fits import fit_censored_power_law
from innovwin.analysis.records import load_rows, run_records

LEVEL = 0.05


@dataclass(frozen=True)
class Run:
    depth: int
    seed: int
    tau: float | None  # None: never learned by last_step
    last_step: int
    lo: float  # what is known of tau: [lo, hi] (hi inf when never learned)
    hi: float
    source: str

    @property
    def time(self) -> float:
        return self.tau if self.tau is not None else float(self.last_step)


def log_rank(first: list[Run], second: list[Run]) -> float:
    """Observed minus expected learnings in ``first`` under equal hazards (ties counted as at risk)."""
    runs = first + second
    total = 0.0
    for t in sorted({r.tau for r in runs if r.tau is not None}):
        at_risk = [r for r in runs if r.time >= t]
        events = [r for r in at_risk if r.tau == t]
        share = sum(r in first for r in at_risk) / len(at_risk)
        total += sum(r in first for r in events) - len(events) * share
    return total


def exact_p(first: list[Run], second: list[Run]) -> float:
    """Two-sided p of the log-rank statistic over every split of the runs into groups of the same sizes."""
    runs, observed = first + second, abs(log_rank(first, second))
    splits = list(itertools.combinations(range(len(runs)), len(first)))
    extreme = 0
    for chosen in splits:
        picked = set(chosen)
        a = [r for i, r in enumerate(runs) if i in picked]
        b = [r for i, r in enumerate(runs) if i not in picked]
        extreme += abs(log_rank(a, b)) >= observed - 1e-9
    return extreme / len(splits)


def compare(shallow: list[Run], deep: list[Run]) -> dict:
    # the steps every run of the pair is known at: the shortest run that never learned (one that learned is known)
    budget = min((r.last_step for r in shallow + deep if r.tau is None),
                 default=max(r.tau for r in shallow + deep if r.tau is not None))
    learned = [sum(r.tau is not None and r.tau <= budget for r in group) for group in (shallow, deep)]
    statistic, p = log_rank(shallow, deep), exact_p(shallow, deep)
    verdict = "unresolved" if p >= LEVEL else ("falls" if statistic < 0 else "rises")
    row = {"depths": [shallow[0].depth, deep[0].depth], "runs": [len(shallow), len(deep)], "budget": budget,
           "learned_by_budget": learned,
           "log_rank_shallow_o_minus_e": statistic, "p_exact": p, "verdict": verdict, "alpha": None}
    runs = shallow + deep
    if all(any(r.tau is not None for r in group) for group in (shallow, deep)):
        fit = fit_censored_power_law([r.depth for r in runs], [r.lo for r in runs], [r.hi for r in runs])
        row.update(alpha=fit.alpha, alpha_lo=fit.alpha_lo, alpha_hi=fit.alpha_hi)
    return row


def store_runs(store: str, task: str) -> list[Run]:
    runs = []
    for record in run_records(load_rows(store)):
        if record.task != task:
            continue
        lo, hi = record.rule.observation()
        runs.append(Run(record.depth, record.seed, record.rule.value if record.rule.censoring != "right" else None,
                        record.last_step, lo, hi, "store"))
    return runs


def earlier_runs(path: str) -> list[Run]:
    """Published runs: a learned clock known to the evaluation grid's bracket around it (8 per decade from 10)."""
    grid = [10 * 10 ** (k / 8) for k in range(64)]
    runs = []
    for item in json.loads(Path(path).read_text()):
        tau = item["tau_rule"]
        if tau is None:
            lo, hi = float(item["last_step"]), math.inf
        else:
            lo, hi = max([g for g in grid if g < tau], default=0.0), min(g for g in grid if g >= tau)
        runs.append(Run(item["depth"], item["seed"], tau, item["last_step"], lo, hi, "published"))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--earlier", help="JSON list of runs no longer in a store (depth, seed, tau_rule, last_step)")
    parser.add_argument("--task", default="parity:h=6,w=6,g=4")
    parser.add_argument("--out", default="docs/figures/depth-g4")
    args = parser.parse_args(argv)
    runs = store_runs(args.store, args.task) + (earlier_runs(args.earlier) if args.earlier else [])
    by_depth = {depth: sorted((r for r in runs if r.depth == depth), key=lambda r: r.seed)
                for depth in sorted({r.depth for r in runs})}
    if len(by_depth) < 2:
        raise SystemExit(f"runs of {args.task} at fewer than two depths in {args.store}")
    rows = [compare(by_depth[a], by_depth[b]) for a, b in itertools.combinations(by_depth, 2)]
    lines = ["| depth | seeds | τ_rule per seed (steps; > last step: never learned) |", "|---|---|---|"]
    for depth, group in by_depth.items():
        cells = ", ".join(f"{r.seed}: {r.tau:.0f}" if r.tau is not None else f"{r.seed}: > {r.last_step}"
                          for r in group)
        lines.append(f"| {depth} | {len(group)} | {cells} |")
    lines += ["", "| depths | runs | learned by the common budget | log-rank O − E (shallower) | exact p | "
                  "τ_rule ∝ depth^α (censored ML, 95%) | verdict |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        alpha = "— (a depth never learned)"
        if row["alpha"] is not None:
            ends = ", ".join("open" if end is None else f"{end:.2f}" for end in (row["alpha_lo"], row["alpha_hi"]))
            alpha = f"{row['alpha']:.2f} [{ends}]"
        lines.append(f"| {row['depths'][0]} → {row['depths'][1]} | {row['runs'][0]} + {row['runs'][1]} | "
                     f"{row['learned_by_budget'][0]} and {row['learned_by_budget'][1]} by {row['budget']} | "
                     f"{row['log_rank_shallow_o_minus_e']:+.2f} | {row['p_exact']:.3f} | {alpha} | "
                     f"**{row['verdict']}** |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"runs": [r.__dict__ for r in runs], "pairs": rows}, indent=1,
                                                   default=str) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
