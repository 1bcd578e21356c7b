"""Top-k nearest training samples by differing cells on the GPU: XOR + popcount over packed words.

One program holds BLOCK_M queries and walks its share of the training set in tiles of BLOCK_N
samples. Per tile it computes the (BLOCK_M, BLOCK_N) distances word by word, turns each into a
32-bit key ``distance << LOG_BLOCK_N | column`` (so a plain min picks the smallest distance, then
the lowest index) and merges the tile into a running top-k kept as 64-bit keys
``distance << 32 | training index``: k rounds, each taking the smaller of the tile's and the
running list's minimum. Most tiles improve no row once the lists have filled; they cost one
reduction and skip the merge. The training set is split over the grid's second axis in chunks
(``n_per_split`` samples) so that every SM has work even for few queries and 10^7 samples fit;
the host merges the chunks' top-k with one ``torch.topk`` over unique keys. Offsets into the query and
training words are 64-bit, so words x N beyond 2^31 (or strided rows) address correctly.

Words are int64 tensors holding uint64 bits (as ``innovwin.bits.pack_torch`` gives them). The
training set is passed word-major, (words, N), so a tile's loads are contiguous.
Distances: bits count ``popcount(a ^ b)``; 4-bit cells count nonzero nibbles of ``a ^ b``.
On the GPU popcount is the hardware instruction; under ``TRITON_INTERPRET=1`` (where libdevice
calls do not run) a SWAR popcount does the same, so CPU tests check everything else.

``hamming_topk`` is the torch op ``innovwin::hamming_topk`` (a ``triton_op`` on the GPU, see ``_torch_op``).
``hamming_topk_reference`` (from :mod:`innovwin.kernels.hamming_reference`) is the plain PyTorch definition the
kernel is tested against.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from innovwin.kernels import _torch_op
from innovwin.kernels.hamming_reference import KEY_INDEX_MASK, hamming_topk_reference

__all__ = ["TILE", "hamming_topk", "hamming_topk_reference"]
_INT32_MAX = tl.constexpr(2**31 - 1)  # "no candidate" for tile keys
_INT64_MAX = tl.constexpr(2**63 - 1)  # "no candidate" for running keys


@triton.jit
def _popcount64(x, HW_POPC: tl.constexpr):
    """Set bits of each int64 as int32: the hardware instruction, or SWAR (same steps as the reference)."""
    if HW_POPC:
        count = libdevice.popc(x)
    else:
        x = x - ((x >> 1) & 0x5555555555555555)
        x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
        count = ((x * 0x0101010101010101) >> 56).to(tl.int32)
    return count


@triton.jit
def _tile_key(tile_min, n0, LOG_BLOCK_N: tl.constexpr):
    """A tile key (distance << LOG_BLOCK_N | column) as a running key (distance << 32 | index)."""
    key = ((tile_min >> LOG_BLOCK_N).to(tl.int64) << 32) | (n0 + (tile_min & ((1 << LOG_BLOCK_N) - 1))).to(tl.int64)
    return tl.where(tile_min == _INT32_MAX, _INT64_MAX, key)


@triton.jit(do_not_specialize=["M", "N", "n_per_split"])
def _hamming_topk_kernel(
    q_ptr, t_ptr, out_ptr, M, N, n_per_split, stride_qm, stride_tw,
    W: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, NIBBLES: tl.constexpr, HW_POPC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LOG_BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    q_rows = q_ptr + rows.to(tl.int64) * stride_qm  # int64 offsets: words x N or M x stride may pass 2^31
    n_begin = split * n_per_split
    n_end = tl.minimum(N, n_begin + n_per_split)
    slot = tl.arange(0, KP)
    columns = tl.arange(0, BLOCK_N)
    best = tl.full((BLOCK_M, KP), _INT64_MAX, tl.int64)  # running top-k keys, sorted
    for n0 in range(n_begin, n_end, BLOCK_N):
        col_ok = n0 + columns < n_end
        dist = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
        for w in range(W):  # not unrolled: one word's operands live at a time (unrolled, 6 words spilled)
            qw = tl.load(q_rows + w, mask=row_ok, other=0)
            tw = tl.load(t_ptr + tl.cast(w, tl.int64) * stride_tw + n0 + columns, mask=col_ok, other=0)
            x = qw[:, None] ^ tw[None, :]
            if NIBBLES:
                x = (x | (x >> 1) | (x >> 2) | (x >> 3)) & 0x1111111111111111
            dist += _popcount64(x, HW_POPC)
        tile = tl.where(col_ok[None, :], (dist << LOG_BLOCK_N) | columns[None, :], _INT32_MAX)
        tile_min = tl.min(tile, axis=1)
        kth = tl.max(tl.where(slot[None, :] < K, best, -1), axis=1)
        if tl.max((_tile_key(tile_min, n0, LOG_BLOCK_N) < kth).to(tl.int32)) > 0:  # some row improves
            rest = best
            for r in tl.static_range(K):
                if r > 0:
                    tile_min = tl.min(tile, axis=1)
                tile_key = _tile_key(tile_min, n0, LOG_BLOCK_N)
                rest_min = tl.min(rest, axis=1)
                from_tile = tile_key < rest_min
                best = tl.where(slot[None, :] == r, tl.where(from_tile, tile_key, rest_min)[:, None], best)
                if r < K - 1:  # take the chosen key out of its list
                    tile = tl.where(from_tile[:, None] & (tile == tile_min[:, None]), _INT32_MAX, tile)
                    rest = tl.where(~from_tile[:, None] & (rest == rest_min[:, None]), _INT64_MAX, rest)
    out = out_ptr + (rows[:, None].to(tl.int64) * tl.num_programs(1) + split) * K + slot[None, :]
    tl.store(out, best, mask=row_ok[:, None] & (slot[None, :] < K))


INTERPRETED = _torch_op.interpreted(_hamming_topk_kernel)


# 32 distances per thread: compiles without spills on sm_90 and sm_80 for 1 to 6 words, bits or nibbles, while
# 64 x 128 over 4 warps spilled 0.1-8 KB (benches/compile_check.py --subset tiles, results/compile-tiles.json).
TILE = dict(block_m=64, block_n=128, num_warps=8)


def _topk_keys(queries: torch.Tensor, train_columns: torch.Tensor, k: int, nibbles: bool, block_m: int,
               block_n: int, num_warps: int, splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The launch and the host merge of the splits' top-k; see :func:`hamming_topk` (``splits`` 0: default)."""
    m, words = queries.shape
    n = train_columns.shape[1]
    m_blocks = triton.cdiv(m, block_m)
    if splits <= 0:
        sms = torch.cuda.get_device_properties(queries.device).multi_processor_count if queries.is_cuda else 1
        splits = triton.cdiv(2 * sms, m_blocks)
    n_per_split = triton.cdiv(triton.cdiv(n, max(1, min(splits, triton.cdiv(n, block_n)))), block_n) * block_n
    splits = triton.cdiv(n, n_per_split)
    keys = torch.empty((m, splits, k), dtype=torch.int64, device=queries.device)
    log_block_n = block_n.bit_length() - 1
    _torch_op.launch(
        _hamming_topk_kernel, (m_blocks, splits),
        (queries, train_columns, keys, m, n, n_per_split, queries.stride(0), train_columns.stride(0)),
        dict(W=words, K=k, KP=max(2, triton.next_power_of_2(k)), NIBBLES=nibbles,
             HW_POPC=queries.is_cuda and not INTERPRETED, BLOCK_M=block_m, BLOCK_N=block_n,
             LOG_BLOCK_N=log_block_n, num_warps=num_warps),
    )
    if splits > 1:
        keys = torch.topk(keys.view(m, splits * k), k, dim=1, largest=False, sorted=True).values
    keys = keys.view(m, k)
    return (keys >> 32).to(torch.int32), keys & KEY_INDEX_MASK


_hamming_topk_op = _torch_op.define_op("innovwin::hamming_topk", _topk_keys, _hamming_topk_kernel)


def hamming_topk(
    queries: torch.Tensor, train_columns: torch.Tensor, k: int, nibbles: bool,
    block_m: int | None = None, block_n: int | None = None, num_warps: int | None = None, splits: int | None = None,
):
    """Top-k by differing cells: queries (M, W) int64, train_columns (W, N) int64 (word-major).

    Returns (dist int32 (M, k), idx int64 (M, k)), equal to :func:`hamming_topk_reference`.
    Tiles default to ``TILE``. ``splits`` (chunks of the training set, one grid column each) defaults
    to enough programs for about two waves on the GPU. Rows may be strided (the last stride must be 1);
    offsets are 64-bit. Inputs are trusted to hold valid keys (innovwin.search.index.NearestIndex checks them).
    """
    m, words = queries.shape
    n = train_columns.shape[1]
    block_m = TILE["block_m"] if block_m is None else block_m
    block_n = TILE["block_n"] if block_n is None else block_n
    num_warps = TILE["num_warps"] if num_warps is None else num_warps
    if train_columns.shape[0] != words or not 1 <= k <= n:
        raise ValueError(f"hamming_topk: shapes {tuple(queries.shape)}, {tuple(train_columns.shape)} and k={k} disagree")
    if m >= 2**31 or n + block_n >= 2**31:
        raise ValueError(f"hamming_topk: M and N + block_n must be < 2^31 (32-bit row and column indices), "
                         f"got M={m}, N={n}")
    log_block_n = block_n.bit_length() - 1
    if block_n != 1 << log_block_n or 64 * words >= 2 ** (31 - log_block_n) - 1:
        raise ValueError(f"block_n must be a power of two and 64 * words < 2^(31 - log2 block_n), got {block_n}, {words}")
    queries = queries if queries.stride(-1) == 1 else queries.contiguous()
    train_columns = train_columns if train_columns.stride(-1) == 1 else train_columns.contiguous()
    return _hamming_topk_op(queries, train_columns, k, nibbles, block_m, block_n, num_warps, splits or 0)
