"""Latin squares: n x n grids over 0..n-1 with every symbol once per row and once per column.

Sampling runs the Jacobson–Matthews Markov chain (J. Combin. Des. 4, 1996), whose stationary
distribution is uniform over Latin squares, on a batch of chains at once in numpy. Each chain
starts from a random isotope of the cyclic square, moves until it has landed on a proper square
``mixing_steps(n)`` times, and finally gets a uniformly random isotopy (row, column and
symbol permutations), which maps the uniform distribution onto itself and only brings the chain
closer to it. See ``mixing_steps`` for how long the chains run and why.
"""
from __future__ import annotations

from math import factorial

import numpy as np

from innovwin._native_loader import native
from innovwin.tasks.base import REQUIRED, Task, as_int

# Reduced Latin squares of order n (OEIS A000315; n = 11: McKay & Wanless 2005).
REDUCED_COUNTS = {
    1: 1, 2: 1, 3: 1, 4: 4, 5: 56, 6: 9408, 7: 16942080, 8: 535281401856,
    9: 377597570964258816, 10: 7580721483160132811489280,
    11: 5363937773277371298119673540771840,
}
MAX_ORDER = 16  # the packing holds symbols 0..15
CHAIN_BATCH = 8192  # chains advanced together (memory: batch * n^3 bytes)
MOVE_S, MOVE_CELL_S = 5e-3, 7e-8  # seconds a move of a chunk, and a chain's cell (see LatinTask.sample_seconds)


def latin_count(n: int) -> int | None:
    """Number of Latin squares of order n (n!(n-1)! times the reduced count), None if unknown."""
    reduced = REDUCED_COUNTS.get(n)
    return None if reduced is None else factorial(n) * factorial(n - 1) * reduced


def mixing_steps(n: int) -> int:
    """Proper landings per chain: n^3 / 2, five to ten times the relaxation we measured.

    A move rewrites 8 of the n^3 cube entries. From the cyclic start (B = 500..1000 chains),
    two statistics reach their uniform values within 0.1 n^3 landings for n = 5, 7, 9, 11 and
    stay there up to 4 n^3: the agreement with the start square (1/n) and the mean number of
    intercalates (2x2 subsquares; 3.6, 10.5, 18.1, 27.3). On order 4 the share of the
    Klein-group class (exactly 1/4) is right from 8 landings on, and tests/test_tasks.py runs an
    exact chi-square test over all 576 squares. A landing costs many moves (about 13 for n = 7:
    the chain spends most moves on improper squares), which is why we do not run longer: n = 7 takes ~20 s per
    10^4 squares in numpy. No mixing-time bound is proven for this chain."""
    return n ** 3 // 2


def random_isotopes(squares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply an independent uniformly random row, column and symbol permutation to each square."""
    b, n, _ = squares.shape
    rows = np.argsort(rng.random((b, n)), axis=1)
    cols = np.argsort(rng.random((b, n)), axis=1)
    symbols = np.argsort(rng.random((b, n)), axis=1)
    batch = np.arange(b)[:, None, None]
    permuted = squares[batch, rows[:, :, None], cols[:, None, :]]
    return np.take_along_axis(symbols, permuted.reshape(b, -1), axis=1).reshape(b, n, n)


def jacobson_matthews(squares: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Move each square (B, n, n) until it has landed on a proper square ``steps`` times.

    The chain lives on the incidence cube f[r, c, s] (1 when cell (r, c) holds s), which may
    carry one -1 entry (an "improper" square). A move picks a cell (r, c, s): a 0 entry of a
    proper cube, uniformly, or the -1 entry; picks r', c', s' with f = 1 at (r', c, s),
    (r, c', s), (r, c, s') (at random between the two choices in the improper case); adds 1 at
    (r,c,s), (r,c',s'), (r',c,s'), (r',c',s) and subtracts 1 at (r,c,s'), (r,c',s), (r',c,s),
    (r',c',s'). The cube is improper after the move iff f(r',c',s') became -1.

    The chain observed on proper squares only is itself a Markov chain whose stationary
    distribution is uniform, so we count proper landings. Stopping instead at the first proper
    square after a fixed number of moves is biased (long improper excursions are more likely to
    straddle the stopping time): on order 4 it gives the Klein-group class 9% of the mass, not 25%."""
    b, n, _ = squares.shape
    cube = np.zeros((b, n, n, n), dtype=np.int8)
    batch = np.arange(b)
    cube[batch[:, None, None], np.arange(n)[None, :, None], np.arange(n)[None, None, :], squares] = 1
    flat = cube.reshape(-1)  # a view: entry (chain, r, c, s) sits at chain*n^3 + (r*n + c)*n + s
    line = np.arange(n)
    bad = np.zeros((b, 3), dtype=np.int64)
    improper = np.zeros(b, dtype=bool)
    landings = np.zeros(b, dtype=np.int64)
    active = batch
    while len(active):
        m = len(active)
        base = active * n ** 3

        def at(r, c, s):  # r, c, s broadcast against the chains on axis 0
            offset = (r * n + c) * n + s
            return base.reshape(-1, *[1] * (np.ndim(offset) - 1)) + offset

        def pick_one(positions):  # a uniformly random position holding 1 (one or two of them)
            return ((flat[positions] == 1) * (1 + rng.random(positions.shape))).argmax(axis=1)

        imp = improper[active]
        r = np.where(imp, bad[active, 0], rng.integers(0, n, m))
        c = np.where(imp, bad[active, 1], rng.integers(0, n, m))
        current = flat[at(r, c, 0)[:, None] + line].argmax(axis=1)  # the symbol at (r, c) if proper
        s = np.where(imp, bad[active, 2], (current + 1 + rng.integers(0, n - 1, m)) % n)  # uniform over zeros
        r2 = pick_one(at(line[None, :], c[:, None], s[:, None]))
        c2 = pick_one(at(r[:, None], line[None, :], s[:, None]))
        s2 = pick_one(at(r[:, None], c[:, None], line[None, :]))
        for cell in (at(r, c, s), at(r, c2, s2), at(r2, c, s2), at(r2, c2, s)):
            flat[cell] += 1
        for cell in (at(r, c, s2), at(r, c2, s), at(r2, c, s), at(r2, c2, s2)):
            flat[cell] -= 1
        now_improper = flat[at(r2, c2, s2)] < 0
        improper[active] = now_improper
        bad[active] = np.stack([r2, c2, s2], axis=1)
        landings[active] += ~now_improper
        active = active[landings[active] < steps]
    return cube.argmax(axis=3)


def grid_units(n: int, box: tuple[int, int] | None) -> np.ndarray:
    """Cell indices of every row, column (and box): int64 (n_units, n)."""
    grid = np.arange(n * n).reshape(n, n)
    units = [grid, grid.T]
    if box is not None:
        bh, bw = box
        units.append(grid.reshape(n // bh, bh, n // bw, bw).transpose(0, 2, 1, 3).reshape(n, n))
    return np.concatenate(units)


class GridTask(Task):
    """Shared by Latin squares and Sudoku: every unit (row, column, box) holds each symbol once."""

    box: tuple[int, int] | None = None

    def _set_grid(self, n: int) -> None:
        self.shape = (n, n)
        self.k = n
        self.complexity = n
        self.complexity_params = ("n",)
        self.units = grid_units(n, self.box)
        self.n_constraints = len(self.units)

    def _constraints_numpy(self, cells):
        # one bit per symbol; a unit of n cells covers all n symbols iff they are all different
        # and all in 0..n-1 (garbage values up to 15 set bits above the full mask)
        one_hot = np.left_shift(1, cells.astype(np.int32))
        full = (1 << self.k) - 1
        return np.bitwise_or.reduce(one_hot[:, self.units], axis=2) == full

    def _native(self, keys, per_constraint, threads):
        box_h, box_w = self.box or (0, 0)
        return native.grid_validate(keys, self.shape[0], box_h, box_w, per_constraint, threads)


class LatinTask(GridTask):
    """``latin:n=N``: Latin squares of order N (2..16); |V| known for N <= 11."""

    name = "latin"
    example = "latin:n=5"
    PARAMS = {"n": (as_int, REQUIRED)}

    def __init__(self, n=5):
        if not 2 <= n <= MAX_ORDER:
            raise ValueError(f"{self.name}: n must be in 2..{MAX_ORDER}, got {n}")
        self.params = {"n": n}
        self._set_grid(n)
        self.n_valid = latin_count(n)

    sample_chunk = CHAIN_BATCH

    def sample_seconds(self, n: int) -> float:
        """Each chunk of chains makes :func:`mixing_steps` vectorized moves: a fixed cost a move, and one a chain
        and cell (measured on one core of a 2-core Xeon: about 10 h for a million squares of order 16)."""
        order = self.shape[0]
        chunks = -(-n // CHAIN_BATCH)
        return mixing_steps(order) * (chunks * MOVE_S + n * order * order * MOVE_CELL_S)

    def _sample(self, count, rng):
        n = self.shape[0]
        cyclic = (np.arange(n)[:, None] + np.arange(n)[None, :]) % n
        out = []
        for start in range(0, count, CHAIN_BATCH):
            b = min(CHAIN_BATCH, count - start)
            squares = random_isotopes(np.broadcast_to(cyclic, (b, n, n)), rng)
            squares = jacobson_matthews(squares, mixing_steps(n), rng)
            out.append(random_isotopes(squares, rng).reshape(b, n * n))
        return np.concatenate(out)
