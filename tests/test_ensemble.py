"""Stacked ensembles: one step equals K single steps, batched evaluation equals each member's own, an ensemble of
one is the single run, a killed ensemble resumes every member bit for bit, sweeps group runs of one shape, and bad
input is refused in one line."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from innovwin import cli
from innovwin.analysis.clocks import describe, read_clock
from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.evaluation.batched import evaluate_members
from innovwin.store import provenance, rundir, runlog
from innovwin.store.runstore import RunStore
from innovwin.sweeps.driver import run_sweep
from innovwin.tasks.dataset import run_dataset
from innovwin.train.driver import eval_steps, train
from innovwin.train import until
from innovwin.train.ensemble import check_members, train_ensemble
from innovwin.train.members import Trainer
from innovwin.train.stacked import Ensemble

TINY = dict(task="parity:h=4,w=4,g=2", n_train=16, depth=1, width=32, heads=2, batch=16, steps=24, first_eval=4,
            evals_per_decade=4, eval_samples=32, sampler_steps=4, loss_samples=32, bootstrap=50, device="cpu")
# Members differ in everything a member may own: seed, N, task rule of the same shape, lr, weight decay, warmup,
# clip (member 1 clips hard, member 2 not at all).
MEMBERS = [dict(seed=0), dict(seed=1, n_train=24, lr=3e-3, weight_decay=0.1, grad_clip=0.05, warmup=3),
           dict(seed=2, n_train=40, lr=5e-4, grad_clip=0.0, task="parity:h=4,w=4,g=4", warmup=0)]
DEVICE = torch.device("cpu")


def members(arch, **changes):
    return [RunConfig(**{**TINY, "arch": arch, **member, **changes}) for member in MEMBERS]


def build(configs, members_per_pass=None):
    """The ensemble of ``configs`` and each member's single-run Trainer, all at their initial state."""
    checked = check_members(configs)
    configs, task_list = [c for c, _ in checked], [t for _, t in checked]
    datasets = [run_dataset(c, t) for c, t in checked]
    ensemble = Ensemble(configs, task_list, datasets, DEVICE, members_per_pass)
    trainers = [Trainer(c, t, d, DEVICE) for c, t, d in zip(configs, task_list, datasets)]
    return ensemble, trainers, checked, datasets


def relative(a, b):
    """|a - b| / |b| (0 when both are 0: parameters a step has not reached yet)."""
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float((a - b).norm())


@pytest.mark.parametrize("arch, per_pass", [("dit", 1), ("dit", 3), ("gpt", 1), ("gpt", 2)])
def test_one_ensemble_step_matches_k_single_steps(arch, per_pass):
    """Members trained one per pass (the CPU default), all in one pass (the GPU's) or in uneven groups (2 + 1)."""
    ensemble, trainers, _, _ = build(members(arch, ema=0.9), per_pass)
    assert [rows for rows, _, _ in ensemble.passes] == [slice(a, min(a + per_pass, 3)) for a in range(0, 3, per_pass)]
    before = [{n: p.detach().clone() for n, p in t.model.named_parameters()} for t in trainers]
    for _ in range(3):  # the first step from the same initial state, then two more (Adam's moments, the EMA)
        ensemble.train_step()
        for trainer in trainers:
            trainer.train_step()
        for k, trainer in enumerate(trainers):
            assert float(ensemble.losses.since_eval[k]) == pytest.approx(float(trainer.losses.since_eval[0]), rel=1e-5)
            for which in ("model", "ema"):  # the member's whole parameter vector (a key bias's gradient is pure
                # rounding noise, which Adam's normalization blows up to lr-sized steps in either run)
                got = getattr(ensemble, "stack" if which == "model" else "ema").members[k].state_dict()
                want = getattr(trainer, which).state_dict()
                assert relative(torch.cat([got[n].flatten() for n in want]),
                                torch.cat([w.flatten() for w in want.values()])) <= 1e-5, (k, which)
    moved = [relative(trainers[k].model.state_dict()[n], before[k][n]) for k in range(3) for n in before[k]]
    assert max(moved) > 1e-3  # the steps did move the weights: the comparison is not of untouched tensors


@pytest.mark.parametrize("arch, settings", [("dit", {}), ("dit", {"s_churn": 5.0}), ("gpt", {})])
def test_batched_evaluation_matches_each_member_evaluated_alone(arch, settings):
    """(With churn, the stochastic sampler's fixed noises are joined per step.)"""
    ensemble, _, checked, datasets = build(members(arch, **settings))
    for _ in range(12):
        ensemble.train_step()
    evaluators = [Evaluator(t, d, c, o, DEVICE) for (c, t), d, o in zip(checked, datasets, ensemble.objectives)]
    stack = ensemble.stack
    batched = evaluate_members(stack.net.eval(), [m.eval() for m in stack.members], evaluators, 12)
    for k, ((row, samples), evaluator) in enumerate(zip(batched, evaluators)):
        alone_row, alone_samples = evaluator(stack.members[k], 12)
        assert set(row) == set(alone_row)
        for name, value in alone_row.items():
            if name in ("heldout_loss", "train_eval_loss"):
                assert row[name] == pytest.approx(value, rel=1e-6)
            elif name != "eval_seconds":
                assert row[name] == value, (k, name)
        np.testing.assert_array_equal(samples["keys"], alone_samples["keys"])


def test_an_ensemble_of_one_is_the_single_run(tmp_path):
    config = RunConfig(**TINY)
    train_ensemble([config], [tmp_path / "ensemble"], quiet=True)
    train(config, tmp_path / "single", quiet=True)
    rows = [[{k: v for k, v in row.items() if k != "eval_seconds"} for row in rundir.read_metrics(tmp_path / name)]
            for name in ("ensemble", "single")]
    assert rows[0] == rows[1]


def without_wall_clock(rows):
    return [{k: v for k, v in row.items() if k != "eval_seconds"} for row in rows]


def member_files(out_dirs):
    return [(without_wall_clock(rundir.read_metrics(d)) + runlog.read_loss(d),
             {step: rundir.load_snapshot(d, step)[1].state_dict() for step in rundir.snapshot_steps(d)})
            for d in out_dirs]


def assert_same_members(got, want):
    for (rows, snapshots), (want_rows, want_snapshots) in zip(got, want):
        assert rows == want_rows
        assert snapshots.keys() == want_snapshots.keys()
        for step, weights in snapshots.items():
            assert all(torch.equal(weights[n], want_snapshots[step][n]) for n in weights)


class Killed(Exception):
    """Stands in for SIGKILL: the process stops at this instant, with nothing cleaned up."""


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    """Three GPT members trained as one ensemble: (their directories, their summaries)."""
    out = tmp_path_factory.mktemp("ensemble")
    out_dirs = [out / f"m{k}" for k in range(3)]
    return out_dirs, train_ensemble(members("gpt", ema=0.9), out_dirs, quiet=True)


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return member_files(uninterrupted_run[0])


def test_each_member_summary_says_its_place_in_the_ensemble(uninterrupted_run):
    _, summaries = uninterrupted_run
    assert [s["ensemble"] for s in summaries] == [{"size": 3, "index": k} for k in range(3)]


def test_each_member_closes_its_provenance_session_and_progress(uninterrupted_run):
    out_dirs, _ = uninterrupted_run
    assert [(provenance.read(d)["sessions"][-1]["to_step"], runlog.read_progress(d)["state"]) for d in out_dirs] \
        == [(24, "done")] * 3


def test_each_member_keeps_its_own_loss_log(uninterrupted_run):
    out_dirs, _ = uninterrupted_run
    losses = [runlog.read_loss(d) for d in out_dirs]
    assert [[row["step"] for row in rows] for rows in losses] == [[10, 20]] * 3
    assert all(0 < row["loss"] < 10 for rows in losses for row in rows) and losses[0] != losses[1]


def test_each_member_logs_as_a_single_run_does(uninterrupted_run):
    """The start (naming the member), each evaluation, the clocks."""
    out_dirs, summaries = uninterrupted_run
    steps = eval_steps(RunConfig(**TINY))
    for k, (out_dir, summary) in enumerate(zip(out_dirs, summaries)):
        lines = [line.split("  ", 1)[1] for line in (out_dir / runlog.LOG).read_text().splitlines()]
        assert lines[0].startswith(f"start {out_dir} (member {k} of an ensemble of 3): ")
        assert [line.split(":")[0] for line in lines[1:1 + len(steps)]] == [f"step {step}" for step in steps]
        assert lines[1 + len(steps):] == [*describe(summary).splitlines(), until.describe(summary)]


@pytest.mark.parametrize("where", ["writing", "moving"])
def test_a_killed_ensemble_resumes_every_member_bit_for_bit(tmp_path, monkeypatch, uninterrupted, where):
    """Killed while writing the members' next states (member 1's, the third time: rolled back), or while moving
    them into place (after member 0's: rolled forward)."""
    out_dirs = [tmp_path / f"m{k}" for k in range(3)]
    real_save, real_replace = rundir.save_torch, rundir.os.replace
    calls = {"save": 0, "move": 0}

    def save(path, obj):
        if path.name == rundir.STATE_NEXT:
            calls["save"] += 1
            if where == "writing" and calls["save"] == 3 * 2 + 2:
                raise Killed
        real_save(path, obj)

    def replace(src, dst):
        if str(src).endswith(rundir.STATE_NEXT):
            calls["move"] += 1
            if where == "moving" and calls["move"] == 3 * 2 + 2:
                raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(rundir, "save_torch", save)
    monkeypatch.setattr(rundir.os, "replace", replace)
    with pytest.raises(Killed):
        train_ensemble(members("gpt", ema=0.9), out_dirs, quiet=True)
    monkeypatch.undo()
    steps = [torch.load(d / rundir.STATE, weights_only=True)["step"] for d in out_dirs]
    pending = [(d / rundir.STATE_NEXT).exists() for d in out_dirs]
    if where == "writing":
        assert pending == [True, False, False] and len(set(steps)) == 1  # the next set is incomplete: rolled back
    else:
        assert pending == [False, True, True] and steps[0] > steps[1]  # complete, partly moved: rolled forward
    train_ensemble(members("gpt", ema=0.9), out_dirs, quiet=True)
    assert not any((d / rundir.STATE_NEXT).exists() for d in out_dirs)
    assert_same_members(member_files(out_dirs), uninterrupted)


def test_a_member_state_resumes_as_a_single_run(tmp_path, monkeypatch):
    """Members found at different steps finish as single runs: the state format is the single run's."""
    configs = members("gpt")
    out_dirs = [tmp_path / f"m{k}" for k in range(3)]
    real_save = rundir.save_states
    saves = []

    def dies_at_third(states):
        saves.append(1)
        if len(saves) == 3:
            raise Killed
        real_save(states)

    monkeypatch.setattr(rundir, "save_states", dies_at_third)
    with pytest.raises(Killed):
        train_ensemble(configs, out_dirs, quiet=True)
    monkeypatch.undo()
    # member 1 alone, from the ensemble's state, to a smaller budget: ahead of the others, and not done
    train(configs[1].override(steps=16), out_dirs[1], quiet=True)
    summaries = train_ensemble(configs, out_dirs, quiet=True)
    for out_dir, config in zip(out_dirs, configs):
        assert set(eval_steps(config)) <= {row["step"] for row in rundir.read_metrics(out_dir)}
    assert all("ensemble" not in summary for summary in summaries)  # they finished alone


def test_bad_ensembles_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"member 1 differs from member 0 in width: .* one architecture and shape"):
        check_members([RunConfig(**TINY), RunConfig(**{**TINY, "width": 64, "seed": 1})])
    with pytest.raises(ValueError, match=r"member 1 differs from member 0 in task shape"):
        check_members([RunConfig(**TINY), RunConfig(**{**TINY, "task": "parity:h=6,w=6,g=2", "seed": 1})])
    with pytest.raises(ValueError, match=r"K >= 1"):
        check_members([])
    with pytest.raises(ValueError, match=r"the same run twice"):
        check_members([RunConfig(**TINY), RunConfig(**TINY)])


def test_sweep_ensemble_below_one_is_one_line_exit_2(tmp_path, capsys):
    code = cli.main(["sweep", "--preset", "quick", "--store", str(tmp_path / "store"), "--ensemble", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--ensemble must be >= 1, got 0" in err
    assert not (tmp_path / "store").exists()


def fake_group(job):
    """Stands in for train_job: records which runs were trained together."""
    return {key: {"tau_rule": None, "tau_mem": None, "group": job.keys} for key in job.keys}


def test_a_sweep_groups_runs_of_one_shape(tmp_path):
    configs = [RunConfig(**{**TINY, "seed": s}).resolved() for s in range(5)]
    configs.append(RunConfig(**{**TINY, "width": 64}).resolved())
    runs = {c.key(): c.to_dict() for c in configs}
    with RunStore(tmp_path, write=True) as store:
        counts = run_sweep(store, runs, workers=1, ensemble=2, job_fn=fake_group, poll_s=0.05)
        groups = {key: store.get(key)["summary"]["group"] for key in runs}
    assert counts["done"] == 6
    assert sorted(len(g) for g in {tuple(g) for g in groups.values()}) == [1, 1, 2, 2]
    wide = configs[-1].key()
    assert groups[wide] == [wide]  # the wider model never joins the narrow ones


def test_the_gpu_bench_runs_every_path_in_a_cpu_dry_run(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_ensemble", Path(__file__).parents[1] / "benches" / "gpu_ensemble.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu_ensemble.json"
    assert bench.main([str(out), "--dry-run"]) == 0
    result = json.loads(out.read_text())
    assert result["dry_run"] and set(result["results"]) == {"gpt", "dit"}
    for rows in result["results"].values():
        assert list(rows) == ["single_eager", "ensemble_1", "ensemble_2"]
        assert rows["ensemble_2"]["members"] == 2 and len(rows["ensemble_2"]["final_loss"]) == 2
        assert all(row["member_steps_per_s"] > 0 and row["eval_s_per_member"] > 0 for row in rows.values())


@pytest.mark.slow
def test_a_sweep_of_ensembles_measures_the_clocks_of_single_runs(tmp_path):
    """Whole runs drift apart in the last bits, so the clocks are compared statistically: the median clock of four
    seeds trained as one stacked ensemble (through ``run_sweep``) and as four single runs differ by no more than the
    single runs' seed spread. (A tiny GPT that crosses both clocks within 200 steps.)"""
    base = dict(TINY, steps=200, first_eval=10, evals_per_decade=8, eval_samples=64, lr=3e-3, warmup=20, bootstrap=0)
    configs = [RunConfig(**{**base, "seed": seed}).resolved() for seed in range(4)]
    runs = {c.key(): c.to_dict() for c in configs}
    with RunStore(tmp_path / "store", write=True) as store:
        assert run_sweep(store, runs, workers=1, ensemble=4, poll_s=0.1)["done"] == 4
        stacked = [store.get(c.key())["summary"] for c in configs]
    singles = [train(c, tmp_path / f"single{k}", quiet=True) for k, c in enumerate(configs)]
    assert sorted((s["ensemble"]["size"], s["ensemble"]["index"]) for s in stacked) == [(4, k) for k in range(4)]
    for clock in ("tau_rule", "tau_mem"):
        alone = [read_clock(s, clock).value for s in singles]
        together = [read_clock(s, clock).value for s in stacked]
        assert None not in alone and None not in together, clock  # both clocks cross: the comparison means something
        assert abs(np.median(together) - np.median(alone)) <= max(alone) - min(alone), (clock, together, alone)
