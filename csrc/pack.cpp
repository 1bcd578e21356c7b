// Packing uint8 cells into uint64 keys in C++: the same layout as innovwin.bits.pack (bits LSB-first, 64 a word;
// k-valued cells as 4-bit nibbles, 16 a word), so validating cells costs one pass over them instead of numpy's
// temporaries. Cells >= k are refused (ValueError), never packed silently.
#include "common.h"

#include <atomic>
#include <cstring>

namespace innovwin {

namespace {

// Eight 0/1 bytes (little-endian in x) -> their eight bits: byte i's low bit lands at bit 56 + i of the product,
// and no two partial products share a bit (see docs/architecture.md, "packing").
constexpr u64 kGatherBits = 0x0102040810204080ULL;
constexpr u64 kHighBits = 0xFEFEFEFEFEFEFEFEULL;  // any of them set: a byte > 1

// One row of bits: 8 cells at a time. Returns the OR of every byte's high bits (non-zero: a cell > 1).
inline u64 pack_bits_row(const std::uint8_t* row, std::int64_t n_cells, u64* key, std::int64_t words,
                         const std::uint8_t* buffer_end) {
    u64 high = 0;
    for (std::int64_t w = 0; w < words; ++w) {
        u64 word = 0;
        const std::int64_t first = w * 64, last = std::min<std::int64_t>(n_cells, first + 64);
        std::int64_t c = first;
        for (; c + 8 <= last; c += 8) {  // whole groups of eight: one fixed-size load each
            u64 x;
            std::memcpy(&x, row + c, 8);
            high |= x & kHighBits;
            word |= ((x * kGatherBits) >> 56) << (c - first);
        }
        if (c < last) {  // the tail: one load, masked to its bytes (read past the row only inside the buffer)
            const std::int64_t left = last - c;
            u64 x = 0;
            if (row + c + 8 <= buffer_end) std::memcpy(&x, row + c, 8);
            else std::memcpy(&x, row + c, static_cast<std::size_t>(left));
            x &= ~0ULL >> (64 - 8 * left);
            high |= x & kHighBits;
            word |= ((x * kGatherBits) >> 56) << (c - first);
        }
        key[w] = word;
    }
    return high;
}

// One row of k-valued cells as 4-bit nibbles. Returns the largest cell value seen.
inline int pack_nibbles_row(const std::uint8_t* row, std::int64_t n_cells, u64* key, std::int64_t words) {
    std::uint8_t top = 0;
    for (std::int64_t w = 0; w < words; ++w) {
        u64 word = 0;
        const std::int64_t first = w * 16, last = std::min<std::int64_t>(n_cells, first + 16);
        for (std::int64_t c = first; c < last; ++c) {
            top = std::max(top, row[c]);
            word |= static_cast<u64>(row[c] & 0xF) << ((c - first) * 4);
        }
        key[w] = word;
    }
    return top;
}

PackedArray pack_cells(const py::array& cells_in, int k, int threads) {
    if (k < 2 || k > 16) fail("pack: alphabet size k must be in 2..16, got " + std::to_string(k));
    using CellArray = py::array_t<std::uint8_t, py::array::c_style>;
    if (!py::isinstance<CellArray>(cells_in) || !(cells_in.flags() & py::array::c_style))
        fail("pack: cells must be a C-contiguous uint8 array");
    if (cells_in.ndim() != 2) fail("pack: cells must have shape (n, n_cells), got ndim=" + std::to_string(cells_in.ndim()));
    auto cells = py::reinterpret_borrow<CellArray>(cells_in);
    const std::int64_t n = cells.shape(0), n_cells = cells.shape(1);
    if (n_cells == 0) fail("pack: cells must have at least one cell per sample");
    const std::int64_t words = (n_cells + (k == 2 ? 63 : 15)) / (k == 2 ? 64 : 16);
    PackedArray out({n, words});
    const std::uint8_t* src = cells.data();
    u64* dst = out.mutable_data();
    std::atomic<int> top_seen{0};  // the largest cell value any thread saw (only needed when one is >= k)
    {
        py::gil_scoped_release release;
        parallel_rows(n, threads, [&](std::int64_t begin, std::int64_t end) {
            int top = 0;
            if (k == 2) {
                u64 high = 0;
                for (std::int64_t r = begin; r < end; ++r)
                    high |= pack_bits_row(src + r * n_cells, n_cells, dst + r * words, words, src + n * n_cells);
                if (high) top = *std::max_element(src + begin * n_cells, src + end * n_cells);
            } else {
                for (std::int64_t r = begin; r < end; ++r)
                    top = std::max(top, pack_nibbles_row(src + r * n_cells, n_cells, dst + r * words, words));
            }
            int seen = top_seen.load();
            while (top > seen && !top_seen.compare_exchange_weak(seen, top)) {
            }
        });
    }
    if (top_seen.load() >= k)
        fail("pack: cell value " + std::to_string(top_seen.load()) + " is outside the alphabet 0.." + std::to_string(k - 1));
    return out;
}

}  // namespace

void register_pack(py::module_& m) {
    m.def("pack", &pack_cells, py::arg("cells"), py::arg("k") = 2, py::arg("threads") = 0,
          "Pack uint8 cells (n, n_cells) < k into uint64 keys (n, words), as innovwin.bits.pack does.");
}

}  // namespace innovwin
