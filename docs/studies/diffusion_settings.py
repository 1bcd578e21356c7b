"""The diffusion-settings study: P_mean from the runs of the preset, the sampler by re-evaluating their snapshots.

    innovwin sweep --preset diffusion-settings --store stores/diffusion-settings --workers 1
    python docs/studies/diffusion_settings.py stores/diffusion-settings --out docs/figures/diffusion-settings

Training never reads the sampler, so each finished run's snapshots are evaluated again under every sampler in
SAMPLERS (the run's own evaluation noises, training set and seeds; :mod:`innovwin.analysis.reevaluate`). Writes
``<out>.json`` (one record per run and sampler: validity by step, tau_rule, seconds per evaluation) and
``<out>.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from innovwin.analysis import clocks
from innovwin.analysis.reevaluate import reevaluate
from innovwin.config import RunConfig
from innovwin.store import rundir

# name -> sampler settings (the runs were evaluated with the first)
SAMPLERS = {
    "heun 18": dict(sampler_steps=18),
    "heun 40": dict(sampler_steps=40),
    "churn 18": dict(sampler_steps=18, s_churn=5.0),
    "heun 12, sigma_max 10": dict(sampler_steps=12, sigma_max=10.0),
    "heun 8, sigma_max 5": dict(sampler_steps=8, sigma_max=5.0),
    "churn 8, sigma_max 5": dict(sampler_steps=8, sigma_max=5.0, s_churn=2.0),
}


def study_run(run_dir: Path, samplers: dict, min_step: int) -> list[dict]:
    config = RunConfig.from_record(json.loads((run_dir / rundir.CONFIG).read_text()))
    steps = [step for step in rundir.snapshot_steps(run_dir) if step >= min_step]
    records = []
    for name, changes in samplers.items():
        rows, samples = reevaluate(run_dir, steps, **changes)
        rule = clocks.tau_rule(steps, [row["valid_frac"] for row in rows], config.rule_threshold)
        records.append({
            "run": run_dir.name, "p_mean": config.p_mean, "seed": config.seed, "sampler": name, "steps": steps,
            "valid_frac": [row["valid_frac"] for row in rows],
            "constraint_frac": [row["constraint_frac"] for row in rows],
            "copy_frac": [row["copy_frac"] for row in rows],
            "tau_rule": rule.render(),
            "eval_seconds": float(np.mean([row["eval_seconds"] for row in rows])),
        })
        print(f"{run_dir.name} p_mean={config.p_mean} seed={config.seed} {name}: tau_rule {rule.render()}, "
              f"validity {[round(v, 3) for v in records[-1]['valid_frac']]}, "
              f"{records[-1]['eval_seconds']:.1f} s/eval", flush=True)
    return records


def figure(runs: list[dict], records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = dict(zip(sorted({run["p_mean"] for run in runs}), plt.cm.viridis(np.linspace(0, 0.9, 4))))
    for run in sorted(runs, key=lambda run: (run["p_mean"], run["seed"])):
        style = "-" if run["seed"] == 0 else "--"
        axes[0].plot(run["steps"], run["valid_frac"], style, color=colors[run["p_mean"]],
                     label=f"P_mean {run['p_mean']}" if run["seed"] == 0 else None)
        axes[1].plot(run["steps"], run["constraint_frac"], style, color=colors[run["p_mean"]])
    for ax, title in zip(axes[:2], ("sample-level validity (heun 18)", "group-level validity (heun 18)")):
        ax.set(xscale="log", xlabel="training step", title=title, ylim=(-0.02, 1.02))
    axes[0].axhline(0.9, color="gray", lw=0.5)
    axes[0].legend(fontsize=8, title="solid seed 0, dashed seed 1", title_fontsize=7)
    names = list(SAMPLERS)
    for i, name in enumerate(names):
        ours = [r for r in records if r["sampler"] == name]
        axes[2].scatter([i] * len(ours), [np.mean(r["valid_frac"]) for r in ours],
                        c=[colors[r["p_mean"]] for r in ours], s=25)
    seconds = {name: np.mean([r["eval_seconds"] for r in records if r["sampler"] == name]) for name in names}
    axes[2].set_xticks(range(len(names)), [f"{n.replace(', ', chr(10))}\n{seconds[n]:.1f} s/eval" for n in names],
                       fontsize=7)
    steps = sorted({step for r in records for step in r["steps"]})
    axes[2].set(title=f"sample-level validity at steps {', '.join(map(str, steps))} (mean), by sampler",
                ylim=(0.5, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--out", required=True, help="output path without suffix (.json and .png are written)")
    parser.add_argument("--min-step", type=int, default=1000, help="re-evaluate snapshots from this step on")
    parser.add_argument("--p-means", type=float, nargs="*", help="re-evaluate only runs of these P_mean values")
    parser.add_argument("--replot", action="store_true", help="only draw the figure again from <out>.json")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        measured = json.loads(out.with_suffix(".json").read_text())
        figure(measured["runs"], measured["samplers"], out.with_suffix(".png"))
        return 0
    torch.set_num_threads(1)
    runs, records = [], []
    for run_dir in sorted(Path(args.store, "runs").iterdir()):
        if not (run_dir / rundir.SUMMARY).exists():
            continue
        config = RunConfig.from_record(json.loads((run_dir / rundir.CONFIG).read_text()))
        rows = rundir.read_metrics(run_dir)
        summary = json.loads((run_dir / rundir.SUMMARY).read_text())
        runs.append({"run": run_dir.name, "p_mean": config.p_mean, "seed": config.seed,
                     "steps": [r["step"] for r in rows], "valid_frac": [r["valid_frac"] for r in rows],
                     "constraint_frac": [r["constraint_frac"] for r in rows],
                     "tau_rule": summary["tau_rule_text"], "tau_mem": summary["tau_mem_text"],
                     "eval_share": summary["timing"]["eval_share"]})
        if args.p_means is None or config.p_mean in args.p_means:
            records.extend(study_run(run_dir, SAMPLERS, args.min_step))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": runs, "samplers": records}, indent=1) + "\n")
    figure(runs, records, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
