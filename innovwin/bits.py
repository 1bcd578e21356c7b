"""Packing cells into uint64 words: the one key format for validation and search.

Binary cells (k = 2) pack LSB-first: cell i is bit (i % 64) of word (i // 64).
k-valued cells (3 <= k <= 16) pack in 4-bit nibbles: cell i is nibble (i % 16) of word (i // 16).
Rows are row-major cells. :func:`pack` runs in C++ (``innovwin._native.pack``) when the extension is built;
:func:`pack_numpy` is its reference and fallback, :func:`pack_torch` its twin on any torch device: all three give
identical words.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from innovwin._native_loader import native

if TYPE_CHECKING:  # torch is imported where a device packs, so the CLI parses without it
    import torch

MAX_ALPHABET = 16


def cells_per_word(k: int) -> int:
    """How many cells one uint64 word holds for an alphabet of size k."""
    if not 2 <= k <= MAX_ALPHABET:
        raise ValueError(f"alphabet size k must be in 2..{MAX_ALPHABET}, got {k}")
    return 64 if k == 2 else 16


def n_words(n_cells: int, k: int = 2) -> int:
    """Words per packed sample."""
    per = cells_per_word(k)
    return (n_cells + per - 1) // per


def _check_cells(cells, k: int) -> None:
    if cells.ndim != 2:
        raise ValueError(f"cells must have shape (n, n_cells), got shape {tuple(cells.shape)}")
    if cells.shape[1] == 0:
        raise ValueError("cells must have at least one cell per sample")


def pack(cells: np.ndarray, k: int = 2) -> np.ndarray:
    """Pack uint8 cells (n, n_cells) with values in 0..k-1 into uint64 (n, words) (C++ when built)."""
    cells = np.asarray(cells)
    _check_cells(cells, k)
    if cells.dtype != np.uint8:
        raise ValueError(f"cells must be uint8, got {cells.dtype}")
    cells_per_word(k)  # raises ValueError for an alphabet out of range
    if native is None:
        return pack_numpy(cells, k)
    try:
        return native.pack(np.ascontiguousarray(cells), k)
    except ValueError as error:  # the one message for a cell outside the alphabet, as pack_numpy words it
        raise ValueError(str(error).removeprefix("pack: ")) from None


def pack_numpy(cells: np.ndarray, k: int = 2) -> np.ndarray:
    """numpy reference of :func:`pack` (same checks, same words)."""
    cells = np.asarray(cells)
    _check_cells(cells, k)
    if cells.dtype != np.uint8:
        raise ValueError(f"cells must be uint8, got {cells.dtype}")
    per = cells_per_word(k)
    if cells.size and cells.max() >= k:
        raise ValueError(f"cell value {int(cells.max())} is outside the alphabet 0..{k - 1}")
    n, n_cells = cells.shape
    words = n_words(n_cells, k)
    padded = np.zeros((n, words * per), dtype=np.uint64)
    padded[:, :n_cells] = cells
    width = 64 // per
    shifts = (np.arange(per, dtype=np.uint64) * np.uint64(width))
    return np.bitwise_or.reduce(padded.reshape(n, words, per) << shifts, axis=2)


def unpack(packed: np.ndarray, n_cells: int, k: int = 2) -> np.ndarray:
    """Inverse of :func:`pack`: uint64 (n, words) to uint8 (n, n_cells)."""
    packed = np.asarray(packed)
    per = cells_per_word(k)
    words = n_words(n_cells, k)
    if packed.dtype != np.uint64 or packed.ndim != 2 or packed.shape[1] != words:
        raise ValueError(
            f"packed must be uint64 of shape (n, {words}) for {n_cells} cells, "
            f"got {packed.dtype} {tuple(packed.shape)}"
        )
    width = 64 // per
    shifts = np.arange(per, dtype=np.uint64) * np.uint64(width)
    mask = np.uint64((1 << width) - 1)
    cells = (packed[:, :, None] >> shifts) & mask
    return cells.reshape(packed.shape[0], words * per)[:, :n_cells].astype(np.uint8)


def pack_torch(cells: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Torch twin of :func:`pack` (any device): uint8/int cells -> int64 words with uint64 bits.

    torch has no full uint64 arithmetic, so words come back as int64 holding the same bits;
    ``.numpy().view(np.uint64)`` gives exactly :func:`pack`'s result.
    """
    import torch  # here, not at the top: the tasks (and `innovwin --help`) use this module without torch

    _check_cells(cells, k)
    per = cells_per_word(k)
    n, n_cells = cells.shape
    words = n_words(n_cells, k)
    padded = torch.zeros((n, words * per), dtype=torch.int64, device=cells.device)
    padded[:, :n_cells] = cells.to(torch.int64)
    width = 64 // per
    shifts = torch.arange(per, device=cells.device, dtype=torch.int64) * width
    shifted = padded.view(n, words, per) << shifts
    out = shifted[:, :, 0]
    for j in range(1, per):  # bits never overlap, so OR-reduction is exact
        out = out | shifted[:, :, j]
    return out
