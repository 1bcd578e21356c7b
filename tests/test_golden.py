"""Behaviour pinned across restructures: two fixed-seed runs reproduce the metrics rows recorded from the
commit before the layered architecture (tests/golden/record.py).

The rows are pinned through a step horizon, not to the end. A CPU with other vector units (AVX-512 FP16 and AMX
against the recording machine's) sums in another order; training then amplifies a 1e-7 difference: measured on
such a CPU, the losses agreed within 2e-7 relative through step 178 (GPT) and 56 (DiT), then drifted to 3e-4
(GPT, step 237) and 2e-6, 1e-3 (DiT, steps 75, 100), and sample fractions moved with them. Through the horizon
every field is exact except the losses, held within 1e-5 relative; beyond it, only the evaluation steps and
the fields are checked. Any change of behaviour (data, init, loss, sampler, evaluation) moves the early rows
far more than that."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import record  # noqa: E402

LOSS_FIELDS = ("train_loss", "heldout_loss", "train_eval_loss")
PINNED_THROUGH_STEP = {"gpt-default-300": 178, "dit-tiny-200": 56}


@pytest.mark.parametrize("name", sorted(record.RUNS))
def test_golden_rows_are_reproduced(tmp_path, name):
    expected = [json.loads(line) for line in (record.HERE / f"{name}.jsonl").read_text().splitlines()]
    rows = record.run_rows(name, tmp_path / name)
    assert [row["step"] for row in rows] == [row["step"] for row in expected]
    for got, want in zip(rows, expected):
        assert set(got) >= set(want), f"step {want['step']}: fields missing: {set(want) - set(got)}"
        if want["step"] > PINNED_THROUGH_STEP[name]:
            continue
        for field, value in want.items():
            if field in LOSS_FIELDS and value is not None:
                assert got[field] == pytest.approx(value, rel=1e-5), f"step {want['step']} {field}"
            else:
                assert got[field] == value, f"step {want['step']} {field}: {got[field]} != {value}"
