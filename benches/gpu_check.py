"""One GPU check that fits a short device lease (<= 8 minutes on one H200); the JSON is rewritten after every
section, so a run cut short keeps what finished.

    python benches/gpu_check.py [--out benches/results/gpu-check-<device>.json] [--only SECTION ...]
                                [--budget-s 450] [--compile-mode default] [--dry-run]

Sections, in order (``--only`` picks some):
  precompile  the Triton launches of the sections below compiled into Triton's cache by parallel processes
              (benches/compile_check.py's capture), instead of one at a time at first launch; first, before
              this process does CUDA work, since the compiling children are forked
  env         device, versions, and the two ceilings: device-to-device copy bandwidth, bf16 GEMM rate
  kernels     each kernel against its reference on the GPU: attention out/dQ/dK/dV vs float64 for L = 16, 36,
              37, 81, 82, head dims 16/32/64, fp32/bf16/fp16, causal and not, scores x1 and (L = 81) x30,
              held to kernels.attention.TOLERANCE; Hamming top-2 vs the torch reference, bits and nibbles
  attention   fwd and fwd+bwd medians (B*H = 4096): Triton vs every SDPA backend (math, efficient, flash,
              cuDNN) at L = 36, 81, head dims 16/32/64, bf16 and fp32, causal and not. Target >= 1.5x the best
  tiles       Triton fwd+bwd at the other tiles (BLOCK, warps, stages) the compile table allows, to retune
              kernels.attention.tile_config; Hamming at other tiles
  hamming     top-2 of 1e4 queries over 1e5 and 1e6 training samples (6x6 bits; 9x9 sudoku nibbles): Triton vs
              a torch GEMM + topk baseline (+-1 cells for bits, one-hot for digits). Target >= 2x
  train_step  DiT and GPT steps (6x6 parity, depth 6, width 256, 8 heads, batch 512, bf16 autocast): eager
              SDPA vs compiled SDPA vs compiled with the Triton attention. Target >= 2x eager
``--dry-run`` runs every section's code on the CPU at tiny sizes (Triton under TRITON_INTERPRET=1, wall-clock
timers, torch.compile with the aot_eager backend) in under a minute: a test of this script, not a measurement.
Exit 1 if a correctness check fails, 2 without CUDA (and no --dry-run).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the kernels run on the CPU


def _make_kernels_importable() -> None:
    """From a plain checkout (the device machine has no editable install) innovwin.kernels is ROOT/kernels."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import innovwin

    if importlib.util.find_spec("innovwin.kernels") is None:
        spec = importlib.util.spec_from_file_location("innovwin.kernels", ROOT / "kernels" / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / "kernels")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["innovwin.kernels"] = module
        spec.loader.exec_module(module)
        innovwin.kernels = module


def project() -> SimpleNamespace:
    """Everything this script takes from the innovwin package, imported in one place: fix paths here."""
    _make_kernels_importable()
    from innovwin import bits, objectives, tasks
    from innovwin.kernels import attention, hamming
    from innovwin.models.attention import ENV_VAR
    from innovwin.train.step import make_train_step

    return SimpleNamespace(bits=bits, objectives=objectives, make_task=tasks.make, attention_env=ENV_VAR,
                           make_train_step=make_train_step, attention=attention, hamming=hamming)


_make_kernels_importable()
import torch  # noqa: E402

import bench_attention  # noqa: E402
import bench_search  # noqa: E402
import compile_check  # noqa: E402

P = project()
SECTIONS = ("precompile", "env", "kernels", "attention", "tiles", "hamming", "train_step")
ATTENTION_TARGET, SEARCH_TARGET, STEP_TARGET = 1.5, 2.0, 2.0
LOSS_TOLERANCE = 2e-2
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sizes(dry: bool) -> SimpleNamespace:
    """Problem sizes: the real ones, or tiny ones that only exercise the code (--dry-run)."""
    if dry:
        return SimpleNamespace(
            check_lengths=(16, 37), check_dims=(16,), check_batch=(1, 1), saturated=(1, 1, 37, 16),
            bench_lengths=(36,), bench_dims=(16,), bench_dtypes=("fp32", "bf16"), bench_causal=(False,),
            bench_batch_heads=2, tile_cases=[(36, "bf16", 16)], attention_tiles=[(16, 2, 1), (32, 4, 1)],
            hamming_tiles=[(64, 128, 8), (32, 128, 4)], search_m=64, search_n=(300, 600), search_check=32,
            hamming_check=(40, 300), model=dict(depth=1, width=32, heads=2), batch=4, warmup=1, steps=1)
    return SimpleNamespace(
        check_lengths=(16, 36, 37, 81, 82), check_dims=(16, 32, 64), check_batch=(2, 4), saturated=(2, 4, 81, 32),
        bench_lengths=(36, 81), bench_dims=(16, 32, 64), bench_dtypes=("bf16", "fp32"), bench_causal=(False, True),
        bench_batch_heads=4096, tile_cases=[(length, dt_, d) for length in (36, 81)
                                            for dt_, d in (("bf16", 32), ("bf16", 64), ("fp32", 32), ("fp32", 64))],
        attention_tiles=[(b, w, s) for b, w in ((16, 2), (16, 4), (32, 4), (32, 8), (64, 4), (64, 8)) for s in (1, 2)],
        hamming_tiles=[(64, 128, 8), (128, 64, 8), (32, 256, 8), (32, 128, 4), (64, 64, 4)],
        search_m=10_000, search_n=(100_000, 1_000_000), search_check=256, hamming_check=(2000, 20_000),
        model=dict(depth=6, width=256, heads=8), batch=512, warmup=5, steps=30)


class Context:
    """What the sections share: sizes, device, clock, deadline and the record written after each section."""

    def __init__(self, opts):
        self.dry = opts.dry_run
        self.cuda = torch.cuda.is_available() and not self.dry
        self.device = "cuda" if self.cuda else "cpu"
        self.size = sizes(self.dry)
        self.out = opts.out
        self.compile_mode = opts.compile_mode
        self.start = time.monotonic()
        self.deadline = self.start + opts.budget_s
        self.record = {"meta": {}, "sections": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def time_ms(self, fn) -> float:
        """Median milliseconds of fn(): CUDA events via triton.testing.do_bench; on the CPU (dry run) one call's
        wall time, which only shows the path runs."""
        if self.cuda:
            from triton.testing import do_bench
            return do_bench(fn, warmup=10, rep=50, return_mode="median")
        t0 = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t0)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def write(self) -> None:
        self.record["meta"]["elapsed_s"] = round(time.monotonic() - self.start, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record, indent=1, default=str) + "\n")
        tmp.replace(self.out)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- sections

def section_env(ctx: Context) -> dict:
    import triton

    info = {"dry_run": ctx.dry, "device": torch.cuda.get_device_name(0) if ctx.cuda else "cpu",
            "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "tile_config": {f"L={length} d={d} {n}": P.attention.tile_config(length, d, t)
                            for length in (36, 81) for d in (16, 32, 64) for n, t in DTYPES.items()},
            "hamming_tile": P.hamming.TILE}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(capability=list(torch.cuda.get_device_capability(0)), sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))
    n_bytes, n = (2**31, 8192) if ctx.cuda else (2**22, 128)
    src = torch.randn(n_bytes // 4, device=ctx.device)
    dst = torch.empty_like(src)
    info["copy_GBps"] = round(2 * n_bytes / ctx.time_ms(lambda: dst.copy_(src)) / 1e6, 1)  # read + write
    a, b = (torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16) for _ in range(2))
    info["bf16_gemm_TFLOPs"] = round(2 * n**3 / ctx.time_ms(lambda: a @ b) / 1e9, 1)
    ctx.record["meta"].update(info)
    return info


def section_precompile(ctx: Context) -> dict:
    """The launches of every section, the tile sweep's candidates among them, compiled in parallel."""
    wanted = {(d, name, b, w, st) for _, name, d in ctx.size.tile_cases for b, w, st in ctx.size.attention_tiles}

    def timed_later(label: str) -> bool:
        m = re.search(r"d=(\d+) (\w+) BLOCK=(\d+) w(\d+) s(\d+)", label)
        return m is None or (int(m[1]), m[2], int(m[3]), int(m[4]), int(m[5])) in wanted

    configs = compile_check.attention_launches() + compile_check.hamming_launches()
    configs += [c for c in compile_check.tile_candidates() if timed_later(c[0])]
    result = {"launches": len(configs)}
    if P.attention.INTERPRETED:
        result["skipped"] = "the kernels run in the interpreter (dry run): nothing to compile"
        return result
    major, minor = torch.cuda.get_device_capability(0)
    result.update(compile_check.warm_cache(configs, 10 * major + minor, n_parallel=min(16, os.cpu_count() or 1),
                                           timeout=max(30.0, min(300.0, ctx.left() - 360))))
    return result


def _random_attention(ctx, shape, dtype, seed, score_scale=1.0):
    gen = torch.Generator(device=ctx.device).manual_seed(seed)
    q, k, v, grad = (torch.randn(shape, generator=gen, device=ctx.device, dtype=torch.float64) for _ in range(4))
    return [t.to(dtype) for t in (q * score_scale, k, v, grad)]


def section_kernels(ctx: Context) -> dict:
    rows, failed = [], 0
    batch, heads = ctx.size.check_batch
    cases = [(length, d, name, causal, 1.0) for length in ctx.size.check_lengths for d in ctx.size.check_dims
             for name in DTYPES for causal in (False, True)]
    cases += [(ctx.size.saturated[2], ctx.size.saturated[3], name, causal, 30.0) for name in DTYPES
              for causal in (False, True)]
    for length, d, name, causal, scale in cases:
        dtype = DTYPES[name]
        q, k, v, grad = _random_attention(ctx, (batch, heads, length, d), dtype, seed=length + d, score_scale=scale)
        row = dict(L=length, head_dim=d, dtype=name, causal=causal, score_scale=scale)
        try:
            row["errors"] = P.attention.reference_errors(q, k, v, grad, causal)
            row["ok"] = max(row["errors"].values()) <= P.attention.TOLERANCE[dtype]
        except Exception as err:  # recorded, not hidden: one broken case should not hide the rest
            row.update(ok=False, error=f"{type(err).__name__}: {err}"[:500])
        failed += not row["ok"]
        rows.append(row)
    search = []
    m, n = ctx.size.hamming_check
    for layout, (n_cells, alphabet) in bench_search.LAYOUTS.items():
        queries, train = bench_search.make_cells(n_cells, alphabet, n, seed=1)
        q = P.bits.pack_torch(torch.from_numpy(queries[:m]).to(ctx.device), alphabet)
        t = P.bits.pack_torch(torch.from_numpy(train).to(ctx.device), alphabet)
        got = P.hamming.hamming_topk(q, t.t().contiguous(), 2, alphabet > 2)
        want = P.hamming.hamming_topk_reference(q, t, 2, alphabet > 2)
        ok = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        failed += not ok
        search.append(dict(layout=layout, M=m, N=n, ok=ok))
    worst = {name: max((max(r["errors"].values()) for r in rows if r["dtype"] == name and "errors" in r), default=None)
             for name in DTYPES}
    return {"failed": failed, "attention_worst_error": worst, "tolerance": {n: P.attention.TOLERANCE[t]
                                                                             for n, t in DTYPES.items()},
            "attention": rows, "hamming": search}


def section_attention(ctx: Context) -> dict:
    impls = {"triton": P.attention.attention, **{name: bench_attention.sdpa_with(b)
                                                  for name, b in bench_attention.SDPA_BACKENDS.items()}}
    rows = []
    for length in ctx.size.bench_lengths:
        for d in ctx.size.bench_dims:
            for name in ctx.size.bench_dtypes:
                for causal in ctx.size.bench_causal:
                    q, k, v, grad = bench_attention.make_inputs(ctx.size.bench_batch_heads, length, d, DTYPES[name],
                                                                ctx.device)
                    row = dict(L=length, head_dim=d, dtype=name, causal=causal, fwd_ms={}, fwd_bwd_ms={}, skipped={})
                    for impl_name, attn in impls.items():
                        why_not = bench_attention.runs(attn, q, k, v, grad, causal)
                        if why_not:
                            row["skipped"][impl_name] = why_not[:200]
                            continue
                        row["fwd_ms"][impl_name] = ctx.time_ms(lambda: attn(q, k, v, causal))
                        row["fwd_bwd_ms"][impl_name] = ctx.time_ms(
                            lambda: bench_attention.forward_backward(attn, q, k, v, grad, causal))
                    sdpa = {n: t for n, t in row["fwd_bwd_ms"].items() if n != "triton"}
                    if "triton" in row["fwd_bwd_ms"] and sdpa:
                        row["best_sdpa"] = min(sdpa, key=sdpa.get)
                        row["speedup_fwd_bwd"] = sdpa[row["best_sdpa"]] / row["fwd_bwd_ms"]["triton"]
                        row["meets_target"] = row["speedup_fwd_bwd"] >= ATTENTION_TARGET
                    rows.append(row)
                    log(f"  attention L={length} d={d} {name} causal={causal}: "
                        + " ".join(f"{n}={t:.3f}" for n, t in row["fwd_bwd_ms"].items())
                        + f" ms, speedup {row.get('speedup_fwd_bwd', float('nan')):.2f}")
    speedups = [r["speedup_fwd_bwd"] for r in rows if "speedup_fwd_bwd" in r]
    return {"target": ATTENTION_TARGET, "min_speedup": min(speedups, default=None),
            "meets_target": bool(speedups) and min(speedups) >= ATTENTION_TARGET, "rows": rows}


def section_tiles(ctx: Context) -> dict:
    rows = []
    real = P.attention.tile_config
    try:
        for length, name, d in ctx.size.tile_cases:
            q, k, v, grad = bench_attention.make_inputs(ctx.size.bench_batch_heads, length, d, DTYPES[name],
                                                        ctx.device)
            row = dict(L=length, dtype=name, head_dim=d, chosen=real(length, d, DTYPES[name]), fwd_bwd_ms={})
            for block, warps, stages in ctx.size.attention_tiles:
                P.attention.tile_config = lambda *_, c=dict(BLOCK=block, num_warps=warps, num_stages=stages): c
                try:
                    row["fwd_bwd_ms"][f"B{block}w{warps}s{stages}"] = ctx.time_ms(
                        lambda: bench_attention.forward_backward(P.attention.attention, q, k, v, grad, False))
                except Exception as err:  # a tile that fails to compile or launch is a finding
                    row["fwd_bwd_ms"][f"B{block}w{warps}s{stages}"] = f"{type(err).__name__}: {err}"[:200]
            timed = {t: ms for t, ms in row["fwd_bwd_ms"].items() if isinstance(ms, float)}
            row["best"] = min(timed, key=timed.get) if timed else None
            rows.append(row)
            log(f"  tiles L={length} {name} d={d}: best {row['best']}")
    finally:
        P.attention.tile_config = real
    queries, train = bench_search.make_cells(36, 2, ctx.size.search_n[-1], seed=2)
    q = P.bits.pack_torch(torch.from_numpy(queries[: ctx.size.search_m]).to(ctx.device), 2)
    columns = P.bits.pack_torch(torch.from_numpy(train).to(ctx.device), 2).t().contiguous()
    hamming = {f"{bm}x{bn}w{w}": ctx.time_ms(lambda: P.hamming.hamming_topk(q, columns, 2, False, bm, bn, w))
               for bm, bn, w in ctx.size.hamming_tiles}
    return {"attention": rows, "hamming_bits_ms": hamming, "hamming_N": ctx.size.search_n[-1]}


def section_hamming(ctx: Context) -> dict:
    rows = []
    for layout, (n_cells, alphabet) in bench_search.LAYOUTS.items():
        for n in ctx.size.search_n:
            queries, train = bench_search.make_cells(n_cells, alphabet, n, seed=3)
            q_cells = torch.from_numpy(queries[: ctx.size.search_m]).to(ctx.device)
            t_cells = torch.from_numpy(train).to(ctx.device)
            q, t = P.bits.pack_torch(q_cells, alphabet), P.bits.pack_torch(t_cells, alphabet)
            columns = t.t().contiguous()
            q_enc, t_enc = bench_search.encode_cells(q_cells, alphabet), bench_search.encode_cells(t_cells, alphabet)
            nibbles = alphabet > 2
            got = P.hamming.hamming_topk(q, columns, 2, nibbles)
            base = bench_search.gemm_topk(q_enc, t_enc, n_cells, alphabet)
            check = ctx.size.search_check
            want = P.hamming.hamming_topk_reference(q[:check], t, 2, nibbles)
            row = dict(layout=layout, M=len(q), N=n,
                       ok=torch.equal(got[0], base[0]) and torch.equal(got[0][:check], want[0])
                       and torch.equal(got[1][:check], want[1]),
                       triton_ms=ctx.time_ms(lambda: P.hamming.hamming_topk(q, columns, 2, nibbles)),
                       gemm_ms=ctx.time_ms(lambda: bench_search.gemm_topk(q_enc, t_enc, n_cells, alphabet)))
            row["speedup"] = row["gemm_ms"] / row["triton_ms"]
            row["pairs_per_s"] = len(q) * n / (row["triton_ms"] / 1000)
            rows.append(row)
            log(f"  hamming {layout} N={n}: triton {row['triton_ms']:.2f} ms, gemm {row['gemm_ms']:.2f} ms, "
                f"speedup {row['speedup']:.2f}, ok={row['ok']}")
    return {"target": SEARCH_TARGET, "failed": sum(not r["ok"] for r in rows),
            "meets_target": all(r["speedup"] >= SEARCH_TARGET for r in rows), "rows": rows}


@contextlib.contextmanager
def _attention_backend(name: str):
    old = os.environ.get(P.attention_env)
    os.environ[P.attention_env] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(P.attention_env, None)
        else:
            os.environ[P.attention_env] = old


@contextlib.contextmanager
def _compile_backend(backend: str | None):
    """make_train_step calls torch.compile(fn, mode=..., dynamic=False); for the dry run it gets aot_eager (no
    Inductor code generation on the CPU), with the same Dynamo and AOTAutograd tracing."""
    if backend is None:
        yield
        return
    real = torch.compile
    torch.compile = lambda fn, **kw: real(fn, backend=backend, dynamic=kw.get("dynamic"))
    try:
        yield
    finally:
        torch.compile = real


def make_step(ctx: Context, arch: str, compiled: bool, attention: str):
    """(step, batch args) for a freshly seeded model: the project's make_train_step on 6x6 parity."""
    task = P.make_task("parity:h=6,w=6,g=2")
    torch.manual_seed(0)
    model = P.objectives.build_model(task, arch, **ctx.size.model).to(ctx.device)
    objective = P.objectives.get(arch).build_objective(task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=(compiled and ctx.cuda) or None)
    cells = torch.from_numpy(task.sample(ctx.size.batch, seed=0)).to(ctx.device)
    args = objective.training_inputs(objective.encode(cells), torch.Generator().manual_seed(0))

    def loss_fn(m, *inputs):
        return objective.loss(m, *inputs).mean()
    with _compile_backend(None if ctx.cuda else "aot_eager"):
        step = P.make_train_step(model, optimizer, loss_fn, compile=compiled, amp=ctx.cuda,
                                 mode=ctx.compile_mode)
    return step, args


def section_train_step(ctx: Context) -> dict:
    from torch._dynamo.utils import counters

    variants = {"eager_sdpa": (False, "sdpa"), "compiled_sdpa": (True, "sdpa"), "compiled_triton": (True, "triton")}
    result = {"target": STEP_TARGET, "compile_mode": ctx.compile_mode, "batch": ctx.size.batch, **ctx.size.model,
              "failed": 0}
    for arch in ("dit", "gpt"):
        rows = result[arch] = {}
        for name, (compiled, attention) in variants.items():
            if ctx.left() < 45:
                rows[name] = {"skipped": "time budget spent"}
                continue
            try:
                with _attention_backend(attention):
                    torch._dynamo.reset()
                    counters.clear()
                    step, args = make_step(ctx, arch, compiled, attention)
                    t0 = time.perf_counter()
                    losses = [step(*args).item() for _ in range(ctx.size.warmup)]
                    warmup_s = time.perf_counter() - t0
                    ctx.sync()
                    t0 = time.perf_counter()
                    for _ in range(ctx.size.steps):
                        loss = step(*args)
                    ctx.sync()
                    seconds = time.perf_counter() - t0
                rows[name] = dict(warmup_s=round(warmup_s, 2), ms_per_step=1000 * seconds / ctx.size.steps,
                                  warmup_losses=losses, last_loss=loss.item(),
                                  graph_breaks=sum(counters["graph_break"].values()))
                if ctx.cuda:
                    rows[name]["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except Exception as err:  # a variant that fails to compile is a finding, not the end of the run
                rows[name] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                result["failed"] += 1
            log(f"  train_step {arch} {name}: {rows[name].get('ms_per_step', rows[name])}")
        base = rows.get("eager_sdpa", {})
        for name, row in rows.items():
            if "ms_per_step" in row and "ms_per_step" in base:
                row["speedup_vs_eager"] = base["ms_per_step"] / row["ms_per_step"]
                got, want = row["warmup_losses"][-1], base["warmup_losses"][-1]
                row["loss_matches_eager"] = abs(got - want) <= LOSS_TOLERANCE * abs(want)
                result["failed"] += not row["loss_matches_eager"]
        fast = rows.get("compiled_triton", {}).get("speedup_vs_eager")
        result.setdefault("meets_target", {})[arch] = None if fast is None else fast >= STEP_TARGET
    return result


RUNNERS = {"env": section_env, "precompile": section_precompile, "kernels": section_kernels,
           "attention": section_attention, "tiles": section_tiles, "hamming": section_hamming,
           "train_step": section_train_step}
MIN_SECONDS = {"env": 5, "precompile": 30, "kernels": 30, "attention": 60, "tiles": 45, "hamming": 30,
               "train_step": 90}  # a section starts only with this much budget left (dry run: none)


def run(ctx: Context, sections) -> int:
    failed = 0
    for name in SECTIONS:
        if name not in sections:
            continue
        entry = ctx.record["sections"][name] = {}
        if not ctx.dry and ctx.left() < MIN_SECONDS[name]:
            entry.update(status="skipped", reason=f"{ctx.left():.0f} s of the budget left")
            ctx.write()
            continue
        log(f"[{time.monotonic() - ctx.start:6.1f} s] {name}")
        t0 = time.monotonic()
        try:
            entry["result"] = RUNNERS[name](ctx)
            entry["status"] = "failed" if entry["result"].get("failed") else "ok"
        except Exception as err:
            entry.update(status="error", error=f"{type(err).__name__}: {err}"[:2000],
                         traceback=traceback.format_exc()[-3000:])
            log(entry["traceback"])
        entry["seconds"] = round(time.monotonic() - t0, 1)
        failed += entry["status"] in ("failed", "error")
        ctx.write()
    return failed


def summary(record: dict) -> str:
    lines = []
    for name, entry in record["sections"].items():
        res = entry.get("result", {})
        extra = ""
        if name == "kernels" and res:
            extra = f"failed {res['failed']}, worst attention errors {res['attention_worst_error']}"
        elif name == "attention" and res:
            extra = f"min speedup vs best SDPA {res['min_speedup']}, target {ATTENTION_TARGET}x"
        elif name == "hamming" and res:
            extra = ", ".join(f"{r['layout']} N={r['N']}: {r['speedup']:.2f}x" for r in res["rows"])
        elif name == "train_step" and res:
            extra = ", ".join(f"{a} {v}: {res[a][v].get('speedup_vs_eager', float('nan')):.2f}x"
                              for a in ("dit", "gpt") if a in res for v in res[a] if v != "eager_sdpa")
        lines.append(f"{name:<11} {entry.get('status', '?'):<8} {entry.get('seconds', 0):>6.1f} s  {extra}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="the JSON record (default benches/results/gpu-check-"
                                                           "<device>.json; with --dry-run, gpu-check-dry-run.json)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--budget-s", type=float, default=450.0, help="sections start only while time is left")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode of the train steps (the project's is max-autotune-no-cudagraphs: "
                         "minutes of GEMM autotuning per model, more than this check can spend)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: exercises every section")
    opts = ap.parse_args(argv)
    if not opts.dry_run and not torch.cuda.is_available():
        log("gpu_check: no CUDA device (use --dry-run to exercise the script on the CPU)")
        return 2
    if opts.out is None:
        slug = "dry-run" if opts.dry_run else re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower())
        opts.out = compile_check.RESULTS / f"gpu-check-{slug.strip('-')}.json"
    ctx = Context(opts)
    failed = run(ctx, set(opts.only))
    log(summary(ctx.record))
    log(f"gpu_check: {ctx.out} after {time.monotonic() - ctx.start:.0f} s, {failed} section(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
