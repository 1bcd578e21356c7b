"""The report on a store of synthetic runs whose clocks follow known laws.

tau_mem = 3 N^0.9 (times 10% log-normal noise) and tau_rule = 40 G^2.5 (x 2 for GPT): the fits
must recover both exponents within their bootstrap intervals, censored runs must stay out of
them, and every table and figure must be written.
"""
import csv
import html
import json
import math

import numpy as np
import pytest
from matplotlib.markers import MarkerStyle

from innovwin.analysis import clocks
from innovwin.analysis.fits import fit_all, fit_groups, fit_power_law
from innovwin.config import RunConfig
from innovwin.report.build import (
    arch_pairs,
    build_report,
    config_variants,
    plot_arch_pairs,
    plot_tau_vs_n,
    run_records,
)
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


def test_report_recovers_exponents_and_writes_everything(tmp_path):
    make_store(tmp_path / "store")
    index = build_report(tmp_path / "store", tmp_path / "out", n_boot=200)
    out = tmp_path / "out"
    with open(out / "fits.csv") as handle:
        fits = list(csv.DictReader(handle))
    mem_fits = [f for f in fits if f["clock"] == "tau_mem" and f["against"] == "n_train"]
    assert len(mem_fits) == 4  # (g=2, g=3) x (dit, gpt)
    for fit in mem_fits:
        # the largest N memorize past the last step: censored, counted, and not fitted
        assert int(fit["n_censored"]) > 0 and int(fit["n_points"]) + int(fit["n_censored"]) == 3 * len(NS)
        assert float(fit["alpha_lo"]) <= ALPHA_MEM <= float(fit["alpha_hi"]), fit
        assert float(fit["alpha_hi"]) - float(fit["alpha_lo"]) < 0.3
        # the censored fit takes every run, censored ones included, and recovers alpha too
        assert int(fit["ml_n"]) == 3 * len(NS) and int(fit["ml_n_right"]) == int(fit["n_censored"])
        assert float(fit["ml_alpha_lo"]) <= ALPHA_MEM <= float(fit["ml_alpha_hi"]), fit
    rule_fits = [f for f in fits if f["clock"] == "tau_rule" and f["against"] == "complexity"]
    assert len(rule_fits) == 2
    for fit in rule_fits:
        assert float(fit["alpha_lo"]) <= ALPHA_RULE <= float(fit["alpha_hi"]), fit

    with open(out / "runs.csv") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 2 * 2 * len(NS) * 3  # done runs only; the queued one is not in the table
    assert {r["variant"] for r in runs} == {""}  # nothing varies but the axes and the seeds
    states = {r["window_state"] for r in runs}
    assert {"open", "closed"} <= states
    assert any(r["window_state"] == "open" and r["tau_mem_censored"] == "True" for r in runs)  # open at the end
    for name in ("tau_vs_n", "tau_rule", "window_map", "arch_pairs"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "curves").glob("*.png"))) == 2 * 2 * 2  # the runs with metrics.jsonl
    assert (out / "runs.md").read_text().count("\n") == len(runs) + 2
    page = index.read_text()
    assert (out / "seeds.md").read_text().count("\n") == 2 * 2 * len(NS) + 2  # one row per cell of 3 seeds
    for name in ("tau_vs_n.png", "window_map.png", "curves/", "basins/", "fits.csv", "1 queued", "seeds.csv"):
        assert name in page, name
    assert len(list((out / "basins").glob("*.png"))) == 1
    # the answer first: alpha with its interval per group, the windows counted, the definitions in force
    headline = (out / "headline.txt").read_text().splitlines()
    alphas = [line for line in headline if line.startswith("τ_mem ∝ N^")]
    assert len(alphas) == 4 and all("95% CI" in line for line in alphas)
    windows, = [line for line in headline if line.startswith("windows: ")]
    counted = [int(part.split()[0]) for part in windows[len("windows: "):].split(";")[0].split(", ")]
    assert sum(counted) == len(runs) and headline[-1] == f"runs: {len(runs)} finished, 0 failed, 1 not run yet"
    assert page.index("id='headline'") < page.index("<img") and html.escape(alphas[0]) in page
    assert "validity ≥ 0.9 and stays so at the next one" in page and "by ≥ 0.1" in page


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


def test_groups_with_too_few_measured_points_say_so():
    records = [{"n_train": n, "arch": "dit", "tau_mem": 10.0 * n if n < 100 else None,
                "tau_mem_censored": n >= 100} for n in (10, 100, 1000)]
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


def test_clocks_crossed_at_the_first_evaluation_are_upper_bounds_not_fitted(tmp_path):
    # tau_mem <= 10 (the first evaluation) at N = 64 and 128: upper bounds, not measurements; fitted as if
    # they were, they would pull alpha towards 0. Only N = 256 ... 1024 are measured.
    rng = np.random.default_rng(0)
    with RunStore(tmp_path / "store", write=True) as store:
        for n in NS[:-1]:
            config = RunConfig(task="parity:h=6,w=6,g=2", n_train=n, arch="gpt", steps=STEPS).resolved()
            tau_mem = 0.5 if n < 256 else 3 * n ** ALPHA_MEM * math.exp(rng.normal(0, 0.05))
            rows = synthetic_metrics(20.0, tau_mem, chance=0.0)
            summary = clocks.summarize(rows, rule_threshold=0.9, mem_threshold=0.1)
            summary.update(final=rows[-1], config=config.to_dict())
            store.add({config.key(): config.to_dict()})
            store.claim(config.key())
            store.finish(config.key(), summary)
    index = build_report(tmp_path / "store", tmp_path / "out", n_boot=100)
    with open(tmp_path / "out" / "fits.csv") as handle:
        (fit,) = [f for f in csv.DictReader(handle) if f["clock"] == "tau_mem"]
    assert (int(fit["n_points"]), int(fit["n_censored"])) == (3, 2)
    assert float(fit["alpha"]) == pytest.approx(ALPHA_MEM, abs=0.15)
    assert "2 crossed at the first evaluation" in fit["note"]
    with open(tmp_path / "out" / "runs.csv") as handle:
        runs = {int(r["n_train"]): r for r in csv.DictReader(handle)}
    assert runs[64]["tau_mem_at_first_eval"] == "True" and runs[256]["tau_mem_at_first_eval"] == "False"
    assert "&lt;= 10" in index.read_text()


def test_complexity_fits_pool_only_tasks_that_differ_in_their_complexity(tmp_path):
    # majority-of-3 and weight-2-of-4 are both "rule" tasks (complexity 3 and 4) but different rules: no
    # tau_rule-vs-complexity fit may pool them. Parity at G = 2 and 3 on the same grid is one fit.
    tasks = ("parity:h=6,w=6,g=2", "parity:h=6,w=6,g=3", "rule:h=6,w=6,g=3,pred=majority",
             "rule:h=6,w=6,g=4,pred=weight,k=2")
    with RunStore(tmp_path / "store", write=True) as store:
        for index, task in enumerate(tasks):
            for seed in (0, 1):
                config = RunConfig(task=task, n_train=256, arch="gpt", seed=seed, steps=STEPS).resolved()
                rows = synthetic_metrics(30.0 * (index + 1) * (seed + 1), 1500.0, chance=0.0)
                summary = clocks.summarize(rows, rule_threshold=0.9, mem_threshold=0.1)
                summary.update(final=rows[-1], config=config.to_dict())
                store.add({config.key(): config.to_dict()})
                store.claim(config.key())
                store.finish(config.key(), summary)
    build_report(tmp_path / "store", tmp_path / "out", n_boot=20)
    with open(tmp_path / "out" / "fits.csv") as handle:
        fits = [f for f in csv.DictReader(handle) if f["against"] == "complexity"]
    assert [f["family"] for f in fits] == ["parity:h=6,w=6"]
    assert int(fits[0]["n_points"]) == 4


def add_run(store, config, rows, **summary_changes):
    """A finished run whose summary is clocks.summarize's on ``rows`` (with ``summary_changes``)."""
    summary = clocks.summarize(rows, rule_threshold=config.rule_threshold, mem_threshold=config.mem_threshold)
    summary.update(final=rows[-1], config=config.to_dict(), **summary_changes)
    store.add({config.key(): config.to_dict()})
    store.claim(config.key())
    store.finish(config.key(), summary)


def test_windows_of_clocks_crossed_at_the_first_evaluation(tmp_path):
    # both clocks <= 10: their order is unknown, even in a summary an older version called "closed";
    # tau_rule <= 10 and tau_mem measured: an open window whose width is only a lower bound
    with RunStore(tmp_path / "store", write=True) as store:
        for n, tau_mem in ((64, 0.5), (128, 500.0)):
            config = RunConfig(task="parity:h=6,w=6,g=2", n_train=n, arch="gpt", steps=STEPS).resolved()
            add_run(store, config, synthetic_metrics(0.5, tau_mem, chance=0.0), window_state="closed")
    index = build_report(tmp_path / "store", tmp_path / "out", n_boot=20)
    with open(tmp_path / "out" / "runs.csv") as handle:
        runs = {int(r["n_train"]): r for r in csv.DictReader(handle)}
    assert runs[64]["window_state"] == "unresolved" and "both clocks crossed" in runs[64]["window_reason"]
    assert runs[128]["window_state"] == "open" and "lower bound" in runs[128]["window_reason"]
    assert "open (≥ 1.69 decades)" in index.read_text()


def drawn_markers(figure):
    """{(x, y): marker vertices} of every scatter point in ``figure``."""
    return {tuple(offset): collection.get_paths()[0].vertices.round(6).tobytes()
            for ax in figure.axes for collection in ax.collections for offset in collection.get_offsets()}


def test_figures_draw_clocks_crossed_at_the_first_evaluation_as_upper_bounds(tmp_path):
    # tau_mem <= 10 at N = 64 (the first evaluation): an upper bound, drawn as a downward triangle, not as
    # a filled "measured" marker; the clocks at N = 256 are measured
    with RunStore(tmp_path / "store", write=True) as store:
        for arch in ("dit", "gpt"):
            for n in (64, 256):
                config = RunConfig(task="parity:h=6,w=6,g=2", n_train=n, arch=arch, steps=STEPS).resolved()
                add_run(store, config, synthetic_metrics(100.0, 0.5 if n == 64 else 1000.0, chance=0.0))
        records = run_records(store.rows())
    bound = MarkerStyle("v")
    bound = bound.get_path().transformed(bound.get_transform()).vertices.round(6).tobytes()
    figure = plot_tau_vs_n(records, fit_all(records, n_boot=0))
    markers = drawn_markers(figure)
    assert [xy for xy, marker in markers.items() if marker == bound] == [(64, 10)]
    assert any("first evaluation" in text.get_text() for text in figure.axes[0].get_legend().get_texts())
    markers = drawn_markers(plot_arch_pairs(records, []))
    assert [xy for xy, marker in markers.items() if marker == bound] == [(10, 10)]


def test_config_variants_name_the_fields_that_vary_besides_axes_and_bookkeeping():
    base = RunConfig().resolved().to_dict()
    pooled = [{**base, "seed": 1, "data_seed": 7, "steps": 5000, "eval_samples": 64, "device": "cpu"}, base]
    assert config_variants(pooled) == ["", ""]
    swept = [{**base, "lr": 0.003, "batch": 128}, {**base, "mem_threshold": 0.2}, base]
    assert config_variants(swept) == ["batch=128 lr=0.003 mem_threshold=0.1", "batch=64 lr=0.001 mem_threshold=0.2",
                                      "batch=64 lr=0.001 mem_threshold=0.1"]


def test_runs_that_differ_in_a_swept_field_are_never_pooled(tmp_path):
    # two learning rates, with tau_mem 3x earlier at the larger one: one fit, colour and DiT/GPT pair per rate;
    # steps (which grows with N, as in the presets) only sets where a run stops, and is pooled
    with RunStore(tmp_path / "store", write=True) as store:
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
    assert {r["variant"] for r in records} == {"lr=0.001", "lr=0.003"}
    pairs = arch_pairs(records)
    assert len(pairs) == 2 * 3 and all(dit["variant"] == gpt["variant"] for dit, gpt in pairs)
    index = build_report(tmp_path / "store", tmp_path / "out", n_boot=20)
    with open(tmp_path / "out" / "fits.csv") as handle:
        fits = [f for f in csv.DictReader(handle) if f["clock"] == "tau_mem"]
    assert sorted((f["arch"], f["variant"], int(f["n_points"])) for f in fits) == [
        ("dit", "lr=0.001", 3), ("dit", "lr=0.003", 3), ("gpt", "lr=0.001", 3), ("gpt", "lr=0.003", 3)]
    with open(tmp_path / "out" / "alpha_sensitivity.csv") as handle:  # the threshold refit groups alike
        refits = [f for f in csv.DictReader(handle) if float(f["threshold"]) == 0.1]
    assert sorted((f["arch"], f["variant"]) for f in refits) == sorted((f["arch"], f["variant"]) for f in fits)
    assert "<td>lr=0.003</td>" in index.read_text()


def test_seeds_table_gives_each_cells_seeds_spread_and_verdict(tmp_path):
    from innovwin.report import seeds

    make_store(tmp_path / "store")
    with RunStore(tmp_path / "store") as store:
        cells = seeds.seed_rows(run_records(store.rows()))
    assert len(cells) == 2 * 2 * len(NS) and all(cell["seeds"] == 3 for cell in cells)
    cell = cells[0]
    values = [float(v) for v in cell["tau_mem_seeds"].split(", ")]
    assert cell["tau_mem_median"] == f"{np.median(values):.0f}"
    assert cell["tau_mem_range"] == f"{min(values):.0f} - {max(values):.0f}"
    # seeds that disagree leave the cell unresolved; a clock never crossed reads as beyond the last step
    records = [{"window_state": state, "seed": seed, "last_step": 100, "tau_rule": 50.0, "tau_rule_censored": False,
                "tau_rule_at_first_eval": False, "tau_mem": None if seed else 80.0, "tau_mem_censored": bool(seed),
                "tau_mem_at_first_eval": False, **dict.fromkeys(seeds.CELL, "x")}
               for seed, state in enumerate(("closed", "open", "open"))]
    (row,) = seeds.seed_rows(records)
    assert row["verdict"] == "unresolved" and row["verdicts"] == "closed x1, open x2"
    assert row["tau_mem_seeds"] == "80, > 100, > 100" and row["tau_mem_median"] == "> 100"
    assert row["tau_mem_range"] == "80 - > 100"
    assert seeds.cell_verdict(records[1:]) == "open"


def test_report_of_one_run_directory(tmp_path, capsys):
    """`innovwin report RUN_DIR`: the run's curves, clocks and settings, and the findings in the terminal."""
    from innovwin.cli import main

    config = RunConfig(n_train=64, steps=STEPS).resolved()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = synthetic_metrics(tau_rule=150.0, tau_mem=900.0, chance=64 / 2 ** 18)
    (run_dir / "config.json").write_text(json.dumps({**config.to_nested(), "key": config.key()}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {**clocks.summarize(rows), "final": rows[-1], "config": config.to_dict()}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    # the clocks set at 150 and 900, read back through log-spaced evaluations (no per-sample arrays: the
    # intervals are the brackets of evaluations around each crossing)
    assert "findings:\n  τ_rule 153 [141, 176]\n  τ_mem 890 [827, 1031]\n  window open, 0.77 decades (x5.8)\n" in out
    page = (tmp_path / "out" / "index.html").read_text()
    assert "Run directory" in page and "<h2>Settings</h2>" in page and "optim.lr" in page
    assert (tmp_path / "out" / "curves" / f"{config.key()}.png").exists()
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "out2")]) == 2


def test_tau_points_carry_error_bars_and_fits_need_an_interval_and_three_xs(tmp_path):
    from matplotlib.collections import LineCollection

    with RunStore(tmp_path / "store", write=True) as store:
        for g, ns in ((2, (64, 256, 1024)), (3, (64, 256))):  # three distinct N for g=2, two for g=3
            for n in ns:
                config = RunConfig(task=f"parity:h=6,w=6,g={g}", n_train=n, steps=STEPS).resolved()
                tau_mem = 3 * n ** ALPHA_MEM
                rows = synthetic_metrics(100.0, tau_mem, chance=0.0)
                rule, mem = (clocks.summarize(rows)[name] for name in ("tau_rule", "tau_mem"))
                add_run(store, config, rows, tau_rule={**rule, "interval": [80.0, 120.0]},
                        tau_mem={**mem, "interval": [0.8 * tau_mem, None]})  # one interval open above
        records = run_records(store.rows())
    figure = plot_tau_vs_n(records, fit_all(records, n_boot=100))
    ax, = figure.axes
    bars = [segment for c in ax.collections if isinstance(c, LineCollection) for segment in c.get_segments()]
    assert len(bars) == 2 * 5  # both clocks of every run
    assert any(np.allclose(segment[:, 1], [80, 120]) for segment in bars)
    assert any(segment[1, 1] == STEPS for segment in bars)  # open above: drawn up to the last step
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any(label.startswith("τ_mem ∝ N^0.9") and "parity:h=6,w=6,g=2" in label for label in labels)
    assert any("parity:h=6,w=6,g=3" in label and "no line (2 distinct measured x" in label for label in labels)
    drawn = [line for line in ax.get_lines() if len(line.get_xdata()) == 50]
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
