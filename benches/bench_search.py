"""Nearest-training-sample search, top-2 of M = 10,000 queries: the C++ search against faiss and numpy.

    pytest benches/bench_search.py --benchmark-enable --benchmark-group-by=group [-k "bits and N1e5"]
    python benches/record.py benches/bench_search.py [-k gpu]       (keeps a JSON with the machine)

CPU groups, ``{layout}-N1e{4,5,6}``, each one data set:
- ``bits``: 6x6 binary grids (36 cells, one word); ``sudoku``: 9x9 digit grids (81 cells, 6 words of
  4-bit cells). Training cells are uniform; a third of the queries copy a training sample, a third
  are copies with 3 cells changed, a third are uniform (what a half-memorizing model produces).
- ``native``: ``innovwin._native.hamming_topk`` on packed keys, all cores.
- ``faiss``: faiss-cpu ``IndexBinaryFlat`` on the same packed keys, all cores. On ``sudoku`` it counts
  differing *bits* of the 4-bit cells, not differing cells: a throughput baseline only (its answers
  are not compared there). OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, set before
  faiss loads): on shared cores spinning workers otherwise make faiss several times slower.
- ``numpy``: the reference, at N = 10^4 only (it is slow).
Each row records ``pairs_per_s`` and the process CPU time (``cpu_s``: less sensitive to other jobs on
shared cores than wall time). numpy and runs of 10^10 pairs are timed once, the rest three times;
the whole CPU set takes about 4 minutes on 2 shared cores.

GPU group ``gpu-bits-N1e6`` (skipped without CUDA): the Triton kernel (a few tile shapes) on a
prepacked index against a torch baseline, cells as +-1 bf16 and Hamming = (n_cells - q.t) / 2 from
chunked GEMMs with ``torch.topk``. Target on an H200: <= 20 ms and >= 2x the baseline.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss (and its OpenMP runtime) loads

import numpy as np
import pytest
import torch

from innovwin import bits
from innovwin._native_loader import native
from innovwin.search import index as memorization

try:
    import faiss
except ImportError:  # a bench-only dependency
    faiss = None

M = 10_000
K = 2
LAYOUTS = {"bits": (36, 2), "sudoku": (81, 9)}  # name -> (n_cells, alphabet)
N_TRAIN = [10_000, 100_000, 1_000_000]
CUDA = torch.cuda.is_available()


def make_cells(n_cells: int, alphabet: int, n: int, seed: int = 0):
    """(queries, train) uint8 cells: see the module docstring for the mix of queries."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, alphabet, (n, n_cells), dtype=np.uint8)
    queries = train[rng.integers(0, n, M)]
    third = M // 3
    rows = np.repeat(np.arange(third, 2 * third), 3)
    cols = rng.integers(0, n_cells, len(rows))
    queries[rows, cols] = (queries[rows, cols] + 1 + rng.integers(0, alphabet - 1, len(rows))) % alphabet
    queries[2 * third :] = rng.integers(0, alphabet, (M - 2 * third, n_cells), dtype=np.uint8)
    return queries, train


@pytest.fixture(scope="module", params=[(name, n) for name in LAYOUTS for n in N_TRAIN],
                ids=lambda p: f"{p[0]}-N1e{len(str(p[1])) - 1}")
def workload(request):
    name, n = request.param
    n_cells, alphabet = LAYOUTS[name]
    queries, train = make_cells(n_cells, alphabet, n)
    return name, n, alphabet, bits.pack(queries, alphabet), bits.pack(train, alphabet)


def run(benchmark, workload, method, fn):
    name, n, *_ = workload
    benchmark.group = f"{name}-N1e{len(str(n)) - 1}"
    benchmark.name = method
    cpu = []

    def timed():
        start = time.process_time()
        out = fn()
        cpu.append(time.process_time() - start)
        return out

    rounds = 1 if method == "numpy" or M * n >= 10**10 else 3
    result = benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(pairs=M * n, pairs_per_s=M * n / benchmark.stats.stats.median, cpu_s=min(cpu))
    return result


@pytest.mark.skipif(native is None, reason="the C++ extension is not built")
def test_native(benchmark, workload):
    _, n, alphabet, queries, train = workload
    dist, idx = run(benchmark, workload, "native", lambda: native.hamming_topk(queries, train, K, alphabet > 2))
    assert (dist[: M // 3, 0] == 0).all()  # the exact copies are found


@pytest.mark.skipif(faiss is None, reason="faiss-cpu is not installed (pip install faiss-cpu)")
def test_faiss(benchmark, workload):
    name, n, alphabet, queries, train = workload
    index = faiss.IndexBinaryFlat(64 * train.shape[1])
    index.add(train.view(np.uint8))
    dist, _ = run(benchmark, workload, "faiss", lambda: index.search(queries.view(np.uint8), K))
    if name == "bits" and native is not None:  # same distances (faiss may order tied indices differently)
        np.testing.assert_array_equal(dist, native.hamming_topk(queries, train, K, False)[0])


def test_numpy(benchmark, workload):
    _, n, alphabet, queries, train = workload
    if n > N_TRAIN[0]:
        pytest.skip("the numpy reference runs at N = 10^4 only")
    dist, idx = run(benchmark, workload, "numpy", lambda: memorization.nearest_numpy(queries, train, K, alphabet > 2))
    if native is not None:
        expected = native.hamming_topk(queries, train, K, alphabet > 2)
        np.testing.assert_array_equal(dist, expected[0])
        np.testing.assert_array_equal(idx, expected[1])


# ---------------------------------------------------------------- GPU (run where CUDA is)

GPU_N = 1_000_000
TILES = [(64, 128, 4), (128, 128, 8), (64, 256, 8), (32, 128, 4)]  # (block_m, block_n, num_warps)


@pytest.fixture(scope="module")
def gpu_workload():
    queries, train = make_cells(36, 2, GPU_N)
    q = torch.from_numpy(queries).cuda()
    index = memorization.NearestIndex(torch.from_numpy(train).cuda())
    return q, torch.from_numpy(train).cuda(), index


def _time_cuda(benchmark, fn, name):
    benchmark.group = "gpu-bits-N1e6"
    benchmark.name = name

    def synced():
        out = fn()
        torch.cuda.synchronize()
        return out

    out = benchmark.pedantic(synced, rounds=10, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(pairs=M * GPU_N, pairs_per_s=M * GPU_N / benchmark.stats.stats.median,
                                device=torch.cuda.get_device_name(0))
    return out


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("tile", TILES, ids=lambda t: f"m{t[0]}-n{t[1]}-w{t[2]}")
def test_gpu_triton(benchmark, gpu_workload, tile):
    from innovwin.kernels import hamming

    q, train, index = gpu_workload
    keys = bits.pack_torch(q, 2)
    columns = bits.pack_torch(train, 2).t().contiguous()
    block_m, block_n, warps = tile
    dist, idx = _time_cuda(benchmark, lambda: hamming.hamming_topk(keys, columns, K, False, block_m, block_n, warps),
                           f"triton-m{block_m}-n{block_n}-w{warps}")
    expected = index.query(q[:256], k=K, backend="torch")
    assert torch.equal(dist[:256], expected[0]) and torch.equal(idx[:256], expected[1])


def encode_cells(cells: torch.Tensor, alphabet: int) -> torch.Tensor:
    """bf16 vectors whose dot products count agreeing cells: +-1 per bit cell (agree - disagree), one-hot per
    cell of a larger alphabet (agree)."""
    if alphabet == 2:
        return 2 * cells.to(torch.bfloat16) - 1
    return torch.nn.functional.one_hot(cells.long(), alphabet).flatten(1).to(torch.bfloat16)


def gemm_topk(q_enc: torch.Tensor, t_enc: torch.Tensor, n_cells: int, alphabet: int, k: int = K,
              chunk: int = 1 << 17):
    """Baseline: similarity q.t by GEMM over chunks of the training set (exact: integers <= n_cells), running
    top-k; distances = differing cells. Equal distances may pick other indices than the kernel's lowest-first."""
    best_s = best_i = None
    for t0 in range(0, len(t_enc), chunk):
        s = q_enc @ t_enc[t0 : t0 + chunk].T
        s, i = torch.topk(s, k, dim=1)
        if best_s is not None:
            s, j = torch.topk(torch.cat([best_s, s], 1), k, dim=1)
            i = torch.gather(torch.cat([best_i, i + t0], 1), 1, j)
        else:
            i = i + t0
        best_s, best_i = s, i
    agree = best_s.float()
    dist = (n_cells - agree) / 2 if alphabet == 2 else n_cells - agree
    return dist.to(torch.int32), best_i


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_gpu_bf16_gemm(benchmark, gpu_workload):
    q, train, index = gpu_workload
    q_pm, t_pm = (encode_cells(x, 2) for x in (q, train))
    dist, _ = _time_cuda(benchmark, lambda: gemm_topk(q_pm, t_pm, 36, 2), "bf16_gemm")
    assert torch.equal(dist, index.query(q, k=K)[0])
