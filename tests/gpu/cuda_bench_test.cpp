// GPU kernel benchmark (not a test: it asserts only that the runs succeed). Runs when
// BITLIGHT_GPU_BENCH=1, otherwise skips; scripts/gpu_check.sh sets it on the device machine.
//
// Measures the read bandwidth of this card (a large sum, bandwidth_probe.cu) and the matmul
// of every format (of the bl types bl4g128 and bl2g128) at the Llama-3 8B shapes
// [cols x rows]: 4096x4096 (q/o), 4096x1024 (k/v),
// 4096x14336 (gate/up), 14336x4096 (down), 4096x128256 (lm_head), at batch 1, 4, 8 and 16. Each
// timing replays a CUDA graph of back-to-back matmuls that cycle over enough copies of the
// weight to exceed the L2 several times (so HBM is measured, not the cache), median of 7.
// Weights are random bytes (speed does not depend on the values; never zeros). GB/s counts
// weights + activations + outputs once; % is of the read bandwidth measured in this run.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "kernels/cuda/bandwidth_probe.h"
#include "kernels/cuda/launchers.h"
#include "quant/bl_group.h"

namespace bl {
namespace {

bool bench_enabled() {
  const char* v = std::getenv("BITLIGHT_GPU_BENCH");
  return v && std::string(v) == "1";
}

void fill_random(std::vector<uint8_t>& bytes, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    s += 0x9E3779B97F4A7C15ull;  // splitmix64
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::memcpy(bytes.data() + i, &z, 8);
  }
  for (; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + seed);
}

// Optional filters for profiling one case (e.g. under ncu): BITLIGHT_BENCH_FORMATS=q4_0,q4_k
// and BITLIGHT_BENCH_SHAPES=4096x14336 (cols x rows), comma-separated; unset = all.
bool selected(const char* env, const std::string& name) {
  const char* v = std::getenv(env);
  if (!v || !*v) return true;
  const std::string list = std::string(",") + v + ",";
  return list.find("," + name + ",") != std::string::npos;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Read bandwidth in GB/s: sum of a 4 GiB buffer, median of 9 after 2 warm-ups.
double measure_read_gbps() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  return cuda::measure_read_gbps(size_t{4} << 30, sms, nullptr);
}

struct Shape {
  int64_t cols, rows;
};
struct Result {
  std::string format;
  Shape shape;
  int batch;
  bool tensor_cores;  // false: the CUDA-core GEMV (block formats at batch > 1 only)
  double us, gbps;
};
struct Config {
  int batch;
  bool tensor_cores;
};

// Prefill matmul (n = 2048 tokens) through the backend: for F16 weights cuBLAS on fp16
// operands (plus the fp32 -> fp16 conversion of x); for block formats the dequantize pass
// first, and for Q4_0 / Q4_K / Q4_1 / Q8_0 also the in-loop GEMM. TFLOP/s = 2 rows cols n / time, eager
// launches, median of 5 after a warm-up. The 8192^3 F16 product is this path's ceiling on the card (PERF.md: 781 TFLOP/s through torch).
TEST(CudaBench, PrefillMatmul) {
  if (!bench_enabled()) GTEST_SKIP() << "set BITLIGHT_GPU_BENCH=1 to run the GPU benchmark";
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device";
  struct Case {
    DType fmt;
    Shape shape;
    int64_t n;
  };
  const Case cases[] = {{DType::F16, {8192, 8192}, 8192}, {DType::F16, {4096, 4096}, 2048},
                        {DType::F16, {4096, 14336}, 2048}, {DType::F16, {14336, 4096}, 2048},
                        {DType::Q4_0, {4096, 4096}, 2048}, {DType::Q4_0, {4096, 1024}, 2048},
                        {DType::Q4_0, {4096, 14336}, 2048},
                        {DType::Q4_0, {14336, 4096}, 2048}, {DType::Q4_K, {4096, 14336}, 2048},
                        {DType::Q4_K, {14336, 4096}, 2048},
                        {DType::Q4_1, {4096, 14336}, 2048}, {DType::Q4_1, {14336, 4096}, 2048},
                        {DType::Q8_0, {4096, 14336}, 2048}, {DType::Q8_0, {14336, 4096}, 2048},
                        {DType::Q5_K, {4096, 14336}, 2048}, {DType::Q5_K, {14336, 4096}, 2048}};
  std::printf("\n| prefill: format | cols x rows | tokens | ms | TFLOP/s |\n|---|---|---|---|---|\n");
  const int64_t q5_k_max_tokens = cuda::in_loop_gemm_max_tokens(DType::Q5_K);
  // The in-loop formats four ways: the in-loop GEMM (gemm_in_loop_wgmma.cu, where the GPU runs it) with its
  // automatic block tile, with the wide one forced, and with blocks alone instead of clusters of 2; and the
  // dequantize pass + cuBLAS.
  struct Path {
    bool in_loop;
    cuda::InLoopGemmTile tile;
    int cluster;
    const char* name;
  };
  const Path paths[] = {{true, cuda::InLoopGemmTile::automatic, 2, " (in-loop)"},
                        {true, cuda::InLoopGemmTile::rows128_tokens256, 2, " (in-loop 128x256)"},
                        {true, cuda::InLoopGemmTile::automatic, 1, " (in-loop, blocks alone)"},
                        {false, cuda::InLoopGemmTile::automatic, 2, " (dequantize + cuBLAS)"}};
  for (const Case& c : cases)
  for (const Path& path : paths) {
    const bool in_loop_format =
        c.fmt == DType::Q4_0 || c.fmt == DType::Q4_1 || c.fmt == DType::Q8_0 || c.fmt == DType::Q4_K ||
        c.fmt == DType::Q5_K;
    if (!in_loop_format && path.in_loop) continue;
    cuda::set_in_loop_gemm(path.in_loop ? cuda::InLoopGemmUse::everywhere : cuda::InLoopGemmUse::off, path.tile);
    cuda::set_in_loop_gemm_cluster(path.cluster);
    // Q5_K is taken up to 512 tokens by default: measured here at any count.
    if (in_loop_format) cuda::set_in_loop_gemm_max_tokens(c.fmt, cuda::kInLoopGemmAnyTokens);
    auto opened = open_cuda_backend(0);
    ASSERT_TRUE(opened.ok()) << opened.status().message();
    CudaBackend& b = **opened;
    std::vector<uint8_t> host(make_tensor_2d(nullptr, c.fmt, c.shape.cols, c.shape.rows).bytes());
    fill_random(host, 99);
    if (c.fmt == DType::F16)  // finite fp16 values: random bits would include NaN / inf
      for (size_t i = 1; i < host.size(); i += 2) host[i] &= 0x3b;
    auto w = b.upload_weight(make_tensor_2d(host.data(), c.fmt, c.shape.cols, c.shape.rows));
    auto x = b.alloc(DType::F32, {c.shape.cols, c.n, 1, 1});
    auto out = b.alloc(DType::F32, {c.shape.rows, c.n, 1, 1});
    ASSERT_TRUE(w.ok() && x.ok() && out.ok());
    std::vector<float> xv(static_cast<size_t>(c.shape.cols * c.n));
    for (size_t i = 0; i < xv.size(); ++i) xv[i] = static_cast<float>((i * 37) % 101) / 101.0f - 0.5f;
    b.write(*x, xv.data(), xv.size() * sizeof(float));
    std::vector<double> ms;
    for (int rep = 0; rep < 6; ++rep) {
      b.synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      b.matmul(*w, *x, *out);
      b.synchronize();
      if (rep > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    ASSERT_TRUE(b.status().ok());
    const double t = median(ms);
    std::printf("| %s%s | %lldx%lld | %lld | %.3f | %.0f |\n", std::string(dtype_name(c.fmt)).c_str(),
                in_loop_format ? path.name : "",
                static_cast<long long>(c.shape.cols), static_cast<long long>(c.shape.rows), static_cast<long long>(c.n), t,
                2.0 * c.shape.cols * c.shape.rows * c.n / (t * 1e-3) / 1e12);
  }
  cuda::set_in_loop_gemm(cuda::InLoopGemmUse::everywhere);
  cuda::set_in_loop_gemm_cluster(2);
  cuda::set_in_loop_gemm_max_tokens(DType::Q5_K, q5_k_max_tokens);
}

TEST(CudaBench, GemvBandwidthAt8BShapes) {
  if (!bench_enabled()) GTEST_SKIP() << "set BITLIGHT_GPU_BENCH=1 to run the GPU benchmark";
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device";
  const double read_gbps = measure_read_gbps();
  ASSERT_GT(read_gbps, 0.0);
  std::printf("measured read bandwidth: %.0f GB/s (4 GiB sum)\n", read_gbps);

  const Shape shapes[] = {{4096, 4096}, {4096, 1024}, {4096, 14336}, {14336, 4096}, {4096, 128256}};
  // bl types: random bytes give random fp16 s / z (some NaN): speed does not depend on them.
  const DType formats[] = {DType::F16,  DType::BF16, DType::F32,  DType::Q8_0,    DType::Q4_0,   DType::Q4_1,
                           DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::BL4G128, DType::BL2G128};
  const size_t rotate_bytes = size_t{320} << 20;  // > 6x the 50 MB L2 of an H100
  std::vector<Result> results;
  for (DType fmt : formats) {
    if (!selected("BITLIGHT_BENCH_FORMATS", std::string(dtype_name(fmt)))) continue;
    auto opened = open_cuda_backend(0);  // one backend per format: its memory goes with it
    ASSERT_TRUE(opened.ok()) << opened.status().message();
    CudaBackend& b = **opened;
    for (const Shape& s : shapes) {
      if (!selected("BITLIGHT_BENCH_SHAPES", std::to_string(s.cols) + "x" + std::to_string(s.rows))) continue;
      const Tensor host_shape = make_tensor_2d(nullptr, fmt, s.cols, s.rows);
      std::vector<uint8_t> host(host_shape.bytes());
      fill_random(host, static_cast<uint64_t>(s.rows) * 7 + static_cast<uint64_t>(fmt));
      const int copies = static_cast<int>(std::clamp<size_t>(rotate_bytes / host.size() + 1, 1, 64));
      std::vector<Tensor> weights;
      for (int c = 0; c < copies; ++c) {
        auto w = b.upload_weight(make_tensor_2d(host.data(), fmt, s.cols, s.rows));
        ASSERT_TRUE(w.ok()) << w.status().message();
        weights.push_back(*w);
      }
      const bool plain = fmt == DType::F16 || fmt == DType::BF16 || fmt == DType::F32;
      std::vector<Config> configs = {{1, true}, {4, true}, {8, true}, {16, true}};
      if (!plain) configs.push_back({16, false});
      if (quant::is_bl_group(fmt)) configs = {{1, true}, {4, true}};  // 16 tokens: four 4-token launches
      for (const Config& cfg : configs) {
        const int batch = cfg.batch;
        cuda::set_tensor_core_gemv(cfg.tensor_cores);
        auto x = b.alloc(DType::F32, {s.cols, batch, 1, 1});
        auto out = b.alloc(DType::F32, {s.rows, batch, 1, 1});
        ASSERT_TRUE(x.ok() && out.ok());
        std::vector<float> xv(static_cast<size_t>(s.cols * batch));
        for (size_t i = 0; i < xv.size(); ++i) xv[i] = static_cast<float>((i * 37) % 101) / 101.0f - 0.5f;
        b.write(*x, xv.data(), xv.size() * sizeof(float));
        // Estimate one launch, then size the graph to ~5 ms of work.
        for (const Tensor& w : weights) b.matmul(w, *x, *out);
        b.synchronize();
        const auto t0 = std::chrono::steady_clock::now();
        for (const Tensor& w : weights) b.matmul(w, *x, *out);
        b.synchronize();
        const double est_us =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / copies;
        const int launches = std::clamp(static_cast<int>(5000.0 / std::max(est_us, 1.0)), copies, 4000);
        ASSERT_TRUE(b.capture_graph([&] {
                      for (int i = 0; i < launches; ++i) b.matmul(weights[i % copies], *x, *out);
                    }).ok());
        std::vector<double> per_launch_us;
        for (int rep = 0; rep < 8; ++rep) {
          const auto r0 = std::chrono::steady_clock::now();
          ASSERT_TRUE(b.replay_graph().ok());
          b.synchronize();
          const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - r0).count();
          if (rep > 0) per_launch_us.push_back(us / launches);
        }
        ASSERT_TRUE(b.status().ok());
        const double us = median(per_launch_us);
        const double bytes = static_cast<double>(host.size()) + 4.0 * (s.cols + s.rows) * batch;
        results.push_back({std::string(dtype_name(fmt)), s, batch, cfg.tensor_cores, us, bytes / (us * 1e-6) / 1e9});
      }
    }
  }

  cuda::set_tensor_core_gemv(true);

  std::printf("\n| format | cols x rows | batch | path | us | GB/s | %% of read bw |\n|---|---|---|---|---|---|---|\n");
  for (const Result& r : results)
    std::printf("| %s | %lldx%lld | %d | %s | %.1f | %.0f | %.0f %% |\n", r.format.c_str(),
                static_cast<long long>(r.shape.cols), static_cast<long long>(r.shape.rows), r.batch,
                r.tensor_cores ? "default" : "cuda-core", r.us, r.gbps, 100.0 * r.gbps / read_gbps);
  // Summary: all five shapes of a format as one decode-like pass (total bytes / total time).
  std::printf("\nGEMV summary, Llama-3 8B shapes, read bandwidth %.0f GB/s measured in this run\n\n", read_gbps);
  std::printf("| format | b1 GB/s | b1 %% | b4 %% | b8 %% | b16 GB/s | b16 %% | b16 cuda-core %% | b16 us, 5 shapes |\n"
              "|---|---|---|---|---|---|---|---|---|\n");
  for (DType fmt : formats) {
    auto total = [&](int batch, bool tc, double& gbps, double& us) {
      double bytes = 0;
      us = 0;
      for (const Result& r : results)
        if (r.format == dtype_name(fmt) && r.batch == batch && r.tensor_cores == tc) {
          bytes += r.gbps * r.us * 1e3;
          us += r.us;
        }
      gbps = us > 0 ? bytes / (us * 1e3) : 0.0;
    };
    double g1, u1, g4, u4, g8, u8, g16, u16, gcc, ucc;
    total(1, true, g1, u1);
    total(4, true, g4, u4);
    total(8, true, g8, u8);
    total(16, true, g16, u16);
    total(16, false, gcc, ucc);
    const std::string cc = gcc > 0 ? std::to_string(static_cast<int>(100.0 * gcc / read_gbps + 0.5)) + " %" : "-";
    std::printf("| %s | %.0f | %.0f %% | %.0f %% | %.0f %% | %.0f | %.0f %% | %s | %.0f |\n",
                std::string(dtype_name(fmt)).c_str(), g1, 100.0 * g1 / read_gbps, 100.0 * g4 / read_gbps,
                100.0 * g8 / read_gbps, g16, 100.0 * g16 / read_gbps, cc.c_str(), u16);
  }
}

}  // namespace
}  // namespace bl
