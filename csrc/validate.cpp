// Bit-packed rule validators. Inputs are packed keys (innovwin.bits.pack): uint64 (n, words).
// Each function returns bool (n,) validity or, with per_constraint, bool (n, n_constraints) in the
// order of the numpy references in innovwin/tasks. Bits or nibbles past the last cell are ignored.
//
//   linear_validate       GF(2) checks (parity, row/column, sparse codes): per-byte syndrome tables
//   group_count_validate  predicates of a group's popcount (majority, uniform, weight): AND + popcount
//   grid_validate         Latin squares and Sudoku: one digit bitmask per row, column and box
#include "common.h"

namespace innovwin {
namespace {

using BoolArray = py::array_t<bool, py::array::c_style>;

BoolArray result_array(std::int64_t rows, std::int64_t n_constraints, bool per_constraint) {
    if (per_constraint) return BoolArray({rows, n_constraints});
    return BoolArray({rows});
}

template <class T>
py::array_t<T, py::array::c_style> require_array(const py::array& a, const char* name, int ndim) {
    using Array = py::array_t<T, py::array::c_style>;
    if (!py::isinstance<Array>(a) || !(a.flags() & py::array::c_style))
        fail(std::string(name) + ": wrong dtype or not C-contiguous");
    if (a.ndim() != ndim)
        fail(std::string(name) + ": expected ndim=" + std::to_string(ndim) + ", got " + std::to_string(a.ndim()));
    return py::reinterpret_borrow<Array>(a);
}

// ---------------------------------------------------------------------------------------------
// Linear codes: syndrome = XOR over the key's bytes of tables[byte index][byte value].
struct LinearArgs {
    const u64* keys;
    std::int64_t words;
    const u64* tables;  // (n_bytes, 256, syn_words)
    std::int64_t n_bytes, syn_words, n_checks;
    bool* out;
    bool per_constraint;
};

void linear_rows(const LinearArgs& a, std::int64_t begin, std::int64_t end) {
    std::vector<u64> syndrome(a.syn_words);
    for (std::int64_t i = begin; i < end; ++i) {
        const u64* key = a.keys + i * a.words;
        std::fill(syndrome.begin(), syndrome.end(), 0);
        for (std::int64_t j = 0; j < a.n_bytes; ++j) {
            unsigned byte = static_cast<unsigned>(key[j >> 3] >> ((j & 7) * 8)) & 255u;
            const u64* entry = a.tables + (j * 256 + byte) * a.syn_words;
            for (std::int64_t s = 0; s < a.syn_words; ++s) syndrome[s] ^= entry[s];
        }
        if (a.per_constraint) {
            bool* row = a.out + i * a.n_checks;
            for (std::int64_t c = 0; c < a.n_checks; ++c) row[c] = !((syndrome[c >> 6] >> (c & 63)) & 1);
        } else {
            u64 any = 0;
            for (u64 s : syndrome) any |= s;
            a.out[i] = any == 0;
        }
    }
}

// The common case (<= 64 checks, validity only), kept branch-free for the benchmark target.
void linear_rows_one_word(const LinearArgs& a, std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
        const u64* key = a.keys + i * a.words;
        u64 syndrome = 0;
        for (std::int64_t j = 0; j < a.n_bytes; ++j)
            syndrome ^= a.tables[j * 256 + ((key[j >> 3] >> ((j & 7) * 8)) & 255u)];
        a.out[i] = syndrome == 0;
    }
}

BoolArray linear_validate(const py::array& keys_in, const py::array& tables_in, std::int64_t n_checks,
                          bool per_constraint, int threads) {
    PackedArray keys = require_packed(keys_in, "keys");
    auto tables = require_array<u64>(tables_in, "tables (uint64 (n_bytes, 256, syndrome_words))", 3);
    LinearArgs a{keys.data(), keys.shape(1), tables.data(), tables.shape(0), tables.shape(2), n_checks,
                 nullptr, per_constraint};
    if (tables.shape(1) != 256) fail("tables: expected 256 entries per byte, got " + std::to_string(tables.shape(1)));
    if (a.n_bytes > 8 * a.words)
        fail("tables cover " + std::to_string(a.n_bytes) + " bytes but keys have only " + std::to_string(a.words) +
             " words");
    if (a.syn_words < 1 || n_checks < 0 || n_checks > 64 * a.syn_words)
        fail("n_checks=" + std::to_string(n_checks) + " does not fit " + std::to_string(a.syn_words) +
             " syndrome words");
    std::int64_t rows = keys.shape(0);
    BoolArray out = result_array(rows, n_checks, per_constraint);
    a.out = out.mutable_data();
    {
        py::gil_scoped_release release;
        bool fast = a.syn_words == 1 && !per_constraint;
        parallel_rows(rows, threads, [&](std::int64_t b, std::int64_t e) {
            fast ? linear_rows_one_word(a, b, e) : linear_rows(a, b, e);
        });
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Group predicates: count = popcount(key & mask) over the group's words; allowed[count] decides.
struct GroupArgs {
    const u64* keys;
    std::int64_t words;
    const u64* masks;  // (n_groups, words)
    std::int64_t n_groups;
    const std::uint8_t* allowed;  // (n_counts,)
    std::int64_t n_counts;
    bool* out;
    bool per_constraint;
};

__attribute__((target_clones("popcnt", "default"))) void group_rows(const GroupArgs& a, std::int64_t begin,
                                                                    std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
        const u64* key = a.keys + i * a.words;
        bool all = true;
        for (std::int64_t g = 0; g < a.n_groups; ++g) {
            const u64* mask = a.masks + g * a.words;
            std::int64_t count = 0;
            for (std::int64_t w = 0; w < a.words; ++w) count += __builtin_popcountll(key[w] & mask[w]);
            bool ok = count < a.n_counts && a.allowed[count] != 0;
            if (a.per_constraint) a.out[i * a.n_groups + g] = ok;
            all = all && ok;
        }
        if (!a.per_constraint) a.out[i] = all;
    }
}

BoolArray group_count_validate(const py::array& keys_in, const py::array& masks_in, const py::array& allowed_in,
                               bool per_constraint, int threads) {
    PackedArray keys = require_packed(keys_in, "keys");
    auto masks = require_array<u64>(masks_in, "masks (uint64 (n_groups, words))", 2);
    auto allowed = require_array<std::uint8_t>(allowed_in, "allowed (uint8 (max_count + 1,))", 1);
    if (masks.shape(1) != keys.shape(1))
        fail("masks have " + std::to_string(masks.shape(1)) + " words per group, keys " +
             std::to_string(keys.shape(1)));
    GroupArgs a{keys.data(), keys.shape(1), masks.data(), masks.shape(0), allowed.data(), allowed.shape(0),
                nullptr, per_constraint};
    std::int64_t rows = keys.shape(0);
    BoolArray out = result_array(rows, a.n_groups, per_constraint);
    a.out = out.mutable_data();
    {
        py::gil_scoped_release release;
        parallel_rows(rows, threads, [&](std::int64_t b, std::int64_t e) { group_rows(a, b, e); });
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Latin squares and Sudoku: OR one bit per digit into each row, column and box; a unit of n cells
// holds every digit 0..n-1 exactly once iff its mask is all n low bits (a garbage nibble >= n sets
// a bit above them). The key is read byte by byte (two nibbles per byte, little-endian words) and
// each nibble turned into its bit through a 16-entry table, which keeps the portable build free of
// variable shifts. Templated on the order N (0: read from the arguments) so the common sizes get
// fully unrolled loops from the one body.
struct GridArgs {
    const u64* keys;
    std::int64_t words;
    int n, box_h, box_w, bits_per_cell;  // box_h = 0: no boxes (Latin squares); 1 bit per cell for n = 2
    bool* out;
    bool per_constraint;
};

constexpr int kMaxOrder = 16;
constexpr std::uint16_t kDigitBit[16] = {1,    2,    4,    8,     16,    32,    64,    128,
                                         256,  512,  1024, 2048,  4096,  8192,  16384, 32768};
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "grid_rows reads packed words as little-endian bytes");

template <int N, int BH, int BW>
void grid_rows(const GridArgs& a, std::int64_t begin, std::int64_t end) {
    const int n = N ? N : a.n;
    const int bh = N ? BH : a.box_h, bw = N ? BW : a.box_w;
    const bool bit_packed = !N && a.bits_per_cell == 1;
    const int cells = n * n, n_units = bh ? 3 * n : 2 * n;
    const std::uint32_t full = (std::uint32_t{1} << n) - 1;
    for (std::int64_t i = begin; i < end; ++i) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(a.keys + i * a.words);
        std::uint16_t bit[kMaxOrder * kMaxOrder + 1];  // +1: the pair loop may write one past the last cell
        if (bit_packed) {
            for (int c = 0; c < cells; ++c) bit[c] = kDigitBit[(bytes[c >> 3] >> (c & 7)) & 1];
        } else {
#pragma GCC unroll 128
            for (int j = 0; j < (cells + 1) / 2; ++j) {
                bit[2 * j] = kDigitBit[bytes[j] & 15];
                bit[2 * j + 1] = kDigitBit[bytes[j] >> 4];
            }
        }
        std::uint32_t bad = 0;
#pragma GCC unroll 16
        for (int u = 0; u < n; ++u) {
            std::uint32_t row = 0, col = 0, box = 0;
#pragma GCC unroll 16
            for (int c = 0; c < n; ++c) {
                row |= bit[u * n + c];
                col |= bit[c * n + u];
                if (bh) {  // cell c of box u; boxes are numbered band by band
                    int r = (u / (n / bw)) * bh + c / bw, cc = (u % (n / bw)) * bw + c % bw;
                    box |= bit[r * n + cc];
                }
            }
            if (a.per_constraint) {
                bool* held = a.out + i * n_units;
                held[u] = row == full;
                held[n + u] = col == full;
                if (bh) held[2 * n + u] = box == full;
            }
            bad |= (row ^ full) | (col ^ full) | (bh ? box ^ full : 0);
        }
        if (!a.per_constraint) a.out[i] = bad == 0;
    }
}

BoolArray grid_validate(const py::array& keys_in, int n, int box_h, int box_w, bool per_constraint, int threads) {
    PackedArray keys = require_packed(keys_in, "keys");
    if (n < 2 || n > kMaxOrder) fail("grid order n must be in 2.." + std::to_string(kMaxOrder) + ", got " + std::to_string(n));
    if (box_h || box_w) {
        if (box_h < 1 || box_w < 1 || box_h * box_w != n || n % box_h || n % box_w)
            fail("boxes of " + std::to_string(box_h) + "x" + std::to_string(box_w) + " do not tile a " +
                 std::to_string(n) + "x" + std::to_string(n) + " grid");
    }
    int bits_per_cell = n == 2 ? 1 : 4;
    std::int64_t words = (static_cast<std::int64_t>(n) * n * bits_per_cell + 63) / 64;
    if (keys.shape(1) != words)
        fail("keys for a " + std::to_string(n) + "x" + std::to_string(n) + " grid need " + std::to_string(words) +
             " words, got " + std::to_string(keys.shape(1)));
    GridArgs a{keys.data(), words, n, box_h, box_w, bits_per_cell, nullptr, per_constraint};
    std::int64_t rows = keys.shape(0);
    BoolArray out = result_array(rows, box_h ? 3 * n : 2 * n, per_constraint);
    a.out = out.mutable_data();
    auto body = &grid_rows<0, 0, 0>;
    if (n == 4 && box_h == 2) body = &grid_rows<4, 2, 2>;
    else if (n == 6 && box_h == 2) body = &grid_rows<6, 2, 3>;
    else if (n == 9 && box_h == 3) body = &grid_rows<9, 3, 3>;
    else if (box_h == 0 && n == 7) body = &grid_rows<7, 0, 0>;
    {
        py::gil_scoped_release release;
        parallel_rows(rows, threads, [&](std::int64_t b, std::int64_t e) { body(a, b, e); });
    }
    return out;
}

}  // namespace

void register_validators(py::module_& m) {
    m.def("linear_validate", &linear_validate, py::arg("keys"), py::arg("tables"), py::arg("n_checks"),
          py::arg("per_constraint") = false, py::arg("threads") = 0,
          "GF(2) checks on packed bits through per-byte syndrome tables (see innovwin.tasks.linear).");
    m.def("group_count_validate", &group_count_validate, py::arg("keys"), py::arg("masks"), py::arg("allowed"),
          py::arg("per_constraint") = false, py::arg("threads") = 0,
          "Group predicates of the popcount: allowed[popcount(key & mask)] for every group mask.");
    m.def("grid_validate", &grid_validate, py::arg("keys"), py::arg("n"), py::arg("box_h") = 0,
          py::arg("box_w") = 0, py::arg("per_constraint") = false, py::arg("threads") = 0,
          "Latin squares (box 0x0) and Sudoku (box_h x box_w): every row, column and box holds 0..n-1 once.");
}

}  // namespace innovwin
