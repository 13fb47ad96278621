// Memory read bandwidth of this machine: sum of a 1 GiB buffer (far beyond any cache) by 1
// and 2 threads. The GB/s here is the limit for decode GEMV (matmul_bench reports against it).
#include <benchmark/benchmark.h>

#include "read_bandwidth.h"

namespace {

constexpr size_t kBufferBytes = size_t{1} << 30;

void BM_read_bandwidth(benchmark::State& state) {
  bl::ThreadPool pool(static_cast<int>(state.range(0)));
  static bl::bench::ReadBandwidth buffer(kBufferBytes);
  for (auto _ : state) benchmark::DoNotOptimize(buffer.pass(pool));
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(buffer.bytes()) * state.iterations(),
                                              benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_read_bandwidth)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
