"""Fused attention for short sequences (L <= 128), tiled FlashAttention-2 style.

Forward: one program per (batch * head, query block) walks the key blocks with an online softmax. Scores
are kept in log2 units (scaled by log2(e) / sqrt(head_dim)) so every exponential is an exp2, and the saved
row log-sum-exp is in the same log2 domain: the backward recomputes p = exp2(s - lse) with no conversion.
Backward, two launches without atomics, each one program per (batch * head, block): the first fixes a query
block and walks the key blocks twice, summing delta_i = sum_j p_ij dP_ij, then accumulating dQ; the second
fixes a key/value block and walks the query blocks, accumulating dK and dV in fp32. delta from p and dP
(not from dO . O, FlashAttention-2's shortcut) keeps dS = p (dP - delta) accurate where the softmax
saturates: with scores x30 the shortcut's dQ was off by 100x the true (tiny) gradient in bf16, since O is
rounded to bf16 before the product. The price is one more product per key block in the dQ launch.
Causal programs skip the blocks above the diagonal. The tail is masked, not padded: L = 81 in 32-blocks
computes 96 rows instead of the 128 a whole-sequence tile needs.

Tile sizes come from ``tile_config`` per (L, head_dim, dtype), chosen from the compile table
(``benches/compile_check.py``): no register spills and shared memory within the limit on sm_90 and sm_80
for every configuration the models launch (``benches/results/compile-sm90.json``).

Precision: matmuls accumulate in fp32; bf16/fp16 operands feed the tensor cores directly (the probabilities
and dS are rounded to the input dtype before their products, as in FlashAttention). fp32 inputs use
``FP32_DOT_PRECISION`` = "tf32x3" on the GPU: three TF32 tensor-core products that recover fp32 accuracy
(plain "tf32" gives about 1e-3 relative error). The interpreter (CPU) computes in fp32; since it would
multiply bf16's raw bits in ``tl.dot`` (Triton 3.9), bf16 operands are widened there first (UPCAST), which
gives the same products: a product of two bf16 values is exact in fp32.

``attention`` is the torch op ``innovwin::attention`` (a ``triton_op`` on the GPU, see ``_torch_op``) with
autograd through ``innovwin::attention_backward``. ``attention_reference`` is the plain PyTorch definition
the kernels are tested against.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from innovwin.kernels import _torch_op

MAX_SEQ_LEN = 128
HEAD_DIMS = (16, 32, 64)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FP32_DOT_PRECISION = "tf32x3"
LOG2_E = math.log2(math.e)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim), causally masked if asked) v, computed in at least fp32."""
    work = torch.promote_types(q.dtype, torch.float32)
    scores = q.to(work) @ k.to(work).transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:  # key j is hidden from query i when j > i (top-left aligned, as SDPA's is_causal)
        future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return (scores.softmax(dim=-1) @ v.to(work)).to(q.dtype)


# Max error against the float64 reference in units of each output's magnitude (see ``reference_errors``):
# about 5 units of roundoff for bf16 (2^-8) and fp16 (2^-11); fp32 leaves room for tf32x3 on the GPU and for
# scores of ~100 (x30), whose exp2 alone carries ~4e-6.
TOLERANCE = {torch.float32: 5e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def reference_errors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad_out: torch.Tensor, causal: bool,
                     attn=None) -> dict[str, float]:
    """Max |error| of ``attn`` (default: the fused op) out, dq, dk, dv against the float64 reference, each divided
    by the max of its magnitude: the same product over absolute values (out: P|V|, dV: P^T|dO|,
    dQ: scale (P * (|dO||V|^T + |delta|)) |K|, dK likewise with |Q|). That is the scale rounding errors live on;
    it stays O(1) where the softmax saturates and the true dQ, dK vanish (an error relative to them is unbounded
    for any implementation). ``grad_out`` is taken as given (in the inputs' dtype) by both sides."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = (attn or attention)(*leaves, causal)
    got = (out, *torch.autograd.grad(out, leaves, grad_out))
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want = attention_reference(*exact, causal)
    want = (want, *torch.autograd.grad(want, exact, grad_out.double()))

    qd, kd, vd, god = (t.detach().double() for t in (q, k, v, grad_out))
    scale = 1 / math.sqrt(q.shape[-1])
    scores = qd @ kd.transpose(-2, -1) * scale
    if causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    p = scores.softmax(-1)
    delta = (p * (god @ vd.transpose(-2, -1))).sum(-1, keepdim=True)
    w = p * (god.abs() @ vd.abs().transpose(-2, -1) + delta.abs())
    magnitude = (p @ vd.abs(), w @ kd.abs() * scale, w.transpose(-2, -1) @ qd.abs() * scale,
                 p.transpose(-2, -1) @ god.abs())
    errors = {}
    for name, g, r, m in zip(("out", "dq", "dk", "dv"), got, want, magnitude):
        if g.shape != r.shape or g.dtype != q.dtype:
            raise ValueError(f"{name}: got {g.dtype} {tuple(g.shape)}, want {q.dtype} {tuple(r.shape)}")
        errors[name] = (g.double() - r).abs().max().item() / max(m.max().item(), 1e-300)
    return errors


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
    """The tile side for a sequence of length L: of 16, 32, 64 the one that pads L least (ties to the larger,
    fewer loop trips). 16 is tl.dot's minimum; 64 the most a tile needs below L = 128."""
    return min((64, 32, 16), key=lambda b: triton.cdiv(length, b) * b)


def tile_config(length: int, head_dim: int, dtype: torch.dtype) -> dict:
    """BLOCK, num_warps and num_stages of the three kernels at this L, head_dim and dtype.

    From the compile table of the candidates (``benches/compile_check.py --subset tiles``,
    benches/results/compile-tiles.json): 16-bit inputs take any block without spills; fp32 under tf32x3
    (every operand split in two) spills in the backward with 32-blocks at head_dim >= 32 (and, causal, at 16
    on sm_90) and 64-blocks at every head_dim, so fp32 uses 16-blocks (L = 81 still computes 96 rows).
    16-blocks use 2 warps (one m16n8 tensor-core tile each), larger ones 4. One stage: the loops are 1-8
    trips, and pipelining only adds shared memory and registers. Speed is not measured yet:
    benches/gpu_check.py times the alternatives.
    """
    block = 16 if dtype == torch.float32 else block_size(length)
    return dict(BLOCK=block, num_warps=2 if block == 16 else 4, num_stages=1)


def _dot_precision(dtype: torch.dtype) -> str:
    return FP32_DOT_PRECISION if dtype == torch.float32 else "tf32"  # ignored by Triton for 16-bit inputs


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot accumulating in fp32; UPCAST widens bf16 operands for the interpreter (see the module docstring)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _tile_pointers(base, bh, H, stride_b, stride_h, stride_l, stride_d, rows, dims):
    """Pointers to rows ``rows`` (and all ``dims``) of program bh = batch * H + head of a strided tensor."""
    bh = bh.to(tl.int64)
    offset = (bh // H) * stride_b + (bh % H) * stride_h
    return base + offset + rows[:, None] * stride_l + dims[None, :] * stride_d


@triton.jit
def _program_block(BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """What every kernel's program starts from: its (batch x head) index, the first row (or key) of its block, and
    the block's and the head's aranges."""
    return tl.program_id(0), tl.program_id(1) * BLOCK, tl.arange(0, BLOCK), tl.arange(0, HEAD_DIM)


@triton.jit
def _visible(rows, keys, L, CAUSAL: tl.constexpr):
    """Which (query row, key) pairs attend: real keys, and if causal no key after the query."""
    mask = keys[None, :] < L
    if CAUSAL:
        mask = mask & (keys[None, :] <= rows[:, None])
    return mask


@triton.jit(do_not_specialize=["H", "L"])
def _attention_fwd_kernel(
    Q, K, V, O, LSE,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, qk_scale_log2,
    CAUSAL: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    bh, start, offs, dims = _program_block(BLOCK, HEAD_DIM)
    rows = start + offs
    q = tl.load(_tile_pointers(Q, bh, H, sqb, sqh, sql, sqd, rows, dims), mask=rows[:, None] < L, other=0.0)

    # Online softmax in log2 units. The first key block holds key 0, which every row sees: no row stays -inf.
    row_max = tl.full((BLOCK,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK,), tl.float32)
    acc = tl.zeros((BLOCK, HEAD_DIM), tl.float32)
    end = tl.minimum(L, start + BLOCK) if CAUSAL else L
    for n0 in range(0, end, BLOCK):
        keys = n0 + offs
        k = tl.load(_tile_pointers(K, bh, H, skb, skh, skl, skd, keys, dims), mask=keys[:, None] < L, other=0.0)
        v = tl.load(_tile_pointers(V, bh, H, svb, svh, svl, svd, keys, dims), mask=keys[:, None] < L, other=0.0)
        s = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST) * qk_scale_log2
        s = tl.where(_visible(rows, keys, L, CAUSAL), s, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(s, axis=1))
        p = tl.exp2(s - new_max[:, None])
        rescale = tl.exp2(row_max - new_max)
        row_sum = row_sum * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION, UPCAST)
        row_max = new_max

    out = O + bh.to(tl.int64) * L * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :]
    tl.store(out, (acc / row_sum[:, None]).to(O.dtype.element_ty), mask=rows[:, None] < L)
    tl.store(LSE + bh.to(tl.int64) * L + rows, row_max + tl.log2(row_sum), mask=rows < L)


@triton.jit
def _key_block(q, do, lse, K, V, bh, H, skb, skh, skl, skd, svb, svh, svl, svd, rows, keys, dims, L,
               qk_scale_log2, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """For fixed query rows (q, dO, lse): the key block k, the probabilities p and dP = dO V^T (rows x keys)."""
    k = tl.load(_tile_pointers(K, bh, H, skb, skh, skl, skd, keys, dims), mask=keys[:, None] < L, other=0.0)
    v = tl.load(_tile_pointers(V, bh, H, svb, svh, svl, svd, keys, dims), mask=keys[:, None] < L, other=0.0)
    s = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST) * qk_scale_log2
    p = tl.exp2(tl.where(_visible(rows, keys, L, CAUSAL), s - lse[:, None], float("-inf")))
    return k, p, _dot(do, tl.trans(v), DOT_PRECISION, UPCAST)


@triton.jit(do_not_specialize=["H", "L"])
def _attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd, sob, soh, sol, sod,
    H, L, qk_scale, qk_scale_log2,
    CAUSAL: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """dQ of one query block, and delta_i = sum_j p_ij dP_ij (stored for the dK/dV kernel).

    delta is summed from the same fp32 p and dP that dS = p (dP - delta) uses, so the difference cancels
    where the softmax saturates (p = 1 for one key), unlike delta = dO . O from the rounded output.
    """
    bh, start, offs, dims = _program_block(BLOCK, HEAD_DIM)
    head = bh.to(tl.int64) * L  # row offset of this (batch, head) in the contiguous LSE, DELTA, dQ
    rows = start + offs
    real = rows[:, None] < L
    q = tl.load(_tile_pointers(Q, bh, H, sqb, sqh, sql, sqd, rows, dims), mask=real, other=0.0)
    do = tl.load(_tile_pointers(DO, bh, H, sob, soh, sol, sod, rows, dims), mask=real, other=0.0)
    lse = tl.load(LSE + head + rows, mask=rows < L, other=float("inf"))  # padded rows: p = 0
    end = tl.minimum(L, start + BLOCK) if CAUSAL else L
    delta = tl.zeros((BLOCK,), tl.float32)
    for n0 in range(0, end, BLOCK):
        _, p, dp = _key_block(q, do, lse, K, V, bh, H, skb, skh, skl, skd, svb, svh, svl, svd, rows, n0 + offs,
                              dims, L, qk_scale_log2, CAUSAL, DOT_PRECISION, UPCAST)
        delta += tl.sum(p * dp, axis=1)
    dq = tl.zeros((BLOCK, HEAD_DIM), tl.float32)
    for n0 in range(0, end, BLOCK):
        k, p, dp = _key_block(q, do, lse, K, V, bh, H, skb, skh, skl, skd, svb, svh, svl, svd, rows, n0 + offs,
                              dims, L, qk_scale_log2, CAUSAL, DOT_PRECISION, UPCAST)
        dq += _dot((p * (dp - delta[:, None])).to(Q.dtype.element_ty), k, DOT_PRECISION, UPCAST)
    tl.store(DQ + (head + rows[:, None]) * HEAD_DIM + dims[None, :], (dq * qk_scale).to(DQ.dtype.element_ty),
             mask=real)
    tl.store(DELTA + head + rows, delta, mask=rows < L)


@triton.jit(do_not_specialize=["H", "L"])
def _attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd, sob, soh, sol, sod,
    H, L, qk_scale, qk_scale_log2,
    CAUSAL: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """dK, dV of one key block: walks the query blocks with transposed (keys x queries) tiles."""
    bh, start, offs, dims = _program_block(BLOCK, HEAD_DIM)
    head = bh.to(tl.int64) * L
    dtype = Q.dtype.element_ty
    keys = start + offs
    k = tl.load(_tile_pointers(K, bh, H, skb, skh, skl, skd, keys, dims), mask=keys[:, None] < L, other=0.0)
    v = tl.load(_tile_pointers(V, bh, H, svb, svh, svl, svd, keys, dims), mask=keys[:, None] < L, other=0.0)
    dk = tl.zeros((BLOCK, HEAD_DIM), tl.float32)
    dv = tl.zeros((BLOCK, HEAD_DIM), tl.float32)
    for m0 in range(start if CAUSAL else 0, L, BLOCK):  # causal: earlier queries see none of these keys
        rows = m0 + offs
        real = rows[:, None] < L
        q = tl.load(_tile_pointers(Q, bh, H, sqb, sqh, sql, sqd, rows, dims), mask=real, other=0.0)
        do = tl.load(_tile_pointers(DO, bh, H, sob, soh, sol, sod, rows, dims), mask=real, other=0.0)
        lse = tl.load(LSE + head + rows, mask=rows < L, other=float("inf"))  # padded rows: p = 0
        delta = tl.load(DELTA + head + rows, mask=rows < L, other=0.0)
        s_t = _dot(k, tl.trans(q), DOT_PRECISION, UPCAST) * qk_scale_log2
        p_t = tl.exp2(tl.where(tl.trans(_visible(rows, keys, L, CAUSAL)), s_t - lse[None, :], float("-inf")))
        dv += _dot(p_t.to(dtype), do, DOT_PRECISION, UPCAST)
        ds_t = p_t * (_dot(v, tl.trans(do), DOT_PRECISION, UPCAST) - delta[None, :])
        dk += _dot(ds_t.to(dtype), q, DOT_PRECISION, UPCAST)
    out = (head + keys[:, None]) * HEAD_DIM + dims[None, :]
    tl.store(DK + out, (dk * qk_scale).to(DK.dtype.element_ty), mask=keys[:, None] < L)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=keys[:, None] < L)


INTERPRETED = _torch_op.interpreted(_attention_fwd_kernel)


def _meta(q: torch.Tensor, causal: bool) -> dict:
    """Constexprs and launch options shared by both kernels."""
    return dict(CAUSAL=causal, HEAD_DIM=q.shape[-1], DOT_PRECISION=_dot_precision(q.dtype),
                UPCAST=INTERPRETED and q.dtype == torch.bfloat16, **tile_config(q.shape[-2], q.shape[-1], q.dtype))


def _attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward: (output (B, H, L, D) contiguous, log2-domain log-sum-exp (B, H, L) float32)."""
    _check(q, k, v)
    batch, heads, length, head_dim = q.shape
    out = torch.empty((batch, heads, length, head_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, length), dtype=torch.float32, device=q.device)
    if out.numel():
        meta = _meta(q, causal)
        grid = (batch * heads, triton.cdiv(length, meta["BLOCK"]))
        args = (q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(),
                heads, length, LOG2_E / math.sqrt(head_dim))
        _torch_op.launch(_attention_fwd_kernel, grid, args, meta)
    return out, lse


def _attention_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lse: torch.Tensor,
                   causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward: (dq, dk, dv), each contiguous (B, H, L, D) in the input dtype. Two launches: dQ (and delta),
    then dK, dV."""
    batch, heads, length, head_dim = q.shape
    dq, dk, dv = (torch.empty((batch, heads, length, head_dim), dtype=q.dtype, device=q.device) for _ in range(3))
    if dq.numel():
        grad_out = grad_out.to(q.dtype)
        lse = lse.contiguous()
        delta = torch.empty((batch, heads, length), dtype=torch.float32, device=q.device)
        meta = _meta(q, causal)
        grid = (batch * heads, triton.cdiv(length, meta["BLOCK"]))
        scale = 1.0 / math.sqrt(head_dim)
        strides = (*q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), heads, length, scale, scale * LOG2_E)
        _torch_op.launch(_attention_bwd_dq_kernel, grid, (q, k, v, grad_out, lse, delta, dq, *strides), meta)
        _torch_op.launch(_attention_bwd_dkdv_kernel, grid, (q, k, v, grad_out, lse, delta, dk, dv, *strides), meta)
    return dq, dk, dv


_attention_op = _torch_op.define_op("innovwin::attention", _attention_fwd, _attention_fwd_kernel)
_attention_backward_op = _torch_op.define_op("innovwin::attention_backward", _attention_bwd, _attention_bwd_dq_kernel)


def _setup_context(ctx, inputs, output):
    q, k, v, causal = inputs
    ctx.save_for_backward(q, k, v, output[1])
    ctx.causal = causal


def _backward(ctx, grad_out, grad_lse):
    # The log-sum-exp is an internal output: attention() never returns it, so grad_lse is unused.
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
