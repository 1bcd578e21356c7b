import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from innovwin import bits


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 9),
    n_cells=st.integers(1, 150),
    k=st.sampled_from([2, 3, 4, 9, 16]),
    seed=st.integers(0, 2**31),
)
def test_pack_roundtrip_and_its_reference_and_torch_twin(n, n_cells, k, seed):
    cells = np.random.default_rng(seed).integers(0, k, size=(n, n_cells), dtype=np.uint8)
    packed = bits.pack(cells, k)
    assert packed.dtype == np.uint64 and packed.shape == (n, bits.n_words(n_cells, k))
    np.testing.assert_array_equal(bits.pack_numpy(cells, k), packed)
    np.testing.assert_array_equal(bits.unpack(packed, n_cells, k), cells)
    packed_t = bits.pack_torch(torch.from_numpy(cells), k)
    np.testing.assert_array_equal(packed_t.numpy().view(np.uint64), packed)


def test_layout_is_lsb_first_row_major():
    cells = np.zeros((1, 70), dtype=np.uint8)
    cells[0, 0] = cells[0, 63] = cells[0, 64] = 1
    packed = bits.pack(cells)
    assert packed[0, 0] == np.uint64(1 | (1 << 63)) and packed[0, 1] == np.uint64(1)
    digits = np.array([[3, 0, 15] + [0] * 14], dtype=np.uint8)
    words = bits.pack(digits, k=16)
    assert words[0, 0] == np.uint64(3 | (15 << 8)) and words[0, 1] == np.uint64(0)


@pytest.mark.parametrize(
    "cells, k, message",
    [
        (np.zeros((2, 3), dtype=np.int64), 2, "uint8"),
        (np.zeros((3,), dtype=np.uint8), 2, "shape"),
        (np.full((1, 3), 2, dtype=np.uint8), 2, "outside the alphabet"),
        (np.zeros((1, 3), dtype=np.uint8), 17, "alphabet size"),
    ],
)
def test_pack_rejects_bad_input(cells, k, message):
    with pytest.raises(ValueError, match=message):
        bits.pack(cells, k)


@pytest.mark.parametrize("pack", [bits.pack, bits.pack_numpy])
@pytest.mark.parametrize("k, bad", [(2, 2), (2, 255), (9, 9), (16, 200)])
def test_both_packers_refuse_a_cell_outside_the_alphabet(pack, k, bad):
    cells = np.zeros((300, 70), dtype=np.uint8)
    cells[299, 69] = bad
    with pytest.raises(ValueError, match=f"cell value {bad} is outside the alphabet 0..{k - 1}"):
        pack(cells, k)
