"""Check and time the fused attention on a CUDA GPU; write everything to one JSON file.

    python benches/gpu_attention.py benches/results/attention-<gpu>.json [--quick]

1. correctness: output and dq, dk, dv against the float64 reference for every L in LENGTHS,
   head_dim in {16, 32, 64}, causal and not, fp32 / bf16 / fp16 (limits: fp32 1e-4, 16-bit 1e-2,
   normwise max |got - want| / max |want|); ``--quick`` checks head_dim 32 only.
2. graphs: the op inside torch.compile(fullgraph=True) and inside a captured CUDA graph (fwd + bwd),
   compared to eager.
3. timings: forward and forward+backward medians (triton.testing.do_bench) of the Triton kernel and
   of every SDPA backend that runs the input, at the bench shapes, fp32 and bf16, causal and not;
   speedup = best SDPA / Triton; the target is >= 1.5x at L <= 81.
4. fp32 matmul precision: error and time of the fp32 kernel with each tl.dot input precision, to
   back the choice of ``FP32_DOT_PRECISION``.
5. num_warps: Triton fwd+bwd time at the bench shapes for each warp count, to tune ``NUM_WARPS``.
Exit status 1 if any correctness or graph check fails.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from bench_attention import DTYPES, SHAPES, forward_backward, implementations, make_inputs, runs
from innovwin.kernels import attention as fused

LENGTHS = (1, 7, 16, 36, 49, 64, 81, 128)
LIMITS = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}
TARGET_SPEEDUP, TARGET_MAX_L = 1.5, 81


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = want.abs().max().item()
    diff = (got.double() - want).abs().max().item()
    return diff / scale if scale > 0 else diff


def errors_vs_float64(q, k, v, grad, causal) -> dict:
    """Normwise relative error of out, dq, dk, dv against the float64 reference."""
    out, grads = forward_backward(fused.attention, q, k, v, grad, causal)
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want, want_grads = forward_backward(fused.attention_reference, *exact, grad.double(), causal)
    return {name: rel_error(g, w) for name, g, w in zip(("out", "dq", "dk", "dv"), (out, *grads), (want, *want_grads))}


def check_correctness(head_dims) -> list[dict]:
    rows = []
    for dtype in LIMITS:
        for head_dim in head_dims:
            for length in LENGTHS:
                for causal in (False, True):
                    q, k, v, grad = make_inputs(4 * 8, length, head_dim, dtype, "cuda", seed=length)
                    row = dict(dtype=str(dtype).removeprefix("torch."), L=length, head_dim=head_dim, causal=causal)
                    try:
                        row["errors"] = errors_vs_float64(q, k, v, grad, causal)
                        row["ok"] = max(row["errors"].values()) <= LIMITS[dtype]
                    except Exception as err:  # record and go on: one bad variant should not hide the rest
                        row.update(ok=False, error=repr(err))
                    rows.append(row)
    return rows


def check_graphs() -> dict:
    """torch.compile(fullgraph) and CUDA-graph capture of fwd + bwd agree with eager."""
    q, k, v, grad = make_inputs(64, 36, 32, torch.bfloat16, "cuda", seed=1)
    _, want = forward_backward(fused.attention, q, k, v, grad, True)
    result = {}
    try:
        compiled = torch.compile(lambda q, k, v: fused.attention(q, k, v, True), fullgraph=True)
        got = torch.autograd.grad(compiled(q, k, v), (q, k, v), grad)
        result["compile_fullgraph"] = all(rel_error(g, w.double()) <= 1e-6 for g, w in zip(got, want))
    except Exception as err:
        result["compile_fullgraph"] = repr(err)
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward_backward(fused.attention, q, k, v, grad, True)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            _, captured = forward_backward(fused.attention, q, k, v, grad, True)
        graph.replay()
        torch.cuda.synchronize()
        result["cuda_graph"] = all(rel_error(g, w.double()) <= 1e-6 for g, w in zip(captured, want))
    except Exception as err:
        result["cuda_graph"] = repr(err)
    return result


def time_ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def time_implementations() -> list[dict]:
    rows = []
    impls = implementations("cuda")
    for shape in SHAPES:
        for dtype_name, dtype in DTYPES.items():
            for causal in (False, True):
                q, k, v, grad = make_inputs(*shape, dtype, "cuda")
                row = dict(batch_heads=shape[0], L=shape[1], head_dim=shape[2], dtype=dtype_name, causal=causal,
                           fwd_bwd_ms={}, fwd_ms={}, skipped={})
                for name, attn in impls.items():
                    why_not = runs(attn, q, k, v, grad, causal)
                    if why_not:
                        row["skipped"][name] = why_not
                        continue
                    row["fwd_bwd_ms"][name] = time_ms(lambda: forward_backward(attn, q, k, v, grad, causal))
                    row["fwd_ms"][name] = time_ms(lambda: attn(q, k, v, causal))
                sdpa = {n: t for n, t in row["fwd_bwd_ms"].items() if n != "triton"}
                if "triton" in row["fwd_bwd_ms"] and sdpa:
                    best = min(sdpa, key=sdpa.get)
                    row["best_sdpa"] = best
                    row["speedup_fwd_bwd"] = sdpa[best] / row["fwd_bwd_ms"]["triton"]
                    if shape[1] <= TARGET_MAX_L:
                        row["meets_target"] = row["speedup_fwd_bwd"] >= TARGET_SPEEDUP
                rows.append(row)
                print(f"{shape} {dtype_name:4s} causal={causal!s:5s} "
                      + " ".join(f"{n}={t:.3f}ms" for n, t in row["fwd_bwd_ms"].items())
                      + f"  speedup={row.get('speedup_fwd_bwd', float('nan')):.2f}", flush=True)
    return rows


def compare_fp32_precisions() -> list[dict]:
    rows = []
    chosen = fused.FP32_DOT_PRECISION
    try:
        for precision in ("tf32x3", "ieee", "tf32"):
            fused.FP32_DOT_PRECISION = precision
            for shape in SHAPES:
                q, k, v, grad = make_inputs(*shape, torch.float32, "cuda")
                row = dict(precision=precision, batch_heads=shape[0], L=shape[1], head_dim=shape[2])
                try:
                    row["errors"] = errors_vs_float64(q, k, v, grad, False)
                    row["fwd_bwd_ms"] = time_ms(lambda: forward_backward(fused.attention, q, k, v, grad, False))
                except Exception as err:
                    row["error"] = repr(err)
                rows.append(row)
    finally:
        fused.FP32_DOT_PRECISION = chosen
    return rows


def sweep_num_warps() -> list[dict]:
    rows = []
    chosen = dict(fused.NUM_WARPS)
    try:
        for shape in SHAPES:
            block = fused.block_size(shape[1])
            for dtype_name, dtype in DTYPES.items():
                q, k, v, grad = make_inputs(*shape, dtype, "cuda")
                row = dict(batch_heads=shape[0], L=shape[1], head_dim=shape[2], dtype=dtype_name, block=block,
                           chosen=chosen[block], fwd_bwd_ms={})
                for warps in (2, 4, 8, 16):
                    fused.NUM_WARPS[block] = warps
                    try:
                        row["fwd_bwd_ms"][warps] = time_ms(
                            lambda: forward_backward(fused.attention, q, k, v, grad, False))
                    except Exception as err:
                        row["fwd_bwd_ms"][warps] = repr(err)
                rows.append(row)
                print("num_warps", row, flush=True)
    finally:
        fused.NUM_WARPS.update(chosen)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="where to write the JSON record")
    parser.add_argument("--quick", action="store_true", help="correctness at head_dim 32 only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2

    start = time.time()
    record = {
        "device": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "fp32_dot_precision": fused.FP32_DOT_PRECISION,
        "num_warps": dict(fused.NUM_WARPS),
        "target": f">= {TARGET_SPEEDUP}x best SDPA backend, fwd+bwd, at L <= {TARGET_MAX_L}",
    }
    record["correctness"] = check_correctness((32,) if args.quick else fused.HEAD_DIMS)
    bad = [r for r in record["correctness"] if not r["ok"]]
    print(f"correctness: {len(record['correctness']) - len(bad)}/{len(record['correctness'])} ok", flush=True)
    for row in bad:
        print("  FAIL", row, flush=True)
    record["graphs"] = check_graphs()
    print("graphs:", record["graphs"], flush=True)
    record["timings"] = time_implementations()
    record["fp32_precisions"] = compare_fp32_precisions()
    record["num_warps"] = sweep_num_warps()
    record["wall_s"] = time.time() - start

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.output} in {record['wall_s']:.0f} s")
    graphs_ok = all(value is True for value in record["graphs"].values())
    return 0 if not bad and graphs_ok else 1


if __name__ == "__main__":
    sys.exit(main())
