// Gated activations of the feed-forward block.
#pragma once

#include <cstdint>

namespace bl::cpu {

// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i], for i in [0, n).
// out may alias gate or up. Picks the widest ISA the CPU (and BITLIGHT_ISA) allows.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// The variants behind silu_mul, exposed for the op tests and benchmarks. Call an _avx2 /
// _avx512 one only when cpu_features says the CPU has that ISA.
void silu_mul_scalar(const float* gate, const float* up, float* out, int64_t n);
void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n);
void silu_mul_avx512(const float* gate, const float* up, float* out, int64_t n);

}  // namespace bl::cpu
