"""How the Triton kernels become torch ops that ``torch.compile`` can see into.

On a GPU each op is a ``torch.library.triton_op`` whose launches go through ``wrap_triton``: Dynamo and
AOTAutograd trace it into ``triton_kernel_wrapper_functional`` nodes, so Inductor schedules the Triton
kernels inside its own graph (and fuses around them) instead of calling an opaque op.

Under ``TRITON_INTERPRET=1`` (CPU tests) ``triton.jit`` returns an ``InterpretedFunction``, which torch
cannot trace. There each op is an opaque ``custom_op`` with the same body as its fake (shape) implementation:
``launch`` skips fake tensors, whose contents nobody reads. Eager results are the same on both paths.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch._subclasses.fake_tensor import is_fake
from torch.library import wrap_triton


def interpreted(kernel) -> bool:
    """True when ``kernel`` runs in Triton's interpreter (TRITON_INTERPRET=1 when it was defined)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    return isinstance(kernel, InterpretedFunction)


def launch(kernel, grid: tuple, args: tuple, kwargs: dict) -> None:
    """``kernel[grid](*args, **kwargs)``, traceable by torch.compile on the GPU (see the module docstring)."""
    if interpreted(kernel):
        if not any(isinstance(a, torch.Tensor) and is_fake(a) for a in args):
            kernel[grid](*args, **kwargs)
        return
    wrap_triton(kernel)[grid](*args, **kwargs)


def define_op(name: str, fn: Callable, kernel) -> torch.library.CustomOpDef:
    """Register ``fn`` (whose launches go through ``launch``) as the torch op ``name`` with no mutated inputs."""
    if interpreted(kernel):
        op = torch.library.custom_op(name, fn, mutates_args=())
        op.register_fake(fn)
        return op
    return torch.library.triton_op(name, fn, mutates_args=())
