"""The training driver: one run (or one stacked ensemble's K runs) end to end, evaluations on a log-spaced
schedule, exact resume, the clocks.

``train(config, out_dir)`` trains up to ``config.steps`` AdamW steps (linear warmup, then a constant rate: a decaying
rate would slow memorization down and bend tau_mem), or until the clocks ``config.until`` names are measured
(:mod:`innovwin.train.until`), evaluates at log-spaced steps, and after each evaluation appends a row to
metrics.jsonl and saves the full training state. Running it again on the same directory resumes from that state:
every random draw comes from generators whose states are saved, so on a CPU a killed-and-resumed run writes the
same metrics.jsonl as an uninterrupted one (except ``eval_seconds``, a wall-clock time). The budget is not part of
the run: asked for more steps, a run trains on from its state (a run extended is the prefix of the run trained
straight); asked for fewer, it is answered from its rows without training (docs/budgets.md).

A single run and an ensemble (:mod:`innovwin.train.ensemble`) are one :class:`Session`: the same loop, directory
life (:class:`~innovwin.train.lifecycle.RunLife`), state and loss accounting; only what steps them differs (one
ordinary backbone and AdamW, the arithmetic the golden rows pin, or K stacked). See :mod:`innovwin.store.rundir`
for the files.
"""
from __future__ import annotations

import contextlib
import glob
import signal
import threading
import time
from dataclasses import replace
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


def grid_steps(config: RunConfig) -> list[int]:
    """The log-spaced evaluation grid up to ``steps``: ``evals_per_decade`` per decade from ``first_eval``, rounded.
    It does not depend on the budget, so a run trained further evaluates at the same steps."""
    decades = max(np.log10(config.steps / config.first_eval), 0.0)
    exponents = np.arange(int(np.floor(decades * config.evals_per_decade + 1e-9)) + 1) / config.evals_per_decade
    steps = {int(round(config.first_eval * 10**e)) for e in exponents}
    return sorted(s for s in steps if s <= config.steps)


def eval_steps(config: RunConfig) -> list[int]:
    """The evaluation steps of a run trained to its budget: the grid and the last step."""
    return sorted({*grid_steps(config), config.steps})


def default_out_dir(config: RunConfig) -> Path:
    """runs/<arch>-<task>-N<N>-<key>, e.g. runs/gpt-sudoku-n4-N64-1a2b3c4d (the task's n, the training set's N):
    readable, and the same command finds its run again, at any budget. A directory named before (before N was
    capital, or by an earlier key, when steps was part of it) that holds this run is found too: the one this command
    named, else the one with the largest budget."""
    slug = config.task.replace(":", "-").replace(",", "-").replace("=", "")
    named = Path("runs") / f"{config.arch}-{slug}-N{config.n_train}-{config.key()[:8]}"
    if named.is_dir():
        return named
    earlier = []
    for path in Path("runs").glob(glob.escape(f"{config.arch}-{slug}-") + f"[nN]{config.n_train}-" + "?" * 8):
        with contextlib.suppress(ValueError):
            saved = rundir.read_config(path)
            if saved.key() == config.key():
                earlier.append((path.name.endswith(config.earlier_key()[:8]), saved.steps, path))
    return max(earlier)[2] if earlier else named


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
    when the saved states of the runs still to train are at different steps."""
    command = "innovwin train" if len(checked) == 1 else "innovwin ensemble"
    with contextlib.ExitStack() as locks:
        for out_dir in out_dirs:
            locks.enter_context(rundir.locked(out_dir, command))
        runs = [RunLife(out_dir, config, task) for (config, task), out_dir in zip(checked, out_dirs)]
        states = [run.prepare(force) for run in runs]  # reads only: bad input is refused before anything is written
        if not force and rundir.settle_states(out_dirs):  # a save of the states that a kill interrupted
            states = [run.saved_state() for run in runs]
        steps = [state["step"] if state else 0 for state in states]
        if len({step for step, run in zip(steps, runs) if not run.ended(step)}) > 1:
            return None
        session = Session(runs, states, quiet=quiet, force=force, started=started)
        session.train()
        return session.finish()


class Session:
    """K runs (K = 1: a single run) trained in this process from their saved states: their directories
    (:class:`RunLife`), the :class:`~innovwin.train.members.Members` that step the ones still training (a single
    run's ordinary :class:`Trainer`, or a stacked :class:`Ensemble`), their evaluators and the timing; the one
    training loop. A run whose stop (:mod:`innovwin.train.until`) is reached leaves: its summary is written, and an
    ensemble's other members go on as a smaller stack, each member's arithmetic unchanged."""

    def __init__(self, runs: list[RunLife], states: list[dict | None], *, quiet: bool, force: bool, started: float):
        self.device = resolve_device(runs[0].config.device)
        config = runs[0].config  # members share steps, first_eval and evals_per_decade
        self.schedule, self.grid = set(eval_steps(config)), set(grid_steps(config))
        self.runs, self.quiet, self.stacked = runs, quiet, len(runs) > 1
        self.summaries: dict[int, dict] = {}
        for k, (run, state) in enumerate(zip(runs, states)):
            step = state["step"] if state else 0
            member = f" (member {k} of an ensemble of {len(runs)})" if self.stacked else ""
            run.open(state, eval_steps(replace(run.config, steps=step)) if state else [], force=force,
                     device=self.device, echo=None if quiet else tqdm.write, member=member)
        self.active = [k for k, state in enumerate(states) if not runs[k].ended(state["step"] if state else 0)]
        timed = states[self.active[0] if self.active else 0]  # the states still training were saved together
        self.timing = dict(timed["timing"]) if timed else {"train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0}
        self.earlier_wall, self.started = self.timing["wall_s"], started
        self.datasets = {k: run_dataset(runs[k].config, runs[k].task) for k in self.active}
        self.members = self._members({k: state for k, state in enumerate(states) if k in self.active})
        self.evaluators = {k: Evaluator(runs[k].task, self.datasets[k], runs[k].config, objective, self.device)
                           for k, objective in zip(self.active, self.members.objectives if self.active else [])}

    def _members(self, states: dict[int, dict | None]):
        """The Members of the active runs, at ``states`` (run index -> its state; None: step 0)."""
        if not self.active:
            return None
        runs = [self.runs[k] for k in self.active]
        datasets = [self.datasets[k] for k in self.active]
        members = (Ensemble([run.config for run in runs], [run.task for run in runs], datasets, self.device)
                   if self.stacked else Trainer(runs[0].config, runs[0].task, datasets[0], self.device))
        for i, k in enumerate(self.active):
            if states[k] is not None:
                members.load(i, states[k])
        return members

    def train(self) -> None:
        """Train the active runs until each reaches its stop, evaluating on the schedule and saving the states after
        each evaluation; a stop request (SIGINT, SIGTERM) saves them and raises KeyboardInterrupt."""
        if not self.active:
            return
        first = self.runs[0]
        title = (f"{first.config.arch} {first.task.spec} N={first.config.n_train}" if not self.stacked
                 else f"ensemble of {len(self.runs)} {first.config.arch}")
        bar = tqdm(total=first.config.steps, initial=self.members.step, disable=self.quiet, unit="step",
                   dynamic_ncols=True, desc=title)
        tick = time.perf_counter()
        with StopRequests() as stop, bar:
            while self.active:
                if stop.signal is not None:
                    self.save()
                    raise KeyboardInterrupt
                members = self.members
                members.train_step()
                bar.update(1)
                evaluating = members.step in self.schedule
                losses = members.losses.take_log_loss(members.step) or [None] * len(self.active)
                for k, loss in zip(self.active, losses):
                    self.runs[k].stepped(members.step, loss, evaluating)
                if not evaluating:
                    continue
                # a row off the grid (the budget's last step) leaves the loss sum running: the next grid row's
                # train_loss is the same whether or not the run stopped here before
                train_losses = members.losses.take_train_loss(reset=members.step in self.grid)
                self.timing["train_s"] += time.perf_counter() - tick
                rows = self.evaluate(train_losses)
                self.timing["eval_s"] += sum(row["eval_seconds"] for row in rows)
                bar.set_postfix({name: f"{sum(row[field] for row in rows) / len(rows):{spec}}" for name, field, spec
                                 in (("loss", "train_loss", ".3f"), ("valid", "valid_frac", ".2f"),
                                     ("copy", "copy_frac", ".2f"))})
                self.save()
                self.leave([k for k in self.active if self.runs[k].ended(members.step)])
                tick = time.perf_counter()

    def evaluate(self, train_losses: list[float]) -> list[dict]:
        """Evaluate every active run at this step and record each row (with its train loss) in its directory."""
        rows = []
        evaluated = self.members.evaluate([self.evaluators[k] for k in self.active])
        for k, loss, (row, samples, model) in zip(self.active, train_losses, evaluated):
            row["train_loss"] = loss
            self.runs[k].record(row, samples, model)
            rows.append(row)
        return rows

    def leave(self, done: list[int]) -> None:
        """Finish the runs ``done`` (their states are saved) and go on with the others, restacked from their states."""
        if not done:
            return
        states = {k: self.members.state(i) for i, k in enumerate(self.active) if k not in done}
        step = self.members.step
        for k in done:
            self.summaries[k] = self._finish(k, step)
        self.active = [k for k in self.active if k not in done]
        self.members = self._members(states)

    def save(self) -> None:
        """Every active run's state.pt, saved together (a killed save is finished or undone on resume)."""
        self.timing["wall_s"] = self.earlier_wall + time.perf_counter() - self.started
        rundir.save_states({self.runs[k].out_dir: self.runs[k].state(self.members.state(i), self.timing)
                            for i, k in enumerate(self.active)})

    def _finish(self, k: int, trained: int) -> dict:
        wall_s = self.earlier_wall + time.perf_counter() - self.started
        size = len(self.runs)
        return self.runs[k].finish(trained, self.timing, wall_s,
                                   **({"ensemble": {"size": size, "index": k}} if self.stacked else {}))

    def finish(self) -> list[dict]:
        """Each run's summary, in order (an ensemble member's records ``ensemble: {size, index}``); a run that
        trained nothing in this session is answered from its rows."""
        for k, run in enumerate(self.runs):
            if k not in self.summaries:
                self.summaries[k] = self._finish(k, run.trained)
        return [self.summaries[k] for k in range(len(self.runs))]
