"""Compile every Triton kernel configuration the project launches, for sm_90 and sm_80, without a GPU.

    python benches/compile_check.py [--out benches/results/compile-sm90.json] [--arch 90 80]
                                    [--subset full|ci] [--only REGEX] [--jobs N] [--timeout 120]

Why: no GPU is lent to this project most of the time, yet a kernel that spills registers or asks for more
shared memory than the chip has is visible in the compiler's resource report. Launch arguments are captured
from the project's own launchers (called on CPU tensors with the kernel replaced by a recorder, so the
signature, constexprs, num_warps and 16-divisibility specialization are what a real launch passes). Each
distinct compilation (Triton's cache key: two configurations that specialize alike compile once) is then
built in a forked child by ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``: Triton's
own pipeline down to the cubin, with the ptxas shipped in the triton wheel; no driver is touched. ptxas'
``-v`` log gives registers and spills; shared memory is Triton's ``metadata.shared`` plus ptxas' static smem.

``--subset ci`` compiles the configurations most at risk (see ``ci_subset``) so the test stays within a few
minutes on two cores; ``full`` (the default) compiles everything the launchers can choose; ``tiles`` compiles
the candidate tiles the launchers' ``tile_config`` tables were chosen from (``--out`` another file, e.g.
benches/results/compile-tiles.json).
Exit 0: every configuration compiled within the time limit, with 0 spill bytes and shared memory under the
architecture's limit; 1: some did not; 2: the check could not run (e.g. no ptxas in the triton wheel).
Logic adapted from shared/tools/sm90_check.py.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

SMEM_LIMITS = {90: 227 * 1024, 80: 163 * 1024}  # max shared memory per block (opt-in): H100/H200, A100
COMPILE_LIMIT_S = 60.0
TAIL = 1500  # characters of an error log kept in the JSON
RESULTS = Path(__file__).resolve().parent / "results"

# What the project launches (see innovwin.tasks and innovwin.models): one token per grid cell, the GPT adds BOS.
ATTENTION_LENGTHS = (16, 36, 37, 81, 82)  # 4x4, 6x6 (+1 for the GPT), 9x9 (+1)
HEAD_DIMS = {16: 4, 32: 4, 64: 8}  # head_dim -> heads, as in the model presets
DTYPES = ("fp32", "bf16", "fp16")
HAMMING_CASES = [  # (name, words, nibbles): keys as innovwin.bits packs the tasks' grids
    ("6x6 bits", 1, False),
    ("9x9 bits", 2, False),
    ("6x6 latin nibbles", 3, True),
    ("9x9 sudoku nibbles", 6, True),
]
HAMMING_M, HAMMING_N, HAMMING_K = 256, 1024, 2  # top-2, as the memorization metrics ask


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- capture launches from the project's launchers

@contextlib.contextmanager
def _recording():
    """Replace ``innovwin.kernels._torch_op.launch`` (every launcher launches through it) by a recorder of
    (kernel, grid, args, kwargs); TRITON_INTERPRET=1 meanwhile lets the launchers' checks accept CPU tensors."""
    from innovwin.kernels import _torch_op

    calls, real, old_env = [], _torch_op.launch, os.environ.get("TRITON_INTERPRET")
    _torch_op.launch = lambda kernel, grid, args, kwargs: calls.append((kernel, grid, args, dict(kwargs)))
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield calls
    finally:
        _torch_op.launch = real
        if old_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old_env


KERNEL_NAMES = {  # kernel function -> the name the table uses
    "_attention_fwd_kernel": "attention fwd",
    "_attention_bwd_dq_kernel": "attention bwd dq",
    "_attention_bwd_dkdv_kernel": "attention bwd dkdv",
    "_hamming_topk_kernel": "hamming topk",
}


def _launch_fields(kwargs: dict) -> dict:
    tiles = {k: v for k, v in kwargs.items() if k.startswith("BLOCK")}
    return dict(**tiles, num_warps=kwargs.get("num_warps", 4), num_stages=kwargs.get("num_stages", 3))


def attention_launches():
    """(label, fields, kernel, args, kwargs) for the attention fwd/bwd launches the models make."""
    import torch
    from innovwin.kernels import attention as A

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    out = []
    for length in ATTENTION_LENGTHS:
        for head_dim, heads in HEAD_DIMS.items():
            for dname in DTYPES:
                for causal in (False, True):  # DiT: bidirectional; GPT: causal
                    dtype, batch = dtypes[dname], 2
                    # q, k, v as SelfAttention makes them: views of one (B, L, 3, H, D) projection
                    qkv = torch.empty(batch, length, 3, heads, head_dim, dtype=dtype).permute(2, 0, 3, 1, 4)
                    q, k, v = qkv.unbind(0)
                    # the gradient of y.transpose(1, 2).reshape(B, L, H * D), as the models' backward gives it
                    grad_out = torch.empty(batch, length, heads, head_dim, dtype=dtype).transpose(1, 2)
                    with _recording() as calls:
                        _, lse = A._attention_fwd(q, k, v, causal)
                        A._attention_bwd(grad_out, q, k, v, lse, causal)
                    for kernel, _, args, kwargs in calls:
                        name = KERNEL_NAMES[kernel.__name__]
                        fields = dict(kernel=name, L=length, head_dim=head_dim, dtype=dname, causal=causal,
                                      **_launch_fields(kwargs))
                        label = f"{name} L={length} d={head_dim} {dname}{' causal' if causal else ''}"
                        out.append((label, fields, kernel, args, kwargs))
    return out


def hamming_launches():
    """Top-2 over 256 queries, with the launcher's default tiles, for each key layout the tasks produce."""
    import torch
    from innovwin.kernels import hamming as Hm

    out = []
    for name, words, nibbles in HAMMING_CASES:
        queries = torch.zeros(HAMMING_M, words, dtype=torch.int64)
        columns = torch.zeros(words, HAMMING_N, dtype=torch.int64)
        with _recording() as calls:
            Hm.hamming_topk(queries, columns, HAMMING_K, nibbles)
        for kernel, _, args, kwargs in calls:
            kwargs = dict(kwargs, HW_POPC=True)  # what the launcher passes for CUDA tensors (CPU ones get False)
            fields = dict(kernel=KERNEL_NAMES[kernel.__name__], words=words, nibbles=nibbles, K=kwargs.get("K"),
                          **_launch_fields(kwargs))
            out.append((f"hamming topk {name}, {words} word{'s' if words > 1 else ''}", fields, kernel, args, kwargs))
    return out


ATTENTION_TILES = [(16, 2), (16, 4), (32, 2), (32, 4), (32, 8), (64, 4), (64, 8)]  # (BLOCK, num_warps)
HAMMING_TILES = [(16, 128, 4), (32, 128, 4), (64, 64, 4), (64, 128, 4), (64, 128, 8), (128, 64, 8),
                 (32, 256, 8), (64, 256, 8), (128, 128, 8)]  # (block_m, block_n, num_warps)


def tile_candidates():
    """Launches for the tile choices the launchers could be given (``--tiles``): where tile_config's table
    comes from. Attention at L = 82 (L is not specialized: one compile serves every L), non-causal."""
    import torch
    from innovwin.kernels import attention as A
    from innovwin.kernels import hamming as Hm

    out = []
    real = A.tile_config
    try:
        for block, warps in ATTENTION_TILES:
            for stages in (1, 2):
                A.tile_config = lambda *_, c=dict(BLOCK=block, num_warps=warps, num_stages=stages): c
                for head_dim, heads in HEAD_DIMS.items():
                    for dname, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                        q, k, v = torch.empty(2, 82, 3, heads, head_dim, dtype=dtype).permute(2, 0, 3, 1, 4).unbind(0)
                        grad_out = torch.empty(2, 82, heads, head_dim, dtype=dtype).transpose(1, 2)
                        with _recording() as calls:
                            _, lse = A._attention_fwd(q, k, v, False)
                            A._attention_bwd(grad_out, q, k, v, lse, False)
                        for kernel, _, args, kwargs in calls:
                            name = KERNEL_NAMES[kernel.__name__]
                            label = f"{name} d={head_dim} {dname} BLOCK={block} w{warps} s{stages}"
                            out.append((label, dict(kernel=name, head_dim=head_dim, dtype=dname,
                                                    **_launch_fields(kwargs)), kernel, args, kwargs))
    finally:
        A.tile_config = real
    for name, words, nibbles in HAMMING_CASES:
        for block_m, block_n, warps in HAMMING_TILES:
            queries = torch.zeros(HAMMING_M, words, dtype=torch.int64)
            columns = torch.zeros(words, HAMMING_N, dtype=torch.int64)
            with _recording() as calls:
                Hm.hamming_topk(queries, columns, HAMMING_K, nibbles, block_m, block_n, warps)
            for kernel, _, args, kwargs in calls:
                kwargs = dict(kwargs, HW_POPC=True)
                out.append((f"hamming topk {name} {block_m}x{block_n} w{warps}",
                            dict(kernel="hamming topk", words=words, nibbles=nibbles, **_launch_fields(kwargs)),
                            kernel, args, kwargs))
    return out


def ci_subset(label: str) -> bool:
    """The configurations most at risk, for the CI test: every attention kernel in fp32 (tf32x3: the most
    registers) at every head_dim, causal and not; bf16 at head_dim 64 (the largest 16-bit tiles) and fp16 at
    head_dim 16; each at L = 37 and 82 (the 16- and 32-blocks; L itself is not specialized); every Hamming
    layout. About 90 distinct compilations for sm_90 and sm_80 together."""
    if label.startswith("hamming"):
        return True
    m = re.search(r"L=(\d+) d=(\d+) (\w+)", label)
    length, head_dim, dtype = int(m[1]), int(m[2]), m[3]
    return length in (37, 82) and (dtype == "fp32" or (dtype, head_dim) in (("bf16", 64), ("fp16", 16)))


# ---------------------------------------------------------------- compile one configuration (in a child)

PTXAS_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
PTXAS_REGS = re.compile(r"Used (\d+) registers")
PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text: str) -> dict:
    """Registers, spills, stack and static smem of the entry function from a ``ptxas -v`` log."""
    res = {}
    in_entry = False
    for line in text.splitlines():
        if PTXAS_ENTRY.search(line):
            in_entry = True
            continue
        if not in_entry:
            continue
        if m := PTXAS_SPILL.search(line):
            res.update(stack_bytes=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        if m := PTXAS_REGS.search(line):
            res["regs"] = int(m[1])
            s = PTXAS_SMEM.search(line)
            res["smem_static"] = int(s[1]) if s else 0
            break
    return res


def _bind(fn, args, kwargs, arch: int):
    """Triton's launch path minus the driver: bind and specialize the arguments as JITFunction.run does."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(kwargs)  # the extra options JITFunction.run adds before binding
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    for name in ("instrumentation_mode", "fpsan_homomorphic_casts"):  # triton 3.9; absent from older ones
        if hasattr(knobs.compilation, name):
            kwargs[name] = getattr(knobs.compilation, name)
    bound, specialization, options = binder(*args, **kwargs)
    return target, backend, kwargs, bound, specialization, options


def compile_key(fn, args, kwargs, arch: int) -> str:
    """What makes two launches one compilation: the kernel, its specialization and its options."""
    _, _, _, _, specialization, options = _bind(fn, args, kwargs, arch)
    text = f"{fn.__name__}:{specialization}:{sorted(options.items()) if isinstance(options, dict) else options}"
    return f"{arch}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def compile_one(fn, args, kwargs, arch: int, into_cache: bool = False) -> dict:
    """Compile one launch for ``arch`` and read the resource report. ``into_cache``: store the kernel in Triton's
    cache, where the same launch on a GPU of that arch finds it (``warm_cache``), and skip the report."""
    import triton
    from triton import knobs
    from triton.compiler.compiler import ASTSource
    from triton.runtime.errors import PTXASError

    target, backend, kwargs, bound, specialization, options = _bind(fn, args, kwargs, arch)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    src = ASTSource(fn, signature, constexprs, attrs)
    if into_cache:
        t0 = time.monotonic()
        triton.compile(src, target=target, options=options.__dict__)
        return {"status": "ok", "compile_s": round(time.monotonic() - t0, 2)}
    knobs.nvidia.dump_ptxas_log = True  # Triton prints ptxas' -v log to stdout after a successful ptxas
    knobs.compilation.always_compile = True
    buf = io.StringIO()
    names = fn.arg_names
    res = {"divisible_by_16": [names[k[0]] for k, v in attrs.items() if ["tt.divisibility", 16] in v],
           "specialized_to_constant": {names[k[0]]: v for k, v in constexprs.items() if names[k[0]] not in kwargs}}
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(buf):
            kernel = triton.compile(src, target=target, options=options.__dict__)
    except PTXASError as e:
        res.update(status="ptxas_error", compile_s=round(time.monotonic() - t0, 2), error=str(e)[:TAIL])
        return res
    res["compile_s"] = round(time.monotonic() - t0, 2)
    stats = parse_ptxas(buf.getvalue())
    if "regs" not in stats or "spill_stores" not in stats:
        res.update(status="no_ptxas_log", error=buf.getvalue()[-TAIL:])
        return res
    md = kernel.metadata
    res.update(status="ok", name=md.name, num_warps=md.num_warps, num_stages=md.num_stages,
               smem_dynamic=int(md.shared or 0), **stats)
    res["smem_total"] = res["smem_dynamic"] + res["smem_static"]
    return res


def _start_child(fn, args, kwargs, arch, into_cache):
    """Fork a child (own process group, so a timeout also ends its ptxas) that compiles and writes JSON to a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            os.setpgid(0, 0)
            try:
                res = compile_one(fn, args, kwargs, arch, into_cache)
            except BaseException as e:  # noqa: BLE001 - any failure is a result to report
                res = {"status": "compile_error", "error": f"{type(e).__name__}: {e}"[:TAIL],
                       "traceback": traceback.format_exc()[-TAIL:]}
            view = memoryview(json.dumps(res).encode())
            while view:
                view = view[os.write(w, view):]
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    return {"pid": pid, "fd": r, "t0": time.monotonic(), "chunks": []}


def _finish_child(child, timed_out: bool, timeout: float) -> dict:
    os.close(child["fd"])
    if timed_out:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError):
                kill(child["pid"], signal.SIGKILL)
    _, status = os.waitpid(child["pid"], 0)
    wall = round(time.monotonic() - child["t0"], 2)
    if timed_out:
        return {"status": "timeout", "compile_s": wall, "error": f"no result within {timeout:.0f} s"}
    try:
        res = json.loads(b"".join(child["chunks"]).decode())
    except ValueError:
        return {"status": "compile_error", "compile_s": wall, "error": f"child exited without a result ({status})"}
    res["wall_s"] = wall
    return res


def compile_all(jobs: list, n_parallel: int, timeout: float, on_done, into_cache: bool = False) -> None:
    """Compile ``jobs`` [(key, fn, args, kwargs, arch)], ``n_parallel`` children at a time; ``on_done(key, res)``."""
    pending, running = list(jobs), {}
    while pending or running:
        while pending and len(running) < n_parallel:
            key, fn, args, kwargs, arch = pending.pop(0)
            running[key] = _start_child(fn, args, kwargs, arch, into_cache)
        now = time.monotonic()
        for key, child in list(running.items()):
            if now - child["t0"] > timeout:
                on_done(key, _finish_child(running.pop(key), True, timeout))
        if not running:
            continue
        wait = max(0.05, min(timeout - (now - c["t0"]) for c in running.values()))
        ready, _, _ = select.select([c["fd"] for c in running.values()], [], [], wait)
        for key, child in list(running.items()):
            if child["fd"] in ready:
                chunk = os.read(child["fd"], 1 << 16)
                if chunk:
                    child["chunks"].append(chunk)
                else:
                    on_done(key, _finish_child(running.pop(key), False, timeout))


def warm_cache(configs, arch: int, n_parallel: int, timeout: float = 300.0) -> dict:
    """Compile the distinct launches among ``configs`` [(label, fields, fn, args, kwargs)] into Triton's cache in
    ``n_parallel`` processes, so a GPU of ``arch`` finds them there instead of compiling one at a time.
    Call before the process touches CUDA (children are forked). Returns counts and the slowest compile."""
    jobs, seen, results = [], set(), {}
    for _, _, fn, args, kwargs in configs:
        key = compile_key(fn, args, kwargs, arch)
        if key not in seen:
            seen.add(key)
            jobs.append((key, fn, args, kwargs, arch))
    compile_all(jobs, n_parallel, timeout, lambda key, res: results.__setitem__(key, res), into_cache=True)
    ok = [r for r in results.values() if r["status"] == "ok"]
    failed = [r for r in results.values() if r["status"] != "ok"]
    return {"distinct": len(jobs), "compiled": len(ok), "max_compile_s": max((r["compile_s"] for r in ok), default=0),
            "failures": [r.get("error", r["status"])[:300] for r in failed][:3]}


# ---------------------------------------------------------------- verdicts and the table

def verdict(row: dict) -> str | None:
    """Why this configuration fails the bar (spill, shared memory over the limit, slow compile), or None."""
    if row["status"] != "ok":
        return row["status"]
    if row["spill_stores"] or row["spill_loads"]:
        return f"spills {row['spill_stores']} B stores / {row['spill_loads']} B loads"
    limit = SMEM_LIMITS[row["arch"]]
    if row["smem_total"] > limit:
        return f"smem {row['smem_total']} B > {limit} B"
    if row["compile_s"] > COMPILE_LIMIT_S:
        return f"compile {row['compile_s']:.0f} s > {COMPILE_LIMIT_S:.0f} s"
    return None


def summarize(rows: list[dict]) -> str:
    parts = []
    for arch in sorted({r["arch"] for r in rows}, reverse=True):
        mine = [r for r in rows if r["arch"] == arch]
        ok = [r for r in mine if r["status"] == "ok"]
        spilled = [r for r in ok if r["spill_stores"] or r["spill_loads"]]
        failed = [r for r in mine if not r["pass"]]
        text = f"sm_{arch}: {len(mine)} configs, {len(ok)} compiled, {len(spilled)} spill, {len(failed)} fail"
        if ok:
            w = max(ok, key=lambda r: r["regs"])
            s = max(ok, key=lambda r: r["smem_total"])
            c = max(ok, key=lambda r: r["compile_s"])
            text += (f" (max {w['regs']} regs: {w['label']}; max smem {s['smem_total'] / 1024:.0f} KiB: "
                     f"{s['label']}; slowest compile {c['compile_s']:.1f} s)")
        parts.append(text)
    return "; ".join(parts)


def run_check(archs, subset: str = "full", only: str | None = None, n_parallel: int = 1,
              timeout: float = 120.0, out: Path | None = None) -> dict:
    """Capture, compile, judge; write the JSON record to ``out`` when given. Returns the record."""
    import torch
    import triton
    from triton.backends.nvidia.compiler import get_ptxas, get_ptxas_version

    start = time.monotonic()
    torch.set_num_threads(1)
    if not hasattr(triton.runtime.jit.JITFunction, "_pack_args"):
        raise RuntimeError(f"triton {triton.__version__}: JITFunction._pack_args is gone; update compile_check.py")
    configs = tile_candidates() if subset == "tiles" else attention_launches() + hamming_launches()
    configs = [c for c in configs if (subset != "ci" or ci_subset(c[0])) and (not only or re.search(only, c[0]))]
    ptxas = {arch: {"path": get_ptxas(arch).path,
                    "version": next((ln.strip() for ln in get_ptxas_version(arch).splitlines() if "release" in ln),
                                    "unknown")} for arch in archs}
    rows, jobs, unique = [], [], {}
    for arch in archs:
        for label, fields, fn, args, kwargs in configs:
            key = compile_key(fn, args, kwargs, arch)
            rows.append({"label": label, "arch": arch, **fields, "compile_id": key.split(":")[1]})
            if key not in unique:
                unique[key] = None
                jobs.append((key, fn, args, kwargs, arch))
    log(f"compile check: triton {triton.__version__}, sm_{'/sm_'.join(map(str, archs))}, {len(rows)} configurations, "
        f"{len(jobs)} distinct compilations, {n_parallel} at a time")

    def done(key, res):
        unique[key] = res
        arch, cid = key.split(":")
        label = next(r["label"] for r in rows if r["compile_id"] == cid and r["arch"] == int(arch))
        if res["status"] == "ok":
            log(f"  sm_{arch} {label:<46} {res['num_warps']:>2}w {res['regs']:>3} regs "
                f"spill {res['spill_stores']}/{res['spill_loads']} B smem {res['smem_total']:>6} B "
                f"{res['compile_s']:>5.1f} s")
        else:
            log(f"  sm_{arch} {label:<46} {res['status']}: {res.get('error', '')[:200]}")

    compile_all(jobs, n_parallel, timeout, done)
    for row in rows:
        res = dict(unique[f"{row['arch']}:{row['compile_id']}"])
        first = next(r for r in rows if r["compile_id"] == row["compile_id"] and r["arch"] == row["arch"])
        if first is not row:
            res["same_compile_as"] = first["label"]
        row.update(res)
        row["pass"] = verdict(row) is None
        if not row["pass"]:
            row["fail"] = verdict(row)
    record = {
        "what": "Triton kernels compiled for sm_90/sm_80 without a GPU (benches/compile_check.py)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "triton": triton.__version__, "torch": torch.__version__, "ptxas": ptxas,
        "smem_limit_bytes": {str(a): SMEM_LIMITS[a] for a in archs}, "compile_limit_s": COMPILE_LIMIT_S,
        "subset": subset, "only": only, "distinct_compilations": len(jobs),
        "elapsed_s": round(time.monotonic() - start, 1),
        "passed": bool(rows) and all(r["pass"] for r in rows),
        "summary": summarize(rows), "configs": rows,
    }
    if out is not None:
        write_record(record, out)
        log(f"table written to {out}")
    return record


def write_record(record: dict, out: Path) -> None:
    """JSON with one configuration per line: small enough to commit, easy to diff."""
    head = {k: v for k, v in record.items() if k != "configs"}
    lines = ",\n".join("  " + json.dumps(row, default=str) for row in record["configs"])
    text = json.dumps(head, indent=1, default=str)[:-2] + ',\n "configs": [\n' + lines + "\n ]\n}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def _group(row: dict) -> str:
    if row["kernel"].startswith("attention"):  # the backward's kernels together (one before, dq + dkdv after)
        return f"{'attention fwd' if row['kernel'] == 'attention fwd' else 'attention bwd'} L={row['L']}"
    return f"hamming {row['words']}w{' nibbles' if row['nibbles'] else ''}"


def markdown(records: dict[str, dict]) -> str:
    """Per kernel and L (attention: over head dims, dtypes, masks): max registers, configurations that spill
    (worst spill bytes), max shared memory, slowest compile; one column per record (e.g. before, after)."""
    names = list(records)
    archs = sorted({r["arch"] for rec in records.values() for r in rec["configs"]}, reverse=True)
    out = []
    for arch in archs:
        out.append(f"sm_{arch} (limit {SMEM_LIMITS[arch] // 1024} KiB smem): max regs / spilling configs (worst "
                   f"spill bytes) / max smem KiB / slowest compile s\n")
        out.append("| kernel | " + " | ".join(names) + " |")
        out.append("|---" * (len(names) + 1) + "|")
        groups = []
        for rec in records.values():
            for r in rec["configs"]:
                if r["arch"] == arch and _group(r) not in groups:
                    groups.append(_group(r))
        for g in groups:
            cells = []
            for rec in records.values():
                rows = [r for r in rec["configs"] if r["arch"] == arch and _group(r) == g]
                ok = [r for r in rows if r["status"] == "ok"]
                if not ok:
                    cells.append("-" if not rows else rows[0]["status"])
                    continue
                spills = [r["spill_stores"] + r["spill_loads"] for r in ok if r["spill_stores"] or r["spill_loads"]]
                cells.append(f"{max(r['regs'] for r in ok)} / {len(spills)} of {len(rows)}"
                             f"{f' ({max(spills)} B)' if spills else ''} / "
                             f"{max(r['smem_total'] for r in ok) / 1024:.0f} / {max(r['compile_s'] for r in ok):.1f}")
            out.append(f"| {g} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def ptxas_missing_reason() -> str | None:
    """Why the check cannot run here (no triton, or no ptxas in its wheel), or None."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        for arch in SMEM_LIMITS:
            path = get_ptxas(arch).path
            if not (path and os.access(path, os.X_OK)):
                return f"ptxas for sm_{arch} not found in the triton wheel ({path})"
    except Exception as e:  # noqa: BLE001 - an import or lookup failure is the reason
        return f"triton's NVIDIA backend is unavailable: {type(e).__name__}: {e}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS / "compile-sm90.json", help="where to write the JSON table")
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80], choices=sorted(SMEM_LIMITS))
    ap.add_argument("--subset", choices=["full", "ci", "tiles"], default="full",
                    help="full: every launch; ci: those most at risk; tiles: the tile choices tile_config picks from")
    ap.add_argument("--only", default=None, help="regex on the configuration label (for debugging)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="compiles at a time")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a compile is killed")
    ap.add_argument("--markdown", nargs="+", metavar="NAME=JSON", default=None,
                    help="only print a markdown summary of recorded tables, e.g. before=old.json after=new.json")
    opts = ap.parse_args(argv)
    if opts.markdown:
        print(markdown({spec.split("=", 1)[0]: json.loads(Path(spec.split("=", 1)[1]).read_text())
                        for spec in opts.markdown}))
        return 0
    if os.environ.get("TRITON_INTERPRET") == "1":
        log("compile check: unset TRITON_INTERPRET (the kernels must be JITFunctions to compile)")
        return 2
    reason = ptxas_missing_reason()
    if reason:
        log(f"compile check: cannot run: {reason}")
        return 2
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    cache = tempfile.mkdtemp(prefix="compile-check-triton-cache-")
    os.environ["TRITON_CACHE_DIR"] = cache  # fresh: no cache hits, nothing left in ~/.triton
    try:
        record = run_check(opts.arch, opts.subset, opts.only, max(1, opts.jobs), opts.timeout, opts.out)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        log(f"compile check: cannot run: {type(e).__name__}: {e}")
        return 2
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    for row in record["configs"]:
        if not row["pass"]:
            log(f"FAIL sm_{row['arch']} {row['label']}: {row['fail']}")
    log(record["summary"])
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
