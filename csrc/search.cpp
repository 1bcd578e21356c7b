// Hamming top-k nearest-training-sample search (filled in by the memorization work).
#include "common.h"

namespace innovwin {
void register_search(py::module_& m) { (void)m; }
}  // namespace innovwin
