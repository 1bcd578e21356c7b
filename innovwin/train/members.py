"""What trains: K runs' models, optimizers, EMA, generators and losses, stepped together (K = 1: a single run).

:class:`Members` holds what every member's state.pt keeps besides its weights and optimizer (the step, the training
generator, the global RNG, the loss sums), in the one format a single run and an ensemble's member share, so a
member's state resumes as a single run. :class:`Trainer` is the single run: the ordinary backbone (addmm) and
``torch.optim.AdamW``, the arithmetic the golden rows pin; :class:`~innovwin.train.stacked.Ensemble` is K > 1
members stacked into one set of weights.
"""
from __future__ import annotations

import copy

import torch

from innovwin import objectives
from innovwin.config import RunConfig
from innovwin.store.runlog import LOSS_EVERY
from innovwin.train.step import make_train_step

# torch autocast per config.dtype ("auto": bf16 on CUDA, fp32 elsewhere: make_backward's default)
AMP = {"auto": None, "float32": False, "bfloat16": True}


def init_backbone(config: RunConfig, task):
    """The run's backbone at its initial weights (drawn from ``init_seed``, leaving the global RNG as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        return objectives.get(config.arch).build_backbone(task, depth=config.depth, width=config.width,
                                                          heads=config.heads, mlp_ratio=config.mlp_ratio)


def learning_rate(config: RunConfig, step: int) -> float:
    """The rate of the step after ``step``: linear warmup over ``warmup`` steps, then constant."""
    return config.lr * min(1.0, (step + 1) / config.warmup) if config.warmup else config.lr


class LossAccount:
    """Each member's training loss, summed on the device (no host sync per step) since the last evaluation
    (metrics.jsonl's ``train_loss``) and since the last loss.jsonl row (every LOSS_EVERY steps)."""

    def __init__(self, members: int, device: torch.device):
        self.since_eval = torch.zeros(members, device=device)
        self.count = 0
        self.since_log = torch.zeros(members, device=device)

    def add(self, losses: torch.Tensor) -> None:
        """One step's loss per member (a scalar for one member)."""
        self.since_eval += losses
        self.since_log += losses
        self.count += 1

    def take_train_loss(self, reset: bool = True) -> list[float | None]:
        """Each member's mean training loss since the last call that reset the sums (``reset`` False: they go on)."""
        values = [value / self.count if self.count else None for value in self.since_eval.tolist()]
        if reset:
            self.since_eval.zero_()
            self.count = 0
        return values

    def take_log_loss(self, step: int) -> list[float] | None:
        """Each member's mean training loss of the last LOSS_EVERY steps, at steps that are multiples of it."""
        if step % LOSS_EVERY:
            return None
        values = [value / LOSS_EVERY for value in self.since_log.tolist()]
        self.since_log.zero_()
        return values

    def state(self, k: int) -> dict:
        return {"loss_sum": self.since_eval[k].detach().cpu().clone(), "loss_count": self.count,
                "log_sum": self.since_log[k].detach().cpu().clone()}

    def load(self, k: int, state: dict) -> None:
        self.since_eval[k] = state["loss_sum"].to(self.since_eval.device)
        self.count = int(state["loss_count"])
        if "log_sum" in state:  # a state saved before loss.jsonl starts its first row afresh
            self.since_log[k] = state["log_sum"].to(self.since_log.device)


class Members:
    """K runs stepped together: the step, each member's training generator and losses, and each member's state.pt
    in one format. A subclass holds the weights: ``_step(rates) -> losses``, ``weights(k)``, ``load_weights(k,
    state)``, ``evaluate(evaluators)``."""

    def __init__(self, configs: list[RunConfig], device: torch.device):
        self.configs, self.device = configs, device
        self.generators = [torch.Generator(device).manual_seed(config.train_seed) for config in configs]
        self.losses = LossAccount(len(configs), device)
        self.step = 0

    def __len__(self) -> int:
        return len(self.configs)

    def train_step(self) -> None:
        self.losses.add(self._step([learning_rate(config, self.step) for config in self.configs]))
        self.step += 1

    def state(self, k: int) -> dict:
        """Member ``k``'s training state (state.pt less the run directory's key, timing and rows)."""
        return {"step": self.step, **self.weights(k), "generator": self.generators[k].get_state(),
                "torch_rng": torch.get_rng_state(), **self.losses.state(k)}

    def load(self, k: int, state: dict) -> None:
        try:
            self.load_weights(k, state)
            self.generators[k].set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.losses.load(k, state)
            self.step = int(state["step"])
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            whose = "" if len(self) == 1 else f" of member {k}"
            raise ValueError(f"training state{whose} does not fit this run ({type(error).__name__}: {error}); "
                             "pass --force to start over") from None


class Trainer(Members):
    """One run: its backbone, ``torch.optim.AdamW``, EMA and training generator, stepped as an ordinary model."""

    def __init__(self, config: RunConfig, task, dataset, device: torch.device):
        super().__init__([config], device)
        self.objective = objectives.get(config.arch).build_objective(task, config)
        self.model = init_backbone(config, task).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if config.ema is not None else None
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
                                           weight_decay=config.weight_decay, fused=device.type == "cuda")
        self.train_set = self.objective.encode(torch.from_numpy(dataset.train).to(device))
        loss_fn = lambda net, *inputs: self.objective.loss(net, *inputs).mean()  # noqa: E731
        self.step_fn = make_train_step(self.model, self.optimizer, loss_fn, compile=config.compile,
                                       amp=AMP[config.dtype], clip=config.grad_clip or None)

    @property
    def objectives(self) -> list:
        return [self.objective]

    def _step(self, rates: list[float]) -> torch.Tensor:
        config, generator = self.configs[0], self.generators[0]
        for group in self.optimizer.param_groups:
            group["lr"] = rates[0]
        idx = torch.randint(len(self.train_set), (config.batch,), generator=generator, device=self.device)
        inputs = self.objective.training_inputs(self.train_set[idx], generator)
        self.model.train()
        loss = self.step_fn(*inputs)
        if self.ema is not None:
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - config.ema)
        return loss

    @property
    def eval_model(self):
        return (self.ema if self.ema is not None else self.model).eval()

    def evaluate(self, evaluators: list) -> list[tuple[dict, dict, torch.nn.Module]]:
        """[(row, per-sample arrays, the evaluated model)] at this step."""
        model = self.eval_model
        return [(*evaluators[0](model, self.step), model)]

    def weights(self, k: int) -> dict:
        return {"model": self.model.state_dict(), "ema": None if self.ema is None else self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_weights(self, k: int, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
