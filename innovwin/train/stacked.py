"""K > 1 members stepped as one stacked ensemble (:mod:`innovwin.models.stacked`): one step's kernels for K runs.

Each member keeps its own config (seeds, N, task rule of the same shape, lr, weight decay, warmup, clip, EMA decay),
training set, generator and optimizer state (:class:`~innovwin.train.member_adamw.MemberAdamW`, which converts to and
from ``torch.optim.AdamW``'s, so a member's state.pt has the single run's format). A stacked matmul may round
differently from the single run's addmm, so a single run is never stacked (:class:`~innovwin.train.members.Trainer`).
"""
from __future__ import annotations

import copy
import warnings

import torch

from innovwin import objectives
from innovwin.config import RunConfig
from innovwin.evaluation.batched import evaluate_members
from innovwin.models.stacked import Stack
from innovwin.train.member_adamw import MemberAdamW
from innovwin.train.members import AMP, Members, init_backbone
from innovwin.train.step import make_backward

# The stacked parameters' .grad are strided views of one (K, P) tensor; autograd accumulates into them in place
# and warns (once) that their layout is not the one it would have chosen.
GRAD_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


class Ensemble(Members):
    """K members' weights, EMA and optimizer moments as (K, P) tensors, stepped together in passes of
    ``members_per_pass`` members (default: all on a GPU, one on a CPU; :meth:`Stack.passes` says why)."""

    def __init__(self, configs: list[RunConfig], task_list: list, datasets: list, device: torch.device,
                 members_per_pass: int | None = None):
        super().__init__(configs, device)
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
        if members_per_pass is None:
            members_per_pass = len(configs) if device.type == "cuda" else 1
        self.members_per_pass = members_per_pass
        grad = torch.zeros_like(self.stack.flat)
        passes = self.stack.passes(members_per_pass, grad)
        self.optimizer = MemberAdamW(self.stack.flat, grad, (first.beta1, first.beta2), [rows for rows, _ in passes])
        self.optimizer.weight_decay.copy_(torch.tensor([[config.weight_decay] for config in configs]))
        self.optimizer.clip.copy_(torch.tensor([[config.grad_clip] for config in configs]))
        self.train_sets = [objective.encode(torch.from_numpy(dataset.train).to(device))
                           for objective, dataset in zip(self.objectives, datasets)]
        loss = self.objectives[0].loss  # members share the encoding: one objective scores the stacked rows

        def loss_fn(net, *inputs):
            return loss(net, *inputs).view(net.members, -1).mean(1)

        self.passes = [(rows, net, make_backward(net, loss_fn, compile=first.compile, amp=AMP[first.dtype],
                                                 members=net.members))
                       for rows, net in passes]

    def _step(self, rates: list[float]) -> torch.Tensor:
        self.optimizer.lr.copy_(torch.tensor([[rate] for rate in rates]))
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
        if self.ema is not None:
            self.ema.flat.lerp_(self.stack.flat, self.ema_weight)
        return torch.cat(losses)

    @property
    def eval_stack(self) -> Stack:
        return self.ema if self.ema is not None else self.stack

    def evaluate(self, evaluators: list) -> list[tuple[dict, dict, torch.nn.Module]]:
        """[(row, per-sample arrays, the evaluated model)] of each member at this step, generated in one batch."""
        stack = self.eval_stack
        models = [member.eval() for member in stack.members]
        results = evaluate_members(stack.net.eval(), models, evaluators, self.step)
        return [(row, samples, model) for (row, samples), model in zip(results, models)]

    def state(self, k: int) -> dict:
        return {**super().state(k), "ensemble": len(self)}

    def weights(self, k: int) -> dict:
        def copied(stack):
            return {name: tensor.detach().clone() for name, tensor in stack.members[k].state_dict().items()}

        return {"model": copied(self.stack), "ema": None if self.ema is None else copied(self.ema),
                "optimizer": self.optimizer.member_state(k, self.stack.member_views, self.adamw_templates[k])}

    def load_weights(self, k: int, state: dict) -> None:
        self.stack.members[k].load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.members[k].load_state_dict(state["ema"])
        self.optimizer.load_member(k, self.stack.member_views, state["optimizer"])
