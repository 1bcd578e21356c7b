"""The diffusion-settings study: P_mean from the runs of the preset, the sampler by re-evaluating their snapshots.

    innovwin sweep --preset diffusion-settings --store stores/diffusion-settings --workers 2
    python docs/studies/diffusion_settings.py stores/diffusion-settings --out docs/figures/diffusion-settings

Training never reads the sampler, so finished runs' snapshots are evaluated again under every sampler in SAMPLERS
(the run's own evaluation noises, training set and seeds; :mod:`innovwin.analysis.reevaluate`). Writes
``<out>.json`` (one record per run, one per run and sampler), ``<out>.md`` (the tables of docs/reproduction.md),
``<out>.png`` (validity and copy curves of every cell of the grid) and ``<out>-samplers.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from innovwin import tasks
from innovwin.analysis import clocks
from innovwin.analysis.reevaluate import reevaluate
from innovwin.config import RunConfig
from innovwin.store import rundir

# name -> (sampler settings, network calls per sample); the runs were evaluated with the first (the default)
SAMPLERS = {
    "heun 8, sigma_max 5": (dict(sampler_steps=8, sigma_max=5.0), 15),
    "churn 8, sigma_max 5": (dict(sampler_steps=8, sigma_max=5.0, s_churn=2.0), 15),
    "heun 18, sigma_max 80": (dict(sampler_steps=18, sigma_max=80.0), 35),
    "heun 40, sigma_max 80": (dict(sampler_steps=40, sigma_max=80.0), 79),
    "churn 18, sigma_max 80": (dict(sampler_steps=18, sigma_max=80.0, s_churn=5.0), 35),
}
PLATEAU_EVALS = 2  # the plateau: mean sample-level validity over a run's last evaluations


def cell(config: RunConfig) -> str:
    return f"G = {tasks.make(config.task).params['g']}, N = {config.n_train}"


def bracketed(clock: clocks.Clock) -> str:
    """A clock with the two evaluations around its crossing, e.g. ``681 (464-681)``."""
    if clock.censoring == "right" or clock.bracket is None:
        return clock.render()
    lo, hi = clock.bracket
    return f"{clock.render()} ({'start' if lo is None else f'{lo:.0f}'}–{hi:.0f})"


def read_run(run_dir: Path) -> dict:
    config = RunConfig.from_record(json.loads((run_dir / rundir.CONFIG).read_text()))
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    rows = rundir.read_metrics(run_dir)
    steps = [row["step"] for row in rows]
    series = {name: [row[name] for row in rows] for name in ("valid_frac", "constraint_frac", "copy_frac")}
    rule, mem = clocks.read_clocks(summary)
    return {"run": run_dir.name, "cell": cell(config), "p_mean": config.p_mean, "seed": config.seed, "steps": steps,
            **series, "tau_group": bracketed(clocks.tau_rule(steps, series["constraint_frac"], config.rule_threshold)),
            "tau_rule": bracketed(rule), "tau_mem": bracketed(mem),
            "plateau": float(np.mean(series["valid_frac"][-PLATEAU_EVALS:])),
            "eval_share": summary["timing"]["eval_share"],
            "eval_seconds": float(np.mean([row["eval_seconds"] for row in rows]))}


def study_run(run_dir: Path, last: int) -> list[dict]:
    """The run's last ``last`` snapshots evaluated under every sampler."""
    config = RunConfig.from_record(json.loads((run_dir / rundir.CONFIG).read_text()))
    steps = rundir.snapshot_steps(run_dir)[-last:]
    records = []
    for name, (changes, calls) in SAMPLERS.items():
        rows, _ = reevaluate(run_dir, steps, **changes)
        records.append({"run": run_dir.name, "cell": cell(config), "p_mean": config.p_mean, "seed": config.seed,
                        "sampler": name, "calls": calls, "steps": steps,
                        "valid_frac": [row["valid_frac"] for row in rows],
                        "eval_seconds": float(np.mean([row["eval_seconds"] for row in rows]))})
        print(f"{run_dir.name} {name}: validity {[round(v, 3) for v in records[-1]['valid_frac']]}, "
              f"{records[-1]['eval_seconds']:.1f} s/eval", flush=True)
    return records


def tables(runs: list[dict], records: list[dict]) -> str:
    lines = ["| cell | P_mean | seed | group-level 0.9 (bracket) | τ_rule (bracket) | τ_mem (bracket) | plateau | "
             "eval share |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in sorted(runs, key=lambda run: (run["cell"], run["p_mean"], run["seed"])):
        lines.append(f"| {run['cell']} | {run['p_mean']} | {run['seed']} | {run['tau_group']} | {run['tau_rule']} | "
                     f"{run['tau_mem']} | {run['plateau']:.3f} | {run['eval_share']:.0%} |")
    if records:
        default = next(iter(SAMPLERS))
        base = {(r["run"], step): v for r in records if r["sampler"] == default
                for step, v in zip(r["steps"], r["valid_frac"])}
        lines += ["", "| sampler | network calls / sample | validity (mean) | minus the default's (paired, ± s.e.) | "
                  "s / evaluation |", "| --- | --- | --- | --- | --- |"]
        for name, (_, calls) in SAMPLERS.items():
            ours = [r for r in records if r["sampler"] == name]
            values = [(v, v - base[(r["run"], step)]) for r in ours for step, v in zip(r["steps"], r["valid_frac"])]
            valid, diff = np.array(values).T
            error = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            lines.append(f"| {name} | {calls} | {valid.mean():.3f} | {diff.mean():+.3f} ± {error:.3f} | "
                         f"{np.mean([r['eval_seconds'] for r in ours]):.1f} |")
    return "\n".join(lines) + "\n"


def figures(runs: list[dict], records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({run["cell"] for run in runs})
    p_means = sorted({run["p_mean"] for run in runs})
    colors = dict(zip(p_means, plt.cm.viridis(np.linspace(0, 0.9, len(p_means)))))
    fig, axes = plt.subplots(3, len(cells), figsize=(4 * len(cells), 9), squeeze=False, sharex="col")
    curves = (("valid_frac", "sample-level validity"), ("constraint_frac", "group-level validity"),
              ("copy_frac", "copy rate"))
    for col, name in enumerate(cells):
        for run in sorted((r for r in runs if r["cell"] == name), key=lambda r: (r["p_mean"], r["seed"])):
            for row, (key, _) in enumerate(curves):
                axes[row, col].plot(run["steps"], run[key], "-" if run["seed"] == 0 else "--",
                                    color=colors[run["p_mean"]],
                                    label=f"P_mean {run['p_mean']}" if run["seed"] == 0 and row == 0 else None)
        axes[0, col].set_title(name)
        for row, (_, label) in enumerate(curves):
            axes[row, col].set(xscale="log", ylim=(-0.02, 1.02), ylabel=label if col == 0 else None)
        axes[0, col].axhline(0.9, color="gray", lw=0.5)
        axes[1, col].axhline(0.9, color="gray", lw=0.5)
        axes[2, col].set_xlabel("training step")
    axes[0, 0].legend(fontsize=8, title="solid seed 0, dashed seed 1", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    if not records:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(SAMPLERS)
    markers = dict(zip(cells, "osD^"))
    for i, name in enumerate(names):
        for r in (r for r in records if r["sampler"] == name):
            ax.scatter(i + 0.05 * r["seed"], np.mean(r["valid_frac"]), color=colors[r["p_mean"]],
                       marker=markers[r["cell"]], s=25)
    seconds = {name: np.mean([r["eval_seconds"] for r in records if r["sampler"] == name]) for name in names}
    ax.set_xticks(range(len(names)), [f"{n.replace(', ', chr(10))}\n{seconds[n]:.1f} s/eval" for n in names],
                  fontsize=7)
    ax.set(title="sample-level validity of the last snapshots, by sampler (marker: cell)", ylim=(0, 1.02))
    fig.tight_layout()
    fig.savefig(out.with_name(out.name + "-samplers.png"), dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--out", required=True, help="output path without suffix (.json, .md and .png are written)")
    parser.add_argument("--last", type=int, default=2, help="re-evaluate each run's last this many snapshots")
    parser.add_argument("--p-means", type=float, nargs="*", help="re-evaluate only runs of these P_mean values")
    parser.add_argument("--cells", nargs="*", help='re-evaluate only runs of these cells, e.g. "G = 2, N = 32"')
    parser.add_argument("--replot", action="store_true", help="only draw the figures again from <out>.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        measured = json.loads(out.with_suffix(".json").read_text())
        figures(measured["runs"], measured["samplers"], out)
        return 0
    torch.set_num_threads(1)
    runs, records = [], []
    for run_dir in sorted(Path(args.store, "runs").iterdir()):
        if not (run_dir / rundir.SUMMARY).exists():
            continue
        runs.append(read_run(run_dir))
        if (args.p_means is None or runs[-1]["p_mean"] in args.p_means) and \
                (args.cells is None or runs[-1]["cell"] in args.cells):
            records.extend(study_run(run_dir, args.last))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": runs, "samplers": records}, indent=1) + "\n")
    out.with_suffix(".md").write_text(tables(runs, records))
    figures(runs, records, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
