// Nearest training samples by the number of differing cells: the CPU hot path of memorization.
//
// Search layout: a sample is `blocks x planes` words.
//   bits (alphabet 2):         the packed words themselves, planes = 1;
//   4-bit cells (alphabet 3+): per block of 64 cells, 4 bit-plane words (plane p holds bit p of
//                              every cell), planes = 4. A cell differs when any plane differs.
// So a block costs popcount((a0 ^ b0) | (a1 ^ b1) | ...): one XOR, then one AVX-512 ternary-logic
// op per further plane, one popcount.
// The training set is stored word-major, (blocks * planes, N), so one AVX-512 load holds a word of
// 8 consecutive samples. Work is blocked as (up to 64 queries) x (a training tile that fits L1d):
// every query of a block scans the tile while it is hot, 4 queries per training load, keeping a
// running top-k; a distance vector is looked at lane by lane only when a lane beats a k-th best.
// Ties: samples are visited in increasing index and one enters the top-k only with a distance
// strictly below the current k-th, so among equal distances the lowest index stays.
// Popcount is chosen at run time (AVX-512 VPOPCNTDQ, scalar POPCNT, portable), never by -march.
#include "common.h"

#include <atomic>
#include <climits>

#if defined(__x86_64__) || defined(_M_X64)
// GCC 12's AVX-512 shift intrinsics trip a false -Wmaybe-uninitialized (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define INNOVWIN_X86 1
#endif

namespace innovwin {
namespace {

using i32 = std::int32_t;
using i64 = std::int64_t;

constexpr int kNibblePlanes = 4;       // bit planes of a 4-bit cell
constexpr int kGroup = 4;              // queries scanned together per training load
constexpr i64 kQueryBlock = 64;        // queries that share one pass over a tile (at most)
constexpr i64 kTileBytes = 32 * 1024;  // training words per tile: stays in L1d
constexpr int kMaxUnrolledBlocks = 8;  // block counts compiled as constants

// Training samples [begin, end); word w of sample n is words[w * stride + n].
struct Tile {
    const u64* words;
    i64 stride, begin, end;
};

// One query and its running top-k (sorted by distance, then index).
struct Slot {
    const u64* query;
    i32* dist;
    i64* idx;
};

// Bit p of each of the 16 nibbles of w, gathered into the low 16 bits.
inline u64 nibble_plane(u64 w, int p) {
    u64 x = (w >> p) & 0x1111111111111111ULL;
    x = (x | (x >> 3)) & 0x0303030303030303ULL;
    x = (x | (x >> 6)) & 0x000F000F000F000FULL;
    x = (x | (x >> 12)) & 0x000000FF000000FFULL;
    return (x | (x >> 24)) & 0xFFFFULL;
}

// Copies n packed samples (n, words) into the search layout: search word j of sample i goes to
// dst[i * sample_stride + j * word_stride]. Nibble words become 4 bit planes per 64 cells.
void to_search_layout(const u64* src, i64 n, int words, bool nibbles, u64* dst, i64 sample_stride,
                      i64 word_stride) {
    for (i64 i = 0; i < n; ++i) {
        const u64* row = src + i * words;
        u64* out = dst + i * sample_stride;
        if (!nibbles) {
            for (int w = 0; w < words; ++w) out[w * word_stride] = row[w];
            continue;
        }
        for (int b = 0; 4 * b < words; ++b)
            for (int p = 0; p < kNibblePlanes; ++p) {
                u64 plane = 0;
                for (int j = 0; j < 4 && 4 * b + j < words; ++j) plane |= nibble_plane(row[4 * b + j], p) << (16 * j);
                out[(b * kNibblePlanes + p) * word_stride] = plane;
            }
    }
}

// Differing cells of query q (search layout, contiguous) and training sample n.
template <int B, int P>
inline int distance(const u64* q, const Tile& t, i64 n, int blocks_rt) {
    const int blocks = B > 0 ? B : blocks_rt;
    int d = 0;
    for (int b = 0; b < blocks; ++b) {
        u64 x = 0;
        for (int p = 0; p < P; ++p) x |= q[b * P + p] ^ t.words[(b * P + p) * t.stride + n];
        d += __builtin_popcountll(x);
    }
    return d;
}

// Inserts (d, i) into a slot's top-k if it beats the current k-th; later equal distances stay out.
inline void offer(const Slot& s, int k, i32 d, i64 i) {
    if (d >= s.dist[k - 1]) return;
    int p = k - 1;
    for (; p > 0 && s.dist[p - 1] > d; --p) {
        s.dist[p] = s.dist[p - 1];
        s.idx[p] = s.idx[p - 1];
    }
    s.dist[p] = d;
    s.idx[p] = i;
}

// Scans a tile for kGroup queries with scalar popcounts (the target decides which instruction).
template <int B, int P>
inline __attribute__((always_inline)) void scan_scalar_body(const Tile& t, const Slot* slots, int k, int blocks) {
    i32 worst[kGroup];
    for (int g = 0; g < kGroup; ++g) worst[g] = slots[g].dist[k - 1];
    for (i64 n = t.begin; n < t.end; ++n) {
        for (int g = 0; g < kGroup; ++g) {
            int d = distance<B, P>(slots[g].query, t, n, blocks);
            if (d < worst[g]) {
                offer(slots[g], k, d, n);
                worst[g] = slots[g].dist[k - 1];
            }
        }
    }
}

template <int B, int P>
void scan_portable(const Tile& t, const Slot* slots, int k, int blocks) {
    scan_scalar_body<B, P>(t, slots, k, blocks);
}

#ifdef INNOVWIN_X86
template <int B, int P>
__attribute__((target("popcnt"))) void scan_popcnt(const Tile& t, const Slot* slots, int k, int blocks) {
    scan_scalar_body<B, P>(t, slots, k, blocks);
}

#define INNOVWIN_AVX512 __attribute__((target("avx512f,avx512vpopcntdq,popcnt")))

// Distances from one query to samples n..n+7.
template <int B, int P>
INNOVWIN_AVX512 inline __m512i distance8(const u64* q, const Tile& t, i64 n, int blocks) {
    __m512i d = _mm512_setzero_si512();
    for (int b = 0; b < blocks; ++b) {
        const u64* qb = q + b * P;
        const u64* tb = t.words + b * P * t.stride + n;
        __m512i x = _mm512_xor_si512(_mm512_set1_epi64(static_cast<long long>(qb[0])), _mm512_loadu_si512(tb));
        for (int p = 1; p < P; ++p)  // x |= q ^ t, as one ternary-logic op (0xBE = (A ^ B) | C)
            x = _mm512_ternarylogic_epi64(_mm512_set1_epi64(static_cast<long long>(qb[p])),
                                          _mm512_loadu_si512(tb + p * t.stride), x, 0xBE);
        d = _mm512_add_epi64(d, _mm512_popcnt_epi64(x));
    }
    return d;
}

template <int B, int P>
INNOVWIN_AVX512 void scan_avx512(const Tile& t, const Slot* slots, int k, int blocks_rt) {
    const int blocks = B > 0 ? B : blocks_rt;
    __m512i worst[kGroup];
    for (int g = 0; g < kGroup; ++g) worst[g] = _mm512_set1_epi64(slots[g].dist[k - 1]);
    i64 n = t.begin;
    for (; n + 8 <= t.end; n += 8) {
        __m512i d[kGroup];
        __mmask8 better[kGroup], any = 0;
        for (int g = 0; g < kGroup; ++g) {
            d[g] = distance8<B, P>(slots[g].query, t, n, blocks);
            better[g] = _mm512_cmplt_epi64_mask(d[g], worst[g]);
            any |= better[g];
        }
        if (__builtin_expect(any == 0, 1)) continue;
        for (int g = 0; g < kGroup; ++g) {
            if (!better[g]) continue;
            alignas(64) long long lane[8];
            _mm512_store_si512(lane, d[g]);
            for (unsigned m = better[g]; m; m &= m - 1) {
                int j = __builtin_ctz(m);
                offer(slots[g], k, static_cast<i32>(lane[j]), n + j);
            }
            worst[g] = _mm512_set1_epi64(slots[g].dist[k - 1]);
        }
    }
    for (; n < t.end; ++n)  // the last < 8 samples
        for (int g = 0; g < kGroup; ++g) offer(slots[g], k, distance<B, P>(slots[g].query, t, n, blocks), n);
}
#endif  // INNOVWIN_X86

using ScanFn = void (*)(const Tile&, const Slot*, int, int);

enum class Isa { Portable, Popcnt, Avx512 };

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::Avx512: return "avx512-vpopcntdq";
        case Isa::Popcnt: return "popcnt";
        default: return "portable";
    }
}

bool isa_supported(Isa isa) {
#ifdef INNOVWIN_X86
    if (isa == Isa::Avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
    if (isa == Isa::Popcnt) return __builtin_cpu_supports("popcnt");
#endif
    return isa == Isa::Portable;
}

Isa best_isa() {
    static const Isa best = isa_supported(Isa::Avx512)   ? Isa::Avx512
                            : isa_supported(Isa::Popcnt) ? Isa::Popcnt
                                                         : Isa::Portable;
    return best;
}

Isa parse_isa(const std::string& name) {
    if (name == "auto") return best_isa();
    for (Isa isa : {Isa::Avx512, Isa::Popcnt, Isa::Portable}) {
        if (name != isa_name(isa)) continue;
        if (!isa_supported(isa)) fail("isa '" + name + "' is not supported by this CPU");
        return isa;
    }
    fail("unknown isa '" + name + "': expected auto, avx512-vpopcntdq, popcnt or portable");
}

template <int B, int P>
ScanFn scan_for(Isa isa) {
#ifdef INNOVWIN_X86
    if (isa == Isa::Avx512) return scan_avx512<B, P>;
    if (isa == Isa::Popcnt) return scan_popcnt<B, P>;
#endif
    (void)isa;
    return scan_portable<B, P>;
}

// Picks the scan compiled for this block count (1..kMaxUnrolledBlocks), else the runtime-count one.
template <int P, int B = kMaxUnrolledBlocks>
ScanFn pick_scan(Isa isa, int blocks) {
    if constexpr (B == 0) {
        return scan_for<0, P>(isa);
    } else {
        return blocks == B ? scan_for<B, P>(isa) : pick_scan<P, B - 1>(isa, blocks);
    }
}

// Fills dist/idx (m, k) for every query. Queries are (m, row_words) in the search layout, the
// training tile's words are word-major. Query blocks are handed out through an atomic counter, so
// a thread slowed by a busy core takes fewer blocks.
void search(const u64* queries, i64 m, const Tile& train, int row_words, int blocks, int k, ScanFn scan, int threads,
            i32* dist, i64* idx) {
    std::fill(dist, dist + m * k, INT32_MAX);
    std::fill(idx, idx + m * k, i64{-1});
    const i64 tile_n = std::max<i64>(8, (kTileBytes / 8 / row_words) & ~i64{7});
    // Few queries: smaller blocks (down to one group), so that every thread gets about four of them.
    const i64 blocks_wanted = 4 * thread_count(m, threads, 1);
    const i64 per_block = (m + blocks_wanted - 1) / blocks_wanted;
    const i64 query_block = std::clamp<i64>((per_block + kGroup - 1) / kGroup * kGroup, kGroup, kQueryBlock);
    const i64 n_blocks = (m + query_block - 1) / query_block;
    std::atomic<i64> next_block{0};
    auto worker = [&] {
        // Padding slots for a short last group: they scan a real query and their results are dropped.
        std::vector<i32> spare_dist(kGroup * k, INT32_MAX);
        std::vector<i64> spare_idx(kGroup * k, -1);
        for (i64 b = next_block++; b < n_blocks; b = next_block++) {
            const i64 q0 = b * query_block, q1 = std::min(m, q0 + query_block);
            for (i64 t0 = train.begin; t0 < train.end; t0 += tile_n) {
                const Tile tile{train.words, train.stride, t0, std::min(train.end, t0 + tile_n)};
                for (i64 g0 = q0; g0 < q1; g0 += kGroup) {
                    Slot slots[kGroup];
                    for (int g = 0; g < kGroup; ++g) {
                        const i64 q = g0 + g;
                        slots[g] = q < q1 ? Slot{queries + q * row_words, dist + q * k, idx + q * k}
                                          : Slot{queries + (q1 - 1) * row_words, &spare_dist[g * k], &spare_idx[g * k]};
                    }
                    scan(tile, slots, k, blocks);
                }
            }
        }
    };
    // One thread per query block at most, and no thread for less than ~4M word comparisons.
    const i64 work = m * (train.end - train.begin) * row_words;
    const int n_threads = static_cast<int>(
        std::min<i64>(thread_count(n_blocks, threads, 1), std::max<i64>(1, work >> 22)));
    std::vector<std::thread> pool;
    for (int i = 1; i < n_threads; ++i) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
}

py::tuple hamming_topk(const py::array& queries_in, const py::array& train_in, int k, bool nibbles, int threads,
                       const std::string& isa_name_in) {
    PackedArray queries = require_packed(queries_in, "queries");
    PackedArray train = require_packed(train_in, "train");
    const i64 m = queries.shape(0), n = train.shape(0);
    const i64 words = train.shape(1);
    if (queries.shape(1) != words)
        fail("queries have " + std::to_string(queries.shape(1)) + " words per sample but train has " +
             std::to_string(words));
    if (words < 1) fail("packed samples need at least one word");
    if (m < 1) fail("queries is empty: need at least one query");
    if (n < 1) fail("train is empty: need at least one training sample");
    if (k < 1 || k > n) fail("k must be in 1..n_train=" + std::to_string(n) + ", got " + std::to_string(k));
    if (n > INT32_MAX) fail("train has more than 2^31 - 1 samples");
    const Isa isa = parse_isa(isa_name_in);
    const int blocks = static_cast<int>(nibbles ? (words + 3) / 4 : words);
    const int row_words = blocks * (nibbles ? kNibblePlanes : 1);
    ScanFn scan = nibbles ? pick_scan<kNibblePlanes>(isa, blocks) : pick_scan<1>(isa, blocks);

    py::array_t<i32> dist({m, static_cast<i64>(k)});
    py::array_t<i64> idx({m, static_cast<i64>(k)});
    const u64* q = queries.data();
    const u64* t = train.data();
    i32* d_out = dist.mutable_data();
    i64* i_out = idx.mutable_data();
    {
        py::gil_scoped_release release;
        std::vector<u64> query_rows(static_cast<size_t>(m * row_words));
        std::vector<u64> train_columns(static_cast<size_t>(n * row_words));
        to_search_layout(q, m, static_cast<int>(words), nibbles, query_rows.data(), row_words, 1);
        to_search_layout(t, n, static_cast<int>(words), nibbles, train_columns.data(), 1, n);
        search(query_rows.data(), m, Tile{train_columns.data(), n, 0, n}, row_words, blocks, k, scan, threads, d_out,
               i_out);
    }
    return py::make_tuple(dist, idx);
}

}  // namespace

void register_search(py::module_& m) {
    m.def("hamming_topk", &hamming_topk, py::arg("queries"), py::arg("train"), py::arg("k") = 2,
          py::arg("nibbles") = false, py::arg("threads") = 0, py::arg("isa") = "auto",
          "k nearest training samples of each query by differing cells.\n\n"
          "queries (M, W), train (N, W): packed uint64 samples. nibbles=False counts differing bits\n"
          "(binary cells); nibbles=True counts differing 4-bit cells. Returns (dist int32 (M, k),\n"
          "idx int64 (M, k)), sorted by distance, ties to the lowest training index. threads <= 0\n"
          "uses every core; isa: auto, avx512-vpopcntdq, popcnt or portable.");
    m.def("search_isa", [] { return std::string(isa_name(best_isa())); },
          "The popcount instruction set hamming_topk uses by default on this CPU.");
}

}  // namespace innovwin
