// Shared helpers for the native extension: argument checks that raise ValueError
// (never crash), and a parallel loop that splits rows over threads.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace innovwin {

using u64 = std::uint64_t;
using PackedArray = py::array_t<u64, py::array::c_style>;

// Raises ValueError (pybind11 maps std::invalid_argument to ValueError).
[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument(what); }

// A packed (n, words) array of uint64, C-contiguous, exactly as given (no silent cast).
inline PackedArray require_packed(const py::array& a, const char* name) {
    if (!py::isinstance<PackedArray>(a) || !(a.flags() & py::array::c_style))
        fail(std::string(name) + ": expected a C-contiguous uint64 array of packed samples");
    if (a.ndim() != 2) fail(std::string(name) + ": expected shape (n, words), got ndim=" + std::to_string(a.ndim()));
    return py::reinterpret_borrow<PackedArray>(a);
}

// Number of worker threads to use for `rows` rows; `threads` <= 0 means all cores.
inline int thread_count(std::int64_t rows, int threads, std::int64_t min_rows_per_thread = 4096) {
    int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    int t = threads > 0 ? threads : hw;
    std::int64_t by_work = std::max<std::int64_t>(1, rows / min_rows_per_thread);
    return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(t, by_work)));
}

// Calls body(begin, end) over [0, rows) split into contiguous chunks, one per thread.
// The caller releases the GIL around this; body must not touch Python objects.
template <class Body>
void parallel_rows(std::int64_t rows, int threads, Body body) {
    int t = thread_count(rows, threads);
    if (t == 1) {
        body(0, rows);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(t);
    std::int64_t chunk = (rows + t - 1) / t;
    for (int i = 0; i < t; ++i) {
        std::int64_t b = i * chunk, e = std::min(rows, b + chunk);
        if (b >= e) break;
        pool.emplace_back([=] { body(b, e); });
    }
    for (auto& th : pool) th.join();
}

}  // namespace innovwin
