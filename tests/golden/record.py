"""Record the golden runs' metrics rows (run once, from the commit whose behaviour they pin).

    python tests/golden/record.py      # writes tests/golden/<name>.jsonl

The runs go through the command line, the one interface that survives a restructure. ``eval_seconds``
(wall clock) is dropped; every other field must be reproduced (see tests/test_golden.py).
"""
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
# The default GPT run, cut to 300 steps, and a tiny DiT run: both fixed-seed, CPU, fp32.
RUNS = {
    "gpt-default-300": ["--steps", "300"],
    "dit-tiny-200": ["--arch", "dit", "--steps", "200", "--eval-samples", "64", "--loss-samples", "64",
                     "--n-train", "32", "--bootstrap", "0",  # the DiT defaults before issue 15 (old rows, exactly):
                     "--set", "objective.p_mean=-1.2", "--set", "objective.sigma_max=80", "--set",
                     "objective.sampler_steps=18"],
}


def run_rows(name: str, out_dir: Path) -> list[dict]:
    from innovwin import cli

    code = cli.main(["train", *RUNS[name], "--device", "cpu", "--quiet", "--out", str(out_dir)])
    assert code == 0, f"{name}: train exited {code}"
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "eval_seconds"} for row in rows]


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    for name in sys.argv[1:] or RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_rows(name, Path(tmp) / name)
        (HERE / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{name}: {len(rows)} rows")
