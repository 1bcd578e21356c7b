"""Time whole DiT and GPT train steps on a CUDA GPU, eager against the fast path; write one JSON file.

    python benches/gpu_train_step.py benches/results/train_step-<gpu>.json [--quick] [--batch 512]
        [--arch dit gpt] [--variants eager_bf16 fast ...]

Each compile with max-autotune takes minutes; on a short device lease start with ``--quick --arch dit``.

Model depth 6, width 256, 8 heads, 6x6 parity grid (see bench_train_step.py). Variants, each on the same seeded
model and batch:
- ``eager_fp32``: no autocast, SDPA, AdamW (foreach) — the model as a first user runs it;
- ``eager_bf16``: bf16 autocast, SDPA, AdamW (foreach) — the baseline ``eager_sdpa`` of bench_train_step.py;
- ``compiled_sdpa``: ``make_train_step``'s compile, SDPA attention, fused AdamW — what compile alone buys;
- ``fast``: ``make_train_step``'s CUDA defaults: compile with the Triton attention op, bf16, fused AdamW;
- ``fast_default_mode``: as ``fast`` with compile mode "default" (no GEMM autotuning: how much the wait buys);
- ``fast_cudagraphs``: as ``fast`` with mode "reduce-overhead" (forward and backward replayed as CUDA graphs).
Each records compile/warm-up seconds, steps/s (CUDA events over ``--steps`` steps), peak memory and the losses of
the warm-up steps (same weights, same batch: the last one must agree with eager_fp32's to 2e-2; the first one is
not a check for the DiT, whose zero-initialized output makes it c_skip x whatever the path).
The target is fast >= 2x eager_bf16.
The file is rewritten after every variant so a run cut short keeps what it measured. Exit 1 if losses disagree.
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

import bench_train_step as bench

VARIANTS = {
    "eager_fp32": dict(attention="sdpa", compile=False, amp=False, fused_adam=False),
    "eager_bf16": dict(attention="sdpa", compile=False, amp=True, fused_adam=False),
    "compiled_sdpa": dict(attention="sdpa", compile=True, amp=True, fused_adam=True),
    "fast": dict(attention=None, compile=True, amp=True, fused_adam=True),
    "fast_default_mode": dict(attention=None, compile=True, amp=True, fused_adam=True, mode="default"),
    "fast_cudagraphs": dict(attention=None, compile=True, amp=True, fused_adam=True, mode="reduce-overhead"),
}
BASELINE, TARGET = "eager_bf16", 2.0
LOSS_TOLERANCE = 2e-2


def measure(arch: str, variant: dict, batch: int, warmup: int, steps: int) -> dict:
    opts = dict(variant)
    with bench.attention_backend(opts.pop("attention")):
        torch._dynamo.reset()
        torch.cuda.reset_peak_memory_stats()
        step, args = bench.make_step(arch, batch=batch, **opts)
        start = time.perf_counter()
        warmup_losses = [bench.synced(step, args).item() for _ in range(warmup)]
        warmup_s = time.perf_counter() - start
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(steps):
            loss = step(*args)
        end.record()
        torch.cuda.synchronize()
    seconds = begin.elapsed_time(end) / 1000
    return {
        "warmup_losses": warmup_losses,
        "last_loss": loss.item(),
        "warmup_s": round(warmup_s, 2),
        "steps_per_s": steps / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--arch", choices=["dit", "gpt"], nargs="+", default=["dit", "gpt"])
    parser.add_argument("--variants", choices=list(VARIANTS), nargs="+", default=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="50 timed steps, only eager_bf16 and fast")
    a = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_train_step.py needs a CUDA device", file=sys.stderr)
        return 2
    import triton

    steps = 50 if a.quick else a.steps
    chosen = [BASELINE, "fast"] if a.quick else a.variants
    variants = {k: v for k, v in VARIANTS.items() if k in chosen}
    record = {
        "device": torch.cuda.get_device_name(0),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
                     "python": platform.python_version()},
        "config": {"task": bench.TASK, **bench.SIZE, "batch": a.batch, "steps": steps, "warmup": a.warmup},
        "baseline": BASELINE, "target_speedup": TARGET,
        "results": {},
    }
    ok = True
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for arch in a.arch:
        rows = record["results"].setdefault(arch, {})
        for name, variant in variants.items():
            try:
                rows[name] = measure(arch, variant, a.batch, a.warmup, steps)
            except Exception as err:  # recorded, not hidden: a variant that fails to compile is a finding
                rows[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                ok = False
            print(arch, name, rows[name], flush=True)
            a.out.write_text(json.dumps(record, indent=2))
        reference = rows.get("eager_fp32", rows.get(BASELINE, {})).get("warmup_losses")
        for name, row in rows.items():
            if "steps_per_s" in row and BASELINE in rows and "steps_per_s" in rows[BASELINE]:
                row["speedup_vs_" + BASELINE] = row["steps_per_s"] / rows[BASELINE]["steps_per_s"]
            if reference is not None and "warmup_losses" in row:
                got, want = row["warmup_losses"][-1], reference[-1]
                row["loss_matches"] = abs(got - want) <= LOSS_TOLERANCE * abs(want)
                ok &= row["loss_matches"]
        fast = rows.get("fast", {}).get("speedup_vs_" + BASELINE)
        record.setdefault("meets_target", {})[arch] = None if fast is None else fast >= TARGET
        a.out.write_text(json.dumps(record, indent=2))
    print(json.dumps({arch: {k: round(v.get("speedup_vs_" + BASELINE, float("nan")), 2) for k, v in rows.items()}
                      for arch, rows in record["results"].items()}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
