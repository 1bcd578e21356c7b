"""Fused attention for short sequences: one Triton program holds a whole (batch, head) tile.

Our models attend over at most 128 tokens (one per grid cell, plus BOS), so a whole query x key
tile fits in registers. Forward and backward each run as one program per (batch, head) and
never loop over key blocks: the forward saves the log-sum-exp of each query row, and the
backward recomputes the probabilities from it and produces dq, dk and dv in one pass.
Sequences are padded to the next power of two (at least 16, the smallest tl.dot tile) and masked.

Precision: matmuls accumulate in fp32; bf16/fp16 operands feed the tensor cores directly (the
probabilities are rounded to the input dtype before P @ V, as in FlashAttention). fp32 inputs use
``FP32_DOT_PRECISION`` = "tf32x3" on the GPU: three TF32 tensor-core products that recover fp32
accuracy (our tests demand <= 1e-4 relative error; plain "tf32" gives about 1e-3 and fails them).
Set it to "ieee" for exact fp32 FMA products. The interpreter (CPU) always computes in fp32.

``attention`` is registered as the torch custom op ``innovwin::attention`` with autograd and a
fake (meta) implementation, so ``torch.compile`` and CUDA-graph capture keep it inside one graph.
``attention_reference`` is the plain PyTorch definition the kernels are tested against.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

MAX_SEQ_LEN = 128
HEAD_DIMS = (16, 32, 64)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FP32_DOT_PRECISION = "tf32x3"
NUM_WARPS = {16: 4, 32: 4, 64: 4, 128: 8}  # per padded block size; a first guess, see benches/gpu_attention.py


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim), causally masked if asked) v, computed in at least fp32."""
    work = torch.promote_types(q.dtype, torch.float32)
    scores = q.to(work) @ k.to(work).transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:  # key j is hidden from query i when j > i (top-left aligned, as SDPA's is_causal)
        future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return (scores.softmax(dim=-1) @ v.to(work)).to(q.dtype)


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the fused kernel cannot take these inputs, or None when it can."""
    tensors = {"q": q, "k": k, "v": v}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            return f"{name} must be a torch.Tensor, got {type(t).__name__}"
        if t.ndim != 4:
            return f"{name} must have shape (batch, heads, L, head_dim), got shape {tuple(t.shape)}"
    if not q.shape == k.shape == v.shape:
        return f"q, k, v must have equal shapes, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    if not q.dtype == k.dtype == v.dtype:
        return f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
    if q.dtype not in DTYPES:
        return f"dtype must be float32, bfloat16 or float16, got {q.dtype}"
    if not q.device == k.device == v.device:
        return f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}"
    if q.device.type != "cuda" and not (q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return f"the Triton kernel needs a CUDA device (or TRITON_INTERPRET=1 on cpu), got device {q.device}"
    length, head_dim = q.shape[-2:]
    if not 1 <= length <= MAX_SEQ_LEN:
        return f"sequence length L must be in 1..{MAX_SEQ_LEN}, got {length}"
    if head_dim not in HEAD_DIMS:
        return f"head_dim must be one of {HEAD_DIMS}, got {head_dim}"
    return None


def _check(q, k, v) -> None:
    reason = unsupported_reason(q, k, v)
    if reason is not None:
        raise ValueError(reason)


def block_size(length: int) -> int:
    """The tile side a sequence of this length is padded to: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(length))


def _dot_precision(dtype: torch.dtype) -> str:
    return FP32_DOT_PRECISION if dtype == torch.float32 else "tf32"  # ignored by Triton for 16-bit inputs


@triton.jit
def _tile_pointers(base, bh, H, stride_b, stride_h, stride_l, stride_d, rows, dims):
    """Pointers to the (BLOCK, HEAD_DIM) tile of program bh = batch * H + head of a strided tensor."""
    bh = bh.to(tl.int64)
    offset = (bh // H) * stride_b + (bh % H) * stride_h
    return base + offset + rows[:, None] * stride_l + dims[None, :] * stride_d


@triton.jit
def _visible(rows, L, CAUSAL: tl.constexpr):
    """Which (query row, key column) pairs attend: real keys, and if causal no key after the query."""
    mask = rows[None, :] < L
    if CAUSAL:
        mask = mask & (rows[None, :] <= rows[:, None])
    return mask


@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, qk_scale_log2,
    CAUSAL: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    bh = tl.program_id(0)
    rows = tl.arange(0, BLOCK)
    dims = tl.arange(0, HEAD_DIM)
    real = rows[:, None] < L
    q = tl.load(_tile_pointers(Q, bh, H, sqb, sqh, sql, sqd, rows, dims), mask=real, other=0.0)
    k = tl.load(_tile_pointers(K, bh, H, skb, skh, skl, skd, rows, dims), mask=real, other=0.0)
    v = tl.load(_tile_pointers(V, bh, H, svb, svh, svl, svd, rows, dims), mask=real, other=0.0)

    # Scores in log2 units, so the softmax uses exp2. Every row sees key 0, so no row is all -inf.
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2
    s = tl.where(_visible(rows, L, CAUSAL), s, float("-inf"))
    row_max = tl.max(s, axis=1)
    p = tl.exp2(s - row_max[:, None])
    row_sum = tl.sum(p, axis=1)
    o = tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION) / row_sum[:, None]

    out_offset = bh.to(tl.int64) * L * HEAD_DIM
    tl.store(O + out_offset + rows[:, None] * HEAD_DIM + dims[None, :], o.to(O.dtype.element_ty), mask=real)
    lse = (row_max + tl.log2(row_sum)) * 0.6931471805599453  # natural-log log-sum-exp of the scaled scores
    tl.store(LSE + bh.to(tl.int64) * L + rows, lse, mask=rows < L)


@triton.jit
def _attention_bwd_kernel(
    Q, K, V, DO, LSE, DQ, DK, DV,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd, sob, soh, sol, sod,
    H, L, qk_scale, qk_scale_log2,
    CAUSAL: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    bh = tl.program_id(0)
    rows = tl.arange(0, BLOCK)
    dims = tl.arange(0, HEAD_DIM)
    real = rows[:, None] < L
    q = tl.load(_tile_pointers(Q, bh, H, sqb, sqh, sql, sqd, rows, dims), mask=real, other=0.0)
    k = tl.load(_tile_pointers(K, bh, H, skb, skh, skl, skd, rows, dims), mask=real, other=0.0)
    v = tl.load(_tile_pointers(V, bh, H, svb, svh, svl, svd, rows, dims), mask=real, other=0.0)
    do = tl.load(_tile_pointers(DO, bh, H, sob, soh, sol, sod, rows, dims), mask=real, other=0.0)
    # Padded query rows get lse = +inf, hence probability 0, and contribute nothing to dk, dv.
    lse = tl.load(LSE + bh.to(tl.int64) * L + rows, mask=rows < L, other=float("inf"))

    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale_log2
    p = tl.exp2(s - lse[:, None] * 1.4426950408889634)
    p = tl.where(_visible(rows, L, CAUSAL), p, 0.0)
    dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    # delta_i = sum_j p_ij dp_ij (= do_i . o_i), taken from the fp32 tile we already hold.
    delta = tl.sum(p * dp, axis=1)
    ds = (p * (dp - delta[:, None])).to(q.dtype)
    dq = tl.dot(ds, k, input_precision=DOT_PRECISION) * qk_scale
    dk = tl.dot(tl.trans(ds), q, input_precision=DOT_PRECISION) * qk_scale

    out = bh.to(tl.int64) * L * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :]
    tl.store(DQ + out, dq.to(DQ.dtype.element_ty), mask=real)
    tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=real)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=real)


def _launch_meta(q: torch.Tensor, causal: bool) -> dict:
    block = block_size(q.shape[-2])
    return dict(CAUSAL=causal, BLOCK=block, HEAD_DIM=q.shape[-1],
                DOT_PRECISION=_dot_precision(q.dtype), num_warps=NUM_WARPS[block])


@torch.library.custom_op("innovwin::attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward: (output (B, H, L, D) contiguous, log-sum-exp (B, H, L) float32)."""
    _check(q, k, v)
    batch, heads, length, head_dim = q.shape
    out = torch.empty((batch, heads, length, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, length), dtype=torch.float32, device=q.device)
    if out.numel():
        scale = 1.0 / math.sqrt(head_dim)
        _attention_fwd_kernel[(batch * heads,)](
            q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(),
            heads, length, scale * math.log2(math.e), **_launch_meta(q, causal),
        )
    return out, lse


@_attention_op.register_fake
def _(q, k, v, causal):
    _check(q, k, v)
    batch, heads, length, head_dim = q.shape
    return (q.new_empty((batch, heads, length, head_dim)),
            q.new_empty((batch, heads, length), dtype=torch.float32))


@torch.library.custom_op("innovwin::attention_backward", mutates_args=())
def _attention_backward_op(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor, causal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward: (dq, dk, dv), each contiguous (B, H, L, D) in the input dtype."""
    batch, heads, length, head_dim = q.shape
    dq, dk, dv = (torch.empty((batch, heads, length, head_dim), dtype=q.dtype, device=q.device) for _ in range(3))
    if dq.numel():
        grad_out = grad_out.to(q.dtype)
        scale = 1.0 / math.sqrt(head_dim)
        _attention_bwd_kernel[(batch * heads,)](
            q, k, v, grad_out, lse.contiguous(), dq, dk, dv,
            *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(),
            heads, length, scale, scale * math.log2(math.e), **_launch_meta(q, causal),
        )
    return dq, dk, dv


@_attention_backward_op.register_fake
def _(grad_out, q, k, v, lse, causal):
    return tuple(q.new_empty(q.shape) for _ in range(3))


def _setup_context(ctx, inputs, output):
    q, k, v, causal = inputs
    ctx.save_for_backward(q, k, v, output[1])
    ctx.causal = causal


def _backward(ctx, grad_out, grad_lse):
    # The log-sum-exp is an internal output: attention() never returns it, so grad_lse is zero.
    q, k, v, lse = ctx.saved_tensors
    dq, dk, dv = _attention_backward_op(grad_out, q, k, v, lse, ctx.causal)
    return dq, dk, dv, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Fused softmax(q k^T / sqrt(head_dim)) v on (batch, heads, L, head_dim) tensors, L <= 128.

    Raises ValueError for inputs the kernel does not take (see ``unsupported_reason``).
    """
    _check(q, k, v)
    return _attention_op(q, k, v, bool(causal))[0]
