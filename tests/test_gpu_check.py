"""benches/gpu_check.py --dry-run: every section's code runs on the CPU at tiny sizes and writes its JSON.

The numbers of a dry run mean nothing; what is checked is that a device session (minutes, rarely lent)
will not die on a typo, and that the record is written section by section.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_exercises_every_section(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benches" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    record = json.loads(out.read_text())
    sections = record["sections"]
    assert list(sections) == ["precompile", "env", "kernels", "attention", "tiles", "hamming", "train_step"]
    assert all(s["status"] == "ok" for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    kernels = sections["kernels"]["result"]
    assert kernels["failed"] == 0 and len(kernels["attention"]) >= 12 and len(kernels["hamming"]) == 2
    attention = sections["attention"]["result"]["rows"]
    assert all("triton" in r["fwd_bwd_ms"] and "sdpa_math" in r["fwd_bwd_ms"] for r in attention)
    assert all(r["skipped"] for r in attention)  # the CUDA-only SDPA backends say why they did not run
    assert all(r["ok"] for r in sections["hamming"]["result"]["rows"])
    steps = sections["train_step"]["result"]
    for arch in ("dit", "gpt"):
        assert set(steps[arch]) == {"eager_sdpa", "compiled_sdpa", "compiled_triton"}
        assert all(row["loss_matches_eager"] for name, row in steps[arch].items() if name != "eager_sdpa")
        assert steps[arch]["compiled_triton"]["graph_breaks"] == 0
    assert record["meta"]["dry_run"] is True
