// Bit-packed rule validators (filled in by the foundation work).
#include "common.h"

namespace innovwin {
void register_validators(py::module_& m) { (void)m; }
}  // namespace innovwin
