"""`refine`: narrow a clock's bracket by evaluating K more times between the two evaluations around its crossing.

A run keeps its full training state (optimizer, EMA, generators) only at its end, in state.pt; a snapshot holds
the evaluated weights alone. Keeping a resumable state at every evaluation would cost about three times the
weights per evaluation, so refine replays training from step 0 instead: every draw comes from the run's seeded
generators, so on a CPU the replay is the same run. That is checked, not assumed: the replayed model must
generate exactly the samples stored for the scheduled evaluations on either side of the new steps (the bracket's
ends), or nothing is written. The new evaluations are held in memory until both checks pass.

They are ordinary rows (marked ``"refined": true``) with their per-sample arrays and snapshots, put in step order;
the summary is recomputed from every row. The planned steps depend only on the run's scheduled evaluations, so
refine run again after an interruption evaluates what is missing, and after a finished refinement does nothing.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from innovwin.analysis import clocks
from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.runtime import resolve_device
from innovwin.store import rundir
from innovwin.tasks.dataset import run_dataset
from innovwin.train.driver import check_run, eval_steps
from innovwin.train import until
from innovwin.train.lifecycle import RunLife
from innovwin.train.members import Trainer

KEPT = ("ensemble",)  # what the summary it rewrites says of the run beside its stop and timing: a member's place


def inner_steps(lo: float, hi: float, k: int) -> list[int]:
    """``k`` log-spaced integer steps strictly between ``lo`` and ``hi`` (every integer there when fewer fit)."""
    start = max(lo, 1.0)
    spaced = np.rint(start * (hi / start) ** (np.arange(1, k + 1) / (k + 1))).astype(int)
    inside = sorted({int(s) for s in spaced if lo < s < hi})
    everything = list(range(int(lo) + 1, int(np.ceil(hi))))
    return everything if len(everything) <= k else inside


def plan(run_dir, config: RunConfig, names, k: int, end: int | None = None) -> dict[str, list[int]]:
    """The steps to evaluate for each clock in ``names``: ``k`` inside its bracket on the scheduled evaluations up to
    the run's stop ``end`` (default: its budget). A clock that never crossed has no bracket to refine (none planned)."""
    end = config.steps if end is None else end
    scheduled = set(eval_steps(config))
    rows = [row for row in rundir.read_metrics(run_dir) if row["step"] in scheduled and row["step"] <= end]
    if not rows or rows[-1]["step"] != end:
        raise ValueError(f"{run_dir} has not finished (last evaluation at step "
                         f"{rows[-1]['step'] if rows else 'none'} of {end}): finish it with `innovwin train`")
    found = clocks.summarize(rows, rule_threshold=config.rule_threshold, mem_threshold=config.mem_threshold,
                             n_resamples=0)
    steps = {}
    for name in names:
        clock = clocks.read_clock(found, name, rows[-1]["step"])
        steps[name] = [] if clock.censoring == "right" else inner_steps(*clock.bracket, k)
    return steps


def check_request(clock: str, evals: int) -> None:
    """Refuse a clock that is not one ``until`` can wait for (rule, mem, both) or fewer than one evaluation."""
    if not until.WAITS.get(clock):
        raise ValueError(f"--clock must be one of {', '.join(name for name, waits in until.WAITS.items() if waits)}, "
                         f"got {clock!r}")
    if evals < 1:
        raise ValueError(f"--evals must be >= 1, got {evals}")


def refine(run_dir, clock: str = "both", evals: int = 8, *, progress=None) -> dict:
    """Evaluate ``evals`` more times inside the bracket of ``clock`` (rule, mem or both); returns the summary,
    also written to summary.json (with ``refined``: each clock's planned steps)."""
    check_request(clock, evals)
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG).is_file():  # checked before the lock, which would leave a .lock behind
        raise ValueError(f"{run_dir} is not a run directory (no {rundir.CONFIG})")
    with rundir.locked(run_dir, "innovwin refine"):
        config, task = check_run(rundir.read_config(run_dir))
        rundir.load_state(run_dir, config.key())  # a state of another run, or a corrupt one: refused before any write
        old = rundir.read_summary(run_dir) or {}
        stop = old.get("stop")  # where `until` stopped the run (or the budget asked) answers; else its budget
        planned = plan(run_dir, config, until.WAITS[clock], evals, stop["step"] if stop else None)
        done = {row["step"] for row in rundir.read_metrics(run_dir)}
        todo = sorted({step for steps in planned.values() for step in steps} - done)
        run = RunLife(run_dir, config, task)
        # always inserted, none or some: state.pt's copy of the rows catches up with metrics.jsonl even where a
        # refine killed between the two writes left it behind (else the next train would restore the older rows)
        run.insert(_replay(run, todo, progress) if todo else [])
        kept = {name: old[name] for name in KEPT if name in old}
        return run.write_summary(stop, old.get("timing"), **kept,
                                 refined={name: steps for name, steps in planned.items() if steps})


def _replay(run: RunLife, todo: list[int], progress) -> list[tuple]:
    """Train from step 0 through the scheduled evaluation after ``todo``'s last step, evaluating at each step of
    ``todo``; the evaluations (row, per-sample arrays, model), once the replay reproduced the scheduled ones around
    them."""
    device = resolve_device(run.config.device)
    dataset = run_dataset(run.config, run.task)
    trainer = Trainer(run.config, run.task, dataset, device)
    evaluator = Evaluator(run.task, dataset, run.config, trainer.objective, device)
    scheduled = eval_steps(run.config)
    checks = {max((s for s in scheduled if s < todo[0]), default=None), min(s for s in scheduled if s > todo[-1])}
    wanted, held = set(todo), []
    while trainer.step < max(checks - {None}):
        trainer.train_step()
        if trainer.step in checks:
            _check_replay(run.out_dir, trainer, evaluator)
        if trainer.step in wanted:
            (row, samples, model), = trainer.evaluate([evaluator])
            row.update(train_loss=trainer.losses.take_train_loss()[0], refined=True)
            held.append((row, samples, copy.deepcopy(model)))
            if progress is not None:
                progress(row)
    return held


def _check_replay(run_dir: Path, trainer: Trainer, evaluator: Evaluator) -> None:
    """The replay must generate the samples the run stored at this step: then it is the same run."""
    trainer.losses.take_train_loss()  # the next refined row's loss counts from here, as a scheduled row's would
    (_, samples, _), = trainer.evaluate([evaluator])
    stored = rundir.load_eval_samples(run_dir, [trainer.step])["keys"][0]
    if not np.array_equal(samples["keys"], stored):
        differ = int((samples["keys"] != stored).reshape(len(stored), -1).any(axis=1).sum())
        raise ValueError(f"replaying {run_dir} does not reproduce its evaluation at step {trainer.step} "
                         f"({differ} of {len(stored)} samples differ): training is not deterministic on this "
                         "device; nothing was written")
