// Cheap elementwise ops: memory-bound plain loops that the compiler vectorises.
#pragma once

#include <cstdint>

namespace bl::cpu {

// out[i] = a[i] + b[i], i in [0, n). out may alias a or b.
void add(const float* a, const float* b, float* out, int64_t n);
// out[i] = x[i] * factor, i in [0, n). out may alias x.
void scale(const float* x, float factor, float* out, int64_t n);

}  // namespace bl::cpu
