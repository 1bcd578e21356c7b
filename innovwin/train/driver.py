"""The training driver: one run end to end, evaluations on a log-spaced schedule, exact resume, the clocks.

``train(config, out_dir)`` trains ``config.steps`` AdamW steps (linear warmup, then a constant rate: a decaying rate
would slow memorization down and bend tau_mem), evaluates at log-spaced steps, and after each evaluation appends a
row to metrics.jsonl and saves the full training state. Running it again on the same directory resumes from that
state: every random draw comes from generators whose states are saved, so on a CPU a killed-and-resumed run
writes the same metrics.jsonl as an uninterrupted one (except ``eval_seconds``, a wall-clock time).
See :mod:`innovwin.store.rundir` for the files.
"""
from __future__ import annotations

import copy
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from innovwin import objectives, tasks
from innovwin.analysis import clocks, memorization
from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.runtime import resolve_device
from innovwin.store import provenance, rundir
from innovwin.store.runlog import LOSS_EVERY, RunLog, truncate_loss
from innovwin.tasks.dataset import run_dataset
from innovwin.train.step import make_train_step


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


def init_backbone(config: RunConfig, task):
    """The run's backbone at its initial weights (drawn from ``init_seed``, leaving the global RNG as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        return objectives.get(config.arch).build_backbone(task, depth=config.depth, width=config.width,
                                                          heads=config.heads, mlp_ratio=config.mlp_ratio)


def learning_rate(config: RunConfig, step: int) -> float:
    """The rate of the step after ``step``: linear warmup over ``warmup`` steps, then constant."""
    return config.lr * min(1.0, (step + 1) / config.warmup) if config.warmup else config.lr


class Trainer:
    """The model, its optimizer, EMA and the training generator: everything state.pt holds."""

    def __init__(self, config: RunConfig, task, dataset, device: torch.device):
        self.config, self.device = config, device
        arch = objectives.get(config.arch)
        self.objective = arch.build_objective(task, config)
        self.model = init_backbone(config, task).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if config.ema is not None else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                           weight_decay=config.weight_decay, fused=device.type == "cuda")
        self.generator = torch.Generator(device).manual_seed(config.train_seed)
        self.train_set = self.objective.encode(torch.from_numpy(dataset.train).to(device))
        loss_fn = lambda net, *inputs: self.objective.loss(net, *inputs).mean()  # noqa: E731
        amp = {"auto": None, "float32": False, "bfloat16": True}[config.dtype]
        self.step_fn = make_train_step(self.model, self.optimizer, loss_fn, compile=config.compile, amp=amp,
                                       clip=config.grad_clip or None)
        self.step = 0
        self.metrics = ""  # metrics.jsonl's text up to this step, saved with the state to restore a damaged file
        self.loss_sum = torch.zeros((), device=device)  # since the last evaluation (metrics.jsonl's train_loss)
        self.loss_count = 0
        self.log_sum = torch.zeros((), device=device)  # since the last loss.jsonl row

    def train_step(self) -> None:
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(config, self.step)
        idx = torch.randint(len(self.train_set), (config.batch,), generator=self.generator, device=self.device)
        batch = self.train_set[idx]
        inputs = self.objective.training_inputs(batch, self.generator)
        self.model.train()
        loss = self.step_fn(*inputs)
        self.loss_sum += loss
        self.log_sum += loss
        self.loss_count += 1
        if self.ema is not None:
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - config.ema)
        self.step += 1

    def take_train_loss(self) -> float | None:
        """Mean training loss since the last call."""
        value = float(self.loss_sum) / self.loss_count if self.loss_count else None
        self.loss_sum.zero_()
        self.loss_count = 0
        return value

    def take_log_loss(self) -> float | None:
        """Mean training loss of the last LOSS_EVERY steps, at steps that are multiples of it."""
        if self.step % LOSS_EVERY:
            return None
        value = float(self.log_sum) / LOSS_EVERY
        self.log_sum.zero_()
        return value

    @property
    def eval_model(self):
        return (self.ema if self.ema is not None else self.model).eval()

    def state(self, key: str, timing: dict) -> dict:
        return {
            "key": key,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "loss_sum": self.loss_sum.detach().cpu(),
            "loss_count": self.loss_count,
            "log_sum": self.log_sum.detach().cpu(),
            "timing": dict(timing),
            "metrics": self.metrics,
        }

    def load(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.loss_sum = state["loss_sum"].to(self.device)
            self.loss_count = int(state["loss_count"])
            if "log_sum" in state:  # a state saved before loss.jsonl starts its first row afresh
                self.log_sum = state["log_sum"].to(self.device)
            self.step = int(state["step"])
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise ValueError(f"training state does not fit this run ({type(error).__name__}: {error}); "
                             "pass --force to start over") from None


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
    device = resolve_device(config.device)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config)
    with rundir.locked(out_dir, "innovwin train"):
        return _train_locked(config, task, device, out_dir, quiet, force, started)


def _train_locked(config, task, device, out_dir: Path, quiet: bool, force: bool, started: float) -> dict:
    state = rundir.prepare(out_dir, config, force)  # reads only: bad input is refused before anything is written
    dataset = run_dataset(config, task)
    trainer = Trainer(config, task, dataset, device)
    if state is not None:
        trainer.load(state)
    timing = dict(state["timing"]) if state else {"train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0}
    earlier_wall = timing["wall_s"]

    if force:
        rundir.reset(out_dir)
    schedule = set(eval_steps(config))
    trainer.metrics, note = rundir.start(out_dir, config, state, sorted(s for s in schedule if s <= trainer.step))
    if note:
        print(f"innovwin train: {note}", file=sys.stderr)
    truncate_loss(out_dir, trainer.step)
    provenance.start_session(out_dir, device, trainer.step)
    log = RunLog(out_dir, config.steps, trainer.step, echo=None if quiet else tqdm.write,
                 last_row=(rundir.read_metrics(out_dir) or [None])[-1])
    log.line(f"resume {out_dir} from step {trainer.step} of {config.steps} (its saved training state)" if state
             else f"start {out_dir}: {config.arch} on {task.spec}, N = {config.n_train}, {config.steps} steps, "
                  f"on {device}", echo=True)
    evaluator = Evaluator(task, dataset, config, trainer.objective, device)

    def save_state():
        timing["wall_s"] = earlier_wall + time.perf_counter() - started
        rundir.save_torch(out_dir / rundir.STATE, trainer.state(config.key(), timing))

    def after_step(step: int, evaluating: bool) -> None:
        if (loss := trainer.take_log_loss()) is not None:
            log.loss(step, loss)
        if not evaluating:
            log.progress(step)

    def evaluate(train_loss, bar) -> float:
        row = record_evaluation(out_dir, config, task, trainer, evaluator, train_loss)
        log.progress(trainer.step, row)
        if not quiet:
            bar.set_postfix(loss=f"{train_loss:.3f}", valid=f"{row['valid_frac']:.2f}", copy=f"{row['copy_frac']:.2f}")
        log.line(f"step {trainer.step}: train loss {train_loss:.4f}, valid {row['valid_frac']:.3f}, "
                 f"copy {row['copy_frac']:.3f} (chance {row['chance_copy'] or 0:.2g}), "
                 f"eval {row['eval_seconds']:.1f} s")
        return row["eval_seconds"]

    bar = tqdm(total=config.steps, initial=trainer.step, disable=quiet, unit="step", dynamic_ncols=True,
               desc=f"{config.arch} {task.spec} N={config.n_train}")
    run_loop(trainer, config.steps, schedule, timing, bar, evaluate, save_state, after_step)
    summary = finish_run(out_dir, config, timing, earlier_wall + time.perf_counter() - started)
    provenance.end_session(out_dir, trainer.step)
    log.progress(trainer.step, state="done")
    for text in clocks.describe(summary).splitlines():
        log.line(text)
    return summary


def run_loop(trainer, steps: int, schedule: set, timing: dict, bar, evaluate, save_state, after_step=None) -> None:
    """Train to ``steps``, evaluating at the schedule's steps (``evaluate(train_loss, bar) -> seconds``) and saving
    the state after each evaluation; a stop request saves and raises KeyboardInterrupt. ``after_step(step,
    evaluating)``, if given, runs after every step (a single run's loss log and progress file). A single run and a
    stacked ensemble (whose train loss is one per member) share this loop."""
    tick = time.perf_counter()
    with StopRequests() as stop, bar:
        while trainer.step < steps:
            if stop.signal is not None:
                save_state()
                raise KeyboardInterrupt
            trainer.train_step()
            bar.update(1)
            if after_step is not None:
                after_step(trainer.step, trainer.step in schedule)
            if trainer.step not in schedule:
                continue
            train_loss = trainer.take_train_loss()  # waits for the device: the training time below is honest
            timing["train_s"] += time.perf_counter() - tick
            timing["eval_s"] += evaluate(train_loss, bar)
            save_state()
            tick = time.perf_counter()


def finish_run(out_dir, config: RunConfig, timing: dict, wall_s: float, **extra) -> dict:
    """Write summary.json (the clocks, the timing, and ``extra``) and return it."""
    summary = summarize_run(out_dir, config)
    loop_s = timing["train_s"] + timing["eval_s"]
    summary["timing"] = {
        "steps_per_s": config.steps / timing["train_s"] if timing["train_s"] else None,
        "eval_share": timing["eval_s"] / loop_s if loop_s else None,
        "wall_s": wall_s,
    }
    summary.update(extra)
    rundir.write_json(out_dir / rundir.SUMMARY, summary)
    return summary


def record_evaluation(out_dir, config, task, trainer, evaluator, train_loss) -> dict:
    """Evaluate the model at the trainer's step and write the row, the per-sample arrays and the snapshot."""
    model = trainer.eval_model
    row, samples = evaluator(model, trainer.step)
    row["train_loss"] = train_loss
    trainer.metrics += rundir.append_metrics(out_dir, row)
    save_evaluation(out_dir, config, task, model, row["step"], samples)
    return row


def save_evaluation(out_dir, config, task, model, step: int, samples: dict) -> None:
    """Write one evaluation's per-sample arrays and, if kept, the model's weights (its row is the caller's)."""
    rundir.save_eval_samples(out_dir, step, samples)
    if config.snapshots:
        rundir.save_snapshot(out_dir, step, task.spec, config.arch, model)


def summarize_run(out_dir, config: RunConfig) -> dict:
    """summary.json's content (less the timing) from the run directory's rows and per-sample arrays."""
    rows = rundir.read_metrics(out_dir)
    samples = rundir.load_eval_samples(out_dir, [row["step"] for row in rows])
    summary = clocks.summarize(rows, samples.get("valid"), samples.get("copy"),
                               rule_threshold=config.rule_threshold, mem_threshold=config.mem_threshold,
                               n_resamples=config.bootstrap, seed=config.sampling_seed)
    if "heldout_hit" in samples:  # copies in excess of held-out hits at the last evaluation
        summary["memorization"] = {"step": rows[-1]["step"], **memorization.excess(
            samples["copy"][-1], samples["heldout_hit"][-1], n_resamples=config.bootstrap, seed=config.sampling_seed)}
    return {**summary, "final": rows[-1], "config": config.to_dict(), "out_dir": str(out_dir)}
