"""Validating 1,000,000 samples: the C++ validator against the numpy reference on cells.

Run: pytest benches/bench_validate.py --benchmark-enable --benchmark-group-by=group
Each group is one task; ``native`` validates packed keys (pack once, validate many: the hot path
of an evaluation), ``cells`` is the public entry ``task.validate(cells)`` (C++ packing, then the
same validator), ``numpy`` is the reference on uint8 cells (no unpacking charged to it).
Samples are 4096 valid ones, a third of them corrupted in one cell, tiled to 10^6 rows (the
validators have no data-dependent early exit, so the mix does not change their speed).
"""
import numpy as np
import pytest

from innovwin import bits, tasks
from innovwin._native_loader import native

N_SAMPLES = 1_000_000
SPECS = [
    "parity:h=6,w=6,g=2",
    "parity:h=6,w=6,g=3",
    "parity:h=6,w=6,g=4",
    "parity:h=6,w=6,g=6",
    "linear:h=6,w=6,checks=rowcol",
    "latin:n=7",
    "sudoku:n=9",
]


@pytest.fixture(scope="module", params=SPECS)
def workload(request):
    task = tasks.make(request.param)
    rng = np.random.default_rng(0)
    base = task.sample(4096, seed=0)
    rows, cols = np.arange(0, 4096, 3), rng.integers(0, task.n_cells, 1366)
    base[rows, cols] = (base[rows, cols] + 1) % task.k
    reps = -(-N_SAMPLES // len(base))
    cells = np.tile(base, (reps, 1))[:N_SAMPLES]
    expected = np.tile(task.validate(base, backend="numpy"), reps)[:N_SAMPLES]
    return task, cells, bits.pack(cells, task.k), expected


def record(benchmark, task, backend):
    benchmark.group = task.spec
    benchmark.name = backend
    benchmark.extra_info["samples"] = N_SAMPLES


@pytest.mark.skipif(native is None, reason="the C++ extension is not built")
def test_native(benchmark, workload):
    task, _, keys, expected = workload
    record(benchmark, task, "native")
    valid = benchmark(task.validate_packed, keys, backend="native")
    np.testing.assert_array_equal(valid, expected)
    benchmark.extra_info["samples_per_s"] = N_SAMPLES / benchmark.stats.stats.median


@pytest.mark.skipif(native is None, reason="the C++ extension is not built")
def test_cells(benchmark, workload):
    task, cells, _, expected = workload
    record(benchmark, task, "cells")
    valid = benchmark(task.validate, cells)
    np.testing.assert_array_equal(valid, expected)
    benchmark.extra_info["samples_per_s"] = N_SAMPLES / benchmark.stats.stats.median


def test_numpy(benchmark, workload):
    task, cells, _, expected = workload
    record(benchmark, task, "numpy")
    valid = benchmark.pedantic(task.validate, (cells,), {"backend": "numpy"}, rounds=3, iterations=1)
    np.testing.assert_array_equal(valid, expected)
    benchmark.extra_info["samples_per_s"] = N_SAMPLES / benchmark.stats.stats.median
