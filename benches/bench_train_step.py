"""A whole training step (forward, backward, clip, AdamW): eager SDPA against the fast path, DiT and GPT.

    pytest benches/bench_train_step.py --benchmark-enable        (or: python benches/record.py ...)

Model depth 6, width 256, 8 heads, on the 6x6 parity grid; batch 512 on CUDA, 32 on CPU (so it finishes).
- ``eager_sdpa``: the model as written, PyTorch SDPA attention, AdamW (foreach); bf16 autocast on CUDA.
- ``fast``: ``make_train_step``'s CUDA path: torch.compile (static shapes) with the Triton attention op inside,
  bf16 autocast, fused AdamW. CUDA only (skipped on CPU). The target on an H200 is >= 2x ``eager_sdpa``.
``gpu_check.py`` times eager, compiled and compiled + Triton steps in its one-call GPU record.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
import torch

from innovwin import objectives, tasks
from innovwin.models.attention import ENV_VAR
from innovwin.train.step import COMPILE_MODE, make_train_step

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
TASK = "parity:h=6,w=6,g=2"
SIZE = dict(depth=6, width=256, heads=8)
BATCH = 512 if CUDA else 32


@contextmanager
def attention_backend(name: str | None):
    """Pin ``innovwin.models.attention`` to one backend (None: its own choice) while a step is built and run."""
    old = os.environ.pop(ENV_VAR, None)
    if name is not None:
        os.environ[ENV_VAR] = name
    try:
        yield
    finally:
        os.environ.pop(ENV_VAR, None)
        if old is not None:
            os.environ[ENV_VAR] = old


def make_step(arch: str, *, compile: bool, amp: bool, fused_adam: bool, batch: int = BATCH,
              mode: str = COMPILE_MODE, device: str = DEVICE, seed: int = 0):
    """(step, batch_args): a train step on a freshly seeded model, and one fixed batch to call it with."""
    task = tasks.make(TASK)
    torch.manual_seed(seed)
    model = objectives.build_model(task, arch, **SIZE).to(device)
    objective = objectives.get(arch).build_objective(task)
    # fused=None, not False: False would also turn off the foreach default and time a per-tensor loop
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused_adam or None)
    cells = torch.from_numpy(task.sample(batch, seed=seed)).to(device)
    args = objective.training_inputs(objective.encode(cells), torch.Generator().manual_seed(seed))

    def loss_fn(m, *inputs):
        return objective.loss(m, *inputs).mean()
    return make_train_step(model, optimizer, loss_fn, compile=compile, amp=amp, mode=mode), args


def synced(step, args):
    """One step, waited for, so a timer sees the device time."""
    loss = step(*args)
    if CUDA:
        torch.cuda.synchronize()
    return loss


PATHS = {
    "eager_sdpa": dict(attention="sdpa", compile=False, amp=CUDA, fused_adam=False),
    "fast": dict(attention=None, compile=True, amp=True, fused_adam=True),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("arch", ["dit", "gpt"])
def test_train_step(benchmark, arch, path):
    opts = dict(PATHS[path])
    if opts["compile"] and not CUDA:
        pytest.skip("the fast path is CUDA only (compiled + Triton attention)")
    benchmark.group = f"train_step_{arch}"
    benchmark.extra_info.update(device=DEVICE, batch=BATCH, **SIZE)
    with attention_backend(opts.pop("attention")):
        torch._dynamo.reset()
        step, args = make_step(arch, **opts)
        loss = benchmark.pedantic(synced, args=(step, args), warmup_rounds=3, rounds=20 if CUDA else 3)
    assert torch.isfinite(loss)
