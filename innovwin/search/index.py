"""Nearest training samples: how close each generation is to what the model was trained on.

Distances count differing *cells*: for bits (alphabet 2) the Hamming distance, for k-valued cells
the number of positions whose values differ (cells, not bits). :func:`nearest` gives each query's
k nearest training samples, sorted by distance with ties to the lowest training index. Backends,
all giving identical integers:

    native  C++ ``innovwin._native.hamming_topk``: threads, AVX-512 / POPCNT, GIL released (CPU default)
    triton  ``innovwin.kernels.hamming.hamming_topk`` on CUDA tensors (GPU default)
    numpy   brute-force reference (the CPU fallback without the extension;
            ``innovwin.kernels.hamming_reference.nearest_numpy``)
    torch   brute-force reference on any device (``innovwin.kernels.hamming_reference.hamming_topk_reference``)

Inputs are either cells or packed keys, told apart by dtype: ``uint8`` (n, n_cells) are cells with
values < alphabet; ``uint64`` (n, words) are keys as :func:`innovwin.bits.pack` makes them (for torch
also ``int64``, as :func:`innovwin.bits.pack_torch` makes them). numpy in -> numpy out; torch in ->
torch out on the queries' device.

:class:`NearestIndex` packs a training set once, keeps it on its device and answers many queries
(an exact copy is a nearest distance of 0). As in the validators, bits or nibbles past ``n_cells`` (the padding of
the last word) never count toward a distance: keys are masked there when the index knows ``n_cells``, which it
does when it was built from cells or given ``n_cells``. An index built from bare keys compares whole words and
takes only keys as queries (cells could not be checked against a cell count it does not know). :func:`nearest_l2` is the float counterpart for a DiT's undecoded outputs (the ratio
test d1 < d2 / 3).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from innovwin import bits
from innovwin._native_loader import native, native_available
from innovwin.kernels.hamming_reference import (KEY_INDEX_MASK, hamming_topk_reference, keep_smallest_torch,
                                                nearest_numpy, running_topk)

BACKENDS = ("auto", "native", "triton", "numpy", "torch")
_L2_CHUNK_CUDA = 2**26  # distances held at once on a GPU: fewer, larger GEMMs (the CPU's: the references' chunk)


# ---------------------------------------------------------------- input checks and conversions

def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _as_keys(samples, alphabet: int, name: str):
    """Cells or packed keys -> (packed keys, n_cells or None). numpy -> uint64, torch -> int64 words."""
    if not (_is_torch(samples) or isinstance(samples, np.ndarray)):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(samples).__name__}")
    if samples.ndim != 2:
        raise ValueError(f"{name} must have shape (n, n_cells) or (n, words), got shape {tuple(samples.shape)}")
    if samples.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one sample")
    if samples.shape[1] == 0:
        raise ValueError(f"{name} has no cells per sample")
    dtype = samples.dtype
    if _is_torch(samples):
        if dtype == torch.uint8:
            top = int(samples.max())
            if top >= alphabet:
                raise ValueError(f"{name}: cell value {top} is outside the alphabet 0..{alphabet - 1}")
            return bits.pack_torch(samples, alphabet), samples.shape[1]
        if dtype in (torch.int64, torch.uint64):
            return samples.contiguous().view(torch.int64), None
    elif dtype == np.uint8:
        return bits.pack(samples, alphabet), samples.shape[1]
    elif dtype == np.uint64:
        return np.ascontiguousarray(samples), None
    raise ValueError(f"{name} must be uint8 cells or uint64 packed keys (torch: int64 words), got dtype {dtype}")


def _numpy_keys(keys) -> np.ndarray:
    return keys.detach().cpu().contiguous().numpy().view(np.uint64) if _is_torch(keys) else keys


def _torch_keys(keys, device) -> torch.Tensor:
    return keys.to(device) if _is_torch(keys) else torch.from_numpy(keys.view(np.int64)).to(device)


def _like(result, queries):
    """Cast a backend's numpy/torch result to the queries' kind (and device)."""
    if _is_torch(queries):
        return torch.as_tensor(result).to(queries.device)
    return result.cpu().numpy() if _is_torch(result) else result


def _padding_mask(n_cells: int, alphabet: int) -> int | None:
    """The used bits of a sample's last word, or None when the cells fill it (nothing to mask)."""
    per = bits.cells_per_word(alphabet)
    used = n_cells - (bits.n_words(n_cells, alphabet) - 1) * per
    return None if used == per else (1 << (used * (64 // per))) - 1


def _masked(keys, mask: int | None):
    """Keys with their last word's padding cleared (a copy; ``mask`` < 2**63, so it fits torch's int64)."""
    if mask is None:
        return keys
    keys = keys.clone() if _is_torch(keys) else keys.copy()
    keys[:, -1] &= mask if _is_torch(keys) else np.uint64(mask)
    return keys


def _check_k(k, n_train: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_train:
        raise ValueError(f"k must be an integer in 1..n_train={n_train}, got {k!r}")


# ---------------------------------------------------------------- front

def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda":
            return "triton"
        return "native" if native_available() else "numpy"
    if backend == "native" and not native_available():
        raise ValueError("backend 'native' needs the C++ extension innovwin._native (reinstall with pip install -e .)")
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"backend 'triton' needs an index on a CUDA device (or TRITON_INTERPRET=1), got {device}")
    return backend


class NearestIndex:
    """A training set packed once, kept on ``device``, searched by many query batches.

    ``train``: uint8 cells (N, n_cells) or packed keys (see the module docstring); ``alphabet``: the
    cell alphabet size (2 = bits, 3..16 = 4-bit cells); ``device``: where the packed keys live
    (default: the training tensor's device, CPU for numpy). On CUDA the default backend is the
    Triton kernel, on CPU the C++ search (numpy without the extension).
    """

    def __init__(self, train, alphabet: int = 2, device=None, n_cells: int | None = None):
        if isinstance(alphabet, bool) or not isinstance(alphabet, (int, np.integer)):
            raise ValueError(f"alphabet must be an integer in 2..{bits.MAX_ALPHABET}, got {alphabet!r}")
        bits.cells_per_word(int(alphabet))  # raises ValueError out of range
        self.alphabet = int(alphabet)
        self.nibbles = self.alphabet > 2
        if device is None:
            device = train.device if _is_torch(train) else "cpu"
        self.device = torch.device(device)
        keys, cells = _as_keys(train, self.alphabet, "train")
        if n_cells is not None and cells is not None and n_cells != cells:
            raise ValueError(f"n_cells={n_cells} but the training set has {cells} cells per sample")
        self.n_cells = cells if cells is not None else n_cells
        if self.n_cells is not None and bits.n_words(self.n_cells, self.alphabet) != keys.shape[1]:
            raise ValueError(f"n_cells={self.n_cells} packs into {bits.n_words(self.n_cells, self.alphabet)} words, "
                             f"but the training keys have {keys.shape[1]}")
        self._mask = None if self.n_cells is None else _padding_mask(self.n_cells, self.alphabet)
        keys = _masked(keys, self._mask if cells is None else None)  # packed cells have no padding bits set
        self.keys = _numpy_keys(keys) if self.device.type == "cpu" else _torch_keys(keys, self.device)
        self.n_train, self.words = self.keys.shape
        self._columns = None  # word-major copy for the Triton kernel, made on first use

    def _query_keys(self, queries):
        keys, n_cells = _as_keys(queries, self.alphabet, "queries")
        if n_cells is not None and self.n_cells is None:
            raise ValueError("queries are cells but the index was built from packed keys without n_cells: "
                             "pass n_cells= to the index (or query with packed keys)")
        if n_cells is not None and n_cells != self.n_cells:
            raise ValueError(f"queries have {n_cells} cells per sample but the training set has {self.n_cells}")
        if keys.shape[1] != self.words:
            raise ValueError(f"queries have {keys.shape[1]} packed words per sample but the training set has {self.words}")
        return keys if n_cells is not None else _masked(keys, self._mask)

    def query(self, queries, k: int = 2, backend: str = "auto"):
        """The k nearest training samples of each query: (dist int32 (M, k), idx int64 (M, k))."""
        _check_k(k, self.n_train)
        backend = _resolve_backend(backend, self.device)
        keys = self._query_keys(queries)
        k = int(k)
        if backend == "native":
            dist, idx = native.hamming_topk(_numpy_keys(keys), _numpy_keys(self.keys), k, self.nibbles)
        elif backend == "numpy":
            dist, idx = nearest_numpy(_numpy_keys(keys), _numpy_keys(self.keys), k, self.nibbles)
        else:
            device = self.device if _is_torch(self.keys) else torch.device("cpu")
            q = _torch_keys(keys, device)
            if backend == "torch":
                dist, idx = hamming_topk_reference(q, _torch_keys(self.keys, device), k, self.nibbles)
            else:
                from innovwin.kernels import hamming  # Triton loads only when the kernel runs

                if self._columns is None:
                    self._columns = _torch_keys(self.keys, device).t().contiguous()
                dist, idx = hamming.hamming_topk(q, self._columns, k, self.nibbles)
        return _like(dist, queries), _like(idx, queries)


def nearest(queries, train, k: int = 2, alphabet: int = 2, backend: str = "auto", n_cells: int | None = None):
    """The k nearest training samples of each query by differing cells.

    Returns (dist int32 (M, k), idx int64 (M, k)), sorted by distance, ties to the lowest training
    index. Runs where the queries live (their CUDA device, else the CPU). To search one training
    set many times, build a :class:`NearestIndex` once instead. ``n_cells``: as for :class:`NearestIndex`.
    """
    device = queries.device if _is_torch(queries) else torch.device("cpu")
    index = NearestIndex(train, alphabet=alphabet, device=device, n_cells=n_cells)
    return index.query(queries, k=k, backend=backend)


def nearest_l2(queries, train, k: int = 2):
    """The k nearest training vectors of each query in Euclidean distance (a DiT's undecoded outputs).

    queries (M, D), train (N, D), float (numpy or torch; computed in float32 on the queries' device)
    -> (dist float32 (M, k), idx int64 (M, k)): distances (not squared), sorted, ties to the lowest
    index among equal float32 values. Chunked GEMM: |q|^2 - 2 q.t + |t|^2, clamped at 0.
    """
    q = _float_matrix(queries, "queries")
    t = _float_matrix(train, "train").to(q.device)
    if q.shape[1] != t.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features but train has {t.shape[1]}")
    _check_k(k, len(t))
    k = int(k)
    q_norm, t_norm = (q * q).sum(1), (t * t).sum(1)

    def candidates(qs: slice, ts: slice) -> torch.Tensor:
        d2 = (q_norm[qs, None] - 2 * q[qs] @ t[ts].T + t_norm[None, ts]).clamp_min(0)
        # non-negative float32 bits order like the floats: key = bits << 32 | index is unique and sortable
        return (d2.view(torch.int32).to(torch.int64) << 32) | torch.arange(ts.start, ts.start + d2.shape[1],
                                                                           device=q.device)

    out = running_topk(len(q), len(t), 1, k, candidates, keep_smallest_torch, _L2_CHUNK_CUDA if q.is_cuda else None)
    keys = torch.cat(out)
    dist = (keys >> 32).to(torch.int32).view(torch.float32).sqrt()
    return _like(dist, queries), _like(keys & KEY_INDEX_MASK, queries)


def _float_matrix(x, name: str) -> torch.Tensor:
    if not (_is_torch(x) or isinstance(x, np.ndarray)):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {t.dtype}")
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must have shape (n, D) with n, D >= 1, got shape {tuple(t.shape)}")
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t
