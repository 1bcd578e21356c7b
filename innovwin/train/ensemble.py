"""Batched ensembles: K runs of one architecture and shape trained and evaluated in lock-step in one process.

On a GPU a tiny model's step is launch-bound; stacking K members' weights (:mod:`innovwin.models.stacked`) runs
their K steps in the kernels of one. Each member is still a run of its own: its own config and key (seeds, task
rule of the same shape, N, lr, weight decay, warmup, clip, EMA decay), training set, generators, optimizer state
(:class:`~innovwin.train.member_adamw.MemberAdamW`), run directory, metrics.jsonl, snapshots and clocks. Its
state.pt has the single run's format (plus ``ensemble``: K), and its summary.json records
``ensemble: {"size": K, "index": k}``.

An ensemble of one is the single run: ``train_ensemble([config], [dir])`` is :func:`~innovwin.train.driver.train`,
the same code and the same arithmetic (a stacked matmul may round differently from the single run's addmm). For
K > 1 the driver reuses the single run's pieces member by member: :func:`check_run`, the dataset, the objective, the
:class:`Evaluator`, the run directory and the summary, and the loop itself (:func:`run_loop`).

Members' states are saved together (:func:`rundir.save_states`), so a killed ensemble resumes every member from one
step, bit for bit. Members found at different steps (a sweep resumed with another grouping) finish one by one as
single runs, whose state format is the same.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import time
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from innovwin import objectives, tasks
from innovwin.config import RunConfig
from innovwin.evaluation import Evaluator
from innovwin.evaluation.batched import evaluate_members
from innovwin.models.stacked import Stack
from innovwin.runtime import resolve_device
from innovwin.store import provenance, rundir
from innovwin.store.runlog import LOSS_EVERY, RunLog, truncate_loss
from innovwin.tasks.dataset import run_dataset
from innovwin.train.driver import (check_run, eval_steps, finish_run, init_backbone, learning_rate, run_loop,
                                   save_evaluation, train)
from innovwin.train.member_adamw import MemberAdamW
from innovwin.train.step import make_backward

# What the members of one ensemble share besides the task's shape (cells and alphabet) and whether they keep an
# EMA: the architecture and its size, the batch, the step and evaluation schedule, the sampler, Adam's betas, and
# where and how they compute. Every other field is a member's own.
SHARED = ("arch", "depth", "width", "heads", "mlp_ratio", "batch", "steps", "evals_per_decade", "first_eval",
          "eval_samples", "sampler_steps", "temperature", "beta1", "beta2", "device", "dtype", "compile",
          # the diffusion encoding, preconditioning and sampler (one objective scores and samples every member;
          # p_mean and p_std, the training noise draws, stay each member's own)
          "data_scale", "sigma_data", "sigma_min", "sigma_max", "rho", "s_churn", "s_tmin", "s_tmax", "s_noise")

# The stacked parameters' .grad are strided views of one (K, P) tensor; autograd accumulates into them in place
# and warns (once) that their layout is not the one it would have chosen.
GRAD_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


def signature(config: RunConfig) -> dict:
    """What must be equal across an ensemble's members (the grouping key of ``innovwin sweep --ensemble``)."""
    task = tasks.make(config.task)
    return {**{name: getattr(config, name) for name in SHARED}, "task shape": (task.n_cells, task.k),
            "ema (on/off)": config.ema is not None}


def check_members(configs: list[RunConfig]) -> list[tuple[RunConfig, object]]:
    """Resolve every member (as :func:`check_run`) and refuse an ensemble that cannot train in lock-step."""
    if len(configs) < 1:
        raise ValueError("an ensemble needs K >= 1 members, got none")
    checked = [check_run(config) for config in configs]
    first = signature(checked[0][0])
    for k, (config, _) in enumerate(checked[1:], 1):
        differ = [name for name, value in signature(config).items() if first[name] != value]
        if differ:
            raise ValueError(f"ensemble member {k} differs from member 0 in {', '.join(differ)}: the members of one "
                             "ensemble must have one architecture and shape")
    keys = [config.key() for config, _ in checked]
    if len(set(keys)) < len(keys):
        raise ValueError("an ensemble lists the same run twice")
    arch = checked[0][0].arch
    if len(checked) > 1 and not objectives.get(arch).stackable:
        raise ValueError(f"arch {arch!r} cannot be stacked: its backbone does not take a leading member dimension")
    return checked


class Ensemble:
    """K members' weights, EMA, optimizer moments, generators and train-loss sums, stepped together; the same
    interface as :class:`~innovwin.train.driver.Trainer` for :func:`run_loop`, with one train loss per member."""

    def __init__(self, configs: list[RunConfig], task_list: list, datasets: list, device: torch.device,
                 members_per_pass: int | None = None):
        self.configs, self.device = configs, device
        first = configs[0]
        arch = objectives.get(first.arch)
        self.objectives = [arch.build_objective(task, config) for task, config in zip(task_list, configs)]
        members = [init_backbone(config, task).to(device) for config, task in zip(configs, task_list)]
        self.ema = None
        if first.ema is not None:
            self.ema = Stack([copy.deepcopy(member).requires_grad_(False) for member in members])
            self.ema_weight = torch.tensor([[1 - config.ema] for config in configs], device=device)
        # AdamW's state_dict layout of each member (param groups with its lr, betas, weight decay), before the
        # members' parameters become views of the stack
        self.adamw_templates = [torch.optim.AdamW(member.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                                  weight_decay=config.weight_decay, fused=device.type == "cuda")
                                .state_dict() for member, config in zip(members, configs)]
        self.stack = Stack(members)
        if members_per_pass is None:  # one pass for all on a GPU; on a CPU member by member (Stack.passes says why)
            members_per_pass = len(configs) if device.type == "cuda" else 1
        self.members_per_pass = members_per_pass
        grad = torch.zeros_like(self.stack.flat)
        passes = self.stack.passes(members_per_pass, grad)
        self.optimizer = MemberAdamW(self.stack.flat, grad, (first.beta1, first.beta2), [rows for rows, _ in passes])
        self.optimizer.weight_decay.copy_(torch.tensor([[config.weight_decay] for config in configs]))
        self.optimizer.clip.copy_(torch.tensor([[config.grad_clip] for config in configs]))
        self.generators = [torch.Generator(device).manual_seed(config.train_seed) for config in configs]
        self.train_sets = [objective.encode(torch.from_numpy(dataset.train).to(device))
                           for objective, dataset in zip(self.objectives, datasets)]
        loss = self.objectives[0].loss  # members share the encoding: one objective scores the stacked rows

        def loss_fn(net, *inputs):
            return loss(net, *inputs).view(net.members, -1).mean(1)

        amp = {"auto": None, "float32": False, "bfloat16": True}[first.dtype]
        self.passes = [(rows, net, make_backward(net, loss_fn, compile=first.compile, amp=amp, members=net.members))
                       for rows, net in passes]
        self.step = 0
        self.metrics = [""] * len(configs)  # each member's metrics.jsonl text up to this step (kept in its state)
        self.loss_sum = torch.zeros(len(configs), device=device)
        self.loss_count = 0
        self.log_sum = torch.zeros(len(configs), device=device)  # since the last loss.jsonl rows

    def __len__(self) -> int:
        return len(self.configs)

    def train_step(self) -> None:
        self.optimizer.lr.copy_(torch.tensor([[learning_rate(config, self.step)] for config in self.configs]))
        parts = []
        for config, objective, train_set, generator in zip(self.configs, self.objectives, self.train_sets,
                                                           self.generators):
            idx = torch.randint(len(train_set), (config.batch,), generator=generator, device=self.device)
            parts.append(objective.training_inputs(train_set[idx], generator))
        self.optimizer.zero_grad()
        losses = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=GRAD_LAYOUT_WARNING)
            for rows, net, backward in self.passes:
                net.train()
                losses.append(backward(*(torch.cat(member_inputs) for member_inputs in zip(*parts[rows]))))
        self.optimizer.step()
        losses = torch.cat(losses)
        self.loss_sum += losses
        self.log_sum += losses
        self.loss_count += 1
        if self.ema is not None:
            self.ema.flat.lerp_(self.stack.flat, self.ema_weight)
        self.step += 1

    def take_train_loss(self) -> list[float | None]:
        """Each member's mean training loss since the last call."""
        sums = self.loss_sum.tolist()
        values = [value / self.loss_count if self.loss_count else None for value in sums]
        self.loss_sum.zero_()
        self.loss_count = 0
        return values

    def take_log_loss(self) -> list[float] | None:
        """Each member's mean training loss of the last LOSS_EVERY steps, at steps that are multiples of it."""
        if self.step % LOSS_EVERY:
            return None
        values = (self.log_sum / LOSS_EVERY).tolist()
        self.log_sum.zero_()
        return values

    @property
    def eval_stack(self) -> Stack:
        return self.ema if self.ema is not None else self.stack

    # --- each member's state, in the single run's format ---------------------------------------------------
    def state(self, k: int, key: str, timing: dict) -> dict:
        def weights(stack):
            return {name: tensor.detach().clone() for name, tensor in stack.members[k].state_dict().items()}

        return {
            "key": key,
            "step": self.step,
            "model": weights(self.stack),
            "ema": None if self.ema is None else weights(self.ema),
            "optimizer": self.optimizer.member_state(k, self.stack.member_views, self.adamw_templates[k]),
            "generator": self.generators[k].get_state(),
            "torch_rng": torch.get_rng_state(),
            "loss_sum": self.loss_sum[k].detach().cpu().clone(),
            "loss_count": self.loss_count,
            "log_sum": self.log_sum[k].detach().cpu().clone(),
            "timing": dict(timing),
            "metrics": self.metrics[k],
            "ensemble": len(self),
        }

    def load(self, k: int, state: dict) -> None:
        try:
            if self.step and int(state["step"]) != self.step:
                raise ValueError(f"member {k} is at step {state['step']}, the others at {self.step}")
            self.stack.members[k].load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.members[k].load_state_dict(state["ema"])
            self.optimizer.load_member(k, self.stack.member_views, state["optimizer"])
            self.generators[k].set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.loss_sum[k] = state["loss_sum"].to(self.device)
            self.loss_count = int(state["loss_count"])
            if "log_sum" in state:  # a state saved before members kept loss.jsonl starts its first row afresh
                self.log_sum[k] = state["log_sum"].to(self.device)
            self.step = int(state["step"])
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise ValueError(f"training state of member {k} does not fit this ensemble "
                             f"({type(error).__name__}: {error}); pass --force to start over") from None


def train_ensemble(configs: list[RunConfig], out_dirs: list, *, quiet: bool = False,
                   force: bool = False) -> list[dict]:
    """Train (or resume) the runs ``configs`` in ``out_dirs`` as one stacked ensemble; their summaries, in order."""
    if len(configs) != len(out_dirs):
        raise ValueError(f"{len(configs)} configs but {len(out_dirs)} run directories")
    if len(configs) == 1:
        return [train(configs[0], out_dirs[0], quiet=quiet, force=force)]
    started = time.perf_counter()
    checked = check_members(configs)
    configs = [config for config, _ in checked]
    task_list = [task for _, task in checked]
    out_dirs = [Path(out_dir) for out_dir in out_dirs]
    if len({out_dir.resolve() for out_dir in out_dirs}) < len(out_dirs):
        raise ValueError("two members of an ensemble share a run directory")
    device = resolve_device(configs[0].device)
    with contextlib.ExitStack() as locks:
        for out_dir in out_dirs:
            locks.enter_context(rundir.locked(out_dir, "innovwin ensemble"))
        summaries = _train_locked(configs, task_list, out_dirs, device, quiet, force, started)
    if summaries is None:  # members at different steps: each finishes alone (taking its own lock)
        return [train(config, out_dir, quiet=quiet) for config, out_dir in zip(configs, out_dirs)]
    return summaries


def _train_locked(configs, task_list, out_dirs, device, quiet: bool, force: bool, started: float) -> list | None:
    states = [rundir.prepare(out_dir, config, force) for out_dir, config in zip(out_dirs, configs)]  # reads only
    if not force and rundir.settle_states(out_dirs):
        states = [rundir.load_state(out_dir, config.key()) for out_dir, config in zip(out_dirs, configs)]
    if len({state["step"] if state else 0 for state in states}) > 1:
        return None
    datasets = [run_dataset(config, task) for config, task in zip(configs, task_list)]
    ensemble = Ensemble(configs, task_list, datasets, device)
    for k, state in enumerate(states):
        if state is not None:
            ensemble.load(k, state)
    timing = dict(states[0]["timing"]) if states[0] else {"train_s": 0.0, "eval_s": 0.0, "wall_s": 0.0}
    earlier_wall = timing["wall_s"]

    schedule = set(eval_steps(configs[0]))  # the members share steps, first_eval and evals_per_decade
    evaluated = sorted(step for step in schedule if step <= ensemble.step)
    for k, (out_dir, config, state) in enumerate(zip(out_dirs, configs, states)):
        if force:
            rundir.reset(out_dir)
        ensemble.metrics[k], note = rundir.start(out_dir, config, state, evaluated)
        if note:
            print(f"innovwin ensemble: {note}", file=sys.stderr)
    logs = []  # each member's provenance, log.txt, loss.jsonl and progress.json, as a single run keeps them
    for out_dir, config, state in zip(out_dirs, configs, states):
        truncate_loss(out_dir, ensemble.step)
        provenance.start_session(out_dir, device, ensemble.step)
        logs.append(RunLog(out_dir, config.steps, ensemble.step, last_row=(rundir.read_metrics(out_dir) or [None])[-1]))
        logs[-1].line(f"{'resume' if state else 'start'} {out_dir} as member {len(logs) - 1} of an ensemble of "
                      f"{len(configs)} at step {ensemble.step} of {config.steps}")
    evaluators = [Evaluator(task, dataset, config, objective, device)
                  for task, dataset, config, objective in zip(task_list, datasets, configs, ensemble.objectives)]

    def save_states():
        timing["wall_s"] = earlier_wall + time.perf_counter() - started
        rundir.save_states({out_dir: ensemble.state(k, config.key(), timing)
                            for k, (out_dir, config) in enumerate(zip(out_dirs, configs))})

    def evaluate(train_losses, bar) -> float:
        stack = ensemble.eval_stack
        results = evaluate_members(stack.net.eval(), [m.eval() for m in stack.members], evaluators, ensemble.step)
        rows = []
        for k, (out_dir, config, task, model, (row, samples), loss) in enumerate(
                zip(out_dirs, configs, task_list, stack.members, results, train_losses)):
            row["train_loss"] = loss
            ensemble.metrics[k] += rundir.append_metrics(out_dir, row)
            save_evaluation(out_dir, config, task, model, row["step"], samples)
            logs[k].progress(ensemble.step, row)
            logs[k].line(f"step {ensemble.step}: valid {row['valid_frac']:.3f}, copy {row['copy_frac']:.3f}")
            rows.append(row)
        valid = sum(row["valid_frac"] for row in rows) / len(rows)
        bar.set_postfix(valid=f"{valid:.2f}", copy=f"{sum(row['copy_frac'] for row in rows) / len(rows):.2f}")
        return sum(row["eval_seconds"] for row in rows)

    bar = tqdm(total=configs[0].steps, initial=ensemble.step, disable=quiet, unit="step", dynamic_ncols=True,
               desc=f"ensemble of {len(configs)} {configs[0].arch}")
    def after_step(step: int, evaluating: bool) -> None:
        losses = ensemble.take_log_loss()
        for k, log in enumerate(logs):
            if losses is not None:
                log.loss(step, losses[k])
            if not evaluating:
                log.progress(step)

    run_loop(ensemble, configs[0].steps, schedule, timing, bar, evaluate, save_states, after_step)
    wall_s = earlier_wall + time.perf_counter() - started
    summaries = []
    for k, (out_dir, config) in enumerate(zip(out_dirs, configs)):
        summaries.append(finish_run(out_dir, config, timing, wall_s, ensemble={"size": len(configs), "index": k}))
        provenance.end_session(out_dir, ensemble.step)
        logs[k].progress(ensemble.step, state="done")
    return summaries
