"""Stacked ensembles on a CUDA GPU: where K members in one process saturate it, against one run per process.

    python benches/gpu_ensemble.py benches/results/ensemble-<gpu>.json [--arch gpt dit] [--sizes 4 8 16 32 64]
        [--compiled-sizes 16] [--steps 50]
    python benches/gpu_ensemble.py OUT.json --eager-only --arch gpt    # a short lease: no compile (minutes each)
    python benches/gpu_ensemble.py OUT.json --dry-run    # CPU, tiny, K in {1, 2}, eager: checks the script

At the default run's sizes (6x6 parity, depth 2, width 64, batch 64, bf16 autocast on CUDA), each variant times
``--steps`` training steps after ``--warmup`` (the device synchronized around them) and one evaluation:
- ``single_eager``: one run's Trainer, not compiled: one run per process as the estimate in issue 19 counts it;
- ``single_compiled``: the same with ``make_train_step``'s CUDA default (torch.compile, Triton attention);
- ``single_cudagraph``: compiled with mode "reduce-overhead" (forward and backward replayed as CUDA graphs);
- ``ensemble_K``: K members stacked (:class:`innovwin.train.stacked.Ensemble`), eager, for K in ``--sizes``;
- ``ensemble_K_compiled``: the same compiled, for K in ``--compiled-sizes`` (each compile takes minutes).
Each records member steps per second, ``speedup`` = member steps/s over single_eager's steps/s (and over
single_compiled's), peak memory per member, and the evaluation's seconds per member (one batched evaluation of K
members; K single evaluations for the single variants). Target (issue 19): speedup >= 0.8 K up to K = 16.
The file is rewritten after every variant, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.evaluation.batched import evaluate_members
from innovwin.tasks.dataset import run_dataset
from innovwin.train.ensemble import check_members
from innovwin.train.members import Trainer
from innovwin.train.stacked import Ensemble
from innovwin.train.step import make_train_step

TINY = dict(task="parity:h=4,w=4,g=2", n_train=16, depth=1, width=32, heads=2, batch=16, eval_samples=16,
            sampler_steps=2, loss_samples=16)
TARGET = 0.8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def members(arch: str, size: int, device: torch.device, compile: bool, dry_run: bool):
    """K checked configs (seeds 0..K-1), their tasks and data sets."""
    configs = [RunConfig(arch=arch, seed=seed, device=device.type, compile=compile, **(TINY if dry_run else {}))
               for seed in range(size)]
    checked = check_members(configs)
    return [c for c, _ in checked], [t for _, t in checked], [run_dataset(c, t) for c, t in checked]


def timed(step, n: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return time.perf_counter() - start


def measure(arch: str, size: int | None, device: torch.device, args, compile: bool, mode: str | None = None) -> dict:
    """One variant: ``size`` None is a single run (``mode``: its compile mode), else a stacked ensemble of K."""
    if device.type == "cuda":
        torch._dynamo.reset()
        torch.cuda.reset_peak_memory_stats(device)
    configs, task_list, datasets = members(arch, size or 1, device, compile, args.dry_run)
    if size is None:
        trainer = Trainer(configs[0], task_list[0], datasets[0], device)
        if mode is not None:
            loss_fn = lambda net, *inputs: trainer.objective.loss(net, *inputs).mean()  # noqa: E731
            trainer.step_fn = make_train_step(trainer.model, trainer.optimizer, loss_fn, compile=True,
                                              clip=configs[0].grad_clip, mode=mode)
        objective_list, step = [trainer.objective], trainer.train_step
    else:
        trainer = Ensemble(configs, task_list, datasets, device)
        objective_list, step = trainer.objectives, trainer.train_step
    start = time.perf_counter()
    timed(step, args.warmup, device)
    warmup_s = time.perf_counter() - start
    seconds = timed(step, args.steps, device)
    evaluators = [Evaluator(t, d, c, o, device) for c, t, d, o in zip(configs, task_list, datasets, objective_list)]
    if size is None:
        evaluate = lambda: evaluators[0](trainer.eval_model, 1)  # noqa: E731
    else:
        stack = trainer.eval_stack
        evaluate = lambda: evaluate_members(stack.net.eval(), [m.eval() for m in stack.members], evaluators, 1)  # noqa: E731
    evaluate()  # warm-up
    eval_s = timed(evaluate, 1, device)
    k = size or 1
    return {
        "members": k,
        "compiled": compile,
        "mode": mode,
        "warmup_s": warmup_s,
        "member_steps_per_s": k * args.steps / seconds,
        "eval_s_per_member": eval_s / k,
        "peak_bytes_per_member": torch.cuda.max_memory_allocated(device) / k if device.type == "cuda" else None,
        "final_loss": trainer.losses.take_train_loss(),
    }


def variants(args):
    """(name, size, compile, mode) in the order they run: the baselines first."""
    yield "single_eager", None, False, None
    if not args.eager_only:
        yield "single_compiled", None, True, None
        yield "single_cudagraph", None, True, "reduce-overhead"
    for size in args.sizes:
        yield f"ensemble_{size}", size, False, None
    for size in [] if args.eager_only else args.compiled_sizes:
        yield f"ensemble_{size}_compiled", size, True, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="JSON file to write")
    parser.add_argument("--arch", nargs="+", default=["gpt", "dit"], choices=["gpt", "dit"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[4, 8, 16, 32, 64])
    parser.add_argument("--compiled-sizes", nargs="*", type=int, default=[16])
    parser.add_argument("--eager-only", action="store_true",
                        help="no compiled variant (each max-autotune compile takes minutes of a short lease)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, K in {1, 2}, eager only")
    args = parser.parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
        args.sizes, args.eager_only, args.steps, args.warmup = [1, 2], True, 2, 1
    elif not torch.cuda.is_available():
        print("gpu_ensemble: no CUDA device (use --dry-run to check the script on CPU)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    result = {
        "machine": {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (dry run)",
                    "torch": torch.__version__, "python": platform.python_version()},
        "target": f"ensemble member steps/s >= {TARGET} K x single_eager up to K = 16",
        "dry_run": args.dry_run,
        "results": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for arch in args.arch:
        rows = result["results"].setdefault(arch, {})
        for name, size, compile, mode in variants(args):
            rows[name] = row = measure(arch, size, device, args, compile, mode)
            for baseline in ("single_eager", "single_compiled"):
                if baseline in rows:
                    row[f"speedup_vs_{baseline}"] = row["member_steps_per_s"] / rows[baseline]["member_steps_per_s"]
            if size is not None and not args.dry_run:
                row["meets_target"] = row["speedup_vs_single_eager"] >= TARGET * size if size <= 16 else None
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(f"{arch} {name}: {row['member_steps_per_s']:.0f} member steps/s, "
                  f"x{row.get('speedup_vs_single_eager', 1.0):.2f} vs single_eager", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
