"""`innovwin predict` on synthetic runs whose clocks follow known laws, seen as the brackets of a log-spaced
evaluation grid: tau_mem = 4 N^0.9 and tau_rule = 50, each times log-normal scatter (sigma 0.2), three seeds per N.
The prediction interval must cover a new run's clock at about its stated rate, the budget must follow from it, and
what cannot be predicted must be refused in one line."""
import dataclasses
import itertools
import json
import math

import numpy as np
import pytest

from innovwin.analysis import predict
from innovwin.analysis.clocks import Clock
from innovwin.analysis.fits import maximize_censored, student_t_quantile
from innovwin.analysis.records import load_rows, run_records
from innovwin.cli import main
from innovwin.config import RunConfig
from innovwin.store.runstore import RunStore

GRID = np.unique(np.round(10 * 10 ** (np.arange(30) / 8)).astype(int))  # 8 evaluations per decade from 10
STEPS = 5000
NS = (32, 64, 128, 256, 512)


def brackets(tau, last_step=STEPS):
    """Each clock as the evaluations around it: [0, first] when already crossed, [last, inf) when never."""
    grid = GRID[GRID <= last_step]
    lo = np.array([grid[grid < t].max() if (grid < t).any() else 0 for t in tau], float)
    hi = np.array([grid[grid >= t].min() if (grid >= t).any() else np.inf for t in tau], float)
    return lo, hi


def clock_json(tau: float) -> dict:
    """summary.json's form of a clock at ``tau`` seen on GRID (interval = bracket: no per-sample bootstrap)."""
    (lo,), (hi,) = brackets([tau])
    if math.isinf(hi):
        return {"estimate": None, "bracket": [lo, None], "interval": [lo, None], "censored": "right"}
    return {"estimate": float(tau), "bracket": [lo, hi], "interval": [lo, hi], "censored": None if lo else "left"}


def write_store(path, ns=NS, seeds=(0, 1, 2), seed=0, widths=(64,)):
    """tau_mem = 4 N^0.9 (64 / width): at width 64 the module's law; a narrower model memorizes later."""
    rng = np.random.default_rng(seed)
    with RunStore(path, write=True) as store:
        for n, width, run_seed in itertools.product(ns, widths, seeds):
            config = RunConfig(task="parity:h=4,w=4,g=2", n_train=n, width=width, seed=run_seed,
                               steps=STEPS).resolved()
            summary = {"tau_rule": clock_json(50 * math.exp(rng.normal(0, 0.2))),
                       "tau_mem": clock_json(4 * n**0.9 * 64 / width * math.exp(rng.normal(0, 0.2))),
                       "final": {"step": STEPS}}
            store.add({config.key(): config.to_dict()})
            store.claim(config.key())
            store.finish(config.key(), summary)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("predict") / "store")


@pytest.fixture(scope="module")
def records(store):
    return run_records(load_rows(store))


def test_the_prediction_interval_covers_a_new_runs_clock_at_about_its_rate():
    rng = np.random.default_rng(1)
    covered, draws = 0, 200
    for _ in range(draws):
        x = np.repeat([16, 32, 64, 128, 256, 512], 3)
        lo, hi = brackets(2.0 * x**0.8 * np.exp(rng.normal(0, 0.3, x.size)), last_step=600)  # the largest censored
        new = 2.0 * 1024**0.8 * math.exp(rng.normal(0, 0.3))  # past the fitted range: extrapolated
        _, low, high = predict.prediction_interval(maximize_censored(x, lo, hi), 1024)
        covered += low <= new <= high
    assert 0.88 <= covered / draws <= 0.99  # measured 0.93 on these draws


def test_exact_values_give_the_regression_prediction_interval():
    x = np.array([10.0, 20, 40, 80, 160, 320])
    y = 3 * x**0.8 * np.exp(np.array([0.1, -0.2, 0.05, 0.15, -0.1, 0.02]))
    estimate, low, high = predict.prediction_interval(maximize_censored(x, y, y), 640)
    log_x, log_y = np.log(x), np.log(y)
    slope, intercept = np.polyfit(log_x, log_y, 1)
    s = math.sqrt(np.sum((log_y - intercept - slope * log_x) ** 2) / (len(x) - 2))
    leverage = 1 / len(x) + (math.log(640) - log_x.mean()) ** 2 / np.sum((log_x - log_x.mean()) ** 2)
    half = student_t_quantile(0.95, len(x) - 2) * s * math.sqrt(1 + leverage)
    centre = intercept + slope * math.log(640)
    assert (math.log(estimate), math.log(low), math.log(high)) == pytest.approx(
        (centre, centre - half, centre + half), abs=2e-3)


def test_both_clocks_are_predicted_from_their_groups_censored_fit(records):
    result = predict.predict(records, {"n_train": "1024"})
    rule, mem = result["predictions"]
    assert (rule.clock, mem.clock) == ("tau_rule", "tau_mem") and {rule.against, mem.against} == {"n_train"}
    assert mem.fit.n == len(NS) * 3 and mem.group["task"] == "parity:h=4,w=4,g=2" and mem.x == 1024
    assert mem.lo <= 4 * 1024**0.9 <= mem.hi and rule.lo <= 50 <= rule.hi
    assert mem.fit.alpha_lo <= 0.9 <= mem.fit.alpha_hi


def test_the_budget_is_the_later_clocks_upper_end_times_the_safety_factor(records):
    result = predict.predict(records, {"n_train": "1024"}, safety=2.0)
    mem = result["predictions"][1]
    assert result["budget"] == {"steps": math.ceil(2.0 * mem.hi), "safety": 2.0, "clock": "tau_mem",
                                "upper_end": mem.hi}


def test_predict_json_holds_the_predictions_fits_and_budget(store, capsys):
    assert main(["predict", str(store), "--set", "n_train=1024", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [p["clock"] for p in found["predictions"]] == ["tau_rule", "tau_mem"]
    assert found["predictions"][1]["fit"]["n"] == len(NS) * 3 and found["settings"] == {"n_train": "1024"}
    assert found["budget"]["safety"] == predict.SAFETY and found["skipped"] == {}


@pytest.mark.parametrize("argv, message", [
    (["--set", "n_tran=1024"], "unknown config key 'n_tran' (did you mean 'n_train'?)"),
    (["--set", "n_train=1024", "--set", "task=parity:h=4,w=4,g=4"], "no group of runs that varies N"),
    (["--set", "n_train=1024", "--set", "depth=8"], "no group of runs that varies N"),
    (["--set", "n_train=many"], "n_train expects int"),
    (["--set", "n_train=1024", "--check"], "give either --set"),
])
def test_what_cannot_be_predicted_is_refused_in_one_line(store, capsys, argv, message):
    assert main(["predict", str(store), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_store_whose_runs_share_one_n_has_no_fit_to_predict_from(tmp_path, capsys):
    write_store(tmp_path / "store", ns=(64,))
    assert main(["predict", str(tmp_path / "store"), "--set", "n_train=1024"]) == 2
    assert "no group of runs has more than one value of N, complexity, depth or width" in capsys.readouterr().err


def test_a_width_not_run_yet_is_predicted_from_the_other_widths_at_its_n(tmp_path):
    records = run_records(load_rows(write_store(tmp_path / "store", ns=(32, 64), widths=(16, 32, 64))))
    result = predict.predict(records, {"n_train": "64", "width": "128"})
    mem = result["predictions"][1]
    assert (mem.clock, mem.against, mem.x, mem.group["n_train"]) == ("tau_mem", "width", 128, 64)
    assert mem.fit.alpha_hi < 0 and mem.lo <= 4 * 64**0.9 / 2 <= mem.hi
    # a width that has runs is predicted along N first, the plan's first axis
    assert predict.predict(records, {"n_train": "128", "width": "64"})["predictions"][1].against == "n_train"


def test_a_store_with_no_finished_run_is_refused(tmp_path, capsys):
    with RunStore(tmp_path / "store", write=True) as store:
        config = RunConfig().resolved()
        store.add({config.key(): config.to_dict()})
    assert main(["predict", str(tmp_path / "store"), "--set", "n_train=1024"]) == 2
    assert "the store has no finished run" in capsys.readouterr().err


def test_a_group_too_small_for_an_interval_says_so(records):
    few = [r for r in records if r.seed == 0][:3]
    with pytest.raises(ValueError, match="at least 4 runs"):
        predict.predict(few, {"n_train": "1024"})


def test_a_new_run_that_matches_several_groups_is_asked_for_the_fields_that_differ(records):
    both = records + [dataclasses.replace(r, arch="dit") for r in records]
    with pytest.raises(ValueError, match="2 groups of runs match; set arch"):
        predict.predict(both, {"n_train": "1024"})


def test_check_json_holds_the_summary_and_every_prediction(store, capsys):
    assert main(["predict", str(store), "--check", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [item["clock"] for item in found["summary"]] == ["tau_mem", "tau_rule"]
    assert len(found["runs"]) == 2 * len(NS) * 3


def test_check_predicts_every_run_from_the_others_of_its_group(records):
    rows = predict.leave_one_out(records)
    assert len(rows) == 2 * len(records)  # tau_mem and tau_rule against N
    assert all(row["note"] == "" and row["log10_error"] is not None for row in rows)  # all measured
    (mem,) = [item for item in predict.check_summary(rows) if item["clock"] == "tau_mem"]
    assert mem["predicted"] == len(records) and mem["coverage"] >= 0.8 and mem["median_log10_error"] < 0.15


def test_check_counts_a_censored_run_as_covered_when_the_interval_reaches_past_its_last_step():
    never = predict.judged(Clock(None, "right", 400, (400.0, None)),
                           predict.Prediction("tau_mem", "n_train", 64, 300.0, 200.0, 450.0, 0.95, {}, None))
    assert never["covered"] and never["log10_error"] is None


def test_predict_console_snapshot(store, capsys):
    """What `innovwin predict` prints: a line per clock (estimate, interval, the fit and its group), the budget;
    and with --check, a line per fit."""
    assert main(["predict", str(store), "--set", "n_train=1024"]) == 0
    assert main(["predict", str(store), "--check"]) == 0
    assert capsys.readouterr().out == PREDICT_OUT


PREDICT_OUT = (
    "τ_rule ≈ 47 steps (95% prediction interval 28 to 80), from τ_rule against N: no measurable trend "
    "(α -0.01 [-0.14, 0.11]; 15 runs)  [task parity:h=4,w=4,g=2, arch gpt, depth 2, width 64]\n"
    "τ_mem ≈ 2179 steps (95% prediction interval 1411 to 3365), from τ_mem ∝ N^0.94 [0.83, 1.05] (15 runs)  "
    "[task parity:h=4,w=4,g=2, arch gpt, depth 2, width 64]\n"
    "suggested budget: steps = 5048 (τ_mem's upper end 3365 x safety 1.5)\n"
    "τ_mem against N: 14 of 15 runs inside their 95% prediction interval (93%); median |log10 error| 0.05 (x1.12) "
    "over 15 measured runs\n"
    "τ_rule against N: 14 of 15 runs inside their 95% prediction interval (93%); median |log10 error| 0.05 (x1.11) "
    "over 15 measured runs\n")


def study(name):
    """A script of docs/studies, imported by path (and registered, as its dataclasses need)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "studies" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"studies_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_predictions_saved_before_runs_are_judged_against_the_runs(store, tmp_path, capsys):
    """A prediction of N = 1024 saved as `predict --json` prints, then three seeds of it measured: every row is
    judged, and a clock placed far outside the interval is a miss."""
    assert main(["predict", str(store), "--set", "n_train=1024", "--json"]) == 0
    saved = tmp_path / "n1024.json"
    saved.write_text(capsys.readouterr().out)
    later = write_store(tmp_path / "later", ns=(1024,), seed=5)
    assert study("predicted_vs_measured").main([str(saved), "--store", str(later), "--out", str(tmp_path / "t")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert len(rows) == 6 and {row["clock"] for row in rows} == {"tau_rule", "tau_mem"}
    hits = sum(row["covered"] for row in rows)
    text = (tmp_path / "t.md").read_text()
    assert f"Hit rate: {hits} of 6 measured clocks" in text and "- predicted along N: " in text

    far = tmp_path / "far.json"  # the same prediction, its tau_mem interval moved a decade up: every run misses it
    found = json.loads(saved.read_text())
    for prediction in found["predictions"]:
        if prediction["clock"] == "tau_mem":
            prediction.update(estimate=prediction["estimate"] * 10, lo=prediction["lo"] * 10, hi=prediction["hi"] * 10)
    far.write_text(json.dumps(found))
    study("predicted_vs_measured").main([str(far), "--store", str(later), "--out", str(tmp_path / "f")])
    rows = json.loads((tmp_path / "f.json").read_text())
    assert [row["covered"] for row in rows if row["clock"] == "tau_mem"] == [False] * 3


def test_the_exact_copy_study_fits_tau_mem_both_ways(tmp_path):
    """Runs whose summaries hold tau_mem_exact: both clocks per run and one censored fit per clock."""
    with RunStore(tmp_path / "s", write=True) as writer:
        for n in (32, 64, 128, 256):
            config = RunConfig(task="parity:h=4,w=4,g=2", n_train=n, steps=STEPS).resolved()
            summary = {"tau_rule": clock_json(50), "tau_mem": clock_json(4 * n), "tau_mem_exact": clock_json(3 * n),
                       "final": {"step": STEPS}}
            writer.add({config.key(): config.to_dict()})
            writer.claim(config.key())
            writer.finish(config.key(), summary)
    assert study("exact_copy").main([str(tmp_path / "s"), "--out", str(tmp_path / "e")]) == 0
    found = json.loads((tmp_path / "e.json").read_text())
    assert len(found["runs"]) == 4
    assert {fit["clock"] for fit in found["fits"]} == {"tau_mem", "tau_mem_exact"}
    assert all(0.5 < fit["ml_alpha"] < 1.5 for fit in found["fits"])


def test_the_dit_width_study_fits_alpha_per_width_and_its_trend(tmp_path):
    """DiT runs whose tau_mem = 20 N^alpha(W), alpha(W) = 1 + 0.3 log2(W / 32), with scatter: one fit per width and
    per N, alpha rising by about 0.3 a doubling, the figure written."""
    rng = np.random.default_rng(3)
    with RunStore(tmp_path / "s", write=True) as writer:
        for n, width, seed in itertools.product((4, 8, 16, 32), (32, 64, 128), (0, 1, 2)):
            config = RunConfig(arch="dit", task="parity:h=4,w=4,g=2", n_train=n, width=width, seed=seed,
                               steps=STEPS).resolved()
            alpha = 1 + 0.3 * math.log2(width / 32)
            summary = {"tau_rule": clock_json(STEPS * 2), "final": {"step": STEPS},
                       "tau_mem": clock_json(20 * n**alpha * math.exp(rng.normal(0, 0.1)))}
            writer.add({config.key(): config.to_dict()})
            writer.claim(config.key())
            writer.finish(config.key(), summary)
    assert study("dit_width").main([str(tmp_path / "s"), "--out", str(tmp_path / "w")]) == 0
    found = json.loads((tmp_path / "w.json").read_text())
    alphas = {fit["width"]: fit["ml_alpha"] for fit in found["against_n"]}
    assert sorted(alphas) == [32, 64, 128] and alphas[32] < alphas[64] < alphas[128]
    assert len(found["against_width"]) == 4  # one per N
    trend = found["trend"]
    assert trend["per_doubling_lo"] < 0.3 < trend["per_doubling_hi"] and trend["per_doubling_lo"] > 0
    assert trend["alpha_lo"] < 1.9 < trend["alpha_hi"]  # alpha(256) = 1 + 0.3 * 3
    assert (tmp_path / "w.png").stat().st_size > 0 and "per doubling" in (tmp_path / "w.md").read_text()


def test_the_depth_study_compares_censored_runs_exactly(tmp_path):
    """Every run at one depth learns, none at the other: the exact log-rank p is the two most extreme splits of
    the twelve runs (2 / C(12, 6)) and the deeper depth 'falls'; the same runs at both depths are 'unresolved'."""
    module = study("depth_verdict")
    never = [module.Run(1, seed, None, 6000, 6000.0, math.inf, "test") for seed in range(6)]
    learned = [module.Run(2, seed, 1000.0 + 100 * seed, 6000, 900.0, 1100.0 + 100 * seed, "test")
               for seed in range(6)]
    row = module.compare(never, learned)
    assert row["p_exact"] == pytest.approx(2 / math.comb(12, 6)) and row["verdict"] == "falls"
    assert row["learned_by_budget"] == [0, 6] and row["alpha"] is None  # no fit where a depth never learned
    same = module.compare([dataclasses.replace(r, depth=1) for r in learned], learned)
    assert same["p_exact"] == 1.0 and same["verdict"] == "unresolved" and same["alpha_lo"] < 0 < same["alpha_hi"]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps([{"depth": 3, "seed": 0, "tau_rule": 1716, "last_step": 6000}]))
    (run,) = module.earlier_runs(earlier)
    assert run.lo < 1716 <= run.hi and run.hi / run.lo < 10 ** (1 / 8) + 1e-9  # the grid's bracket
