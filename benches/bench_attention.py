"""Attention forward + backward: the fused Triton kernel against every SDPA backend.

    pytest benches/bench_attention.py --benchmark-enable        (or: python benches/record.py ...)

On CUDA: shapes (batch*heads, L, head_dim) from ``SHAPES``, fp32 and bf16, causal and not; the
SDPA backends a shape/dtype does not support (flash has no fp32, cudnn may be absent) are skipped.
On CPU (no Triton launch possible) a small bench of SDPA against the plain math reference keeps
the file running. ``gpu_check.py`` reuses these pieces for its one-call GPU record.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from innovwin.kernels import attention as fused

SHAPES = [(4096, 36, 32), (4096, 81, 64), (1024, 128, 64)]  # (batch*heads, L, head_dim)
HEADS = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SDPA_BACKENDS = {
    "sdpa_math": SDPBackend.MATH,
    "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa_flash": SDPBackend.FLASH_ATTENTION,
}
if hasattr(SDPBackend, "CUDNN_ATTENTION"):
    SDPA_BACKENDS["sdpa_cudnn"] = SDPBackend.CUDNN_ATTENTION
CUDA = torch.cuda.is_available()


def make_inputs(batch_heads: int, length: int, head_dim: int, dtype: torch.dtype, device: str, seed: int = 0):
    """q, k, v leaves (batch_heads // HEADS, HEADS, L, head_dim) needing grad, and an upstream gradient."""
    heads = HEADS if batch_heads % HEADS == 0 else 1
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (batch_heads // heads, heads, length, head_dim)
    q, k, v, grad = (torch.randn(shape, generator=gen, device=device, dtype=dtype) for _ in range(4))
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), grad


def sdpa_with(backend: SDPBackend):
    """SDPA pinned to one backend (raises RuntimeError where that backend cannot run the inputs)."""

    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return run


def sdpa_default(q, k, v, causal):
    """SDPA choosing its own backend, as the models call it on CPU."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def implementations(device: str) -> dict:
    """name -> attention(q, k, v, causal) for everything worth timing on ``device``."""
    if device == "cuda":
        return {"triton": fused.attention, **{name: sdpa_with(b) for name, b in SDPA_BACKENDS.items()}}
    return {"sdpa": sdpa_default, "reference": fused.attention_reference}


def forward_backward(attn, q, k, v, grad, causal):
    """One training-style use: the output and dq, dk, dv."""
    out = attn(q, k, v, causal)
    return out, torch.autograd.grad(out, (q, k, v), grad)


def runs(attn, q, k, v, grad, causal) -> str | None:
    """None if ``attn`` takes these inputs, else why not (for skipping unsupported SDPA backends)."""
    try:
        forward_backward(attn, q, k, v, grad, causal)
    except Exception as err:  # SDPA raises RuntimeError; anything else is recorded, not hidden
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def _bench(benchmark, name, attn, shape, dtype_name, causal, device):
    q, k, v, grad = make_inputs(*shape, DTYPES[dtype_name], device)
    why_not = runs(attn, q, k, v, grad, causal)
    if why_not and name.startswith("sdpa"):
        pytest.skip(f"{name} does not run {shape} {dtype_name}: {why_not}")
    if why_not:
        pytest.fail(f"{name} failed on {shape} {dtype_name}: {why_not}")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        forward_backward(attn, q, k, v, grad, causal)
        sync()

    benchmark.group = f"attention fwd+bwd {shape} {dtype_name} {'causal' if causal else 'bidirectional'}"
    benchmark.extra_info.update(impl=name, batch_heads=shape[0], L=shape[1], head_dim=shape[2],
                                dtype=dtype_name, causal=causal)
    benchmark(step)


CUDA_IMPLS = ["triton", *SDPA_BACKENDS]


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", CUDA_IMPLS)
def test_attention_cuda(benchmark, name, shape, dtype_name, causal):
    _bench(benchmark, name, implementations("cuda")[name], shape, dtype_name, causal, "cuda")


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("name", ["sdpa", "reference"])
def test_attention_cpu(benchmark, name, causal):
    _bench(benchmark, name, implementations("cpu")[name], (64, 36, 32), "fp32", causal, "cpu")
