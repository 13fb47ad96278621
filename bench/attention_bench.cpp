// cpu::attention for one decode token at the Llama-3.2-1B head shape (32 query heads, 8 KV heads
// of 64, fp16 cache) over 128..4096 cache slots, and a 64-token prefill chunk.
//
// In a model the cache of a layer was last touched a whole token ago, with all the weights
// streamed since: it comes from DRAM. So the caches here are copies filling ~1 GiB (2 MiB
// pages, as the CPU backend allocates them), used in turn.
//
// Decode attention reads the K and V rows of every slot once: kv_GB/s counts those bytes per
// second (the roofline at long contexts, where the cache no longer fits in L2), GFLOP/s counts
// 2 * 2 * slots * n_head * head_dim (q·k and p·v) per token.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/half.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/attention.h"

namespace {

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 64;

constexpr size_t kCachePoolBytes = size_t{1} << 30;

struct Operands {
  std::vector<float> q, out;
  bl::AlignedBuffer caches;  // copies of (k, v), each fp16 [head_dim, kv heads, slots]
  size_t cache_bytes = 0;    // of one k (or v)
  int copies = 0;
  std::vector<int32_t> positions;
};

Operands make_operands(int64_t slots, int64_t tokens) {
  Operands o;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  o.q.resize(static_cast<size_t>(kHeadDim * kHeads * tokens));
  for (float& x : o.q) x = normal(rng);
  o.out.resize(o.q.size());
  const size_t elems = static_cast<size_t>(kHeadDim * kKvHeads * slots);
  o.cache_bytes = elems * sizeof(uint16_t);
  o.copies = static_cast<int>(std::max<size_t>(1, kCachePoolBytes / (2 * o.cache_bytes)));
  o.caches.resize(2 * o.cache_bytes * static_cast<size_t>(o.copies), bl::AlignedBuffer::Pages::huge);
  auto* h = o.caches.as<uint16_t>();
  for (size_t i = 0; i < 2 * elems; ++i) h[i] = bl::f32_to_fp16(normal(rng));
  for (int c = 1; c < o.copies; ++c) std::memcpy(h + 2 * elems * c, h, 2 * o.cache_bytes);
  for (int64_t t = 0; t < tokens; ++t) o.positions.push_back(static_cast<int32_t>(slots - tokens + t));
  return o;
}

void BM_attention(benchmark::State& state, int64_t tokens, int threads) {
  const int64_t slots = state.range(0);
  Operands o = make_operands(slots, tokens);
  bl::Tensor q = bl::make_tensor(o.q.data(), bl::DType::F32, {kHeadDim, kHeads, tokens, 1});
  bl::Tensor out = bl::make_tensor(o.out.data(), bl::DType::F32, {kHeadDim, kHeads, tokens, 1});
  bl::ThreadPool pool(threads);
  bl::AlignedBuffer scratch;
  const bl::cpu::AttentionShape shape{kHeads, kKvHeads, kHeadDim, 0.125f};
  int copy = 0;
  for (auto _ : state) {
    char* kv = o.caches.as<char>() + 2 * o.cache_bytes * static_cast<size_t>(copy);
    copy = (copy + 1) % o.copies;
    bl::Tensor k = bl::make_tensor(kv, bl::DType::F16, {kHeadDim, kKvHeads, slots, 1});
    bl::Tensor v = bl::make_tensor(kv + o.cache_bytes, bl::DType::F16, {kHeadDim, kKvHeads, slots, 1});
    bl::cpu::attention(q, k, v, o.positions.data(), shape, out, pool, scratch);
    benchmark::DoNotOptimize(o.out.data());
  }
  double keys = 0;  // slots seen, summed over the tokens (causal)
  for (int32_t p : o.positions) keys += p + 1;
  const double flops = 4.0 * keys * kHeads * kHeadDim;
  const double kv_bytes = 2.0 * static_cast<double>(slots) * kKvHeads * kHeadDim * sizeof(uint16_t);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["kv_GB/s"] =
      benchmark::Counter(kv_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_attention, decode_t1, 1, 1)->RangeMultiplier(4)->Range(128, 4096)->UseRealTime();
BENCHMARK_CAPTURE(BM_attention, decode_t2, 1, 2)->RangeMultiplier(4)->Range(128, 4096)->UseRealTime();
BENCHMARK_CAPTURE(BM_attention, prefill64_t2, 64, 2)->Arg(512)->UseRealTime();

BENCHMARK_MAIN();
