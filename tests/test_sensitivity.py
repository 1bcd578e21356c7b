"""The clocks at several thresholds, on curves whose answer is known by construction.

Validity rises linearly in log10(step), 0 at step 10 and 1 at step 1000, so tau_rule at threshold t
is 10^(1 + 2t); the group-level validity rises twice as fast (1 at step 100), so tau_rule_group is 10^(1 + t).
The copy rate above chance rises linearly in log10(step) from step N with slope 1/w,
w = 4 + log10(N), so tau_mem at threshold t is N^(1 + t) * 10^(4t): refitted at each threshold, the
exponent of tau_mem = a * N^alpha must be exactly 1 + t. Interpolation in log(step) is exact on such
curves, so the values are checked to rounding error.
"""
import csv
import json
import math

import numpy as np
import pytest

from innovwin.analysis import clocks, sensitivity
from innovwin.analysis.records import run_records
from innovwin.config import RunConfig
from innovwin.report.build import build_report
from innovwin.store.runstore import RunStore

STEPS = np.unique(np.round(10 ** np.arange(1, 6.001, 0.1)).astype(int))  # last step 10^6
NS = (32, 64, 128, 256, 512, 1024)


def curve_rows(n, chance=0.01, valid_top=1.0):
    log_step = np.log10(STEPS)
    valid = np.minimum(np.clip((log_step - 1) / 2, 0, 1), valid_top)
    group_valid = np.clip(log_step - 1, 0, 1)
    excess = np.clip((log_step - math.log10(n)) / (4 + math.log10(n)), 0, 1)
    return [{"step": int(s), "valid_frac": float(v), "constraint_frac": float(g),
             "copy_frac": (chance or 0.0) + float(e), "chance_copy": chance}
            for s, v, g, e in zip(STEPS, valid, group_valid, excess)]


def expected_tau_mem(n, t):
    return n ** (1 + t) * 10 ** (4 * t)


def record(n, seed=0):
    """The record of a finished run at N = ``n`` whose curves are curve_rows(n), read as the report reads it."""
    config = RunConfig(task="parity:h=6,w=6,g=2", arch="gpt", depth=2, width=64, n_train=n, seed=seed,
                       steps=int(STEPS[-1])).resolved()
    curves = curve_rows(n)
    row = {"key": f"run-{n}-{seed}", "config": config.to_dict(), "status": "done", "run_dir": "no-such-directory",
           "summary": {**clocks.summarize(curves), "final": curves[-1]}}
    (found,) = run_records([row])
    return found


def test_clocks_move_monotonically_with_their_thresholds():
    found = sensitivity.threshold_clocks(curve_rows(100))
    for t in sensitivity.RULE_THRESHOLDS:
        assert found[("tau_rule", t)].value == pytest.approx(10 ** (1 + 2 * t))
        assert found[("tau_rule_group", t)].value == pytest.approx(10 ** (1 + t))
    for t in sensitivity.MEM_THRESHOLDS:
        assert found[("tau_mem", t)].value == pytest.approx(expected_tau_mem(100, t))
    rule = [found[("tau_rule", t)].value for t in sensitivity.RULE_THRESHOLDS]
    mem = [found[("tau_mem", t)].value for t in sensitivity.MEM_THRESHOLDS]
    assert np.all(np.diff(rule) > 0) and np.all(np.diff(mem) > 0)


def test_a_curve_that_never_reaches_a_threshold_is_censored_there_only():
    found = sensitivity.threshold_clocks(curve_rows(100, valid_top=0.97))
    assert found[("tau_rule", 0.99)].censoring == "right" and found[("tau_rule", 0.99)].render() == f"> {STEPS[-1]}"
    assert all(found[("tau_rule", t)].measured for t in (0.8, 0.9, 0.95))
    # tau_mem at 0.5 for N = 10^4 is 10^8, past the last step
    assert found_mem_censored(10_000) == [False, False, False, True]
    with pytest.raises(ValueError, match="no evaluation rows"):
        sensitivity.threshold_clocks([])


def found_mem_censored(n):
    found = sensitivity.threshold_clocks(curve_rows(n))
    return [found[("tau_mem", t)].censoring == "right" for t in sensitivity.MEM_THRESHOLDS]


@pytest.mark.parametrize("n, chance, valid_top", [(100, 0.01, 1.0), (5000, None, 0.85), (32, 0.3, 0.5)])
def test_the_configured_thresholds_column_is_the_summary_clock(n, chance, valid_top):
    rows = curve_rows(n, chance=chance, valid_top=valid_top)
    summary = clocks.summarize(rows, rule_threshold=0.9, mem_threshold=0.1)
    (row,), columns = sensitivity.sensitivity_rows([record(n)], {f"run-{n}-0": rows})
    rule, mem = clocks.read_clocks(summary, last_step=rows[-1]["step"])
    assert row["tau_rule@0.9"] == rule.render() and row["tau_mem@0.1"] == mem.render()
    assert row["clocks"][("tau_rule", 0.9)] == rule and row["clocks"][("tau_mem", 0.1)] == mem
    assert columns[-12:] == ["tau_rule@0.8", "tau_rule@0.9", "tau_rule@0.95", "tau_rule@0.99",
                             "tau_rule_group@0.8", "tau_rule_group@0.9", "tau_rule_group@0.95", "tau_rule_group@0.99",
                             "tau_mem@0.05", "tau_mem@0.1", "tau_mem@0.2", "tau_mem@0.5"]


def test_alpha_refit_per_threshold_recovers_the_constructed_exponent_without_censored_runs():
    records = [record(n, seed) for n in NS for seed in (0, 1)]
    rows, _ = sensitivity.sensitivity_rows(records, {r.key: curve_rows(r.n_train) for r in records})
    fits = sensitivity.alpha_sensitivity(rows, n_boot=50)
    assert [f["threshold"] for f in fits] == list(sensitivity.MEM_THRESHOLDS)
    for fit in fits:
        assert fit["alpha"] == pytest.approx(1 + fit["threshold"], abs=1e-6)
        assert fit["alpha_lo"] == pytest.approx(fit["alpha"], abs=1e-6)  # exact points: no spread
    # at 0.5, N = 512 and 1024 memorize past 10^6: censored, counted, and not fitted
    assert [(f["n_points"], f["n_censored"]) for f in fits] == [(12, 0)] * 3 + [(8, 4)]
    wide, columns = sensitivity.alpha_by_group(fits)
    assert len(wide) == 1 and columns[-1] == "α @ 0.5"
    assert wide[0]["α @ 0.5"].startswith("1.50 [1.50, 1.50] (8 fitted, 4 censored)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of N = 32 ... 256 and 8192 configured at mem_threshold 0.15; the last run has no metrics.jsonl.
    Returns {table name: its CSV rows, "out": the report's directory}."""
    root = tmp_path_factory.mktemp("sensitivity")
    with RunStore(root / "store", write=True) as store:
        for n in NS[:4] + (8192,):
            config = RunConfig(task="parity:h=6,w=6,g=2", n_train=n, arch="gpt", seed=0, steps=int(STEPS[-1]),
                               mem_threshold=0.15).resolved()
            rows = curve_rows(n)
            summary = clocks.summarize(rows, rule_threshold=0.9, mem_threshold=0.15)
            summary.update(final=rows[-1], config=config.to_dict())
            key = config.key()
            store.add({key: config.to_dict()})
            store.claim(key)
            store.finish(key, summary)
            if n != 8192:
                store.run_dir(key).mkdir(parents=True)
                (store.run_dir(key) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_report(root / "store", root / "out", n_boot=20)
    tables = {}
    for name in ("sensitivity", "runs", "alpha_sensitivity"):
        with open(root / "out" / f"{name}.csv") as handle:
            tables[name] = list(csv.DictReader(handle))
    return {**tables, "out": root / "out"}


def test_runs_without_evaluation_rows_are_left_out_of_the_sensitivity_table(report):
    assert [int(r["n_train"]) for r in report["sensitivity"]] == list(NS[:4])
    assert (report["out"] / "sensitivity.md").read_text().count("\n") == len(report["sensitivity"]) + 2


def test_the_configured_threshold_joins_the_defaults_and_agrees_with_runs_csv(report):
    clocks_of = {row["key"]: row for row in report["runs"]}
    assert [r["tau_mem@0.15"] for r in report["sensitivity"]] == [
        f"{float(clocks_of[r['key']]['tau_mem']):.0f}" for r in report["sensitivity"]]


def test_the_table_holds_each_clock_at_each_threshold(report):
    for run in report["sensitivity"]:
        assert float(run["tau_mem@0.2"]) == pytest.approx(expected_tau_mem(int(run["n_train"]), 0.2), abs=0.5)
        assert float(run["tau_rule@0.95"]) == pytest.approx(10 ** 2.9, abs=0.5)
    assert report["sensitivity"][-1]["tau_mem@0.5"] == f"{expected_tau_mem(256, 0.5):.0f}"


def test_the_report_refits_alpha_at_every_threshold(report):
    fits = report["alpha_sensitivity"]
    assert [float(f["threshold"]) for f in fits] == [0.05, 0.1, 0.15, 0.2, 0.5]
    assert all(float(f["alpha"]) == pytest.approx(1 + float(f["threshold"]), abs=1e-6) for f in fits)
    assert all(int(f["n_points"]) == 4 and f["task"] == "parity:h=6,w=6,g=2" for f in fits)


def test_the_page_has_the_sensitivity_section_and_figure(report):
    assert (report["out"] / "alpha_sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    page = (report["out"] / "index.html").read_text()
    for text in ("How the clocks move with their thresholds", "sensitivity.csv", "alpha_sensitivity.png",
                 "4 of 5 finished runs", "α @ 0.15"):
        assert text in page, text


def test_alpha_refit_leaves_out_clocks_crossed_at_the_first_evaluation():
    records = [record(n) for n in NS]
    metrics = {r.key: curve_rows(r.n_train) for r in records}
    for row in metrics["run-32-0"]:  # N = 32 memorizes before the first evaluation: tau_mem <= 10, a bound
        row["copy_frac"] = 1.0
    rows, _ = sensitivity.sensitivity_rows(records, metrics)
    assert rows[0]["tau_mem@0.1"] == "<= 10"
    (fit,) = [f for f in sensitivity.alpha_sensitivity(rows, n_boot=20) if f["threshold"] == 0.1]
    assert (fit["n_points"], fit["n_censored"]) == (5, 1)
    assert fit["alpha"] == pytest.approx(1.1, abs=1e-6)
