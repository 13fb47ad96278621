// cpu::matmul per weight format at the Llama-3.2-1B layer shapes.
//
// Decode (n = 1) is a stream of the weights: GB/s counts weight bytes per second, and
// pct_read_bw compares it with this machine's read bandwidth measured at start-up by the
// same thread count (memory_bandwidth_bench's sum of a 1 GiB buffer). The weights of each
// benchmark are replicated to ~1 GiB and the copies used in turn, so they come from DRAM,
// not from the (large) L3. Prefill (n = 64) also reports GFLOP/s (2 * rows * cols * n).
//
// The ISA level is the CPU's best, lowered by BITLIGHT_ISA=scalar|avx2. Q4_0 / Q4_1 / Q8_0 / Q4_K
// weights are interleaved as the CPU backend does at load (BITLIGHT_CPU_INTERLEAVE=0: not).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/aligned_buffer.h"
#include "kernels/cpu/interleaved_rows.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_interleaved.h"
#include "quant/quant.h"
#include "read_bandwidth.h"

namespace {

using bl::DType;

// Bytes of weight copies a benchmark cycles through: 1 GiB (from DRAM) by default;
// BITLIGHT_BENCH_POOL_MB=1 keeps one copy, so a small matrix stays in L2/L3 and the figure is
// the kernel's compute rate instead of the memory's.
size_t weight_pool_bytes() {
  const char* mb = std::getenv("BITLIGHT_BENCH_POOL_MB");
  return mb ? static_cast<size_t>(std::max(1L, std::atol(mb))) << 20 : size_t{1} << 30;
}

struct Shape {
  const char* name;
  int64_t cols, rows;
};
// Llama-3.2-1B: hidden 2048, 8 KV heads of 64 (K/V 512), FFN 8192, vocab 128256.
constexpr Shape kShapes[] = {{"attn_q_o", 2048, 2048}, {"attn_k_v", 2048, 512}, {"ffn_gate_up", 2048, 8192},
                             {"ffn_down", 8192, 2048}, {"output", 2048, 128256}};
constexpr DType kFormats[] = {DType::Q4_0, DType::Q8_0, DType::F16,  DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::BF16,
                              DType::F32,  DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q3_K, DType::Q2_K,
                              DType::BL4G128, DType::BL3G128, DType::BL2G128};

// Copies of one [cols, rows] weight matrix filling ~weight_pool_bytes(); kept between the
// repeated calls Google Benchmark makes to one benchmark function.
struct WeightPool {
  DType type;
  int64_t cols = 0, rows = 0;
  size_t matrix_bytes = 0;
  int copies = 0;
  bl::Layout layout = bl::Layout::rows;
  bl::AlignedBuffer data;
};

const WeightPool& weights(DType type, int64_t cols, int64_t rows) {
  static std::unique_ptr<WeightPool> pool;
  if (pool && pool->type == type && pool->cols == cols && pool->rows == rows) return *pool;
  pool.reset();  // free the previous ~1 GiB first
  auto p = std::make_unique<WeightPool>();
  p->type = type;
  p->cols = cols;
  p->rows = rows;
  const size_t row_bytes = bl::row_bytes(type, cols);
  p->matrix_bytes = row_bytes * static_cast<size_t>(rows);
  p->copies = static_cast<int>(std::max<size_t>(1, weight_pool_bytes() / p->matrix_bytes));
  p->data.resize(p->matrix_bytes * p->copies, bl::AlignedBuffer::Pages::huge);
  // 16 distinct quantized Gaussian rows (one tile of the bl types), repeated: realistic scales,
  // cheap to make. Every shape's row count is a multiple of 16.
  constexpr int kDistinct = 16;
  std::vector<uint8_t> distinct(row_bytes * kDistinct);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(static_cast<size_t>(cols) * kDistinct);
  for (auto& v : values) v = normal(rng);
  bl::quantize_matrix(type, values.data(), distinct.data(), kDistinct, cols);
  auto* dst = p->data.as<uint8_t>();
  for (size_t r = 0; r < static_cast<size_t>(rows) * p->copies; r += kDistinct)
    std::memcpy(dst + row_bytes * r, distinct.data(), distinct.size());
  if (bl::cpu::interleave_at_load() && bl::cpu::can_interleave(type, rows)) {
    bl::AlignedBuffer tiles;
    tiles.resize(p->data.bytes(), bl::AlignedBuffer::Pages::huge);
    bl::ThreadPool threads(0);
    for (int c = 0; c < p->copies; ++c)
      bl::cpu::interleave_rows(bl::make_tensor_2d(dst + p->matrix_bytes * c, type, cols, rows),
                               tiles.as<uint8_t>() + p->matrix_bytes * c, threads);
    p->data = std::move(tiles);
    p->layout = bl::Layout::tiles16;
  }
  pool = std::move(p);
  return *pool;
}

// Read bandwidth by thread count, measured once (best of 3 passes over 1 GiB).
double read_gbps(int threads) {
  static std::map<int, double> measured;
  if (auto it = measured.find(threads); it != measured.end()) return it->second;
  bl::ThreadPool pool(threads);
  bl::bench::ReadBandwidth buffer(size_t{1} << 30);
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(buffer.pass(pool));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(buffer.bytes()) / s / 1e9);
  }
  return measured[threads] = best;
}

void run_matmul(benchmark::State& state, DType type, Shape shape, int64_t n, int threads) {
  const double limit_gbps = read_gbps(threads);
  const WeightPool& w = weights(type, shape.cols, shape.rows);
  bl::ThreadPool pool(threads);
  bl::AlignedBuffer scratch(bl::cpu::matmul_scratch_bytes(type, shape.cols, n));
  std::vector<float> x(shape.cols * n), out(shape.rows * n);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  bl::Tensor xt = bl::make_tensor_2d(x.data(), DType::F32, shape.cols, n);
  bl::Tensor ot = bl::make_tensor_2d(out.data(), DType::F32, shape.rows, n);
  int copy = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    bl::Tensor wt = bl::make_tensor_2d(w.data.as<uint8_t>() + w.matrix_bytes * copy, type, shape.cols, shape.rows);
    wt.layout = w.layout;
    bl::cpu::matmul(wt, xt, ot, nullptr, pool, scratch);
    benchmark::DoNotOptimize(out.data());
    copy = (copy + 1) % w.copies;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double iters = static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(w.matrix_bytes) * iters, benchmark::Counter::kIsRate,
                                              benchmark::Counter::kIs1000);
  state.counters["read_GB/s"] = limit_gbps;
  state.counters["pct_read_bw"] = 100.0 * static_cast<double>(w.matrix_bytes) * iters / seconds / 1e9 / limit_gbps;
  if (n > 1)
    state.counters["GFLOP/s"] = benchmark::Counter(2.0 * shape.cols * shape.rows * n * iters,
                                                   benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(bl::cpu::isa_name(bl::cpu::active_isa())) +
                 (w.layout == bl::Layout::tiles16 ? " tiles16" : ""));
}

}  // namespace

int main(int argc, char** argv) {
  for (DType type : kFormats) {
    const std::string fmt(bl::dtype_name(type));
    for (const Shape& shape : kShapes) {
      for (int threads : {1, 2}) {
        if (threads == 1 && shape.rows != 2048) continue;  // 1-thread runs only at 2048x2048 and ffn_down
        benchmark::RegisterBenchmark(("decode/" + fmt + "/" + shape.name + "/threads:" + std::to_string(threads)).c_str(),
                                     [=](benchmark::State& st) { run_matmul(st, type, shape, 1, threads); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
    benchmark::RegisterBenchmark(("prefill64/" + fmt + "/attn_q_o/threads:2").c_str(),
                                 [=](benchmark::State& st) { run_matmul(st, type, kShapes[0], 64, 2); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
