// Programmatic dependent launch (PDL, sm_90): kernels of a decode step launched so that each
// starts while the one before it on the stream is still running.
//
// Why: a decode step is ~300 small kernels (docs/cuda.md); with plain stream order each one
// launches only when the previous has drained, a gap of a few us every time. With PDL a kernel
// is launched once every block of the previous one has called pdl_allow_next(); it then does
// what does not depend on that kernel (the GEMV issues its weight loads) and calls pdl_wait(),
// which returns when the previous kernel has completed and its writes are visible.
//
// Contract for a kernel launched with launch_pdl: call pdl_wait() before touching any memory
// an earlier kernel writes or reads (activations, caches, outputs); weights are fine before it.
// pdl_allow_next() may come anywhere (the next kernel waits for this one's completion anyway);
// calling it early lets the next launch overlap this kernel. No deadlock: the next kernel
// launches only once all blocks of this one are running or done. On GPUs before sm_90 both are
// no-ops and launch_pdl is an ordinary launch (also where a kernel runs from pre-sm_90 PTX).
#pragma once

#include <cuda_runtime.h>

namespace bl::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_allow_next() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// The first line of a kernel whose every step needs the kernel before it. Two orders:
//  - pdl_start(): wait, then let the next kernel launch. For kernels followed by other small
//    kernels: allowing first let launches run ahead through rope, attention and combine into
//    the next GEMV, whose blocks then held SMs and loaded weights while attention read its
//    cache (1B q4_0 -2.4 %, docs/cuda.md).
//  - pdl_start_next_early(): let the next kernel launch, then wait. For the small kernels just
//    before a GEMV: its blocks get resident as the SMs free and issue their weight loads while
//    this one waits and runs (with the wait first, that launch began only once the kernel
//    before had completed).
// BITLIGHT_PDL_ORDER (compile time, for comparisons): 1 = every kernel allows first, 2 = every
// kernel waits first.
__device__ __forceinline__ void pdl_start() {
#if defined(BITLIGHT_PDL_ORDER) && BITLIGHT_PDL_ORDER == 1
  pdl_allow_next();
  pdl_wait();
#else
  pdl_wait();
  pdl_allow_next();
#endif
}
__device__ __forceinline__ void pdl_start_next_early() {
#if defined(BITLIGHT_PDL_ORDER) && BITLIGHT_PDL_ORDER == 2
  pdl_wait();
  pdl_allow_next();
#else
  pdl_allow_next();
  pdl_wait();
#endif
}

// Whether the current device supports PDL (compute capability 9.0 or newer).
inline bool pdl_supported() {
  int device = 0, major = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  return major >= 9;
}

// Whether `kernel` as loaded on the current device waits in pdl_wait(): griddepcontrol is
// compiled in only from PTX of compute_90 or newer. The same binary run from its compute_80
// PTX (JIT-compiled on an H100 that has no matching SASS, or on a later GPU for which only the
// portable PTX fits) has no-op waits; launched with the PDL attribute its kernels would read
// their predecessor's output before it is written.
template <typename... Params>
bool kernel_waits_for_predecessor(void (*kernel)(Params...)) {
  // A kernel that cannot be queried cannot be launched either: its error is left for the
  // launch's caller, as the launch's own would be.
  cudaFuncAttributes attributes{};
  return cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess && attributes.ptxVersion >= 90;
}

// kernel<<<grid, block, smem, stream>>>(args...) with the PDL attribute where supported, and
// with cluster_x > 1 in thread-block clusters of cluster_x blocks along x (sm_90: the caller
// checks that the kernel runs from sm_90 code, kernel_waits_for_predecessor). A launch error is
// left for the caller's cudaGetLastError, as with <<<>>>.
template <typename... Params, typename... Args>
void launch_pdl_clusters(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                         unsigned cluster_x, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl_supported() && kernel_waits_for_predecessor(kernel)) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_x > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n++].val.clusterDim = {cluster_x, 1, 1};
  }
  config.attrs = attr;
  config.numAttrs = n;
  cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args... args) {
  launch_pdl_clusters(kernel, grid, block, smem, stream, 1, args...);
}

}  // namespace bl::cuda
