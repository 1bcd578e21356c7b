"""The training driver: one run (or one stacked ensemble's K runs) end to end, evaluations on a log-spaced
schedule, exact resume, the clocks.

``train(config, out_dir)`` trains ``config.steps`` AdamW steps (linear warmup, then a constant rate: a decaying rate
would slow memorization down and bend tau_mem), evaluates at log-spaced steps, and after each evaluation appends a
row to metrics.jsonl and saves the full training state. Running it again on the same directory resumes from that
state: every random draw comes from generators whose states are saved, so on a CPU a killed-and-resumed run
writes the same metrics.jsonl as an uninterrupted one (except ``eval_seconds``, a wall-clock time).

A single run and an ensemble (:mod:`innovwin.train.ensemble`) are one :class:`Session`: the same loop, directory
life (:class:`~innovwin.train.lifecycle.RunLife`), state and loss accounting; only what steps them differs (one
ordinary backbone and AdamW, the arithmetic the golden rows pin, or K stacked). See :mod:`innovwin.store.rundir`
for the files.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from innovwin import tasks
from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.runtime import resolve_device
from innovwin.store import rundir
from innovwin.tasks.dataset import run_dataset
from innovwin.train.lifecycle import RunLife
from innovwin.train.members import Trainer
from innovwin.train.stacked import Ensemble


def eval_steps(config: RunConfig) -> list[int]:
    """Log-spaced evaluation steps: ``evals_per_decade`` per decade from ``first_eval``, rounded, and the last step."""
    decades = max(np.log10(config.steps / config.first_eval), 0.0)
    exponents = np.arange(int(np.floor(decades * config.evals_per_decade + 1e-9)) + 1) / config.evals_per_decade
    steps = {int(round(config.first_eval * 10**e)) for e in exponents}
    return sorted({s for s in steps if s <= config.steps} | {config.steps})


def default_out_dir(config: RunConfig) -> Path:
    """runs/<arch>-<task>-N<N>-<key>, e.g. runs/gpt-sudoku-n4-N64-1a2b3c4d (the task's n, the training set's N):
    readable, and the same command finds its run again."""
    slug = config.task.replace(":", "-").replace(",", "-").replace("=", "")
    earlier = Path("runs") / f"{config.arch}-{slug}-n{config.n_train}-{config.key()[:8]}"  # before N was capital
    return earlier if earlier.is_dir() else Path("runs") / f"{config.arch}-{slug}-N{config.n_train}-{config.key()[:8]}"


def check_run(config: RunConfig):
    """Resolve the config and its task, refusing what cannot run (before anything is written)."""
    config = config.resolved()
    task = tasks.make(config.task)
    if task.n_valid is not None and config.n_train > task.n_valid:
        raise ValueError(f"n_train {config.n_train} is larger than the valid set of {task.spec} "
                         f"({task.n_valid} configurations)")
    if config.n_train == task.n_valid:
        raise ValueError(f"n_train {config.n_train} is the whole valid set of {task.spec}: no held-out sample is "
                         "left and every valid sample is a copy (the chance copy rate is 1); train on fewer")
    return config, task


class StopRequests:
    """Turns SIGINT/SIGTERM into a request the loop honours between steps (a state saved mid-step would not
    resume exactly). A second signal interrupts at once."""

    def __init__(self):
        self.signal, self._saved = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def train(config: RunConfig, out_dir=None, *, quiet: bool = False, force: bool = False) -> dict:
    """Train (or resume) the run ``config`` in ``out_dir``; returns the summary (also in summary.json).

    Holds the run directory's lock throughout: a second train (or basins) on it is refused, not interleaved."""
    started = time.perf_counter()
    config, task = check_run(config)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config)
    summary, = train_runs([(config, task)], [out_dir], quiet=quiet, force=force, started=started)
    return summary


def train_runs(checked: list[tuple[RunConfig, object]], out_dirs: list[Path], *, quiet: bool, force: bool,
               started: float) -> list[dict] | None:
    """Train (or resume) the checked runs (:func:`check_run`; several: one ensemble's, ``check_members``) in
    ``out_dirs`` in lock-step, holding every directory's lock; their summaries in order, or None (nothing written)
    when their saved states are at different steps."""
    command = "innovwin train" if len(checked) == 1 else "innovwin ensemble"
    with contextlib.ExitStack() as locks:
        for out_dir in out_dirs:
            locks.enter_context(rundir.locked(out_dir, command))
        runs = [RunLife(out_dir, config, task) for (config, task), out_dir in zip(checked, out_dirs)]
        states = [run.prepare(force) for run in runs]  # reads only: bad input is refused before anything is written
        if not force and rundir.settle_states(out_dirs):  # a save of the states that a kill interrupted
            states = [run.saved_state() for run in runs]
        if len({state["step"] if state else 0 for state in states}) > 1:
            return None
        session = Session(runs, states, quiet=quiet, force=force, started=started)
        session.train()
        return session.finish()


class Session:
    """K runs (K = 1: a single run) trained in this process from their saved states: their directories
    (:class:`RunLife`), the :class:`~innovwin.train.members.Members` that step them (a single run's ordinary
    :class:`Trainer`, or a stacked :class:`Ensemble`), their evaluators and the timing; the one training loop."""

    def __init__(self, runs: list[RunLife], states: list[dict | None], *, quiet: bool, force: bool, started: float):
        configs = [run.config for run in runs]
        device = resolve_device(configs[0].device)
        datasets = [run_dataset(run.config, run.task) for run in runs]
        self.members = (Trainer(configs[0], runs[0].task, datasets[0], device) if len(runs) == 1 else
                        Ensemble(configs, [run.task for run in runs], datasets, device))
        for k, state in enumerate(states):
            if state is not None:
                self.members.load(k, state)
        self.timing = dict(states[0]["timing"]) if states[0] else {"train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0}
        self.earlier_wall, self.started = self.timing["wall_s"], started
        self.schedule = set(eval_steps(configs[0]))  # members share steps, first_eval and evals_per_decade
        evaluated = sorted(step for step in self.schedule if step <= self.members.step)
        for k, (run, state) in enumerate(zip(runs, states)):
            member = f" (member {k} of an ensemble of {len(runs)})" if len(runs) > 1 else ""
            run.open(state, evaluated, force=force, device=device, echo=None if quiet else tqdm.write, member=member)
        self.evaluators = [Evaluator(run.task, dataset, run.config, objective, device)
                           for run, dataset, objective in zip(runs, datasets, self.members.objectives)]
        self.runs, self.quiet = runs, quiet

    def train(self) -> None:
        """Train to the last step, evaluating on the schedule and saving the states after each evaluation; a stop
        request (SIGINT, SIGTERM) saves them and raises KeyboardInterrupt."""
        members, first = self.members, self.runs[0]
        steps = first.config.steps
        title = (f"{first.config.arch} {first.task.spec} N={first.config.n_train}" if len(self.runs) == 1
                 else f"ensemble of {len(self.runs)} {first.config.arch}")
        bar = tqdm(total=steps, initial=members.step, disable=self.quiet, unit="step", dynamic_ncols=True, desc=title)
        tick = time.perf_counter()
        with StopRequests() as stop, bar:
            while members.step < steps:
                if stop.signal is not None:
                    self.save()
                    raise KeyboardInterrupt
                members.train_step()
                bar.update(1)
                evaluating = members.step in self.schedule
                losses = members.losses.take_log_loss(members.step) or [None] * len(self.runs)
                for run, loss in zip(self.runs, losses):
                    run.stepped(members.step, loss, evaluating)
                if not evaluating:
                    continue
                train_losses = members.losses.take_train_loss()  # waits for the device: the train time is honest
                self.timing["train_s"] += time.perf_counter() - tick
                rows = self.evaluate(train_losses)
                self.timing["eval_s"] += sum(row["eval_seconds"] for row in rows)
                bar.set_postfix({name: f"{sum(row[field] for row in rows) / len(rows):{spec}}" for name, field, spec
                                 in (("loss", "train_loss", ".3f"), ("valid", "valid_frac", ".2f"),
                                     ("copy", "copy_frac", ".2f"))})
                self.save()
                tick = time.perf_counter()

    def evaluate(self, train_losses: list[float]) -> list[dict]:
        """Evaluate every member at this step and record each row (with its train loss) in its directory."""
        rows = []
        for run, loss, (row, samples, model) in zip(self.runs, train_losses, self.members.evaluate(self.evaluators)):
            row["train_loss"] = loss
            run.record(row, samples, model)
            rows.append(row)
        return rows

    def save(self) -> None:
        """Every member's state.pt, saved together (a killed save is finished or undone on resume)."""
        self.timing["wall_s"] = self.earlier_wall + time.perf_counter() - self.started
        rundir.save_states({run.out_dir: run.state(self.members.state(k), self.timing)
                            for k, run in enumerate(self.runs)})

    def finish(self) -> list[dict]:
        """Each run's summary (an ensemble member's records ``ensemble: {size, index}``)."""
        wall_s = self.earlier_wall + time.perf_counter() - self.started
        size = len(self.runs)
        return [run.finish(self.members.step, self.timing, wall_s,
                           **({"ensemble": {"size": size, "index": k}} if size > 1 else {}))
                for k, run in enumerate(self.runs)]
