"""Run benches and record the results with the machine they ran on.

    python benches/record.py benches/bench_validate.py [-k EXPR] [--name NAME]

Runs pytest-benchmark on the given files and writes ``benches/results/NAME.json``: the
pytest-benchmark JSON plus the device name, CPU count, library versions and date, so a
number can always be traced to the machine and the baseline measured beside it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the numbers were measured on."""
    import numpy
    import torch

    info = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host_cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews CPU timings
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    import innovwin

    info["innovwin_native"] = innovwin.native_available()
    return info


def summarize(bench_json: dict) -> list[dict]:
    """One row per benchmark: name, group, median seconds, and throughput when given."""
    rows = []
    for bench in bench_json["benchmarks"]:
        rows.append(
            {
                "name": bench["name"],
                "group": bench.get("group"),
                "median_s": bench["stats"]["median"],
                "min_s": bench["stats"]["min"],
                "rounds": bench["stats"]["rounds"],
                "extra": bench.get("extra_info", {}),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="bench files to run")
    parser.add_argument("-k", default=None, help="pytest -k expression selecting benches")
    parser.add_argument("--name", default=None, help="result file name (default: first file's stem + device)")
    args = parser.parse_args(argv)

    info = machine()
    name = args.name or f"{Path(args.files[0]).stem}-{info['device'].replace(' ', '_')}"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "bench.json"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.files,
                   "--benchmark-enable", "--benchmark-only", f"--benchmark-json={raw}"]
        if args.k:
            command += ["-k", args.k]
        code = subprocess.call(command)
        if not raw.exists():
            print("no benchmark results were written", file=sys.stderr)
            return code or 1
        bench_json = json.loads(raw.read_text())
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": info, "results": summarize(bench_json)}, indent=1) + "\n")
    print(f"wrote {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
