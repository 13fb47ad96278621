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

// out[i] = gelu(gate[i]) * up[i] with GELU's tanh approximation (Gemma's gelu_pytorch_tanh),
// computed as g * sigmoid(2u), u = sqrt(2 / pi) * (g + 0.044715 g^3): the same as
// g / 2 * (1 + tanh(u)), since 1 + tanh(u) = 2 sigmoid(2u), so the vector exp of silu serves.
// out may alias gate or up.
void gelu_mul(const float* gate, const float* up, float* out, int64_t n);
void gelu_mul_scalar(const float* gate, const float* up, float* out, int64_t n);
void gelu_mul_avx2(const float* gate, const float* up, float* out, int64_t n);
void gelu_mul_avx512(const float* gate, const float* up, float* out, int64_t n);

// -2 sqrt(2 / pi) and 0.044715: gelu(g) = g / (1 + exp(kGeluExpFactor * (g + kGeluCubic * g^3))).
inline constexpr float kGeluExpFactor = -1.5957691216057308f;
inline constexpr float kGeluCubic = 0.044715f;

}  // namespace bl::cpu
