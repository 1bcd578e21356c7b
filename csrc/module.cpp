// innovwin._native: cell packing, the bit-packed validators and the Hamming nearest-neighbour search.
#include "common.h"

namespace innovwin {
void register_validators(py::module_& m);  // validate.cpp
void register_search(py::module_& m);      // search.cpp
void register_pack(py::module_& m);        // pack.cpp
}  // namespace innovwin

PYBIND11_MODULE(_native, m) {
    m.doc() = "innovwin native kernels: bit-packed rule validators and Hamming top-k search";
    innovwin::register_validators(m);
    innovwin::register_search(m);
    innovwin::register_pack(m);
}
