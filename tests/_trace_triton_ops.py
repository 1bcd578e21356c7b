"""Trace the attention op's forward and backward through torch.compile(fullgraph=True) as on a GPU; print JSON.

Run by tests/test_triton_op_trace.py in a subprocess: the kernels must be imported *without* TRITON_INTERPRET
so that they are JITFunctions and the ops ``triton_op``s, which a pytest session here cannot do. Nothing
launches: a stand-in Triton driver reports an sm_90 target (torch's mutation analysis compiles each kernel to
TTIR for it), AOTAutograd lowers the backward eagerly, and the recorded graphs' compiled functions stop the
run before any kernel would execute. Output: the Triton kernels each graph calls, the custom ops left in it,
and which kernel arguments torch would clone (mutation analysis: only the outputs the kernels write).
"""
from __future__ import annotations

import json
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from torch import nn  # noqa: E402
from torch._dynamo.backends.common import aot_autograd  # noqa: E402
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

import innovwin.models.attention as dispatch  # noqa: E402
from innovwin.kernels import attention as fused  # noqa: E402


class _Sm90Driver:
    """Just enough of a Triton driver for torch to build TTIR: the target."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


class _Stop(Exception):
    pass


class TinyAttention(nn.Module):
    """qkv projection, the dispatched attention (forced to the Triton op), output projection."""

    def __init__(self, width=32, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x, causal: bool):
        b, length, width = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        y = dispatch.attention(*qkv.unbind(0), causal)
        return self.proj(y.transpose(1, 2).reshape(b, length, width))


def kernel_name(idx: int) -> str:
    kernel = kernel_side_table.get_kernel(idx)
    while not hasattr(kernel, "arg_names") or hasattr(kernel, "configs"):  # an Autotuner wraps the JITFunction
        kernel = kernel.fn
    return kernel.fn.__name__


def describe(gm) -> dict:
    kernels, custom_ops, cloned = [], [], {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if "triton_kernel_wrapper" in name:
            kname = kernel_name(node.kwargs["kernel_idx"])
            kernels.append(kname)
            cloned[kname] = sorted(node.kwargs.get("tensors_to_clone", []))
        elif name.startswith("innovwin."):
            custom_ops.append(name)
    return {"kernels": kernels, "custom_ops": custom_ops, "tensors_to_clone": cloned}


def trace(fn, *args) -> dict:
    graphs = {}

    def compiler(name):
        def compile_graph(gm, example_inputs):
            graphs[name] = describe(gm)

            def stop(*_):
                raise _Stop
            stop._boxed_call = True
            return stop
        return compile_graph

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=aot_autograd(fw_compiler=compiler("forward"),
                                                                       bw_compiler=compiler("backward")))
    try:
        compiled(*args)
    except _Stop:
        pass
    return graphs


def main() -> int:
    assert not fused.INTERPRETED, "the kernels were defined under the interpreter"
    triton.runtime.driver.set_active(_Sm90Driver())
    os.environ["TRITON_INTERPRET"] = "1"  # the launchers' device check accepts CPU tensors; nothing launches
    os.environ[dispatch.ENV_VAR] = "triton"
    torch._functorch.config.force_non_lazy_backward_lowering = True  # backward graph built at compile time

    q, k, v = (torch.randn(2, 2, 37, 16, requires_grad=True) for _ in range(3))
    module = TinyAttention()
    x = torch.randn(3, 37, 32, requires_grad=True)
    result = {
        "op": trace(lambda q, k, v: fused.attention(q, k, v, True).square().sum(), q, k, v),
        "module": trace(lambda x: module(x, False).sin().mean(), x),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
