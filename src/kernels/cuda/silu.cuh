// SiLU as every CUDA kernel computes it: g / (1 + e^-g) in fp32. One definition, so that the
// paths that split SwiGLU differently give the same floats: the silu_mul kernel, the fp32 GEMV
// storing silu(gate) for the down GEMV (bit for bit the silu_mul path, tested), the dp4a x
// quantization and the prefill operand.
#pragma once

#include <cuda_runtime.h>

namespace bl::cuda {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// GELU with the tanh approximation (Gemma's gelu_pytorch_tanh) as g * sigmoid(2u), u =
// sqrt(2 / pi) (g + 0.044715 g^3), the CPU kernels' form (kernels/cpu/activation.h).
__device__ __forceinline__ float gelu_tanh(float g) {
  return g / (1.0f + expf(-1.5957691216057308f * (g + 0.044715f * g * g * g)));
}

}  // namespace bl::cuda
