"""The Triton kernels compile for sm_90 (H100/H200) and sm_80 (A100) without spills, within shared memory,
each in under 60 s: checked on a CPU-only machine with the ptxas shipped in the triton wheel.

``benches/compile_check.py --subset ci`` runs in a subprocess (the kernels must be JITFunctions, while this
test session runs them under TRITON_INTERPRET=1): the configurations most at risk of every kernel, about
two minutes on two cores. ``python benches/compile_check.py`` compiles all of them (about 3 minutes).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
import compile_check  # noqa: E402

pytestmark = pytest.mark.compile


def test_every_kernel_compiles_for_sm90_and_sm80_without_spills(tmp_path):
    reason = compile_check.ptxas_missing_reason()
    if reason:
        pytest.skip(f"cannot compile for sm_90 here: {reason}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benches" / "compile_check.py"), "--subset", "ci",
                           "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), f"the check did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    record = json.loads(out.read_text())
    failures = [f"sm_{r['arch']} {r['label']}: {r['fail']}" for r in record["configs"] if not r["pass"]]
    assert not failures, "\n".join(failures)
    kernels = {r["kernel"] for r in record["configs"]}
    assert kernels == set(compile_check.KERNEL_NAMES.values()), kernels  # every kernel was captured
    assert {r["arch"] for r in record["configs"]} == {90, 80}
    assert proc.returncode == 0, proc.stdout[-3000:]


def row(**overrides):
    base = dict(status="ok", arch=90, spill_stores=0, spill_loads=0, smem_total=1024, compile_s=1.0)
    return {**base, **overrides}


@pytest.mark.parametrize("bad, why", [
    (row(spill_stores=8, spill_loads=8), "spills"),
    (row(smem_total=227 * 1024 + 1), "smem"),
    (row(arch=80, smem_total=163 * 1024 + 1), "smem"),
    (row(compile_s=61.0), "compile"),
    (row(status="timeout"), "timeout"),
])
def test_verdict_fails_spills_smem_over_the_limit_and_slow_compiles(bad, why):
    assert why in compile_check.verdict(bad)
    assert compile_check.verdict(row(smem_total=227 * 1024, arch=90)) is None
    assert compile_check.verdict(row(smem_total=163 * 1024, arch=80, compile_s=59.0)) is None


def test_parse_ptxas_reads_the_entry_function():
    log = """ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function '_attention_fwd_kernel' for 'sm_90a'
ptxas info    : Function properties for _attention_fwd_kernel
    16 bytes stack frame, 24 bytes spill stores, 32 bytes spill loads
ptxas info    : Used 168 registers, used 1 barriers, 16 bytes cumulative stack size, 1024 bytes smem, 456 bytes cmem[0]
"""
    assert compile_check.parse_ptxas(log) == dict(stack_bytes=16, spill_stores=24, spill_loads=32, regs=168,
                                                  smem_static=1024)
