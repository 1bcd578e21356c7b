"""The C++ validators equal the numpy references, on valid, corrupted and garbage inputs."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from innovwin import bits, tasks
from innovwin._native_loader import native

pytestmark = pytest.mark.skipif(native is None, reason="the C++ extension is not built")

SPECS = [
    "parity:h=6,w=6,g=2",
    "parity:h=6,w=6,g=3",
    "parity:h=6,w=6,g=4",
    "parity:h=6,w=6,g=6",
    "parity:h=6,w=6,g=2x3",
    "parity:h=9,w=10,g=5,layout=random,seed=1",  # two words per key
    "rule:h=6,w=6,g=3,pred=majority",
    "rule:h=6,w=6,g=4,pred=uniform",
    "rule:h=9,w=9,g=9,pred=weight,k=4,layout=random,seed=2",
    "linear:h=6,w=6,checks=rowcol",
    "linear:h=10,w=10,checks=sparse,m=70,weight=7,seed=3",  # two syndrome words
    "latin:n=2",  # bit-packed
    "latin:n=4",
    "latin:n=7",
    "latin:n=5",  # the generic (not unrolled) grid path
    "sudoku:n=4",
    "sudoku:n=6",
    "sudoku:n=9",
]


@functools.lru_cache(maxsize=None)
def valid_samples(spec):
    return tasks.make(spec).sample(64, seed=0)


def near_valid(task, n, seed):
    """Valid samples with a few random cells rewritten: a mix of valid and barely invalid."""
    rng = np.random.default_rng(seed)
    cells = valid_samples(task.spec)[rng.integers(0, 64, n)]
    hits = rng.random(cells.shape) < rng.choice([0.0, 0.01, 0.05], size=(n, 1))
    return np.where(hits, rng.integers(0, task.k, cells.shape), cells).astype(np.uint8)


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_native_equals_numpy(spec, seed):
    task = tasks.make(spec)
    rng = np.random.default_rng(seed)
    cells = np.concatenate([near_valid(task, 30, seed), rng.integers(0, task.k, (30, task.n_cells), dtype=np.uint8)])
    valid = task.validate(cells, backend="numpy")
    np.testing.assert_array_equal(task.validate(cells, backend="native"), valid)
    np.testing.assert_array_equal(task.constraints(cells, backend="native"), task.constraints(cells, backend="numpy"))
    keys = bits.pack(cells, task.k)
    np.testing.assert_array_equal(task.validate_packed(keys, backend="native", threads=2), valid)
    assert valid[:30].any()


@pytest.mark.parametrize("spec", SPECS)
def test_native_equals_numpy_on_random_words(spec):
    """Garbage keys: padding bits set, nibbles outside the alphabet. Same answers, no crash."""
    task = tasks.make(spec)
    keys = np.random.default_rng(0).integers(0, 2**64, (200, task.n_words), dtype=np.uint64)
    cell_bits = task.n_cells * (1 if task.k == 2 else 4)
    used = [min(max(cell_bits - 64 * w, 0), 64) for w in range(task.n_words)]
    padding = ~np.array([(1 << b) - 1 for b in used], dtype=np.uint64)
    valid_with_padding = bits.pack(valid_samples(task.spec), task.k) | (keys[:64] & padding)
    assert task.validate_packed(valid_with_padding, backend="native").all()
    for packed in (keys, valid_with_padding):
        np.testing.assert_array_equal(
            task.constraints_packed(packed, backend="native"), task.constraints_packed(packed, backend="numpy")
        )
        np.testing.assert_array_equal(
            task.validate_packed(packed, backend="native"), task.validate_packed(packed, backend="numpy")
        )


def test_large_batch_uses_threads_and_agrees():
    task = tasks.make("sudoku:n=9")
    keys = np.tile(bits.pack(near_valid(task, 64, 0), task.k), (1000, 1))
    expected = task.validate_packed(keys[:64], backend="numpy")
    for threads in (1, 2, 0):
        np.testing.assert_array_equal(task.validate_packed(keys, backend="native", threads=threads).reshape(1000, 64),
                                      np.broadcast_to(expected, (1000, 64)))


GARBAGE = [
    np.zeros((3, 1), dtype=np.float64),
    np.zeros((3, 1), dtype=np.int64),
    np.zeros(3, dtype=np.uint64),
    np.zeros((3, 1, 1), dtype=np.uint64),
    np.zeros((2, 3), dtype=np.uint64)[:, ::2],  # not contiguous
    [[1, 2]],
    None,
]


@pytest.mark.parametrize("keys", GARBAGE)
def test_native_functions_reject_garbage_arguments(keys):
    tables = np.zeros((5, 256, 1), dtype=np.uint64)
    masks = np.zeros((2, 1), dtype=np.uint64)
    allowed = np.ones(3, dtype=np.uint8)
    with pytest.raises((ValueError, TypeError)):
        native.linear_validate(keys, tables, 3)
    with pytest.raises((ValueError, TypeError)):
        native.group_count_validate(keys, masks, allowed)
    with pytest.raises((ValueError, TypeError)):
        native.grid_validate(keys, 4, 2, 2)


def test_native_functions_reject_inconsistent_shapes():
    one_word = np.zeros((3, 1), dtype=np.uint64)
    with pytest.raises(ValueError, match="tables cover 9 bytes"):
        native.linear_validate(one_word, np.zeros((9, 256, 1), dtype=np.uint64), 3)
    with pytest.raises(ValueError, match="256 entries"):
        native.linear_validate(one_word, np.zeros((2, 255, 1), dtype=np.uint64), 3)
    with pytest.raises(ValueError, match="n_checks=65"):
        native.linear_validate(one_word, np.zeros((2, 256, 1), dtype=np.uint64), 65)
    with pytest.raises(ValueError, match="masks have 2 words"):
        native.group_count_validate(one_word, np.zeros((4, 2), dtype=np.uint64), np.ones(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="need 6 words"):
        native.grid_validate(one_word, 9, 3, 3)
    with pytest.raises(ValueError, match="do not tile"):
        native.grid_validate(one_word, 4, 1, 3)
    with pytest.raises(ValueError, match="n must be in 2..16"):
        native.grid_validate(one_word, 17)
    assert native.grid_validate(np.zeros((0, 1), dtype=np.uint64), 4, 2, 2, True).shape == (0, 12)
    # an empty count table: every group fails, nothing is read out of bounds
    assert not native.group_count_validate(one_word, np.zeros((4, 1), dtype=np.uint64),
                                           np.zeros(0, dtype=np.uint8)).any()
