"""The Triton Hamming top-k kernel (under the interpreter without CUDA) against its torch reference.

Covers bits and 4-bit nibble cells over 1-6 words, the default tile and small ragged tiles with splits,
ties to the lowest training index, the 32-bit index guard, and 64-bit offsets past 2^31 elements (a
strided view into a 16 GiB buffer of which only a few pages are touched; skipped where the host cannot
reserve that much address space). Brute-force checks against the cells themselves are in test_memorization.
"""
import subprocess
import sys
import textwrap

import pytest
import torch

from innovwin.kernels import hamming

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_keys(gen, rows, words, nibbles, base=None, flip=0.02):
    """int64 words; rows near ``base`` (some nibbles or bits changed), so distances are small and tie often."""
    if base is None:
        base = torch.randint(-2**62, 2**62, (1, words), generator=gen, dtype=torch.int64)
    noise = torch.randint(-2**62, 2**62, (rows, words), generator=gen, dtype=torch.int64)
    cells = 16 if nibbles else 64
    width = 4 if nibbles else 1
    mask = torch.zeros(rows, words, dtype=torch.int64)
    for cell in range(cells):
        hit = torch.rand(rows, words, generator=gen) < flip
        mask |= hit.long() * (((1 << width) - 1) << (width * cell))
    return base ^ (noise & mask)


def check(queries, columns, k, nibbles, **tiles):
    got = hamming.hamming_topk(queries.to(DEVICE), columns.to(DEVICE), k, nibbles, **tiles)
    want = hamming.hamming_topk_reference(queries, columns.t().contiguous(), k, nibbles)
    assert got[0].dtype == torch.int32 and got[1].dtype == torch.int64
    torch.testing.assert_close(got[0].cpu(), want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1].cpu(), want[1], rtol=0, atol=0)


@pytest.mark.parametrize("words, nibbles", [(1, False), (2, False), (3, True), (6, True)],
                         ids=["6x6-bits", "9x9-bits", "latin-nibbles", "sudoku-nibbles"])
@pytest.mark.parametrize("tiles", [{}, dict(block_m=8, block_n=16, num_warps=4, splits=3)],
                         ids=["default-tile", "small-tiles-3-splits"])
def test_kernel_equals_reference(words, nibbles, tiles):
    gen = torch.Generator().manual_seed(words)
    train = random_keys(gen, 300, words, nibbles)
    train[150:200] = train[:50]  # duplicated training rows: equal distances, lowest index first
    queries = torch.cat([train[:5], random_keys(gen, 40, words, nibbles, base=train[:1])])
    check(queries, train.t().contiguous(), 3, nibbles, **tiles)


def test_ties_go_to_the_lowest_index():
    gen = torch.Generator().manual_seed(0)
    train = random_keys(gen, 1, 6, True).repeat(500, 1)  # all at distance d from any query
    queries = random_keys(gen, 70, 6, True)
    dist, idx = hamming.hamming_topk(queries.to(DEVICE), train.t().contiguous().to(DEVICE), 4, True,
                                     block_n=16, splits=5)
    assert (idx.cpu() == torch.arange(4)).all()
    assert (dist == dist[:, :1]).all()


def test_nibbles_count_cells_not_bits():
    """0xF and 0x1 in one nibble differ in one cell (3 bits); the bits path counts 3."""
    queries = torch.tensor([[0xF]], dtype=torch.int64)
    train = torch.tensor([[0x1, 0xF0, 0xF]], dtype=torch.int64)  # (words=1, N=3)
    for nibbles, want in ((True, [0, 1]), (False, [0, 3])):
        dist, idx = hamming.hamming_topk(queries.to(DEVICE), train.to(DEVICE), 2, nibbles)
        assert dist.cpu().tolist() == [want] and idx.cpu().tolist() == [[2, 0]]


def test_indices_past_32_bits_are_refused_before_any_copy():
    """N + block_n >= 2^31 would overflow the kernel's 32-bit column indices: a ValueError, raised before the
    (zero-stride, 16 GiB if made contiguous) training columns are touched."""
    queries = torch.zeros(1, 1, dtype=torch.int64)
    huge = torch.zeros(1, 1, dtype=torch.int64).expand(1, 2**31 - 64)
    with pytest.raises(ValueError, match="2\\^31"):
        hamming.hamming_topk(queries, huge, 2, False)


def test_custom_op_passes_opcheck():
    gen = torch.Generator().manual_seed(1)
    queries, train = random_keys(gen, 9, 2, False), random_keys(gen, 40, 2, False)
    torch.library.opcheck(torch.ops.innovwin.hamming_topk.default,
                          (queries.to(DEVICE), train.t().contiguous().to(DEVICE), 2, False, 8, 16, 4, 2))


LARGE_OFFSETS = textwrap.dedent("""
    import os, sys
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from innovwin.kernels import hamming
    stride = 2**30 + 64  # words 2 of the training set and row 2 of the queries lie past 2^31 elements
    try:
        buffer = torch.empty(2 * stride + 4096, dtype=torch.int64)  # 16 GiB of address space, few pages touched
    except RuntimeError as err:
        print(f"cannot reserve 16 GiB of address space: {err}")
        sys.exit(77)
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(-2**62, 2**62, (3, 100), generator=gen, dtype=torch.int64)  # (words, N)
    queries = train[:, :5].t() ^ (torch.randint(0, 16, (5, 3), generator=gen) << 4)  # near rows 0..4
    columns = buffer.as_strided((3, 100), (stride, 1), storage_offset=0)
    rows = buffer.as_strided((5, 3), (stride // 2, 1), storage_offset=1000)  # row 4 lies past 2^31 elements
    columns.copy_(train)
    rows.copy_(queries)
    got = hamming.hamming_topk(rows, columns, 2, True, splits=2)
    want = hamming.hamming_topk_reference(queries, train.t().contiguous(), 2, True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (got, want)
    print("ok")
""")


def test_offsets_past_2_to_the_31_elements():
    """Word 2 of the training columns and query row 4 sit beyond 2^31 int64 elements of their base: 32-bit
    offsets would wrap (and crash the interpreter, hence the subprocess). CPU interpreter only."""
    if DEVICE == "cuda":
        pytest.skip("the interpreter reads the strided view without a 16 GiB GPU buffer only on the CPU")
    proc = subprocess.run([sys.executable, "-c", LARGE_OFFSETS], capture_output=True, text=True, timeout=600)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-4000:]
