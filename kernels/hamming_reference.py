"""The brute-force references every Hamming top-k backend is held to (the C++ search, the Triton kernel): numpy
(:func:`nearest_numpy`, also the CPU search without the C++ extension) and torch on any device
(:func:`hamming_topk_reference`), over one chunked scan with a running top-k (:func:`running_topk`, which
``innovwin.search.index.nearest_l2`` reuses for float distances).

Keys are packed words (numpy uint64, torch int64 holding uint64 bits). Distances count differing cells:
``popcount(a ^ b)`` for bits, nonzero nibbles of ``a ^ b`` for 4-bit cells. Every candidate is the unique key
``distance << 32 | training index``, so sorting keys sorts by distance, then index: ties go to the lowest index
and no sort has ties to break. No Triton here, so the CPU search imports it without the GPU stack.
"""
from __future__ import annotations

import numpy as np
import torch

NIBBLE_LOW = 0x1111111111111111  # the low bit of every nibble
KEY_INDEX_MASK = 2**32 - 1  # a candidate key's training index
REFERENCE_CHUNK = 2**22  # word comparisons (or float distances) held at once by a scan


def running_topk(n_queries: int, n_train: int, words: int, k: int, candidates, keep_smallest,
                 budget: int | None = None) -> list:
    """The references' shared scan: per chunk of queries, the k smallest candidate keys over the training set in
    chunks, holding about ``budget`` (default ``REFERENCE_CHUNK``) word comparisons at once.
    ``candidates(q_slice, t_slice)`` gives a chunk's keys; ``keep_smallest(best, keys, k)`` merges them into the
    running best (numpy or torch). One result per query chunk."""
    budget = REFERENCE_CHUNK if budget is None else budget
    q_chunk = max(1, min(n_queries, budget // (words * min(n_train, 4096))))
    t_chunk = max(1, min(n_train, budget // (words * q_chunk)))
    out = []
    for q0 in range(0, n_queries, q_chunk):
        best = None
        for t0 in range(0, n_train, t_chunk):
            best = keep_smallest(best, candidates(slice(q0, q0 + q_chunk), slice(t0, t0 + t_chunk)), k)
        out.append(best)
    return out


# ---------------------------------------------------------------- numpy

def differing_cells_numpy(queries: np.ndarray, train: np.ndarray, nibbles: bool) -> np.ndarray:
    """All-pairs differing cells of packed uint64 keys: (M, W) x (N, W) -> int64 (M, N)."""
    x = queries[:, None, :] ^ train[None, :, :]
    if nibbles:  # one marker bit per nonzero nibble
        one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
        x = (x | (x >> one) | (x >> two) | (x >> three)) & np.uint64(NIBBLE_LOW)
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)


def keep_smallest_numpy(best, keys: np.ndarray, k: int) -> np.ndarray:
    if best is not None:
        keys = np.concatenate([best, keys], axis=1)
    take = min(k, keys.shape[1])
    return np.sort(np.partition(keys, take - 1, axis=1)[:, :take], axis=1)


def nearest_numpy(queries: np.ndarray, train: np.ndarray, k: int, nibbles: bool):
    """Top-k on packed uint64 keys: queries (M, W), train (N, W) -> (dist int32 (M, k), idx int64 (M, k))."""
    m, words = queries.shape

    def candidates(q: slice, t: slice) -> np.ndarray:
        dist = differing_cells_numpy(queries[q], train[t], nibbles)
        return (dist << 32) | np.arange(t.start, t.start + dist.shape[1])

    keys = np.concatenate(running_topk(m, train.shape[0], words, k, candidates, keep_smallest_numpy))
    return (keys >> 32).astype(np.int32), keys & KEY_INDEX_MASK


# ---------------------------------------------------------------- torch

def differing_cells_torch(x: torch.Tensor, nibbles: bool) -> torch.Tensor:
    """x = a ^ b (int64 words) -> per-word count of differing cells (SWAR popcount, exact on int64 bits; the
    kernel's popcount under TRITON_INTERPRET=1 takes the same steps)."""
    if nibbles:  # one marker bit per nonzero nibble; sign-filled high bits are masked away
        x = (x | (x >> 1) | (x >> 2) | (x >> 3)) & NIBBLE_LOW
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


def keep_smallest_torch(best, keys: torch.Tensor, k: int) -> torch.Tensor:
    if best is not None:
        keys = torch.cat([best, keys], dim=1)
    return torch.topk(keys, min(k, keys.shape[1]), dim=1, largest=False, sorted=True).values


def hamming_topk_reference(queries: torch.Tensor, train: torch.Tensor, k: int, nibbles: bool):
    """Brute force on any device: queries (M, W), train (N, W) int64 words -> (dist int32, idx int64) (M, k)."""

    def candidates(q: slice, t: slice) -> torch.Tensor:
        dist = differing_cells_torch(queries[q, None, :] ^ train[None, t, :], nibbles).sum(-1)
        return (dist << 32) | torch.arange(t.start, t.start + dist.shape[1], device=queries.device)

    keys = torch.cat(running_topk(queries.shape[0], train.shape[0], queries.shape[1], k, candidates,
                                  keep_smallest_torch))
    return (keys >> 32).to(torch.int32), keys & KEY_INDEX_MASK
