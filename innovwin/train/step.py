"""The training step: forward, backward, gradient clipping, optimizer step — fast on a GPU, plain on a CPU.

Small transformers on 36-81 tokens are launch-bound on a GPU, so the fast path compiles the loss with static shapes
(one fused graph for forward and one for backward, the Triton attention op inside) under bf16 autocast.
Random draws (EDM noise levels, noises) stay outside the compiled function: pass them in as tensors, e.g.
``step(x0, *edm.training_noise(x0, generator))`` with ``loss_fn=lambda m, x0, s, n: edm.loss_at(m, x0, s, n).mean()``.
For a one-kernel optimizer step on CUDA, build the optimizer with ``torch.optim.AdamW(..., fused=True)``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

COMPILE_MODE = "max-autotune-no-cudagraphs"


def make_backward(model: nn.Module, loss_fn: Callable[..., torch.Tensor], *, compile: bool | None = None,
                  amp: bool | None = None, mode: str = COMPILE_MODE,
                  members: int | None = None) -> Callable[..., torch.Tensor]:
    """``backward(*batch) -> loss``: ``loss_fn(model, *batch)`` and its backward, accumulating into the parameters'
    ``.grad`` (the caller zeroes them and steps the optimizer). The loss is a scalar, or one per member, shape
    ``(members,)``, for a stacked ensemble; then their sum is backpropagated, which gives each member the gradient
    of its own loss.

    ``compile`` (torch.compile, static shapes) and ``amp`` (bf16 autocast) default to on for a CUDA model, off
    otherwise, where the pass is eager fp32. The returned loss is detached and stays on the device (no host sync).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    device_type = params[0].device.type
    on_cuda = device_type == "cuda"
    compile = on_cuda if compile is None else compile
    amp = on_cuda if amp is None else amp

    def forward(*batch):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            return loss_fn(model, *batch)

    if compile:
        forward = torch.compile(forward, mode=mode, dynamic=False)

    def backward(*batch) -> torch.Tensor:
        if compile:  # tells a CUDA-graph mode that the previous step's outputs are free to overwrite
            torch.compiler.cudagraph_mark_step_begin()
        loss = forward(*batch)
        if loss.shape != (() if members is None else (members,)):
            raise ValueError(f"loss_fn must return a scalar{'' if members is None else f' per member ({members},)'}, "
                             f"got shape {tuple(loss.shape)}")
        (loss if members is None else loss.sum()).backward()
        return loss.detach().clone() if compile else loss.detach()  # a graph replay may reuse the loss buffer

    return backward


def make_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor], *,
                    compile: bool | None = None, amp: bool | None = None, clip: float | None = 1.0,
                    mode: str = COMPILE_MODE) -> Callable[..., torch.Tensor]:
    """``step(*batch) -> loss`` running ``loss_fn(model, *batch)`` (a scalar), backward, clip, ``optimizer.step()``;
    ``compile`` and ``amp`` as in :func:`make_backward`, ``clip`` the max global gradient norm (None: no clipping).
    """
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    backward = make_backward(model, loss_fn, compile=compile, amp=amp, mode=mode)

    def step(*batch) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = backward(*batch)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        return loss

    return step
