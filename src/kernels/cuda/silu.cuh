// SiLU as every CUDA kernel computes it: g / (1 + e^-g) in fp32. One definition, so that the
// paths that split SwiGLU differently give the same floats: the silu_mul kernel, the fp32 GEMV
// storing silu(gate) for the down GEMV (bit for bit the silu_mul path, tested), the dp4a x
// quantization and the prefill operand.
#pragma once

#include <cuda_runtime.h>

namespace bl::cuda {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

}  // namespace bl::cuda
