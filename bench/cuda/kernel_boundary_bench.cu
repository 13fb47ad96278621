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
// without a small kernel between each two; then the same streaming phases, each still waiting
// for all of the phase before, in one persistent kernel whose producer warp streams the weights
// of phase after phase through a shared-memory ring (TMA bulk copies) without waiting for any
// phase: what a boundary costs when the weights keep streaming across it (docs/cuda.md, Not
// done yet 1). Usage: kernel_boundary_bench [stages]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <vector>

#include "kernels/cuda/hopper.cuh"

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

// The streaming phases of stream_kernel in one persistent kernel, one block an SM: warp 8's lane
// 0 (the producer) copies the block's share of phase after phase, kRingSlot bytes at a time,
// into a ring of kRingSlots slots (a full and an empty mbarrier each), waiting only for free
// slots; warps 0-7 (the consumers) wait, per phase, until every block has finished the phase
// before (a counter, as `flag` above), read one value of what it wrote, then consume the
// phase's slots and signal. So each phase depends on all of the one before, as each GEMV does
// on the kernel before it, but the weights need not wait for that.
// Ring slots an SM: 8 by default (128 KiB); -DKBB_RING_SLOTS=N to compare depths (up to 13).
#ifndef KBB_RING_SLOTS
#define KBB_RING_SLOTS 8
#endif
constexpr int kRingSlot = 16384, kRingSlots = KBB_RING_SLOTS, kConsumers = 256;
constexpr int kRingThreads = kConsumers + 32;

// How a ring kernel's phase waits for the one before: kFenced (__threadfence, atomicAdd; the
// waiting thread polls with __nanosleep), kLean (red.release.gpu add; a tight ld.acquire poll),
// kAside (as kLean, but the add is made by a thread of the producer warp after a block-local
// mbarrier says the phase is done, so no consumer waits for the release), kNone (no wait: the
// weights' streaming alone, results not meaningful).
enum RingSync { kFenced, kLean, kAside, kNone };

template <RingSync kSync>
__global__ void __launch_bounds__(kRingThreads, 1)
    ring_kernel(const uint8_t* w, const int* slots_of, const int64_t* first_of, int phases, float* a, float* b,
                unsigned* counter) {
#ifdef BITLIGHT_HOPPER
  namespace h = bl::cuda::hopper;
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ uint64_t full[kRingSlots], empty[kRingSlots], phase_done;
  __shared__ unsigned warp_acc[kConsumers / 32];
  if (threadIdx.x == 0) {
    for (int k = 0; k < kRingSlots; ++k) h::mbarrier_init(&full[k], 1), h::mbarrier_init(&empty[k], kConsumers / 32);
    h::mbarrier_init(&phase_done, 1);
    h::fence_barrier_init();
  }
  __syncthreads();
  if (kSync == kAside && threadIdx.x == kConsumers + 1) {  // the signaller
    for (int p = 0; p < phases; ++p) {
      h::mbarrier_wait(&phase_done, p & 1);
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
    }
    return;
  }
  // Phase p's weights: slots_of[p] slots a block, block-major, from slot first_of[p] x grid.
  if (threadIdx.x == kConsumers) {  // the producer
    int64_t it = 0;
    for (int p = 0; p < phases; ++p)
      for (int c = 0; c < slots_of[p]; ++c, ++it) {
      const int slot = static_cast<int>(it % kRingSlots);
      const uint32_t round = static_cast<uint32_t>(it / kRingSlots);
      h::mbarrier_wait(&empty[slot], (round & 1) ^ 1);  // a fresh barrier passes parity 1
      h::mbarrier_arrive_expect_tx(&full[slot], kRingSlot);
      const uint8_t* src = w + (first_of[p] * gridDim.x + static_cast<int64_t>(blockIdx.x) * slots_of[p] + c) * kRingSlot;
      asm volatile(
          "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
              h::shared_address(ring + slot * kRingSlot)),
          "l"(src), "r"(kRingSlot), "r"(h::shared_address(&full[slot]))
          : "memory");
      }
    return;
  }
  if (threadIdx.x >= kConsumers) return;
  int64_t it = 0;
  for (int p = 0; p < phases; ++p) {
    float* x = p % 2 ? b : a;
    float* y = p % 2 ? a : b;
    if (p > 0 && kSync != kNone) {
      if (threadIdx.x == 0)
        while (load_acquire(counter) < static_cast<unsigned>(p) * gridDim.x)
          if constexpr (kSync == kFenced) __nanosleep(20);
      h::named_barrier(1, kConsumers);
    }
    // written by another block (kNone: not read, so that nothing of the phase before is waited for)
    const float xv = kSync == kNone ? 0.0f : __ldcg(x + (blockIdx.x + 1) % gridDim.x);
    unsigned acc = 0;
    for (int c = 0; c < slots_of[p]; ++c, ++it) {
      const int slot = static_cast<int>(it % kRingSlots);
      h::mbarrier_wait(&full[slot], static_cast<uint32_t>(it / kRingSlots) & 1);
      const uint4* v = reinterpret_cast<const uint4*>(ring + slot * kRingSlot);
#pragma unroll
      for (int k = 0; k < kRingSlot / 16 / kConsumers; ++k) {
        const uint4 q = v[k * kConsumers + threadIdx.x];
        acc += q.x ^ q.y ^ q.z ^ q.w;
      }
      __syncwarp();
      if (threadIdx.x % 32 == 0) h::mbarrier_arrive(&empty[slot]);
    }
    for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (threadIdx.x % 32 == 0) warp_acc[threadIdx.x / 32] = acc;
    h::named_barrier(1, kConsumers);
    if (threadIdx.x == 0) {
      unsigned total_acc = 0;
      for (int k = 0; k < kConsumers / 32; ++k) total_acc += warp_acc[k];
      __stcg(y + blockIdx.x, xv + static_cast<float>(total_acc & 1));
      if constexpr (kSync == kFenced) {
        __threadfence();
        atomicAdd(counter, 1u);
      } else if constexpr (kSync == kAside) {
        h::mbarrier_arrive(&phase_done);  // release at CTA scope: the signaller's add follows the store
      } else if constexpr (kSync == kLean) {
        asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
      }
    }
  }
#endif
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

  // The same phases (each waiting for all of the one before) as kernels with PDL, and in one
  // persistent kernel streaming them through a ring; us per phase and GB/s.
  const int phases = 32;
  for (auto kernel : {ring_kernel<kFenced>, ring_kernel<kLean>, ring_kernel<kAside>, ring_kernel<kNone>})
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kRingSlot * kRingSlots));
  std::printf("\n%d dependent streaming phases: GEMV-like kernels (grid %d, PDL) against one persistent "
              "kernel (grid %d, %d x %d KiB ring an SM); us per phase (GB/s)\n",
              phases, grid, sms, kRingSlots, kRingSlot / 1024);
  std::printf("| MB a phase | kernels | ring, fenced sync | ring, lean sync | ring, signal aside | ring, no wait |\n|---|---|---|---|---|---|\n");
  // A sequence of phases, each slots_of[p] slots a block (0: a phase of no weights, a small
  // kernel of 2 blocks in the chain of kernels), timed both ways; us for the whole sequence.
  auto run_phases = [&](const std::vector<int>& slots_of, double& kernels_us, double (&ring_us)[4]) {
    const int n = static_cast<int>(slots_of.size());
    std::vector<int64_t> first_of(n);
    int64_t slots_total = 0;
    for (int p = 0; p < n; ++p) first_of[p] = slots_total, slots_total += slots_of[p];
    const size_t bytes = static_cast<size_t>(slots_total) * kRingSlot * sms;
    uint8_t* w;
    int* d_slots;
    int64_t* d_first;
    CHECK(cudaMalloc(&w, bytes));
    CHECK(cudaMemset(w, 1, bytes));
    CHECK(cudaMalloc(&d_slots, n * sizeof(int)));
    CHECK(cudaMalloc(&d_first, n * sizeof(int64_t)));
    CHECK(cudaMemcpy(d_slots, slots_of.data(), n * sizeof(int), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_first, first_of.data(), n * sizeof(int64_t), cudaMemcpyHostToDevice));
    kernels_us = n * time_graph(
                         stream,
                         [&] {
                           for (int p = 0; p < n; ++p) {
                             if (slots_of[p] == 0) {
                               launch<kPdl>(b, a, counter, 0, 2, stream);
                               continue;
                             }
                             // stream_kernel's blocks (two an SM) take half a ring block's share each.
                             const int64_t vecs = static_cast<int64_t>(slots_of[p]) * kRingSlot / 2 / sizeof(uint4);
                             launch_stream(reinterpret_cast<const uint4*>(w + first_of[p] * kRingSlot * sms), vecs,
                                           p % 2 ? b : a, p % 2 ? a : b, grid, stream);
                           }
                         },
                         n);
    auto ring = [&](auto kernel) {
      return n * time_graph(
                     stream,
                     [&] {
                       CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned), stream));
                       kernel<<<sms, kRingThreads, kRingSlot * kRingSlots, stream>>>(w, d_slots, d_first, n, a, b,
                                                                                      counter);
                       CHECK(cudaGetLastError());
                     },
                     n);
    };
    ring_us[0] = ring(ring_kernel<kFenced>);
    ring_us[1] = ring(ring_kernel<kLean>);
    ring_us[2] = ring(ring_kernel<kAside>);
    ring_us[3] = ring(ring_kernel<kNone>);
    CHECK(cudaFree(w));
    CHECK(cudaFree(d_slots));
    CHECK(cudaFree(d_first));
    return bytes;
  };
  for (double mb : {1.0, 4.0, 9.4, 33.0}) {
    // An even count of slots a block: stream_kernel's blocks (two an SM) then get whole 16 KiB
    // groups of loads.
    const int slots = 2 * std::max<int>(1, static_cast<int>(std::llround(mb * 1e6 / kRingSlot / sms / 2)));
    double kernels = 0, ring[4];
    const size_t bytes = run_phases(std::vector<int>(phases, slots), kernels, ring);
    const double per_phase = static_cast<double>(bytes) / phases;
    std::printf("| %.1f | %.2f (%.0f)", per_phase / 1e6, kernels / phases, per_phase / (kernels / phases) / 1e3);
    for (double r : ring) std::printf(" | %.2f (%.0f)", r / phases, per_phase / (r / phases) / 1e3);
    std::printf(" |\n");
  }

  // Four layers of the 8B shape's q4_0 decode step as phases: x quantized (no weights), q/k/v
  // (14.2 MB), attention (none), o (9.4), x quantized, gate/up (66.1), x quantized, down (33.0).
  // Then the same with the x quantizations folded into the phases after them (each block
  // quantizing x itself after its wait): per layer q/k/v, attention (none), o, gate/up, down.
  for (bool folded : {false, true}) {
    std::vector<int> layers;
    for (int l = 0; l < 4; ++l)
      for (double mb : folded ? std::vector<double>{14.2, 0.0, 9.4, 66.1, 33.0}
                              : std::vector<double>{0.0, 14.2, 0.0, 9.4, 0.0, 66.1, 0.0, 33.0})
        layers.push_back(mb == 0 ? 0 : 2 * std::max<int>(1, static_cast<int>(std::llround(mb * 1e6 / kRingSlot / sms / 2))));
    double kernels = 0, ring[4];
    const size_t bytes = run_phases(layers, kernels, ring);
    std::printf("\nfour 8B-like layers%s (%zu MB of weights, %zu phases), us a layer (GB/s): kernels %.1f (%.0f), "
                "ring fenced %.1f (%.0f), lean %.1f (%.0f), signal aside %.1f (%.0f), no wait %.1f (%.0f)\n",
                folded ? ", x quantizations folded" : "", bytes / 1000000, layers.size(), kernels / 4,
                bytes / kernels / 1e3, ring[0] / 4, bytes / ring[0] / 1e3, ring[1] / 4, bytes / ring[1] / 1e3,
                ring[2] / 4, bytes / ring[2] / 1e3, ring[3] / 4, bytes / ring[3] / 1e3);
  }
  CHECK(cudaDeviceSynchronize());
  return 0;
}
