// What a kernel boundary costs inside a replayed CUDA graph, and what a flag costs instead.
//
// A decode step is a chain of ~300 dependent kernels; the timeline (docs/cuda.md) shows each
// small one adding ~3.5 us to the step whatever it does. This program times a chain of
// small dependent kernels ("stages": each block reads the 4096 floats the stage before wrote,
// reduces them and writes its slice, as a norm or quantize kernel does) five ways:
//   plain      ordinary launches, stream order
//   pdl        launched with the PDL attribute, pdl_allow_next() first, griddepcontrol.wait
//   pdl_late   the same with griddepcontrol.wait first, then pdl_allow_next()
//   flag       launched with the PDL attribute, pdl_allow_next() first, then thread 0 spins
//              (ld.acquire.gpu) until a counter says every block of the stages before is done;
//              each block adds 1 to it (release) when done. No griddepcontrol.wait.
//   persistent one kernel, the stages separated by a grid barrier on the same counter
// and prints us per stage for several grid sizes; then GEMV-like streaming kernels with and
// without a small kernel between each two. Usage: kernel_boundary_bench [stages]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <vector>

namespace {

constexpr int kThreads = 256;
constexpr int kWidth = 4096;  // floats each stage reads (a hidden state of the 8B shape)

#define CHECK(call)                                                                    \
  do {                                                                                 \
    cudaError_t e = (call);                                                            \
    if (e != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call,               \
                   cudaGetErrorString(e));                                             \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

enum Mode { kPlain, kPdl, kFlag, kPdlLate };

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void wait_count(const unsigned* counter, unsigned target) {
  if (threadIdx.x == 0)
    while (load_acquire(counter) < target) __nanosleep(20);
  __syncthreads();
}

__device__ __forceinline__ void signal_done(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
  }
}

// One stage's work: every block reads x[0, kWidth), reduces it, and writes its kThreads values.
__device__ __forceinline__ void stage_work(const float* x, float* y) {
  float sum = 0.0f;
  for (int i = threadIdx.x * 4; i < kWidth; i += kThreads * 4) {
    float4 v = *reinterpret_cast<const float4*>(x + i);
    sum += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  __shared__ float warp_sums[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  int out = blockIdx.x * kThreads + threadIdx.x;
  y[out] = x[out % kWidth] * rsqrtf(total / kWidth + 1e-6f) + 1e-3f;
}

template <Mode kMode>
__global__ void stage_kernel(const float* x, float* y, unsigned* counter, unsigned target) {
  if constexpr (kMode == kPdl || kMode == kFlag) asm volatile("griddepcontrol.launch_dependents;" :::);
  if constexpr (kMode == kPdl || kMode == kPdlLate) asm volatile("griddepcontrol.wait;" ::: "memory");
  if constexpr (kMode == kPdlLate) asm volatile("griddepcontrol.launch_dependents;" :::);
  if constexpr (kMode == kFlag) wait_count(counter, target);
  stage_work(x, y);
  if constexpr (kMode == kFlag) signal_done(counter);
}

__global__ void persistent_kernel(float* a, float* b, unsigned* counter, int stages) {
  for (int s = 0; s < stages; ++s) {
    stage_work(s % 2 ? b : a, s % 2 ? a : b);
    signal_done(counter);
    wait_count(counter, (s + 1) * gridDim.x);
  }
}

// A GEMV-like kernel: each block streams `bytes_per_block` of its own weights (the first
// 16 KiB of loads issued before the wait, as the dp4a GEMV does), adds one value of x, and
// writes one float; x and y belong to the chain. Grid: 2 blocks per SM, as the dp4a GEMV.
__global__ void __launch_bounds__(kThreads, 2)
    stream_kernel(const uint4* w, int64_t vecs_per_block, const float* x, float* y) {
  const uint4* mine = w + blockIdx.x * vecs_per_block;
  uint4 first[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) first[k] = __ldcs(mine + k * kThreads + threadIdx.x);
  asm volatile("griddepcontrol.wait;" ::: "memory");
  unsigned acc = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) acc += first[k].x ^ first[k].y ^ first[k].z ^ first[k].w;
  asm volatile("griddepcontrol.launch_dependents;" :::);
  for (int64_t i = 4 * kThreads + threadIdx.x; i < vecs_per_block; i += 4 * kThreads) {
    uint4 v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = __ldcs(mine + i + k * kThreads);
#pragma unroll
    for (int k = 0; k < 4; ++k) acc += v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
  }
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x == 0) y[blockIdx.x] = x[blockIdx.x % kWidth] + static_cast<float>(acc & 1);
}

// kernel<<<grid, kThreads, 0, stream>>>(args...), with the PDL attribute when pdl.
template <typename... Params, typename... Args>
void launch_with(void (*kernel)(Params...), int grid, bool pdl, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = pdl ? 1 : 0;
  CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...));
}

template <Mode kMode>
void launch(const float* x, float* y, unsigned* counter, unsigned target, int grid,
            cudaStream_t stream) {
  launch_with(stage_kernel<kMode>, grid, kMode != kPlain, stream, x, y, counter, target);
}

void launch_stream(const uint4* w, int64_t vecs_per_block, const float* x, float* y, int grid,
                   cudaStream_t stream) {
  launch_with(stream_kernel, grid, true, stream, w, vecs_per_block, x, y);
}

// Microseconds per stage of a graph of `stages` stages, the median of 20 replays.
template <typename Record>
double time_graph(cudaStream_t stream, Record record, int stages) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  record();
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CHECK(cudaGraphLaunch(exec, stream));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(20);
  for (float& m : ms) {
    CHECK(cudaEventRecord(start, stream));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    CHECK(cudaEventElapsedTime(&m, start, stop));
  }
  std::sort(ms.begin(), ms.end());
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  return ms[ms.size() / 2] * 1000.0 / stages;
}

}  // namespace

template <Mode kMode>
struct ModeTag {
  static constexpr Mode value = kMode;
};

int main(int argc, char** argv) {
  int stages = argc > 1 ? std::atoi(argv[1]) : 256;
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  float *a, *b;
  unsigned* counter;
  size_t max_grid = 8 * sms;
  CHECK(cudaMalloc(&a, max_grid * kThreads * sizeof(float)));
  CHECK(cudaMalloc(&b, max_grid * kThreads * sizeof(float)));
  CHECK(cudaMalloc(&counter, sizeof(unsigned)));
  std::vector<float> ones(max_grid * kThreads, 1.0f);
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto reset = [&] {
    CHECK(cudaMemcpy(a, ones.data(), ones.size() * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(b, ones.data(), ones.size() * sizeof(float), cudaMemcpyHostToDevice));
  };

  std::printf("%d SMs, %d stages of %d-thread blocks, each reading %d floats; us per stage\n",
              sms, stages, kThreads, kWidth);
  std::printf("pdl: allow the next launch, then wait; pdl_late: wait, then allow\n");
  std::printf("| grid | plain | pdl | pdl_late | flag | persistent |\n|---|---|---|---|---|---|\n");
  for (int grid : {1, 2, 16, sms, 2 * sms, 4 * sms}) {
    auto chain = [&](auto tag) {
      return [&, grid] {
        CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), stream));
        for (int s = 0; s < stages; ++s)
          launch<decltype(tag)::value>(s % 2 ? b : a, s % 2 ? a : b, counter, s * grid, grid,
                                       stream);
      };
    };
    // Each chain starts from all-ones buffers, so every mode must leave the same values.
    std::vector<float> want(grid * kThreads), got(grid * kThreads);
    auto result = [&](std::vector<float>& v) {
      CHECK(cudaDeviceSynchronize());
      CHECK(cudaMemcpy(v.data(), stages % 2 ? b : a, v.size() * sizeof(float),
                       cudaMemcpyDeviceToHost));
    };
    bool same = true;
    auto timed = [&](auto tag, bool first) {
      reset();
      double us = time_graph(stream, chain(tag), stages);
      result(first ? want : got);
      if (!first) same = same && std::memcmp(want.data(), got.data(), want.size() * 4) == 0;
      return us;
    };
    double plain = timed(ModeTag<kPlain>{}, true);
    double pdl = timed(ModeTag<kPdl>{}, false);
    double late = timed(ModeTag<kPdlLate>{}, false);
    double flag = timed(ModeTag<kFlag>{}, false);
    double persistent = -1.0;
    int per_sm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel, kThreads, 0));
    if (grid <= per_sm * sms) {
      persistent = time_graph(
          stream,
          [&, grid] {
            CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), stream));
            persistent_kernel<<<grid, kThreads, 0, stream>>>(a, b, counter, stages);
            CHECK(cudaGetLastError());
          },
          stages);
    }
    std::printf("| %d | %.2f | %.2f | %.2f | %.2f | %.2f |%s\n", grid, plain, pdl, late, flag,
                persistent, same ? "" : " MISMATCH: the chains disagree");
  }

  // GEMV-like kernels (2 blocks per SM streaming `mb` MB of weights each) with or without a
  // small 2-block kernel between each two, as the quantize kernel sits between two GEMVs.
  const int pairs = 48;
  const int grid = 2 * sms;
  std::printf("\n%d GEMV-like kernels (grid %d, weights not in L2), a small kernel (2 blocks) "
              "between each two or not; us per GEMV-like kernel\n", pairs, grid);
  std::printf("| MB each | alone | + small pdl | + small pdl_late |\n|---|---|---|---|\n");
  for (double mb : {4.0, 8.0, 32.0}) {
    const int64_t vecs_per_block =
        std::max<int64_t>(1, std::llround(mb * 1e6 / 16 / grid / (4 * kThreads))) * 4 * kThreads;
    const size_t per_kernel = vecs_per_block * grid * sizeof(uint4);
    uint4* w;
    CHECK(cudaMalloc(&w, per_kernel * pairs));
    CHECK(cudaMemset(w, 1, per_kernel * pairs));
    auto chain = [&](int small) {
      return [&, small] {
        for (int s = 0; s < pairs; ++s) {
          launch_stream(w + s * vecs_per_block * grid, vecs_per_block, a, b, grid, stream);
          if (small == 1) launch<kPdl>(b, a, counter, 0, 2, stream);
          if (small == 2) launch<kPdlLate>(b, a, counter, 0, 2, stream);
        }
      };
    };
    double alone = time_graph(stream, chain(0), pairs);
    double early = time_graph(stream, chain(1), pairs);
    double late = time_graph(stream, chain(2), pairs);
    std::printf("| %.1f | %.2f | %.2f | %.2f |\n", per_kernel / 1e6, alone, early, late);
    CHECK(cudaFree(w));
  }
  CHECK(cudaDeviceSynchronize());
  return 0;
}
