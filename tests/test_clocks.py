"""The clocks on synthetic curves: crossing, never crossing, crossing and falling back, noisy."""
import math

import numpy as np
import pytest

from innovwin.analysis import clocks

STEPS = [10, 20, 40, 80, 160, 320]


def test_rule_crossing_is_interpolated_in_log_step():
    clock = clocks.tau_rule(STEPS, [0.0, 0.5, 0.8, 1.0, 1.0, 1.0], threshold=0.9)
    # halfway from 0.8 (step 40) to 1.0 (step 80) in log(step): sqrt(40 * 80)
    assert clock.value == pytest.approx(math.sqrt(40 * 80))
    assert clock.censoring is None and clock.measured


def test_crossing_exactly_at_an_evaluation_gives_that_step():
    assert clocks.tau_rule(STEPS, [0.0, 0.0, 0.9, 0.95, 1.0, 1.0]).value == pytest.approx(40)


def test_never_crossing_is_censored():
    clock = clocks.tau_rule(STEPS, [0.1, 0.2, 0.3, 0.4, 0.5, 0.89])
    assert clock.censoring == "right" and clock.value is None
    assert clock.render() == "> 320"


def test_rule_crossing_then_falling_back_does_not_count():
    clock = clocks.tau_rule(STEPS, [0.0, 0.95, 0.5, 0.7, 0.92, 0.97])
    assert clock.value == pytest.approx(math.exp(np.log(80) + (0.2 / 0.22) * (np.log(160) - np.log(80))))


def test_rule_crossing_only_at_the_last_evaluation_is_censored():
    assert clocks.tau_rule(STEPS, [0, 0, 0, 0, 0, 1.0]).censoring == "right"


def test_rule_crossed_at_first_evaluation_is_an_upper_bound():
    clock = clocks.tau_rule(STEPS, [0.95] * 6)
    assert clock.value == 10 and clock.censoring == "left" and clock.render() == "<= 10"


def test_mem_counts_excess_over_chance_and_needs_no_confirmation():
    chance = [0.25] * 6
    # 0.30 above chance is below 0.1 excess; the rise at step 160 then falls back: still the crossing.
    clock = clocks.tau_mem(STEPS, [0.25, 0.30, 0.30, 0.30, 0.45, 0.30], chance, threshold=0.1)
    assert clock.value == pytest.approx(math.exp(np.log(80) + (0.05 / 0.15) * np.log(2)))
    assert clocks.tau_mem(STEPS, [0.3] * 6, chance).censoring == "right"


def test_window_states():
    rule = clocks.tau_rule(STEPS, [0, 0.5, 1, 1, 1, 1])
    mem = clocks.tau_mem(STEPS, [0, 0, 0, 0, 0.5, 0.9], [0] * 6)
    never_rule = clocks.tau_rule(STEPS, [0] * 6)
    never_mem = clocks.tau_mem(STEPS, [0] * 6, [0] * 6)
    early_mem = clocks.tau_mem(STEPS, [0, 0.9, 1, 1, 1, 1], [0] * 6)
    assert clocks.window(rule, mem) == clocks.Window("open", None, (rule.value, mem.value),
                                                     math.log10(mem.value / rule.value), False)
    closed = clocks.window(rule, early_mem)
    assert (closed.state, closed.span, closed.width) == ("closed", None, None) and "memorized before" in closed.reason
    assert clocks.window(never_rule, mem).state == "closed"
    assert "tau_rule never reached" in clocks.window(never_rule, mem).reason
    assert clocks.window(never_rule, never_mem).state == "unresolved"


def test_a_window_open_at_the_end_has_a_lower_bound_for_its_width():
    rule = clocks.tau_rule(STEPS, [0, 0.5, 1, 1, 1, 1])
    found = clocks.window(rule, clocks.tau_mem(STEPS, [0] * 6, [0] * 6))
    assert (found.state, found.kind, found.span) == ("open", "open at the end", (rule.value, None))
    assert found.width == pytest.approx(math.log10(320 / rule.value)) and found.width_is_bound
    assert "open at the end" in found.reason
    assert found.render() == f"open at the end, ≥ {found.width:.2f} decades (x{320 / rule.value:.1f})"


def test_a_window_that_is_not_open_renders_as_its_verdict():
    assert clocks.Window("closed", "memorized before the rule was learned").render() == "closed"


def test_window_when_clocks_crossed_at_the_first_evaluation():
    early_rule = clocks.tau_rule(STEPS, [0.95] * 6)
    early_mem = clocks.tau_mem(STEPS, [0.5] * 6, [0] * 6)
    # both are upper bounds at step 10: which came first is unknown, not "memorized before the rule"
    found = clocks.window(early_rule, early_mem)
    assert (found.span, found.state) == (None, "unresolved")
    assert "both clocks crossed by the first evaluation" in found.reason
    # tau_rule <= 10, tau_mem measured: the window is open, and its width only a lower bound
    mem = clocks.tau_mem(STEPS, [0, 0, 0, 0, 0.5, 0.9], [0] * 6)
    found = clocks.window(early_rule, mem)
    assert (found.state, found.span, found.width_is_bound) == ("open", (10, mem.value), True)
    assert "lower bound" in found.reason
    rows = [{"step": s, "valid_frac": 0.95, "copy_frac": c, "chance_copy": 0.0}
            for s, c in zip(STEPS, [0, 0, 0, 0, 0.5, 0.9])]
    assert "lower bound" in clocks.describe(clocks.summarize(rows))


def test_batched_crossings_match_one_at_a_time():
    rng = np.random.default_rng(0)
    curves = np.cumsum(rng.uniform(0, 0.3, size=(50, len(STEPS))), axis=1)
    batched = clocks.crossing_steps(STEPS, curves, 0.9, confirm=True)
    for curve, value in zip(curves, batched):
        clock = clocks.tau_rule(STEPS, curve)
        assert (clock.value is None and np.isnan(value)) or clock.value == pytest.approx(value)


def noisy_samples(m, seed):
    """Per-sample validity and copy flags whose rates follow smooth curves, like a real run's."""
    rng = np.random.default_rng(seed)
    steps = np.array([10, 14, 20, 28, 40, 56, 80, 113, 160, 226, 320, 452, 640])
    valid_rate = 1 / (1 + np.exp(-(np.log(steps) - np.log(60)) * 4))
    copy_rate = 1 / (1 + np.exp(-(np.log(steps) - np.log(300)) * 4))
    u = rng.uniform(size=(1, m))  # one latent per noise: samples are paired across evaluations
    return steps, u < valid_rate[:, None], u < copy_rate[:, None]


def test_bootstrap_interval_brackets_the_estimate_on_noisy_curves():
    steps, valid, copy = noisy_samples(256, seed=1)
    rows = [{"step": int(s), "valid_frac": v.mean(), "copy_frac": c.mean(), "chance_copy": 0.0}
            for s, v, c in zip(steps, valid, copy)]
    summary = clocks.summarize(rows, valid, copy, n_resamples=300, seed=0)
    for name in ("tau_rule", "tau_mem"):
        clock = summary[name]
        lo, hi = clock["interval"]
        assert lo <= clock["bracket"][0] < clock["estimate"] <= clock["bracket"][1] <= hi
        assert hi / lo < 4  # 256 samples and the bracket pin the clock down within a factor of a few
    assert summary["tau_rule"]["estimate"] < summary["tau_mem"]["estimate"] and summary["window_state"] == "open"
    again = clocks.summarize(rows, valid, copy, n_resamples=300, seed=0)
    assert again == summary  # the seed fixes the resamples


def test_bootstrap_interval_is_open_when_resamples_do_not_cross():
    steps = [10, 20, 40]
    valid = np.zeros((3, 100), bool)
    valid[1:, :91] = True  # 0.91 at the last two evaluations: just over 0.9, resamples often fall below
    rule_ci, _ = clocks.bootstrap_intervals(steps, valid, np.zeros_like(valid), [0.0] * 3, n_resamples=200)
    assert rule_ci[0] is not None and rule_ci[1] is None


def test_censored_clock_has_no_interval_and_describe_reads():
    steps, valid, copy = noisy_samples(64, seed=2)
    rows = [{"step": int(s), "valid_frac": v.mean(), "copy_frac": 0.0, "chance_copy": None}
            for s, v in zip(steps, valid)]
    summary = clocks.summarize(rows, valid, np.zeros_like(copy), n_resamples=50)
    assert summary["tau_mem"] == {"estimate": None, "bracket": [640.0, None], "interval": [640.0, None],
                                  "censored": "right"}
    assert "open at the end" in clocks.describe(summary)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        clocks.crossing_steps([1, 2], [[0.1, 0.2, 0.3]], 0.5, confirm=False)
    with pytest.raises(ValueError, match="increasing"):
        clocks.crossing_steps([2, 1], [[0.1, 0.2]], 0.5, confirm=False)
    with pytest.raises(ValueError, match="no evaluation rows"):
        clocks.summarize([])


def test_bracket_is_the_evaluations_around_the_crossing():
    rule = clocks.tau_rule(STEPS, [0.0, 0.5, 0.8, 1.0, 1.0, 1.0])
    assert rule.bracket == (40, 80) and rule.interval == (40, 80)
    assert rule.to_json() == {"estimate": pytest.approx(math.sqrt(40 * 80)), "bracket": [40.0, 80.0],
                              "interval": [40.0, 80.0], "censored": None}
    early = clocks.tau_rule(STEPS, [0.95] * 6)
    assert early.to_json() == {"estimate": None, "bracket": [0.0, 10.0], "interval": [0.0, 10.0], "censored": "left"}
    never = clocks.tau_mem(STEPS, [0.0] * 6, [0.0] * 6)
    assert never.to_json()["bracket"] == [320.0, None] and never.bounds() == (320.0, math.inf)


def test_interval_is_never_narrower_than_the_bracket():
    clock = clocks.tau_rule(STEPS, [0.0, 0.5, 0.8, 1.0, 1.0, 1.0])
    assert clocks.with_bootstrap(clock, [50.0, 70.0]).interval == (40, 80)  # a bootstrap inside the bracket
    assert clocks.with_bootstrap(clock, [20.0, None]).interval == (20.0, None)


def test_crossings_between_the_same_two_evaluations_are_unresolved():
    # the G=3, N=64 case: tau_mem interpolates before tau_rule, yet both lie between steps 316 and 422
    steps = [178, 237, 316, 422, 562]
    rule = clocks.tau_rule(steps, [0.5, 0.7, 0.8, 0.95, 0.97])
    mem = clocks.tau_mem(steps, [0.0, 0.0, 0.0, 0.5, 0.6], [0.0] * 5)
    assert mem.value < rule.value and rule.bracket == mem.bracket == (316, 422)
    found = clocks.window(rule, mem)
    assert (found.span, found.state) == (None, "unresolved") and "overlap" in found.reason
    # with a later memorization the order is measured: open
    late = clocks.tau_mem(steps, [0.0, 0.0, 0.0, 0.0, 0.6], [0.0] * 5)
    assert clocks.window(rule, late).state == "open"


def test_read_clock_reads_new_and_old_summaries_alike():
    rows = [{"step": s, "valid_frac": v, "copy_frac": c, "chance_copy": 0.0}
            for s, v, c in zip(STEPS, [0, 0.5, 1, 1, 1, 1], [0, 0, 0, 0, 0.5, 0.9])]
    summary = {**clocks.summarize(rows), "final": rows[-1]}
    rule, mem = clocks.read_clocks(summary)
    assert rule == clocks.tau_rule(STEPS, [0, 0.5, 1, 1, 1, 1])
    assert mem.value == pytest.approx(clocks.tau_mem(STEPS, [0, 0, 0, 0, 0.5, 0.9], [0] * 6).value)
    old = {"tau_rule": 28.3, "tau_rule_ci": [25.0, 31.0], "tau_rule_censored": False, "tau_rule_text": "28",
           "tau_mem": None, "tau_mem_ci": None, "tau_mem_censored": True, "tau_mem_text": "> 320", "final": {"step": 320}}
    rule, mem = clocks.read_clocks(old)
    assert (rule.value, rule.interval, rule.bracket) == (28.3, (25.0, 31.0), None)
    assert mem.censoring == "right" and mem.render() == "> 320"
    assert clocks.window(rule, mem).state == "open"
    assert "tau_rule  28 [25, 31]" in clocks.describe(old)


def test_a_clock_refuses_an_unknown_censoring():
    with pytest.raises(ValueError, match="censoring"):
        clocks.Clock(10.0, "both", 100)


def test_an_old_summary_clock_rendered_as_at_most_reads_as_left_censored():
    old = {"tau_rule": 10.0, "tau_rule_ci": None, "tau_rule_text": "<= 10", "final": {"step": 320}}
    assert clocks.read_clock(old, "tau_rule") == clocks.Clock(10.0, "left", 320)


def test_observations_of_each_censoring():
    assert clocks.tau_rule(STEPS, [0.0, 0.5, 0.8, 1.0, 1.0, 1.0]).observation() == (40.0, 80.0)
    assert clocks.tau_rule(STEPS, [0.95] * 6).observation() == (0.0, 10.0)
    assert clocks.tau_rule(STEPS, [0.0] * 6).observation() == (320.0, math.inf)
    assert clocks.Clock(20.0, None, 320).observation() == (20.0, 20.0)  # an older summary kept no bracket


def exact_rows(copy_prob, copy_frac=None):
    steps = [10, 20, 40, 80, 160]
    return [{"step": s, "valid_frac": 1.0, "copy_frac": (copy_frac or copy_prob)[i], "chance_copy": 0.01,
             "copy_prob": copy_prob[i] if copy_prob else None} for i, s in enumerate(steps)]


def test_exact_mem_clock_crosses_the_expected_copy_rate_and_its_interval_is_its_bracket():
    """The expected copy rate has no sampling noise: the clock's interval is the evaluations around the crossing,
    and it may differ from the sampled clock of the same rows."""
    rows = exact_rows([0.01, 0.02, 0.06, 0.21, 0.5], copy_frac=[0.01, 0.02, 0.15, 0.2, 0.5])
    exact = clocks.tau_mem_exact(rows, threshold=0.1)
    assert exact.bracket == exact.interval == (40.0, 80.0) and exact.censoring is None
    assert 40 < exact.value < 80
    summary = clocks.summarize(rows, mem_threshold=0.1)
    assert summary["tau_mem"]["bracket"] == [20.0, 40.0]  # the sampled copy rate crossed one evaluation earlier
    assert clocks.read_clock(summary, "tau_mem_exact", last_step=160) == exact


def test_exact_mem_clock_is_absent_without_copy_probabilities():
    rows = exact_rows(None, copy_frac=[0.0, 0.0, 0.2, 0.3, 0.5])
    assert clocks.tau_mem_exact(rows) is None
    assert "tau_mem_exact" not in clocks.summarize(rows)
    assert clocks.tau_mem_exact(exact_rows([0.01, 0.02, 0.03, 0.04, 0.05])).censoring == "right"
