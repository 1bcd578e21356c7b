import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from innovwin.kernels import hamming, hamming_reference

from innovwin import bits
from innovwin._native_loader import native, native_available
from innovwin.search import NearestIndex, nearest, nearest_l2
from innovwin.search import index as search_module

needs_native = pytest.mark.skipif(not native_available(), reason="C++ extension not built")
CPU_BACKENDS = ["numpy", "torch"] + (["native"] if native_available() else [])


def brute_force(queries: np.ndarray, train: np.ndarray, k: int):
    """Differing cells counted on the cells themselves; a stable sort keeps the lowest index first."""
    dist = (queries[:, None, :] != train[None, :, :]).sum(-1)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, idx, axis=1), idx


def random_cells(seed: int, m: int, n: int, n_cells: int, alphabet: int):
    """Queries and training cells with duplicated training rows, queries that copy training rows,
    and few distinct distances (cells drawn near one base row), so ties are everywhere."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, alphabet, n_cells, dtype=np.uint8)

    def near_base(count):
        cells = np.tile(base, (count, 1))
        flip = rng.random((count, n_cells)) < 0.15
        cells[flip] = rng.integers(0, alphabet, int(flip.sum()), dtype=np.uint8)
        return cells

    train, queries = near_base(n), near_base(m)
    if n >= 4:
        train[n // 2 : n // 2 + n // 4] = train[: n // 4]  # duplicated training samples
    queries[: m // 3] = train[rng.integers(0, n, m // 3)]  # exact copies
    return queries, train


def assert_same(got, expected):
    dist, idx = (np.asarray(x) for x in got)
    assert dist.dtype == np.int32 and idx.dtype == np.int64
    np.testing.assert_array_equal(dist, expected[0])
    np.testing.assert_array_equal(idx, expected[1])


# (n_cells, alphabet): one bit word, two bit words, sudoku digits in 4-bit cells, a small and a full alphabet
LAYOUTS = [(36, 2), (100, 2), (81, 9), (17, 3), (40, 16)]
SIZES = [(1, 1, 1), (1, 9, 2), (23, 1, 1), (37, 300, 2), (65, 129, 5)]  # (M, N, k)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("n_cells, alphabet", LAYOUTS)
def test_cpu_backends_equal_brute_force(backend, n_cells, alphabet):
    for seed, (m, n, k) in enumerate(SIZES):
        queries, train = random_cells(seed, m, n, n_cells, alphabet)
        assert_same(nearest(queries, train, k=k, alphabet=alphabet, backend=backend), brute_force(queries, train, k))


@pytest.mark.parametrize("n_cells, alphabet", [(36, 2), (81, 9), (130, 2)])
def test_triton_kernel_under_interpreter_equals_brute_force(n_cells, alphabet):
    for seed, (m, n, k) in enumerate([(1, 1, 1), (5, 37, 2), (40, 300, 3)]):
        queries, train = random_cells(seed, m, n, n_cells, alphabet)
        got = nearest(torch.from_numpy(queries), torch.from_numpy(train), k=k, alphabet=alphabet, backend="triton")
        assert isinstance(got[0], torch.Tensor)
        assert_same(got, brute_force(queries, train, k))


@pytest.mark.parametrize("k", [1, 3])
def test_triton_kernel_tiles_and_splits(k):
    """Several tiles per split, several splits, a ragged last tile and row block."""
    queries, train = random_cells(7, 11, 121, 81, 9)
    q = bits.pack_torch(torch.from_numpy(queries), 9)
    columns = bits.pack_torch(torch.from_numpy(train), 9).t().contiguous()
    got = hamming.hamming_topk(q, columns, k, nibbles=True, block_m=8, block_n=16, splits=3)
    assert_same(got, brute_force(queries, train, k))
    assert_same(hamming.hamming_topk_reference(q, columns.t(), k, nibbles=True), brute_force(queries, train, k))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    m=st.integers(1, 40),
    n=st.integers(1, 200),
    k=st.integers(1, 6),
    layout=st.sampled_from([(36, 2), (70, 2), (81, 9), (9, 5), (33, 16)]),
)
def test_backends_agree_on_random_inputs(seed, m, n, k, layout):
    n_cells, alphabet = layout
    k = min(k, n)
    queries, train = random_cells(seed, m, n, n_cells, alphabet)
    expected = brute_force(queries, train, k)
    for backend in CPU_BACKENDS:
        assert_same(nearest(queries, train, k=k, alphabet=alphabet, backend=backend), expected)


@needs_native
@pytest.mark.parametrize("nibbles", [False, True])
def test_native_isas_equal_reference_across_tiles_blocks_and_word_counts(nibbles):
    """Every instruction set this CPU has, block counts compiled as constants (1..8) and not (9+:
    9 bit words, 33 nibble words), more than one tile (4096 / words samples) and query block (64),
    groups of 4 with padding."""
    rng = np.random.default_rng(3)
    isas = [isa for isa in ("avx512-vpopcntdq", "popcnt", "portable") if _isa_ok(isa)]
    for words in (1, 2, 6, 9, 33):
        n = 4096 // words + 13
        alphabet = 9 if nibbles else 2
        n_cells = words * (16 if nibbles else 64)
        train = rng.integers(0, alphabet, (n, n_cells), dtype=np.uint8)
        train[: n // 2, 8:] = 0  # close neighbours -> many candidate updates and ties
        queries = train[rng.integers(0, n, 70)].copy()
        queries[::2, :3] = (queries[::2, :3] + 1) % alphabet
        q, t = bits.pack(queries, alphabet), bits.pack(train, alphabet)
        expected = search_module.nearest_numpy(q, t, 3, nibbles)
        for isa in isas:
            assert_same(native.hamming_topk(q, t, 3, nibbles, 0, isa), expected)


def _isa_ok(isa):
    try:
        native.hamming_topk(np.zeros((1, 1), np.uint64), np.zeros((1, 1), np.uint64), 1, False, 1, isa)
        return True
    except ValueError:
        return False


@needs_native
def test_native_threads_give_identical_results():
    queries, train = random_cells(11, 300, 30_000, 36, 2)
    q, t = bits.pack(queries), bits.pack(train)
    one = native.hamming_topk(q, t, 2, False, 1)
    for threads in (2, 0):
        assert_same(native.hamming_topk(q, t, 2, False, threads), one)
    assert native.search_isa() in ("avx512-vpopcntdq", "popcnt", "portable")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_packed_keys_and_torch_inputs_give_the_same_answer(backend):
    queries, train = random_cells(5, 20, 90, 81, 9)
    expected = brute_force(queries, train, 2)
    assert_same(nearest(bits.pack(queries, 9), bits.pack(train, 9), k=2, alphabet=9, backend=backend), expected)
    got = nearest(torch.from_numpy(queries), bits.pack_torch(torch.from_numpy(train), 9), alphabet=9, backend=backend,
                  n_cells=81)
    assert isinstance(got[0], torch.Tensor) and isinstance(got[1], torch.Tensor)
    assert_same(got, expected)


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("n_cells, alphabet", [(36, 2), (81, 9), (200, 2)])
def test_an_index_finds_exact_copies_at_distance_zero(as_torch, n_cells, alphabet):
    queries, train = random_cells(2, 60, 150, n_cells, alphabet)
    queries[-1] = train[-1]
    wrap = torch.from_numpy if as_torch else (lambda x: x)
    index = NearestIndex(wrap(train), alphabet=alphabet)
    assert index.n_train == len(train)
    got = index.query(wrap(queries), k=2)
    assert isinstance(got[0], torch.Tensor) == as_torch
    assert int(np.asarray(got[0])[-1, 0]) == 0
    assert_same(got, brute_force(queries, train, 2))


def test_references_merge_chunks_exactly(monkeypatch):
    """Tiny chunk budgets force many query and training chunks through the running top-k merges."""
    monkeypatch.setattr(hamming_reference, "REFERENCE_CHUNK", 50)
    queries, train = random_cells(9, 13, 77, 81, 9)
    for backend in ("numpy", "torch"):
        assert_same(nearest(queries, train, k=3, alphabet=9, backend=backend), brute_force(queries, train, 3))
    rng = np.random.default_rng(2)
    train_f = rng.integers(-1, 2, (77, 5)).astype(np.float32)
    train_f[40:] = train_f[:37]
    queries_f = rng.integers(-1, 2, (13, 5)).astype(np.float32)
    d2 = ((queries_f[:, None, :] - train_f[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(nearest_l2(queries_f, train_f, k=3)[1], np.argsort(d2, axis=1, kind="stable")[:, :3])


def test_nearest_l2_matches_brute_force():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(500, 24)).astype(np.float32)
    queries = np.concatenate([rng.normal(size=(30, 24)), train[:10] + 1e-3 * rng.normal(size=(10, 24))]).astype(np.float32)
    dist, idx = nearest_l2(queries, train, k=2)
    assert dist.dtype == np.float32 and idx.dtype == np.int64 and dist.shape == (40, 2)
    exact = np.sqrt(((queries[:, None, :].astype(np.float64) - train[None]) ** 2).sum(-1))
    order = np.argsort(exact, axis=1)[:, :2]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(exact, order, 1), rtol=1e-3, atol=1e-3)
    assert (dist[30:, 0] < dist[30:, 1] / 3).all()  # near-copies pass the ratio test
    got_t = nearest_l2(torch.from_numpy(queries), torch.from_numpy(train), k=2)
    assert isinstance(got_t[0], torch.Tensor)
    np.testing.assert_array_equal(got_t[1].numpy(), idx)


def test_nearest_l2_ties_go_to_the_lowest_index():
    """Small integers are exact in float32, so equal distances are equal floats."""
    rng = np.random.default_rng(1)
    train = rng.integers(-1, 2, (200, 8)).astype(np.float32)
    train[100:] = train[:100]
    queries = rng.integers(-1, 2, (50, 8)).astype(np.float32)
    dist, idx = nearest_l2(queries, train, k=3)
    d2 = ((queries[:, None, :] - train[None]) ** 2).sum(-1)
    order = np.argsort(d2, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(dist, np.sqrt(np.take_along_axis(d2, order, 1)))


CELLS = np.zeros((4, 36), dtype=np.uint8)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: nearest(np.zeros((2, 49), np.uint8), CELLS), "49 cells"),
        (lambda: nearest(CELLS.astype(np.float32), CELLS), "dtype float32"),
        (lambda: nearest(CELLS.astype(np.int32), CELLS), "dtype int32"),
        (lambda: nearest(CELLS, CELLS, k=0), "k must be"),
        (lambda: nearest(CELLS, CELLS, k=5), "k must be"),
        (lambda: nearest(CELLS, CELLS, k=True), "k must be"),
        (lambda: nearest(CELLS[:0], CELLS), "queries is empty"),
        (lambda: nearest(CELLS, CELLS[:0]), "train is empty"),
        (lambda: nearest(CELLS, CELLS, alphabet=1), "alphabet"),
        (lambda: nearest(CELLS, CELLS, alphabet=17), "alphabet"),
        (lambda: nearest(CELLS + 2, CELLS), "alphabet"),
        (lambda: nearest(torch.from_numpy(CELLS + 3), CELLS, alphabet=3), "outside the alphabet"),
        (lambda: nearest(CELLS[0], CELLS), "shape"),
        (lambda: nearest(CELLS, CELLS, backend="gpu"), "unknown backend"),
        (lambda: nearest(np.zeros((2, 2), np.uint64), CELLS), "2 packed words"),
        (lambda: NearestIndex(CELLS).query(np.zeros((2, 35), np.uint8)), "35 cells"),
        (lambda: nearest_l2(np.zeros((2, 3)), np.zeros((4, 5))), "features"),
        (lambda: nearest_l2(np.zeros((2, 3), np.int64), np.zeros((4, 3))), "floating point"),
        (lambda: nearest_l2(np.zeros((2, 3)), np.zeros((4, 3)), k=5), "k must be"),
        (lambda: nearest_l2(np.full((2, 3), np.nan), np.zeros((4, 3))), "NaN"),
        (lambda: nearest_l2(np.zeros((0, 3)), np.zeros((4, 3))), "shape"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@needs_native
@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((2, 1), np.int64), np.zeros((3, 1), np.uint64)), "uint64"),
        ((np.zeros((2, 2), np.uint64)[:, ::2], np.zeros((3, 1), np.uint64)), "C-contiguous"),
        ((np.zeros((2, 2), np.uint64), np.zeros((3, 1), np.uint64)), "words per sample"),
        ((np.zeros((0, 1), np.uint64), np.zeros((3, 1), np.uint64)), "queries is empty"),
        ((np.zeros((2, 1), np.uint64), np.zeros((0, 1), np.uint64)), "train is empty"),
        ((np.zeros((2, 1), np.uint64), np.zeros((3, 1), np.uint64), 4), "k must be"),
        ((np.zeros((2, 1), np.uint64), np.zeros((3, 1), np.uint64), 0), "k must be"),
        ((np.zeros((2, 1), np.uint64), np.zeros((3, 1), np.uint64), 1, False, 0, "sse"), "unknown isa"),
        ((np.zeros(2, np.uint64), np.zeros((3, 1), np.uint64)), "ndim"),
    ],
)
def test_native_bad_input_raises_value_error(args, message):
    with pytest.raises(ValueError, match=message):
        native.hamming_topk(*args)
