"""AdamW for a stacked ensemble: K members' weights in one (K, P) tensor, each member with its own learning rate,
weight decay and gradient-norm clip, updated by a handful of operations on groups of rows (their count does not
grow with the number of parameter tensors; with one group, the GPU's, nor with K).

The arithmetic is torch.optim.AdamW's (decoupled weight decay, bias-corrected moments, eps outside the square
root) and the clip is ``clip_grad_norm_``'s, applied to each member's row: from one state, one step of a member
matches one step of its single run to rounding. :meth:`member_state` and :meth:`load_member` speak
torch.optim.AdamW's state_dict format, so a member's training state resumes as a single run and back.
"""
from __future__ import annotations

import math

import torch

EPS = 1e-8  # torch.optim.AdamW's default, which the single run uses


class MemberAdamW:
    """``step()`` clips each member's gradient row to its ``clip`` (0: no clip), then takes an AdamW step with its
    ``lr`` and ``weight_decay``; set those (K,) tensors before a step (the driver's per-member schedules)."""

    def __init__(self, weights: torch.Tensor, grad: torch.Tensor, betas: tuple[float, float],
                 groups: list[slice] | None = None):
        self.weights, self.grad, self.betas = weights, grad, betas
        self.exp_avg = torch.zeros_like(weights)
        self.exp_avg_sq = torch.zeros_like(weights)
        members = len(weights)
        self.lr = torch.zeros(members, 1, device=weights.device)
        self.weight_decay = torch.zeros(members, 1, device=weights.device)
        self.clip = torch.zeros(members, 1, device=weights.device)
        # rows updated together: all of them on a GPU (fewest kernels); on a CPU one member's rows fit the caches
        # that a (K, P) update streams through K times over
        self.groups = groups or [slice(None)]
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients in place: the stacked parameters' .grad are views of one tensor and must stay so."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for rows in self.groups:
            self._update(rows)

    def _update(self, rows: slice) -> None:
        grad, weights = self.grad[rows], self.weights[rows]
        exp_avg, exp_avg_sq = self.exp_avg[rows], self.exp_avg_sq[rows]
        lr, clip = self.lr[rows], self.clip[rows]
        norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
        scale = (clip / (norms + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s coefficient
        grad.mul_(torch.where(clip > 0, scale, torch.ones_like(scale)))
        beta1, beta2 = self.betas
        weights.mul_(1 - lr * self.weight_decay[rows])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**self.steps)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(EPS)
        weights.addcmul_(exp_avg / denom, step_size, value=-1)

    # --- one member's state in torch.optim.AdamW's format ----------------------------------------------------
    def member_state(self, k: int, views, template: dict) -> dict:
        """Member k's moments as AdamW's state_dict; ``views(tensor, k)`` cuts its row into parameter-shaped
        views (in parameter order), ``template`` is that member's AdamW state_dict (for the param groups)."""
        moments = zip(views(self.exp_avg, k).values(), views(self.exp_avg_sq, k).values())
        state = {i: {"step": torch.tensor(float(self.steps)), "exp_avg": avg.clone(), "exp_avg_sq": sq.clone()}
                 for i, (avg, sq) in enumerate(moments)}
        return {"state": state, "param_groups": template["param_groups"]}

    def load_member(self, k: int, views, saved: dict) -> None:
        """Copy AdamW state_dict ``saved`` into member k's rows; every member must have taken as many steps."""
        state = saved["state"]
        targets = zip(views(self.exp_avg, k).values(), views(self.exp_avg_sq, k).values())
        if len(state) != len(views(self.exp_avg, k)):
            raise ValueError(f"optimizer state has {len(state)} parameters, the model {len(views(self.exp_avg, k))}")
        steps = {int(entry["step"]) for entry in state.values()}
        if len(steps) != 1 or (self.steps and steps != {self.steps}):
            raise ValueError(f"optimizer state at step(s) {sorted(steps)}, the other members at {self.steps}")
        with torch.no_grad():
            for i, (avg, sq) in enumerate(targets):
                avg.copy_(state[i]["exp_avg"])
                sq.copy_(state[i]["exp_avg_sq"])
        self.steps = steps.pop()
