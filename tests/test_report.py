"""The report on a store of synthetic runs whose clocks follow known laws.

tau_mem = 3 N^0.9 (times 10% log-normal noise) and tau_rule = 40 G^2.5 (x 2 for GPT): the fits
must recover both exponents within their bootstrap intervals, censored runs must stay out of
them, and every table and figure must be written. One behaviour per test, on the records, fits and headline
lines; the console prose of `innovwin report` and `innovwin runs` is pinned once each (test_*_console_snapshot).
"""
import csv
import dataclasses
import html
import json
import math

import numpy as np
import pytest
from matplotlib.markers import MarkerStyle

from innovwin.analysis import clocks
from innovwin.analysis.fits import fit_all, fit_groups, fit_power_law
from innovwin.analysis.records import RunRecord, Stop, config_variants, run_records
from innovwin.config import RunConfig
from innovwin.report import seeds
from innovwin.report.build import build_report, findings
from innovwin.report.page import rendered_run
from innovwin.report.scaling_figures import arch_pairs, plot_arch_pairs, plot_tau_vs_n
from innovwin.report.tables import RUN_COLUMNS, run_row
from innovwin.store.runstore import RunStore

ALPHA_MEM, ALPHA_RULE = 0.9, 2.5
NS = (64, 128, 256, 512, 1024, 2048)
STEPS = 2000


def synthetic_metrics(tau_rule, tau_mem, chance):
    """Log-spaced evaluation rows whose curves cross their thresholds (0.9 and 0.1) at the given clocks."""
    rows = []
    for step in np.unique(np.geomspace(10, STEPS, 25).astype(int)):
        s_rule, s_mem = (step / tau_rule) ** 4, (step / tau_mem) ** 3
        valid = 9 * s_rule / (1 + 9 * s_rule)
        copy = chance + 0.6 * s_mem / (5 + s_mem)
        rows.append({"step": int(step), "train_loss": 1.0, "valid_frac": valid, "constraint_frac": valid,
                     "copy_frac": copy, "chance_copy": chance, "near_copy_frac": copy, "ratio_copy_frac": None,
                     "novel_valid_frac": valid * (1 - copy), "unique_frac": 1.0, "mean_nn_dist": 3.0,
                     "heldout_loss": 1.0, "train_eval_loss": 1.0, "eval_seconds": 0.1, "n_samples": 256})
    return rows


def make_store(path):
    rng = np.random.default_rng(0)
    with RunStore(path, write=True) as store:
        for arch in ("dit", "gpt"):
            for g in (2, 3):
                for n in NS:
                    for seed in (0, 1, 2):
                        config = RunConfig(task=f"parity:h=6,w=6,g={g}", n_train=n, arch=arch, seed=seed,
                                           steps=STEPS).resolved()
                        key = config.key()
                        tau_mem = 3 * n ** ALPHA_MEM * math.exp(rng.normal(0, 0.1))
                        tau_rule = 40 * g ** ALPHA_RULE * (2 if arch == "gpt" else 1) * math.exp(rng.normal(0, 0.1))
                        rows = synthetic_metrics(tau_rule, tau_mem, chance=n / 2 ** (36 - 36 // g))
                        summary = clocks.summarize(rows, rule_threshold=0.9, mem_threshold=0.1)
                        summary.update(final=rows[-1], config=config.to_dict(),
                                       timing={"steps_per_s": 100.0, "eval_share": 0.2, "wall_s": 50.0})
                        store.add({key: config.to_dict()})
                        store.claim(key)
                        store.finish(key, summary)
                        if seed == 0 and n in (64, 2048):  # curves for a few runs keep the test fast
                            run_dir = store.run_dir(key)
                            run_dir.mkdir(parents=True)
                            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run_dir / "basins_step_00000100.png").write_bytes(b"\x89PNG fake")
        store.add({"queued-run": RunConfig(seed=99).resolved().to_dict()})
    return store


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The store of make_store, its records and fits, and its report (built once for the tests below)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_store(root / "store")
    index = build_report(root / "store", root / "out", n_boot=200)
    with RunStore(root / "store") as store:
        rows = store.rows()
    records = run_records(rows)
    return {"rows": rows, "records": records, "fits": fit_all(records, n_boot=200), "out": root / "out",
            "index": index, "lines": findings(rows, n_boot=200)}


def fits_of(synthetic, clock, against):
    return [f for f in synthetic["fits"] if f["clock"] == clock and f["against"] == against]


def test_mem_fits_recover_the_exponent_within_their_interval(synthetic):
    fits = fits_of(synthetic, "tau_mem", "n_train")
    assert sorted((f["task"], f["arch"]) for f in fits) == [(f"parity:h=6,w=6,g={g}", arch) for g in (2, 3)
                                                            for arch in ("dit", "gpt")]
    assert all(f["alpha_lo"] <= ALPHA_MEM <= f["alpha_hi"] and f["alpha_hi"] - f["alpha_lo"] < 0.3 for f in fits)


def test_clocks_past_the_last_step_are_counted_not_fitted(synthetic):
    # the largest N memorize past the last step: censored, counted, and left out of the least-squares fit
    fits = fits_of(synthetic, "tau_mem", "n_train")
    assert all(f["n_censored"] > 0 and f["n_points"] + f["n_censored"] == 3 * len(NS) for f in fits)


def test_the_censored_fit_takes_every_run_and_recovers_the_exponent(synthetic):
    fits = fits_of(synthetic, "tau_mem", "n_train")
    assert all(f["ml_n"] == 3 * len(NS) and f["ml_n_right"] == f["n_censored"] for f in fits)
    assert all(f["ml_alpha_lo"] <= ALPHA_MEM <= f["ml_alpha_hi"] for f in fits)


def test_rule_fits_against_complexity_recover_the_exponent(synthetic):
    fits = fits_of(synthetic, "tau_rule", "complexity")
    assert [f["arch"] for f in fits] == ["dit", "gpt"]
    assert all(f["alpha_lo"] <= ALPHA_RULE <= f["alpha_hi"] for f in fits)


def test_records_are_the_finished_runs_each_read_once(synthetic):
    records = synthetic["records"]
    assert len(records) == 2 * 2 * len(NS) * 3  # done runs only: the queued one has no record
    assert all(isinstance(r, RunRecord) and r.config.key() == r.key for r in records)
    assert {r.variant for r in records} == {""}  # nothing varies but the axes and the seeds
    assert {(r.family, r.complexity_label) for r in records} == {("parity:h=6,w=6", "g")}


def test_windows_open_close_and_stay_open_at_the_end(synthetic):
    kinds = {r.window.kind for r in synthetic["records"]}
    assert {"open", "open at the end", "closed"} <= kinds
    at_the_end = [r.window for r in synthetic["records"] if r.window.kind == "open at the end"]
    assert all(w.width is not None and w.width_is_bound for w in at_the_end)


def test_runs_csv_has_one_row_per_record_in_its_columns(synthetic):
    with open(synthetic["out"] / "runs.csv") as handle:
        reader = csv.DictReader(handle)
        runs = list(reader)
    assert tuple(reader.fieldnames) == RUN_COLUMNS
    assert [r["key"] for r in runs] == [r.key for r in synthetic["records"]]
    assert (synthetic["out"] / "runs.md").read_text().count("\n") == len(runs) + 2


def test_runs_csv_flattens_censoring_into_its_two_columns(synthetic):
    rows = [run_row(r) for r in synthetic["records"]]
    at_the_end = [row for row, r in zip(rows, synthetic["records"]) if r.window.kind == "open at the end"]
    assert at_the_end and all(row["tau_mem_censored"] and not row["tau_mem_at_first_eval"] and row["tau_mem"] is None
                              for row in at_the_end)


def test_the_report_draws_every_figure(synthetic):
    out = synthetic["out"]
    for name in ("tau_vs_n", "tau_rule", "window_map", "arch_pairs", "alpha_sensitivity"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG" and (out / f"{name}.svg").exists(), name
    assert len(list((out / "curves").glob("*.png"))) == 2 * 2 * 2  # the runs with metrics.jsonl


def test_the_report_copies_the_basin_figures(synthetic):
    assert [path.name.split("_", 1)[1] for path in (synthetic["out"] / "basins").glob("*.png")] == [
        "basins_step_00000100.png"]


def test_seeds_table_has_one_row_per_cell(synthetic):
    assert (synthetic["out"] / "seeds.md").read_text().count("\n") == 2 * 2 * len(NS) + 2  # cells of 3 seeds


def test_headline_gives_the_censored_fits_alpha_per_group_then_windows_then_runs(synthetic):
    lines = synthetic["lines"]
    assert lines == (synthetic["out"] / "headline.txt").read_text().splitlines()
    alphas = [line.split("  [")[0] for line in lines if line.startswith("τ_mem ∝ N^")]
    assert alphas == [f"τ_mem ∝ N^{f['ml_alpha']:.2f} [{f['ml_alpha_lo']:.2f}, {f['ml_alpha_hi']:.2f}] "
                      f"({f['ml_n']} runs, {f['ml_n_right'] + f['ml_n_left']} censored)"
                      for f in fits_of(synthetic, "tau_mem", "n_train")]
    (windows,) = [line for line in lines if line.startswith("windows: ")]
    counted = [int(part.split()[0]) for part in windows[len("windows: "):].split(";")[0].split(", ")]
    assert sum(counted) == len(synthetic["records"])
    assert lines[-1] == f"runs: {len(synthetic['records'])} finished, 0 failed, 1 not run yet"


def test_a_slope_whose_interval_covers_zero_reads_as_no_measurable_trend(synthetic):
    # tau_rule does not depend on N in these runs: every group's interval covers 0
    trends = [line for line in synthetic["lines"] if line.startswith("τ_rule against N: no measurable trend (α ")]
    assert len(trends) == len(fits_of(synthetic, "tau_rule", "n_train")) == 4


def test_the_report_checks_each_run_against_the_others_fits(synthetic):
    with open(synthetic["out"] / "predict_check.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * len(synthetic["records"])  # tau_mem and tau_rule against N, tau_rule against complexity
    assert sum(row["covered"] == "True" for row in rows) >= 0.85 * len(rows)
    assert "How well do the fits predict a run they have not seen?" in synthetic["index"].read_text()


def test_captions_and_definitions_say_what_is_drawn(synthetic):
    page = synthetic["index"].read_text()
    assert "least-squares power laws" not in page and "censored maximum-likelihood power laws" in page
    assert "joined with a paired bootstrap over the generated samples" in page


def test_the_page_opens_with_the_headline_and_links_every_table(synthetic):
    page = synthetic["index"].read_text()
    alpha = next(line for line in synthetic["lines"] if line.startswith("τ_mem ∝ N^"))
    assert page.index("id='headline'") < page.index("<img") and html.escape(alpha) in page
    assert "validity ≥ 0.9 and stays so at the next one" in page and "by ≥ 0.1" in page
    for name in ("tau_vs_n.png", "window_map.png", "curves/", "basins/", "fits.csv", "1 queued", "seeds.csv"):
        assert name in page, name


def test_power_law_fit_interval_and_bad_input():
    rng = np.random.default_rng(1)
    x = np.repeat([10.0, 30.0, 100.0, 300.0, 1000.0], 4)
    y = 2.0 * x ** 1.3 * np.exp(rng.normal(0, 0.05, x.size))
    fit = fit_power_law(x, y, n_boot=500, seed=0)
    assert fit.alpha_lo <= 1.3 <= fit.alpha_hi and abs(fit.alpha - 1.3) < 0.05
    assert fit.alpha_lo < fit.alpha < fit.alpha_hi
    assert fit.predict([10.0])[0] == pytest.approx(2.0 * 10 ** 1.3, rel=0.2)
    with pytest.raises(ValueError, match="2 distinct"):
        fit_power_law([5, 5, 5], [1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1, 2, 3], [1, 0, 3])


def record_of(config, rows, **summary_changes):
    """The record of a finished run of ``config`` whose evaluations are ``rows``, read as the report reads it."""
    summary = {**clocks.summarize(rows, rule_threshold=config.rule_threshold, mem_threshold=config.mem_threshold),
               "final": rows[-1], **summary_changes}
    (found,) = run_records([{"key": config.key(), "config": config.to_dict(), "status": "done", "summary": summary,
                             "run_dir": "no-such-directory"}])
    return found


def add_run(store, config, rows, **summary_changes):
    """A finished run whose summary is clocks.summarize's on ``rows`` (with ``summary_changes``)."""
    summary = clocks.summarize(rows, rule_threshold=config.rule_threshold, mem_threshold=config.mem_threshold)
    summary.update(final=rows[-1], config=config.to_dict(), **summary_changes)
    store.add({config.key(): config.to_dict()})
    store.claim(config.key())
    store.finish(config.key(), summary)


def test_groups_with_too_few_measured_points_say_so():
    records = [record_of(RunConfig(n_train=n, steps=STEPS).resolved(),
                         synthetic_metrics(20.0, 10.0 * n if n < 100 else 1e6, chance=0.0)) for n in (10, 100, 1000)]
    (row,) = fit_groups(records, "tau_mem", "n_train", ("arch",))
    assert row["alpha"] is None and row["n_censored"] == 2 and "distinct" in row["note"]
    # an axis that does not vary is not a fit to make
    assert fit_groups(records, "tau_mem", "arch", ("n_train",)) == []


def test_report_of_a_missing_or_corrupt_store(tmp_path):
    with pytest.raises(ValueError, match="not a run store"):
        build_report(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "runs.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ValueError, match="unreadable"):
        build_report(tmp_path / "bad", tmp_path / "out")


def test_report_of_a_store_with_no_finished_run(tmp_path):
    with RunStore(tmp_path / "store", write=True) as store:
        store.add({"queued-run": RunConfig(seed=99).resolved().to_dict()})
    index = build_report(tmp_path / "store", tmp_path / "out", n_boot=50)
    page = index.read_text()
    assert "no finished run" in page
    assert not list((tmp_path / "out").glob("*.png"))


def test_clocks_crossed_at_the_first_evaluation_are_upper_bounds_not_fitted():
    # tau_mem <= 10 (the first evaluation) at N = 64 and 128: upper bounds, not measurements; fitted as if
    # they were, they would pull alpha towards 0. Only N = 256 ... 1024 are measured.
    rng = np.random.default_rng(0)
    records = []
    for n in NS[:-1]:
        config = RunConfig(task="parity:h=6,w=6,g=2", n_train=n, arch="gpt", steps=STEPS).resolved()
        tau_mem = 0.5 if n < 256 else 3 * n ** ALPHA_MEM * math.exp(rng.normal(0, 0.05))
        records.append(record_of(config, synthetic_metrics(20.0, tau_mem, chance=0.0)))
    assert [r.mem.censoring for r in records] == ["left", "left", None, None, None]
    (fit,) = fit_groups(records, "tau_mem", "n_train", ("arch",), n_boot=100)
    assert (fit["n_points"], fit["n_censored"]) == (3, 2)
    assert fit["alpha"] == pytest.approx(ALPHA_MEM, abs=0.15)
    assert "2 crossed at the first evaluation" in fit["note"]


def test_a_clock_crossed_at_the_first_evaluation_reads_as_at_most_that_step():
    config = RunConfig(task="parity:h=6,w=6,g=2", n_train=64, arch="gpt", steps=STEPS).resolved()
    record = record_of(config, synthetic_metrics(20.0, 0.5, chance=0.0))
    assert rendered_run(record)["τ_mem"] == "<= 10 [0, 10]"
    assert (run_row(record)["tau_mem_at_first_eval"], run_row(record)["tau_mem_censored"]) == (True, False)


def complexity_records():
    # majority-of-3 and weight-2-of-4 are both "rule" tasks (complexity 3 and 4) but different rules
    tasks = ("parity:h=6,w=6,g=2", "parity:h=6,w=6,g=3", "rule:h=6,w=6,g=3,pred=majority",
             "rule:h=6,w=6,g=4,pred=weight,k=2")
    return [record_of(RunConfig(task=task, n_train=256, arch="gpt", seed=seed, steps=STEPS).resolved(),
                      synthetic_metrics(30.0 * (index + 1) * (seed + 1), 1500.0, chance=0.0))
            for index, task in enumerate(tasks) for seed in (0, 1)]


def test_complexity_fits_pool_only_tasks_that_differ_in_their_complexity():
    # no tau_rule-vs-complexity fit may pool two different rules; parity at G = 2 and 3 on the same grid is one fit
    fits = [f for f in fit_all(complexity_records(), n_boot=20) if f["against"] == "complexity"]
    assert [(f["family"], f["n_points"]) for f in fits] == [("parity:h=6,w=6", 4)]


def test_both_clocks_crossed_at_the_first_evaluation_leave_the_window_unresolved():
    # their order is unknown, even in a summary an older version called "closed"
    config = RunConfig(task="parity:h=6,w=6,g=2", n_train=64, arch="gpt", steps=STEPS).resolved()
    record = record_of(config, synthetic_metrics(0.5, 0.5, chance=0.0), window_state="closed")
    assert record.window.state == "unresolved" and "both clocks crossed" in record.window.reason


def test_a_window_opened_at_the_first_evaluation_has_a_lower_bound_for_its_width():
    config = RunConfig(task="parity:h=6,w=6,g=2", n_train=128, arch="gpt", steps=STEPS).resolved()
    record = record_of(config, synthetic_metrics(0.5, 500.0, chance=0.0))
    assert (record.window.state, record.window.width_is_bound) == ("open", True)
    assert "lower bound" in record.window.reason
    assert rendered_run(record)["window"] == "open, ≥ 1.69 decades (x49.5)"


def drawn_markers(figure):
    """{(x, y): marker vertices} of every scatter point in ``figure``."""
    return {tuple(offset): collection.get_paths()[0].vertices.round(6).tobytes()
            for ax in figure.axes for collection in ax.collections for offset in collection.get_offsets()}


def first_evaluation_records():
    # tau_mem <= 10 at N = 64 (the first evaluation); the clocks at N = 256 are measured
    return [record_of(RunConfig(task="parity:h=6,w=6,g=2", n_train=n, arch=arch, steps=STEPS).resolved(),
                      synthetic_metrics(100.0, 0.5 if n == 64 else 1000.0, chance=0.0))
            for arch in ("dit", "gpt") for n in (64, 256)]


def bound_marker():
    bound = MarkerStyle("v")
    return bound.get_path().transformed(bound.get_transform()).vertices.round(6).tobytes()


def test_clocks_crossed_at_the_first_evaluation_are_drawn_as_upper_bounds_against_n():
    records = first_evaluation_records()
    figure = plot_tau_vs_n(records, fit_all(records, n_boot=0))
    assert [xy for xy, marker in drawn_markers(figure).items() if marker == bound_marker()] == [(64, 10)]
    assert any("first evaluation" in text.get_text() for text in figure.axes[0].get_legend().get_texts())


def test_clocks_crossed_at_the_first_evaluation_are_drawn_as_upper_bounds_in_arch_pairs():
    markers = drawn_markers(plot_arch_pairs(first_evaluation_records(), []))
    assert [xy for xy, marker in markers.items() if marker == bound_marker()] == [(10, 10)]


def test_config_variants_name_the_fields_that_vary_besides_axes_and_bookkeeping():
    base = RunConfig().resolved().to_dict()
    pooled = [{**base, "seed": 1, "data_seed": 7, "steps": 5000, "eval_samples": 64, "device": "cpu"}, base]
    assert config_variants(pooled) == ["", ""]
    swept = [{**base, "lr": 0.003, "batch": 128}, {**base, "mem_threshold": 0.2}, base]
    assert config_variants(swept) == ["batch=128 lr=0.003 mem_threshold=0.1", "batch=64 lr=0.001 mem_threshold=0.2",
                                      "batch=64 lr=0.001 mem_threshold=0.1"]


@pytest.fixture(scope="module")
def two_rates(tmp_path_factory):
    """Two learning rates, with tau_mem 3x earlier at the larger one; steps (which grows with N, as in the
    presets) only sets where a run stops, and is pooled. Returns (records, the report's directory)."""
    root = tmp_path_factory.mktemp("two_rates")
    with RunStore(root / "store", write=True) as store:
        for arch in ("dit", "gpt"):
            for lr in (0.001, 0.003):
                for n in (64, 256, 1024):
                    config = RunConfig(task="parity:h=6,w=6,g=2", n_train=n, arch=arch, lr=lr,
                                       steps=STEPS + n).resolved()
                    rows = synthetic_metrics(100.0, 3 * n ** ALPHA_MEM * (0.001 / lr), chance=0.0)
                    add_run(store, config, rows)
                    store.run_dir(config.key()).mkdir(parents=True)
                    (store.run_dir(config.key()) / "metrics.jsonl").write_text(
                        "".join(json.dumps(r) + "\n" for r in rows))
        records = run_records(store.rows())
    build_report(root / "store", root / "out", n_boot=20)
    return records, root / "out"


def test_runs_that_differ_in_a_swept_field_have_that_variant(two_rates):
    records, _ = two_rates
    assert {r.variant for r in records} == {"lr=0.001", "lr=0.003"}


def test_arch_pairs_pair_runs_of_one_variant_only(two_rates):
    pairs = arch_pairs(two_rates[0])
    assert len(pairs) == 2 * 3 and all(dit.variant == gpt.variant for dit, gpt in pairs)


def test_runs_that_differ_in_a_swept_field_are_fitted_apart(two_rates):
    fits = [f for f in fit_all(two_rates[0], n_boot=20) if f["clock"] == "tau_mem"]
    assert sorted((f["arch"], f["variant"], f["n_points"]) for f in fits) == [
        ("dit", "lr=0.001", 3), ("dit", "lr=0.003", 3), ("gpt", "lr=0.001", 3), ("gpt", "lr=0.003", 3)]


def test_the_threshold_refits_group_as_the_fits_do(two_rates):
    _, out = two_rates
    with open(out / "fits.csv") as handle:
        fits = [f for f in csv.DictReader(handle) if f["clock"] == "tau_mem"]
    with open(out / "alpha_sensitivity.csv") as handle:
        refits = [f for f in csv.DictReader(handle) if float(f["threshold"]) == 0.1]
    assert sorted((f["arch"], f["variant"]) for f in refits) == sorted((f["arch"], f["variant"]) for f in fits)


def test_the_page_shows_a_variant_column_when_a_field_varies(two_rates):
    assert "<td>lr=0.003</td>" in (two_rates[1] / "index.html").read_text()


def test_seeds_table_gives_each_cells_seeds_spread_and_verdict(synthetic):
    cells = seeds.seed_rows(synthetic["records"])
    assert len(cells) == 2 * 2 * len(NS) and all(cell["seeds"] == 3 for cell in cells)
    cell = cells[0]
    values = [float(v) for v in cell["tau_mem_seeds"].split(", ")]
    assert cell["tau_mem_median"] == f"{np.median(values):.0f}"
    assert cell["tau_mem_range"] == f"{min(values):.0f} - {max(values):.0f}"


def test_seeds_that_disagree_leave_the_cell_unresolved():
    # a clock never crossed reads as beyond the last step
    base = record_of(RunConfig(n_train=64, steps=100).resolved(), synthetic_metrics(50.0, 80.0, chance=0.0)[:1])
    records = [dataclasses.replace(base, seed=seed, rule=clocks.Clock(50.0, None, 100),
                                   mem=clocks.Clock(None, "right", 100) if seed else clocks.Clock(80.0, None, 100),
                                   window=clocks.Window(state), last_step=100)
               for seed, state in enumerate(("closed", "open", "open"))]
    (row,) = seeds.seed_rows(records)
    assert row["verdict"] == "unresolved" and row["verdicts"] == "closed x1, open x2"
    assert row["tau_mem_seeds"] == "80, > 100, > 100" and row["tau_mem_median"] == "> 100"
    assert row["tau_mem_range"] == "80 - > 100"
    assert seeds.cell_verdict(records[1:]) == "open"


def write_run_dir(path):
    """A finished run directory whose clocks are set at 150 and 900 (no per-sample arrays: the intervals are the
    brackets of the evaluations around each crossing)."""
    config = RunConfig(n_train=64, steps=STEPS).resolved()
    path.mkdir()
    rows = synthetic_metrics(tau_rule=150.0, tau_mem=900.0, chance=64 / 2 ** 18)
    (path / "config.json").write_text(json.dumps({**config.to_nested(), "key": config.key()}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {**clocks.summarize(rows), "final": rows[-1], "config": config.to_dict()}
    (path / "summary.json").write_text(json.dumps(summary))
    return config


def test_report_console_snapshot(tmp_path, capsys):
    """`innovwin report RUN_DIR`: the findings in the terminal, then where the page is."""
    from innovwin.cli import main

    write_run_dir(tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.replace(str(tmp_path), "TMP") == (
        "findings:\n"
        "  τ_rule 153 [141, 176]\n"
        "  τ_mem 890 [827, 1031]\n"
        "  window open, 0.77 decades (x5.8)\n"
        "report: TMP/out/index.html\n")


def test_report_of_one_run_directory_shows_its_settings_and_curves(tmp_path):
    config = write_run_dir(tmp_path / "run")
    page = build_report(tmp_path / "run", tmp_path / "out", n_boot=0).read_text()
    assert "Run directory" in page and "<h2>Settings</h2>" in page and "optim.lr" in page
    assert (tmp_path / "out" / "curves" / f"{config.key()}.png").exists()


def test_report_of_a_missing_directory_exits_2(tmp_path):
    from innovwin.cli import main

    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2


def test_runs_console_snapshot(tmp_path, capsys):
    """`innovwin runs STORE`: a count line, then per run its name, status, attempts, clocks or error, and
    directory."""
    from innovwin.cli import main

    with RunStore(tmp_path / "store", write=True) as store:
        for seed in (0, 1, 2):
            config = RunConfig(n_train=64, steps=STEPS, seed=seed).resolved()
            if seed == 0:
                add_run(store, config, synthetic_metrics(150.0, 900.0, chance=0.0))
            elif seed == 1:
                store.add({config.key(): config.to_dict()})
                store.claim(config.key())
                store.fail(config.key(), "Traceback ...\nRuntimeError: out of memory\n")
            else:
                store.add({config.key(): config.to_dict()})
        keys = {row["config"]["seed"]: row["key"] for row in store.rows()}
    assert main(["runs", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out.replace(str(tmp_path), "TMP")
    for seed, key in keys.items():
        out = out.replace(key, f"KEY{seed}")
    assert out == (
        "TMP/store: 3 runs, 1 done, 0 running, 1 queued, 1 failed\n"
        "seed=0  done    attempts 1  τ_rule 153 [141, 176] · τ_mem 890 [827, 1031] · window open, 0.77 decades (x5.8)\n"
        "        TMP/store/runs/KEY0\n"
        "seed=1  failed  attempts 1  error: RuntimeError: out of memory\n"
        "        TMP/store/runs/KEY1\n"
        "seed=2  queued  attempts 0  \n"
        "        TMP/store/runs/KEY2\n")


@pytest.fixture(scope="module")
def tau_vs_n_axes():
    """tau_vs_n's panel for four distinct N at g=2 and two at g=3, each run's tau_rule interval [80, 120] and its
    tau_mem interval open above."""
    records = []
    for g, ns in ((2, (64, 128, 256, 1024)), (3, (64, 256))):
        for n in ns:
            config = RunConfig(task=f"parity:h=6,w=6,g={g}", n_train=n, steps=STEPS).resolved()
            tau_mem = 3 * n ** ALPHA_MEM
            rows = synthetic_metrics(100.0, tau_mem, chance=0.0)
            rule, mem = (clocks.summarize(rows)[name] for name in ("tau_rule", "tau_mem"))
            records.append(record_of(config, rows, tau_rule={**rule, "interval": [80.0, 120.0]},
                                     tau_mem={**mem, "interval": [0.8 * tau_mem, None]}))
    (ax,) = plot_tau_vs_n(records, fit_all(records, n_boot=100)).axes
    return ax


def test_tau_points_carry_their_intervals_as_error_bars(tau_vs_n_axes):
    from matplotlib.collections import LineCollection

    bars = [segment for c in tau_vs_n_axes.collections if isinstance(c, LineCollection)
            for segment in c.get_segments()]
    assert len(bars) == 2 * 6  # both clocks of every run
    assert any(np.allclose(segment[:, 1], [80, 120]) for segment in bars)
    assert any(segment[1, 1] == STEPS for segment in bars)  # open above: drawn up to the last step


def test_a_fitted_line_needs_an_interval_and_three_xs(tau_vs_n_axes):
    labels = [text.get_text() for text in tau_vs_n_axes.get_legend().get_texts()]
    assert any(label.startswith("τ_mem ∝ N^") and "parity:h=6,w=6,g=2" in label for label in labels)
    assert any("parity:h=6,w=6,g=3" in label and "no line (α" in label and "no closed 95% interval from 2 runs" in label
               for label in labels)
    drawn = [line for line in tau_vs_n_axes.get_lines() if len(line.get_xdata()) == 50]
    assert len(drawn) == 2  # g=2's two clocks; g=3's are not drawn


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# appended to a copy of index.html: once everything has loaded, the page writes what a user would see into its body
PAGE_CHECK = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);
  const headline = document.querySelector('#headline');
  const top = headline ? headline.getBoundingClientRect().top : -1;
  document.body.insertAdjacentHTML('beforeend', '<pre id="check">' + JSON.stringify(
    {images: images.length, broken: broken, headline: headline ? headline.innerText : null, top: top,
     viewport: window.innerHeight}) + '</pre>');
});</script>"""


def browser() -> str | None:
    import shutil

    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.skipif(browser() is None, reason="no headless browser: install Chromium (Debian: apt-get install -y "
                                              "chromium) to render the report as a user sees it")
def test_report_renders_in_a_headless_browser(tmp_path):
    """The report as a user opens it: the page loads, every image loads, the findings are on the first screen."""
    import subprocess

    with RunStore(tmp_path / "store", write=True) as store:
        for arch in ("dit", "gpt"):
            for n in (64, 256, 1024):
                config = RunConfig(n_train=n, arch=arch, steps=STEPS).resolved()
                rows = synthetic_metrics(100.0 * (2 if arch == "gpt" else 1), 3 * n ** ALPHA_MEM, chance=0.0)
                add_run(store, config, rows)
                store.run_dir(config.key()).mkdir(parents=True)
                (store.run_dir(config.key()) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = build_report(tmp_path / "store", tmp_path / "out", n_boot=100)
    check = index.with_name("check.html")
    check.write_text(index.read_text().replace("</body>", PAGE_CHECK + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--window-size=1280,900", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser(), *flags, "--dump-dom", check.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert '<pre id="check">{' in dom, dom[-2000:]  # the script's own text holds the tag too: take the last one
    result = json.loads(html.unescape(dom.rsplit('<pre id="check">', 1)[1].split("</pre>")[0]))
    assert result["images"] >= 4 + 6 and result["broken"] == []  # the figures and every run's curves
    assert "τ_mem ∝ N^" in result["headline"] and "windows:" in result["headline"]
    assert 0 <= result["top"] < result["viewport"] / 2  # the answer is the first thing on the page


def test_a_run_stored_under_two_earlier_budgets_is_one_record(tmp_path):
    """Rows keyed with steps (before it left the key) of one run trained to two budgets: the report counts it once."""
    rows = synthetic_metrics(100.0, 500.0, chance=0.0)
    with RunStore(tmp_path, write=True) as store:
        for steps in (1000, STEPS):
            config = RunConfig(n_train=64, steps=steps).resolved()
            summary = {**clocks.summarize(rows, rule_threshold=config.rule_threshold,
                                          mem_threshold=config.mem_threshold), "final": rows[-1]}
            store.add({config.earlier_key(): config.to_dict()})
            store.finish(config.earlier_key(), summary)
        store.add({config.key(): config.to_dict()})
        records = run_records(store.rows())
    assert [record.key for record in records] == [config.key()]


def stopped_by_until():
    """A run with a budget of STEPS that until stopped at step 562 (trained to 600)."""
    config = RunConfig(task="parity:h=6,w=6,g=2", n_train=64, arch="gpt", steps=STEPS).resolved()
    rows = [row for row in synthetic_metrics(100.0, 300.0, chance=0.0) if row["step"] <= 562]
    return record_of(config, rows, stop={"reason": "until", "step": rows[-1]["step"], "trained": 600})


def test_a_record_says_where_its_run_stopped():
    record = stopped_by_until()
    assert record.stop == Stop(reason="until", step=record.last_step, trained=600)


def test_runs_csv_says_why_and_where_a_run_stopped():
    record = stopped_by_until()
    assert (run_row(record)["stop_reason"], run_row(record)["stop_step"]) == ("until", record.last_step)


def test_the_runs_table_shows_a_stop_short_of_the_budget():
    record = stopped_by_until()
    assert rendered_run(record)["stopped"] == f"step {record.last_step} (until)"
