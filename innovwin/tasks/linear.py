"""GF(2) linear codes: configurations x with H x = 0 (mod 2) for a 0/1 check matrix H.

Group parity is the special case where the checks are disjoint groups. Sampling draws the
coefficients of a null-space basis uniformly, which is a bijection onto the code, so it is
exactly uniform; |V| = 2^(n_cells - rank H).
"""
from __future__ import annotations

import numpy as np

from innovwin._native_loader import native
from innovwin.tasks.base import Task, as_int, as_seed, as_side

CHECK_KINDS = ("rowcol", "sparse")


def gf2_nullspace(h: np.ndarray) -> tuple[int, np.ndarray]:
    """(rank, basis) of the null space of the 0/1 matrix h (m, n) over GF(2); basis (n - rank, n)."""
    a = (np.asarray(h, dtype=np.uint8) & 1).copy()
    m, n = a.shape
    pivots = []
    row = 0
    for col in range(n):
        hits = np.nonzero(a[row:, col])[0] if row < m else []
        if len(hits) == 0:
            continue
        pivot = row + hits[0]
        a[[row, pivot]] = a[[pivot, row]]
        others = np.nonzero(a[:, col])[0]
        others = others[others != row]
        a[others] ^= a[row]
        pivots.append(col)
        row += 1
    free = [c for c in range(n) if c not in set(pivots)]
    basis = np.zeros((len(free), n), dtype=np.uint8)
    for i, f in enumerate(free):  # set one free variable, solve the pivots from the reduced rows
        basis[i, f] = 1
        for r, p in enumerate(pivots):
            basis[i, p] = a[r, f]
    return len(pivots), basis


def syndrome_tables(h: np.ndarray) -> np.ndarray:
    """Per-byte syndrome tables for the native validator: uint64 (n_bytes, 256, syn_words).

    Entry [j, v] is the XOR of the syndromes of the cells whose bits are set in byte j of the
    packed key when that byte equals v; a key's syndrome is the XOR of one entry per byte, and
    check c holds iff bit c of the syndrome is 0."""
    m, n = h.shape
    syn_words = max(1, (m + 63) // 64)
    column_syndrome = np.zeros((n, syn_words), dtype=np.uint64)
    for c in range(m):
        column_syndrome[h[c].astype(bool), c // 64] |= np.uint64(1) << np.uint64(c % 64)
    n_bytes = (n + 7) // 8
    padded = np.zeros((n_bytes * 8, syn_words), dtype=np.uint64)
    padded[:n] = column_syndrome
    values = np.arange(256)
    tables = np.zeros((n_bytes, 256, syn_words), dtype=np.uint64)
    for b in range(8):
        on = ((values >> b) & 1).astype(bool)
        tables[:, on, :] ^= padded[b::8][:, None, :]
    return tables


class LinearCodeTask(Task):
    """``linear:h=6,w=6,checks=rowcol`` (every row and column even) or
    ``linear:h=6,w=6,checks=sparse,m=M,weight=W,seed=S`` (M random checks of W cells each)."""

    name = "linear"
    example = "linear:h=6,w=6,checks=rowcol"
    PARAMS = {
        "h": (as_side, 6),
        "w": (as_side, 6),
        "checks": (str, "rowcol"),
        "m": (as_int, None),
        "weight": (as_int, None),
        "seed": (as_seed, 0),
    }

    def __init__(self, h=6, w=6, checks="rowcol", m=None, weight=None, seed=0):
        if h < 1 or w < 1:
            raise ValueError(f"{self.name}: h and w must be >= 1, got h={h}, w={w}")
        self.shape = (h, w)
        self.params = {"h": h, "w": w, "checks": checks}
        if checks == "rowcol":
            if m is not None or weight is not None:
                raise ValueError(f"{self.name}: m= and weight= only apply to checks=sparse")
            grid = np.arange(h * w).reshape(h, w)
            check_cells = [grid[r] for r in range(h)] + [grid[:, c] for c in range(w)]
            self.complexity = max(h, w)
            self.complexity_params = ("h", "w")
        elif checks == "sparse":
            if m is None or weight is None:
                raise ValueError(f"{self.name}: checks=sparse needs m= and weight=")
            if m < 1 or not 1 <= weight <= h * w:
                raise ValueError(f"{self.name}: need m >= 1 and 1 <= weight <= {h * w}, got m={m}, weight={weight}")
            rng = np.random.default_rng(seed)
            check_cells = [np.sort(rng.choice(h * w, size=weight, replace=False)) for _ in range(m)]
            self.params.update(m=m, weight=weight, seed=seed)
            self.complexity = weight
            self.complexity_params = ("weight",)
        else:
            raise ValueError(f"{self.name}: unknown checks={checks!r}; valid: {', '.join(CHECK_KINDS)}")
        self._set_checks(check_cells)

    def _set_checks(self, check_cells) -> None:
        """Build H, its null space and the native tables from the cell lists of the checks."""
        self.k = 2
        n = self.shape[0] * self.shape[1]
        self.check_matrix = np.zeros((len(check_cells), n), dtype=np.uint8)
        for c, members in enumerate(check_cells):
            self.check_matrix[c, members] = 1
        self.rank, self.basis = gf2_nullspace(self.check_matrix)
        self.n_valid = 2 ** (n - self.rank)
        self.n_constraints = len(check_cells)
        self._tables = syndrome_tables(self.check_matrix)

    def _sample(self, n, rng):
        coefficients = rng.integers(0, 2, size=(n, len(self.basis)), dtype=np.uint8)
        # counts stay far below 2^24, so float32 sums are exact
        return (coefficients.astype(np.float32) @ self.basis.astype(np.float32)).astype(np.int64) & 1

    def _constraints_numpy(self, cells):
        return (cells.astype(np.float32) @ self.check_matrix.T.astype(np.float32)).astype(np.int64) & 1 == 0

    def _native(self, keys, per_constraint, threads):
        return native.linear_validate(keys, self._tables, self.n_constraints, per_constraint, threads)
