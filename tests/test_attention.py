"""Fused attention kernel against a float64 reference, its op registration, and the model dispatch.

Without CUDA the kernels run under TRITON_INTERPRET=1 (set in conftest.py), so shapes stay small.
Errors (``fused.reference_errors``) are in units of each output's magnitude, the same product taken over
absolute values in float64: the scale a rounding error is measured against, which stays O(1) where the
softmax saturates (scores x30) and the true dQ, dK go to ~0. Tolerances (``fused.TOLERANCE``): fp32 5e-5,
bf16 2e-2, fp16 2e-3 (about 5 units of roundoff for the 16-bit types).
"""
import math
import warnings

import pytest
import torch
import triton
from torch import nn

import innovwin.models.attention as dispatch
from innovwin.kernels import attention as fused

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = fused.TOLERANCE
DTYPE_IDS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# Every L the models use (and the GPT's L+1) with head_dim 32, every head_dim at a short and a long L.
SHAPES = [(1, 3, length, 32) for length in (1, 7, 16, 36, 37, 49, 64, 81, 82, 128)]
SHAPES += [(1, 2, 7, 16), (3, 1, 81, 16), (1, 3, 7, 64), (2, 2, 81, 64)]
HALF_SHAPES = [(2, 2, 37, 32), (1, 2, 82, 16), (1, 1, 36, 64)]


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    scale = want.abs().max().item()
    diff = (got.double() - want).abs().max().item()
    return diff / scale if scale > 0 else diff


def random_qkv(shape, dtype, seed, score_scale=1.0):
    """q, k, v with standard normal entries; q times ``score_scale`` (x30 saturates the softmax)."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(3))
    return [t.to(DEVICE, dtype) for t in (q * score_scale, k, v)]


def check_against_float64(q, k, v, causal, tolerance):
    """Kernel forward and dq, dk, dv against the reference evaluated in float64 on the same (rounded) inputs."""
    gen = torch.Generator().manual_seed(7)
    grad_out = torch.randn(q.shape, generator=gen, dtype=torch.float64).to(DEVICE, q.dtype)
    errors = fused.reference_errors(q, k, v, grad_out, causal)
    bad = {name: f"{error:.2e}" for name, error in errors.items() if not error <= tolerance}
    assert not bad, f"errors in units of the magnitude above {tolerance:.0e}: {bad}"


CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])


@CAUSAL
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fp32_matches_float64_reference(shape, causal):
    check_against_float64(*random_qkv(shape, torch.float32, seed=sum(shape)), causal, TOLERANCE[torch.float32])


@CAUSAL
@pytest.mark.parametrize("score_scale", [1, 30], ids=["scores_x1", "scores_x30"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("shape", HALF_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_every_dtype_matches_float64_reference(shape, dtype, score_scale, causal):
    """bf16 runs under the interpreter too: its operands are widened before tl.dot there (exact products)."""
    qkv = random_qkv(shape, dtype, seed=sum(shape) + score_scale, score_scale=score_scale)
    check_against_float64(*qkv, causal, TOLERANCE[dtype])


def test_saturated_softmax_keeps_tiny_gradients_accurate():
    """Scores x30 on 5 keys: p = 1 for one key per row, true dQ ~1e-5. delta from the rounded bf16 output
    (FlashAttention-2's dO . O) gave errors of ~100x the true dQ in such cases; delta = sum p dP keeps 5%."""
    q, k, v = random_qkv((1, 1, 5, 16), torch.bfloat16, seed=24, score_scale=30.0)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grad_out = grad_out.to(DEVICE, q.dtype)
    dq = torch.autograd.grad(fused.attention(*leaves, False), leaves[0], grad_out)[0]
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    want = torch.autograd.grad(fused.attention_reference(*exact, False), exact[0], grad_out.double())[0]
    assert want.abs().max() < 1e-4  # saturated: true dQ ~1e-5
    assert rel_error(dq, want) < 0.05


@CAUSAL
def test_lse_is_log2_of_the_scaled_score_sums(causal):
    """The saved log-sum-exp is log2 sum_j 2^(s_ij log2 e / sqrt(d)): what the backward's exp2 expects."""
    q, k, v = random_qkv((1, 2, 37, 16), torch.float32, seed=3)
    _, lse = torch.ops.innovwin.attention(q, k, v, causal)
    scores = q.double() @ k.double().transpose(-2, -1) / 4.0
    if causal:
        scores = scores.masked_fill(torch.ones(37, 37, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1) / math.log(2), rtol=0, atol=1e-5)


def test_every_output_element_is_written(monkeypatch):
    """Outputs (and the internal lse, delta) start as NaN; fwd + bwd must overwrite every element."""
    real_empty = torch.empty

    def poisoned(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    q, k, v = (t.requires_grad_() for t in random_qkv((2, 3, 37, 16), torch.float32, seed=9))
    monkeypatch.setattr(torch, "empty", poisoned)
    out = fused.attention(q, k, v, True)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    monkeypatch.undo()
    for t in (out, *grads):
        assert torch.isfinite(t).all()
    check_against_float64(q, k, v, True, TOLERANCE[torch.float32])


def test_tiles_mask_the_tail_instead_of_padding_to_a_power_of_two():
    """Every L gets a tile of 16, 32 or 64 that pads it by less than one tile."""
    for length in range(1, fused.MAX_SEQ_LEN + 1):
        for head_dim in fused.HEAD_DIMS:
            for dtype in fused.DTYPES:
                block = fused.tile_config(length, head_dim, dtype)["BLOCK"]
                assert block in (16, 32, 64)
                assert triton.cdiv(length, block) * block - length < block, (length, head_dim, dtype)
    assert fused.tile_config(81, 64, torch.bfloat16)["BLOCK"] * triton.cdiv(81, 32) == 96  # not 128


def test_causal_output_ignores_future_keys():
    q, k, v = random_qkv((1, 2, 36, 16), torch.float32, seed=1)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 20:] += 5.0
    v2[:, :, 20:] -= 3.0
    first, second = fused.attention(q, k, v, True), fused.attention(q, k2, v2, True)
    assert torch.equal(first[:, :, :20], second[:, :, :20])
    assert not torch.allclose(first[:, :, 20:], second[:, :, 20:])


def test_strided_inputs_match_contiguous():
    """q, k, v as views into one (B, L, 3, H, D) projection, as the models make them."""
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 49, 3, 2, 32, generator=gen).to(DEVICE).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    assert not q.is_contiguous()
    check_against_float64(q, k, v, True, TOLERANCE[torch.float32])
    assert torch.equal(fused.attention(q, k, v, True),
                       fused.attention(q.contiguous(), k.contiguous(), v.contiguous(), True))


@pytest.mark.parametrize(
    "shape_q, shape_kv, dtype, message",
    [
        ((2, 36, 32), None, torch.float32, "shape"),
        ((1, 1, 129, 32), None, torch.float32, "sequence length"),
        ((1, 1, 0, 32), None, torch.float32, "sequence length"),
        ((1, 1, 36, 48), None, torch.float32, "head_dim"),
        ((1, 1, 36, 128), None, torch.float32, "head_dim"),
        ((1, 1, 36, 32), None, torch.float64, "dtype"),
        ((1, 1, 1, 32), (1, 1, 36, 32), torch.float32, "equal shapes"),
    ],
)
def test_unsupported_inputs_raise_value_error(shape_q, shape_kv, dtype, message):
    q = torch.zeros(shape_q, dtype=dtype, device=DEVICE)
    kv = torch.zeros(shape_kv or shape_q, dtype=dtype, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        fused.attention(q, kv, kv, False)


def test_mixed_dtypes_raise_value_error():
    q = torch.zeros(1, 1, 16, 16, device=DEVICE)
    with pytest.raises(ValueError, match="one dtype"):
        fused.attention(q, q.half(), q, True)


def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) kernels and autograd registration, as torch.compile relies on them."""
    q, k, v = (t.requires_grad_() for t in random_qkv((1, 2, 36, 16), torch.float32, seed=2))
    torch.library.opcheck(torch.ops.innovwin.attention.default, (q, k, v, True))
    _, lse = torch.ops.innovwin.attention(q, k, v, False)
    torch.library.opcheck(torch.ops.innovwin.attention_backward.default,
                          (torch.randn_like(q), q.detach(), k.detach(), v.detach(), lse.detach(), False))


def test_compiles_into_one_graph(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    q, k, v = (t.requires_grad_() for t in random_qkv((2, 2, 16, 16), torch.float32, seed=4))
    loss_fn = lambda q, k, v: dispatch.attention(q, k, v, True).square().sum()  # noqa: E731
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    want = torch.autograd.grad(loss_fn(q, k, v), (q, k, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU choice")
def test_dispatch_uses_sdpa_on_cpu(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    q, k, v = random_qkv((1, 2, 36, 32), torch.float32, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CPU path is the expected one, not a fallback worth a warning
        assert dispatch.backend_for(q, k, v) == "sdpa"
        out = dispatch.attention(q, k, v, True)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("backend", dispatch.BACKENDS)
def test_dispatch_honours_env_override(monkeypatch, backend):
    monkeypatch.setenv(dispatch.ENV_VAR, backend)
    q, k, v = random_qkv((1, 2, 36, 32), torch.float32, seed=0)
    assert dispatch.backend_for(q, k, v) == backend
    torch.testing.assert_close(dispatch.attention(q, k, v, False), fused.attention_reference(q, k, v, False),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["", *dispatch.BACKENDS])
def test_cached_decoding_takes_sdpa_or_math_without_warning(monkeypatch, backend):
    monkeypatch.setenv(dispatch.ENV_VAR, backend)
    q, _, _ = random_qkv((2, 2, 1, 32), torch.float32, seed=0)
    _, k, v = random_qkv((2, 2, 36, 32), torch.float32, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.backend_for(q, k, v) == ("math" if backend == "math" else "sdpa")
        out = dispatch.attention(q, k, v, False)
    torch.testing.assert_close(out, fused.attention_reference(q, k, v, False))


def test_dispatch_rejects_unknown_backend(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "flash")
    q = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="INNOVWIN_ATTENTION"):
        dispatch.attention(q, q, q, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fallback warning is a CUDA-only path")
def test_dispatch_falls_back_to_sdpa_with_one_warning(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    q = torch.zeros(1, 1, 36, 128, device="cuda")
    with pytest.warns(UserWarning, match="head_dim"):
        assert dispatch.backend_for(q, q, q) == "sdpa"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dispatch.attention(q, q, q, False)


class TinyBlock(nn.Module):
    """Pre-LN attention + MLP block, the shape of the models' blocks, through the dispatch."""

    def __init__(self, width=64, heads=2):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x, causal):
        b, length, width = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, width // self.heads)
        y = dispatch.attention(*qkv.permute(2, 0, 3, 1, 4).unbind(0), causal)
        x = x + self.proj(y.transpose(1, 2).reshape(b, length, width))
        return x + self.mlp(self.norm2(x))


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_block_loss_and_grads_equal_on_triton_and_sdpa(monkeypatch, causal):
    torch.manual_seed(0)
    block = TinyBlock().to(DEVICE)
    x = torch.randn(3, 36, 64, device=DEVICE)
    results = {}
    for backend in ("triton", "sdpa"):
        monkeypatch.setenv(dispatch.ENV_VAR, backend)
        block.zero_grad()
        xg = x.clone().requires_grad_()
        loss = block(xg, causal).sin().mean()
        loss.backward()
        results[backend] = [loss.detach(), xg.grad] + [p.grad.clone() for p in block.parameters()]
    for got, want in zip(results["triton"], results["sdpa"]):
        assert rel_error(got, want.double()) <= 1e-4
    assert math.isfinite(results["triton"][0].item())
