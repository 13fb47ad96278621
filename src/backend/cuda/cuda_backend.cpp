// CudaBackend: device memory, op dispatch to the kernels of kernels/cuda/, cuBLAS for prefill
// GEMMs, CUDA-graph capture of a decode step. See cuda_backend.h for the contract.
#include "backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/env_switch.h"
#include "kernels/cuda/bandwidth_probe.h"
#include "kernels/cuda/bl_device_layout.h"
#include "kernels/cuda/block_trace.h"
#include "kernels/cuda/launchers.h"
#include "quant/bl_group.h"

namespace bl {

CudaBackend::~CudaBackend() = default;

namespace {

std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

std::string bytes_text(size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%zu bytes (%.2f GiB)", bytes, static_cast<double>(bytes) / (1u << 30));
  return buf;
}

// cuBLAS wants scratch memory of its own for graph capture; 32 MiB covers Hopper's kernels.
constexpr size_t kCublasWorkspaceBytes = 32u << 20;

class CudaBackendImpl final : public CudaBackend {
 public:
  explicit CudaBackendImpl(int device) : device_(device) {
    // BITLIGHT_CUDA_ROPE_ATTENTION=0: rope_kv_store_attention as two kernels, q rotated by the
    // rope kernel also for a prompt chunk; =all: as one kernel at every head size too (both for
    // comparisons).
    const auto fused = env_choice("BITLIGHT_CUDA_ROPE_ATTENTION", {"0", "1", "all"});
    rope_in_attention_ = fused != "0";
    rope_in_attention_all_heads_ = fused == "all";
    // BITLIGHT_CUDA_KV_EARLY=0: the decode attention loads no K/V rows before it waits for the
    // kernel before it (kv_loads_early; for comparisons).
    kv_loads_early_enabled_ = env_choice("BITLIGHT_CUDA_KV_EARLY", {"0", "1"}) != "0";
    // BITLIGHT_CUDA_ROPE_STORE=0: the QKV GEMV never takes the rope and KV-cache store
    // (MatmulFusion::rope_next); the attention op does them as before (for comparisons).
    rope_store_enabled_ = env_choice("BITLIGHT_CUDA_ROPE_STORE", {"0", "1"}) != "0";
    // BITLIGHT_CUDA_ATTN_SUMS=0: a one-token attention always writes its output (through the
    // combine kernel), also where the hint lets the O GEMV divide instead (for comparisons).
    attention_sums_enabled_ = env_choice("BITLIGHT_CUDA_ATTN_SUMS", {"0", "1"}) != "0";
    // BITLIGHT_CUDA_STAGE_NEXT=0: a GEMV never stages the next one's x (MatmulFusion::norm_next),
    // the quantize kernel runs between them as before (for comparisons).
    stage_next_enabled_ = env_choice("BITLIGHT_CUDA_STAGE_NEXT", {"0", "1"}) != "0";
    // BITLIGHT_CUDA_BLOCK_PROLOGUE=0: the norm before a block-format GEMV the dp4a kernel does not
    // take (Q5_0, untiled rows) runs as a kernel of its own again (for comparisons).
    if (env_choice("BITLIGHT_CUDA_BLOCK_PROLOGUE", {"0", "1"}) == "0") cuda::set_block_fp32_prologue(false);
    // BITLIGHT_CUDA_ATTN_SPLITS=8|16|32|64: every split-KV attention cut into that many splits at
    // most, instead of enough for 2 blocks an SM (for comparisons).
    if (const auto splits = env_choice("BITLIGHT_CUDA_ATTN_SPLITS", {"8", "16", "32", "64"}))
      attention_max_splits_ = std::stoi(std::string(*splits));
    // BITLIGHT_CUDA_FP32_PROLOGUE=0|norm|split|all: what the fp32 GEMV takes in (comparisons):
    // nothing, the norm, the norm and the SwiGLU split over gate/up and down (default), the norm
    // and the whole SwiGLU in the down GEMV.
    const auto pro = env_choice("BITLIGHT_CUDA_FP32_PROLOGUE", {"0", "norm", "split", "all"});
    if (pro == "0") fp32_prologue_ = Fp32Prologue::none;
    if (pro == "norm") fp32_prologue_ = Fp32Prologue::norm;
    if (pro == "split") fp32_prologue_ = Fp32Prologue::split;
    if (pro == "all") fp32_prologue_ = Fp32Prologue::all;
  }

  Status init() {
    cudaError_t e = cudaSetDevice(device_);
    if (e != cudaSuccess) return unsupported("cuda: cannot use device " + std::to_string(device_) + ": " + cuda_error_text(e));
    e = cudaGetDeviceProperties(&props_, device_);
    if (e != cudaSuccess) return internal_error("cuda: cudaGetDeviceProperties: " + cuda_error_text(e));
    e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (e != cudaSuccess) return internal_error("cuda: cannot create a stream: " + cuda_error_text(e));
    if (cublasCreate(&cublas_) != CUBLAS_STATUS_SUCCESS) return internal_error("cuda: cublasCreate failed");
    cublasSetStream(cublas_, stream_);
    void* ws = device_alloc(kCublasWorkspaceBytes, "cuBLAS workspace");
    if (!ws) return take_error();
    cublasSetWorkspace(cublas_, ws, kCublasWorkspaceBytes);
    cuda::block_trace::start_from_environment();  // a no-op unless built with BITLIGHT_CUDA_BLOCK_TRACE
    return Status::Ok();
  }

  ~CudaBackendImpl() override {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
    destroy_graph();
    if (cublas_) cublasDestroy(cublas_);
    for (void* p : allocations_) cudaFree(p);
    for (void* p : host_allocations_) cudaFreeHost(p);
    for (cudaEvent_t e : read_events_)
      if (e) cudaEventDestroy(e);
    if (stream_) cudaStreamDestroy(stream_);
  }

  BackendKind kind() const override { return BackendKind::cuda; }
  std::string name() const override {
    return "cuda (" + std::string(props_.name) + ", sm_" + std::to_string(props_.major * 10 + props_.minor) + ", " +
           std::to_string(props_.multiProcessorCount) + " SMs)";
  }
  Device device() const override { return Device::cuda; }
  bool supports(DType weight_type) const override { return cuda::weight_format_supported(weight_type); }
  int multiprocessor_count() const override { return props_.multiProcessorCount; }

  Expected<double> measure_read_bandwidth_gbps() override {
    const double gbps = cuda::measure_read_gbps(size_t{4} << 30, props_.multiProcessorCount, stream_);
    if (gbps <= 0) return out_of_memory("cuda: the bandwidth probe could not allocate or run on 4 GiB");
    return gbps;
  }

  std::string pci_bus_id() const override {
    char id[32] = {};
    return cudaDeviceGetPCIBusId(id, sizeof(id), device_) == cudaSuccess ? std::string(id) : std::string();
  }

  // cuBLAS bf16 GEMM, m = n = k = 8192 (A, B bf16 random bits of moderate size, C fp32), 3
  // warm-up runs then the median of 10 timed with events: the card's bf16 tensor-core rate.
  Expected<double> measure_bf16_tflops() override {
    constexpr int kN = 8192;
    const size_t elems = static_cast<size_t>(kN) * kN;
    void *a = nullptr, *b = nullptr, *c = nullptr;
    auto release = [&] {
      cudaFree(a), cudaFree(b), cudaFree(c);
      cudaGetLastError();
    };
    if (cudaMalloc(&a, elems * 2) != cudaSuccess || cudaMalloc(&b, elems * 2) != cudaSuccess ||
        cudaMalloc(&c, elems * 4) != cudaSuccess) {
      release();
      return out_of_memory("cuda: no room for the 8192^3 bf16 GEMM probe (640 MiB)");
    }
    // 0x3C00..0x3CFF as bf16 is ~0.0078..0.0086: finite products, no denormals.
    cudaMemsetAsync(a, 0x3C, elems * 2, stream_);
    cudaMemsetAsync(b, 0x3C, elems * 2, stream_);
    const float alpha = 1.0f, beta = 0.0f;
    auto gemm = [&] {
      return cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, kN, kN, kN, &alpha, a, CUDA_R_16BF, kN, b, CUDA_R_16BF, kN,
                          &beta, c, CUDA_R_32F, kN, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    };
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    std::vector<float> ms;
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    for (int i = 0; i < 13 && st == CUBLAS_STATUS_SUCCESS; ++i) {
      cudaEventRecord(start, stream_);
      st = gemm();
      cudaEventRecord(stop, stream_);
      cudaEventSynchronize(stop);
      float t = 0;
      cudaEventElapsedTime(&t, start, stop);
      if (i >= 3) ms.push_back(t);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    release();
    if (st != CUBLAS_STATUS_SUCCESS || ms.empty())
      return internal_error(std::string("cuda: bf16 GEMM probe failed: ") + cublasGetStatusString(st));
    std::sort(ms.begin(), ms.end());
    const double seconds = ms[ms.size() / 2] / 1e3;
    return 2.0 * kN * kN * static_cast<double>(kN) / seconds / 1e12;
  }

  Expected<Tensor> alloc(DType dtype, std::array<int64_t, 4> ne) override {
    const DTypeInfo* info = dtype_info(dtype);
    if (!info) return invalid_argument("cuda alloc: unknown dtype id " + std::to_string(static_cast<uint32_t>(dtype)));
    for (int64_t n : ne)
      if (n < 0) return invalid_argument("cuda alloc: negative dimension");
    if (ne[0] % info->block_elems != 0)
      return invalid_argument("cuda alloc: ne[0] = " + std::to_string(ne[0]) + " is not a multiple of the " +
                              std::string(info->name) + " block size " + std::to_string(info->block_elems));
    Tensor t{nullptr, dtype, ne, Device::cuda};
    void* p = device_alloc(t.bytes(), "tensor " + shape_string(t));
    if (!p) return take_error();
    t.data = p;
    return t;
  }

  // Weights of Q4_0, Q4_1, Q8_0 and Q6_K whose rows are whole tiles are stored in the tiled
  // layout (kernels/cuda/weight_layout.cuh): copied as they are into a staging buffer, then
  // rearranged on the device. Same bytes, same dtype and shape; read() gives the GGUF bytes.
  // Every bl<b>g<g> tensor is kept in its device layout (kernels/cuda/bl_device_layout.h),
  // converted in place as it arrives (upload_weight, write) and back as read() hands it out.
  bool copies_weights(DType, int64_t) const override { return true; }  // device memory

  Expected<Tensor> upload_weight(const Tensor& host) override {
    if (quant::is_bl_group(host.dtype) && !whole_bl_tile_groups(host.dtype, 0, host.bytes()))
      return invalid_argument("cuda upload of " + shape_string(host) + ": not whole tile groups of " +
                              std::string(dtype_name(host.dtype)) + " (16 rows x the group's columns)");
    BL_ASSIGN_OR_RETURN(Tensor t, alloc(host.dtype, host.ne));
    const bool tile = cuda::weight_tileable(host.dtype, host.ne[0]) && host.bytes() > 0;
    void* staging = nullptr;
    if (tile) {
      const cudaError_t a = cudaMalloc(&staging, host.bytes());
      if (a != cudaSuccess) {
        cudaGetLastError();
        return out_of_memory("cuda upload of " + shape_string(host) + ": no room for a staging copy of " +
                             bytes_text(host.bytes()) + " to tile it: " + cuda_error_text(a));
      }
    }
    cudaError_t e = cudaMemcpyAsync(tile ? staging : t.data, host.data, host.bytes(), cudaMemcpyDefault, stream_);
    if (e == cudaSuccess && tile) {
      cuda::launch_tile_weight(host.dtype, staging, t.data, t.rows(), t.row_size(), stream_);
      e = cudaGetLastError();
    }
    if (e == cudaSuccess && quant::is_bl_group(host.dtype)) {
      cuda::launch_swap_bl_layout(host.dtype, t.data, host.bytes(), stream_);
      e = cudaGetLastError();
    }
    const cudaError_t s = cudaStreamSynchronize(stream_);
    if (staging) cudaFree(staging);
    if (e == cudaSuccess) e = s;
    if (e != cudaSuccess) return internal_error("cuda upload of " + shape_string(host) + ": " + cuda_error_text(e));
    if (tile) tiled_[static_cast<const uint8_t*>(t.data)] = {t.bytes(), t.row_size()};
    return t;
  }

  void write(Tensor& dst, const void* src, size_t bytes, size_t offset_bytes) override {
    if (!expect(!capturing_, "write", "host-to-device copies cannot be captured: write before capture/replay")) return;
    if (!expect(offset_bytes + bytes <= dst.bytes(), "write", "range past the end of " + shape_string(dst))) return;
    const bool bl = quant::is_bl_group(dst.dtype);
    if (bl && !expect(whole_bl_tile_groups(dst.dtype, offset_bytes, bytes), "write",
                      "a bl weight is written in whole tile groups only: " + shape_string(dst)))
      return;
    note(cudaMemcpyAsync(static_cast<char*>(dst.data) + offset_bytes, src, bytes, cudaMemcpyHostToDevice, stream_), "write");
    if (bl) {
      cuda::launch_swap_bl_layout(dst.dtype, static_cast<char*>(dst.data) + offset_bytes, bytes, stream_);
      note(cudaGetLastError(), "write");
    }
    activated_gate_.reset();
    staged_next_.reset();
  }

  void read(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes) override {
    if (!expect(!capturing_, "read", "device-to-host copies cannot be captured")) return;
    if (!expect(offset_bytes + bytes <= src.bytes(), "read", "range past the end of " + shape_string(src))) return;
    const bool tiled = view(src).tiled;
    const size_t rb = src.row_size();
    if (tiled && !expect(offset_bytes % rb == 0 && bytes % rb == 0, "read",
                         "a weight stored tiled reads back in whole rows only: " + shape_string(src)))
      return;
    const bool bl = quant::is_bl_group(src.dtype);
    if (bl && !expect(whole_bl_tile_groups(src.dtype, offset_bytes, bytes), "read",
                      "a bl weight reads back in whole tile groups only: " + shape_string(src)))
      return;
    note(cudaMemcpyAsync(dst, static_cast<const char*>(src.data) + offset_bytes, bytes, cudaMemcpyDeviceToHost, stream_), "read");
    note(cudaStreamSynchronize(stream_), "read");
    if (tiled && bytes > 0) {  // back to the GGUF layout, row by row through one row of scratch
      std::vector<uint8_t> row(rb);
      for (size_t off = 0; off < bytes; off += rb) {
        std::memcpy(row.data(), static_cast<uint8_t*>(dst) + off, rb);
        cuda::untile_rows_on_host(src.dtype, row.data(), static_cast<uint8_t*>(dst) + off, 1, rb);
      }
    }
    if (bl) cuda::swap_bl_layout_on_host(src.dtype, dst, bytes);
  }

  void synchronize() override { note(cudaStreamSynchronize(stream_), "synchronize"); }

  void* alloc_host(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
      cudaGetLastError();
      record(out_of_memory("cuda: cannot allocate " + bytes_text(bytes) + " of page-locked host memory: " +
                           cuda_error_text(e)));
      return nullptr;
    }
    host_allocations_.push_back(p);
    return p;
  }

  // The copy, then an event of a ring of kReadsInFlight after it; the ticket names the event.
  uint64_t read_async(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes) override {
    const uint64_t ticket = reads_issued_++;
    if (!expect(!capturing_, "read_async", "device-to-host copies cannot be captured")) return ticket;
    if (!expect(offset_bytes + bytes <= src.bytes() && !view(src).tiled && !quant::is_bl_group(src.dtype),
                "read_async", "a range past the end of " + shape_string(src) + ", or a weight stored tiled or bl"))
      return ticket;
    cudaEvent_t& event = read_events_[ticket % kReadsInFlight];
    if (!event) note(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "read_async");
    note(cudaMemcpyAsync(dst, static_cast<const char*>(src.data) + offset_bytes, bytes, cudaMemcpyDeviceToHost, stream_),
         "read_async");
    if (event) note(cudaEventRecord(event, stream_), "read_async");
    return ticket;
  }

  // An event reused by a later read marks a later point of the stream: waiting for it waits for
  // this read too.
  Status wait_read(uint64_t ticket) override {
    if (cudaEvent_t event = read_events_[ticket % kReadsInFlight]) note(cudaEventSynchronize(event), "wait_read");
    return take_error();
  }

  // ---- ops ----

  void get_rows(const Tensor& table, const Tensor& ids, Tensor& out) override {
    const char* op = "get_rows";
    if (!on_device({&table, &ids, &out}, op) || !expect(ids.dtype == DType::I32, op, "ids must be i32") ||
        !expect(out.dtype == DType::F32 && out.ne[0] == table.ne[0] && out.rows() == ids.elements(), op,
                "out " + shape_string(out) + " does not match table " + shape_string(table) + " and " +
                    std::to_string(ids.elements()) + " ids") ||
        !expect(supports(table.dtype), op, "table format " + std::string(dtype_name(table.dtype)) + " unsupported"))
      return;
    cuda::launch_get_rows(view(table), ids.as<int32_t>(), ids.elements(), out.as<float>(), stream_);
    check_launch(op);
  }

  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    const char* op = "rms_norm";
    if (!on_device({&x, &weight, &out}, op) || !all_f32({&x, &weight, &out}, op) ||
        !expect(weight.elements() == x.ne[0] && out.ne == x.ne, op, "shapes " + shape_string(x) + ", weight " +
                                                                        shape_string(weight) + ", out " + shape_string(out)))
      return;
    cuda::launch_rms_norm(x.as<float>(), weight.as<float>(), eps, x.ne[0], x.rows(), out.as<float>(), stream_);
    check_launch(op);
  }

  void add_rms_norm(Tensor& x, Tensor& s, const Tensor& weight, float eps) override {
    const char* op = "add_rms_norm";
    if (!on_device({&x, &s, &weight}, op) || !all_f32({&x, &s, &weight}, op) ||
        !expect(weight.elements() == s.ne[0] && x.ne == s.ne && x.data != s.data, op,
                "shapes " + shape_string(x) + ", s " + shape_string(s) + ", weight " + shape_string(weight) +
                    " (x and s distinct)"))
      return;
    cuda::launch_add_rms_norm(s.as<float>(), weight.as<float>(), eps, s.ne[0], s.rows(), x.as<float>(), stream_);
    check_launch(op);
  }

  void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias) override {
    const char* op = "matmul";
    if (!matmul_operands_ok(w, x, out, bias, op)) return;
    const int64_t n = x.rows();
    if (n == 0) return;
    const float* b = bias ? bias->as<float>() : nullptr;
    if (n <= cuda::kGemvMaxTokens) {
      if (!cuda::launch_gemv(view(w), x.as<float>(), static_cast<int>(n), out.as<float>(), b, stream_))
        record(internal_error("matmul: no GEMV kernel for " + shape_string(w) + " with this alignment of x"));
      check_launch(op);
      return;
    }
    prefill_matmul(w, x, out, MatmulFusion{}, bias);
    check_launch(op);
  }

  void add(const Tensor& a, const Tensor& b, Tensor& out) override {
    const char* op = "add";
    if (!on_device({&a, &b, &out}, op) || !all_f32({&a, &b, &out}, op) ||
        !expect(a.ne == b.ne && a.ne == out.ne, op, "shapes differ: " + shape_string(a) + ", " + shape_string(b)))
      return;
    cuda::launch_add(a.as<float>(), b.as<float>(), out.as<float>(), a.elements(), stream_);
    check_launch(op);
  }

  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    const char* op = "silu_mul";
    if (!on_device({&gate, &up, &out}, op) || !all_f32({&gate, &up, &out}, op) ||
        !expect(gate.ne == up.ne && gate.ne == out.ne, op, "shapes differ: " + shape_string(gate) + ", " + shape_string(up)))
      return;
    cuda::launch_silu_mul(gate.as<float>(), up.as<float>(), out.as<float>(), gate.elements(), stream_);
    check_launch(op);
  }

  void gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    const char* op = "gelu_mul";
    if (!on_device({&gate, &up, &out}, op) || !all_f32({&gate, &up, &out}, op) ||
        !expect(gate.ne == up.ne && gate.ne == out.ne, op, "shapes differ: " + shape_string(gate) + ", " + shape_string(up)))
      return;
    cuda::launch_gelu_mul(gate.as<float>(), up.as<float>(), out.as<float>(), gate.elements(), stream_);
    check_launch(op);
  }

  void scale(const Tensor& x, float factor, Tensor& out) override {
    const char* op = "scale";
    if (!on_device({&x, &out}, op) || !all_f32({&x, &out}, op) ||
        !expect(x.ne == out.ne, op, "shapes differ: " + shape_string(x) + ", " + shape_string(out)))
      return;
    cuda::launch_scale(x.as<float>(), factor, out.as<float>(), x.elements(), stream_);
    check_launch(op);
  }

  void rope(Tensor& x, const Tensor& positions, const RopeParams& p) override {
    const char* op = "rope";
    const int64_t n = x.ne[2] * x.ne[3];
    if (!on_device({&x, &positions}, op) || !all_f32({&x}, op) ||
        !expect(positions.dtype == DType::I32 && positions.elements() == n, op, "positions must be i32 [n_tokens]") ||
        !expect(p.n_dims > 0 && p.n_dims % 2 == 0 && p.n_dims <= x.ne[0], op,
                "n_dims " + std::to_string(p.n_dims) + " must be even and <= head_dim " + std::to_string(x.ne[0])))
      return;
    cuda::RopeLaunch rl = rope_launch(x, p);
    if (!with_freq_factors(p, rl)) return;
    cuda::launch_rope(x.as<float>(), positions.as<int32_t>(), rl, stream_);
    check_launch(op);
  }

  void kv_store(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache, const Tensor& positions) override {
    const char* op = "kv_store";
    const int64_t kv_dim = k.ne[0] * k.ne[1], n = k.ne[2] * k.ne[3];
    const bool f16 = k_cache.dtype == DType::F16;
    if (!on_device({&k, &v, &k_cache, &v_cache, &positions}, op) || !all_f32({&k, &v}, op) ||
        !expect(k.ne == v.ne, op, "k and v shapes differ") ||
        !expect((f16 || k_cache.dtype == DType::F32) && v_cache.dtype == k_cache.dtype, op, "caches must both be f16 or f32") ||
        !expect(k_cache.ne == v_cache.ne && k_cache.ne[0] * k_cache.ne[1] == kv_dim, op,
                "cache " + shape_string(k_cache) + " does not match k " + shape_string(k)) ||
        !expect(positions.dtype == DType::I32 && positions.elements() == n, op, "positions must be i32 [n_tokens]"))
      return;
    cuda::launch_kv_store(k.as<float>(), v.as<float>(), k_cache.data, v_cache.data, f16, kv_dim, n,
                          k_cache.ne[2] * k_cache.ne[3], positions.as<int32_t>(), stream_);
    note_cache_write(k_cache, positions, n, 0);
    check_launch(op);
  }

  // The operand checks of attention and attention_each_sequence (device, types, shapes).
  bool attention_operands_ok(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& positions,
                             const AttentionParams& p, const Tensor& out, const char* op) {
    const int64_t n = q.ne[2] * q.ne[3];
    const bool f16 = k_cache.dtype == DType::F16;
    return on_device({&q, &k_cache, &v_cache, &positions, &out}, op) && all_f32({&q, &out}, op) &&
           expect(p.n_head > 0 && p.n_head_kv > 0 && p.n_head % p.n_head_kv == 0, op, "n_head must be a multiple of n_head_kv") &&
           expect(p.head_dim > 0 && p.head_dim % 2 == 0 && p.head_dim <= cuda::kAttentionMaxHeadDim, op,
                "head_dim " + std::to_string(p.head_dim) + " must be even and <= 256") &&
           expect(q.ne[0] == p.head_dim && q.ne[1] == p.n_head && out.ne == q.ne, op,
                "q " + shape_string(q) + " / out " + shape_string(out) + " do not match the params") &&
           expect((f16 || k_cache.dtype == DType::F32) && v_cache.dtype == k_cache.dtype && k_cache.ne == v_cache.ne &&
                    k_cache.ne[0] == p.head_dim && k_cache.ne[1] == p.n_head_kv, op,
                "caches " + shape_string(k_cache) + " do not match the params") &&
           expect(positions.dtype == DType::I32 && positions.elements() == n, op, "positions must be i32 [n_tokens]");
  }

  // The split-KV decode attention (attention.cu) over al.n_ctx slots per token's cache region:
  // as many splits as fill the SMs, their partials in the attention workspace.
  // Picks al.n_splits and sets ws to the partials' workspace (null when one split); false when
  // that memory cannot be had (the error is recorded).
  bool split_kv_workspace(cuda::AttentionLaunch& al, float*& ws) {
    al.n_splits = std::min(cuda::attention_pick_splits(al.n_head_kv, al.n_tokens, al.n_ctx, props_.multiProcessorCount),
                           attention_max_splits_);
    ws = nullptr;
    if (const size_t floats = cuda::attention_workspace_floats(al); floats > 0) {
      ws = static_cast<float*>(workspace(attn_ws_, floats * sizeof(float), "attention split-KV partials"));
      if (!ws) return false;
    }
    return true;
  }

  // Kept for the next split-KV attention launch (kv_loads_early): the last cache write since.
  void note_cache_write(const Tensor& k_cache, const Tensor& positions, int64_t n_tokens, int64_t seq_slots) {
    unread_cache_write_ = CacheWrite{k_cache.data, positions.data, n_tokens, seq_slots};
  }
  // Whether the split-KV attention about to be launched may load the K/V rows of all slots but
  // each token's own before it waits for the kernel before it (AttentionLaunch::kv_loads_early):
  // one token per sequence, and no cache write since the last attention launch other than one
  // to these tokens' own slots (same caches, positions and shape). A kernel that lets its
  // successor launch early may itself still wait for the one before it, so any other write,
  // however many ops back, is taken as possibly still running.
  bool kv_loads_early(const cuda::AttentionLaunch& al, const Tensor& k_cache, const Tensor& positions) {
    const std::optional<CacheWrite> w = std::exchange(unread_cache_write_, std::nullopt);
    const bool one_per_sequence = al.n_tokens == 1 || al.seq_slots > 0;
    return kv_loads_early_enabled_ && one_per_sequence && (!w || (w->k_cache == k_cache.data && w->positions == positions.data &&
                                       w->n_tokens == al.n_tokens && w->seq_slots == al.seq_slots));
  }

  void launch_split_kv_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& positions,
                                 const AttentionParams& p, cuda::AttentionLaunch al, Tensor& out, const char* op) {
    float* ws;
    if (!split_kv_workspace(al, ws)) return;
    al.kv_loads_early = kv_loads_early(al, k_cache, positions);
    cuda::launch_attention(q.as<float>(), k_cache.data, v_cache.data, positions.as<int32_t>(), al, ws, out.as<float>(),
                           stream_, attention_sums_launch(p, al, ws, out));
    check_launch(op);
  }

  // A one-token attention whose hint names the GEMV after it (AttentionParams::out_matmul_next)
  // leaves its softmax unnormalised for that GEMV to divide (cuda::AttentionSums): no combine
  // kernel. Returns the launch's sums and notes them in pending_attention_ for fused_matmul; an
  // empty launch (out written as usual) without the hint or where the GEMV would not take the
  // sums. Two buffers in turn: each launch adds into one and zeroes the other, whose GEMV has
  // completed by the time the launch's kernel passes its wait; so the buffer a launch adds into
  // is always zero (capture_graph / replay_graph keep that for graphs).
  cuda::AttentionSumsLaunch attention_sums_launch(const AttentionParams& p, const cuda::AttentionLaunch& al, float* ws,
                                                  const Tensor& out) {
    pending_attention_.reset();
    const Tensor* w = p.out_matmul_next;
    if (!attention_sums_enabled_ || !w || w->device != Device::cuda || !cuda::attention_sums_apply(al) ||
        !cuda::gemv_after_attention_applies(view(*w), al.n_head, al.head_dim))
      return {};
    const size_t bytes = static_cast<size_t>(cuda::attention_sums_floats(al.n_head, al.head_dim)) * sizeof(float);
    if (sums_ws_[0].bytes < bytes || sums_ws_[1].bytes < bytes) {
      if (capturing_) return {};  // sized by an eager step (Session::step runs one before capturing)
      for (Workspace& b : sums_ws_) {
        if (!workspace(b, bytes, "attention sums")) return {};
        const cudaError_t e = cudaMemsetAsync(b.ptr, 0, b.bytes, stream_);
        note(e, "attention sums");
        if (e != cudaSuccess) {
          b = {};  // allocated again (and zeroed) next time
          return {};
        }
      }
      set_graph_owner(nullptr);  // a graph made before holds the old buffers: every session captures again
    }
    float* use = static_cast<float*>(sums_ws_[sums_next_].ptr);
    const Workspace& other = sums_ws_[1 - sums_next_];
    sums_next_ = 1 - sums_next_;
    pending_attention_ = PendingAttention{out.data, w->data, cuda::attention_sums_view(al, ws, use)};
    return {use, static_cast<float*>(other.ptr), static_cast<int64_t>(other.bytes / sizeof(float))};
  }

  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& positions,
                 const AttentionParams& p, Tensor& out) override {
    const char* op = "attention";
    const int64_t n = q.ne[2] * q.ne[3];
    const bool f16 = k_cache.dtype == DType::F16;
    if (!attention_operands_ok(q, k_cache, v_cache, positions, p, out, op)) return;
    cuda::AttentionLaunch al{p.n_head, p.n_head_kv, p.head_dim, p.scale, n, k_cache.ne[2] * k_cache.ne[3], f16, 1};
    al.window = p.window;
    if (prefill_attention_takes(q, k_cache, v_cache, out, al)) {
      cuda::launch_prefill_attention(q.as<float>(), k_cache.data, v_cache.data, positions.as<int32_t>(), al,
                                     out.as<float>(), stream_);
      check_launch(op);
      return;
    }
    launch_split_kv_attention(q, k_cache, v_cache, positions, p, al, out, op);
  }

  // Whether a prompt chunk's attention runs on the tensor-core kernel (prefill_attention.cu),
  // which reads q and writes out in float2 and the caches in 16-byte chunks.
  static bool prefill_attention_takes(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& out,
                                      const cuda::AttentionLaunch& al) {
    const bool aligned = reinterpret_cast<uintptr_t>(q.data) % 8 == 0 && reinterpret_cast<uintptr_t>(out.data) % 8 == 0 &&
                         reinterpret_cast<uintptr_t>(k_cache.data) % 16 == 0 && reinterpret_cast<uintptr_t>(v_cache.data) % 16 == 0;
    return al.n_tokens >= cuda::kPrefillAttentionMinTokens && aligned && cuda::prefill_attention_applies(al);
  }

  // One launch for all sequences (attention.cu with AttentionLaunch::seq_slots): the split-KV
  // kernel's grid already has a token dimension, each token now reads its own cache region.
  void attention_each_sequence(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& positions,
                               const AttentionParams& p, int64_t seq_slots, Tensor& out) override {
    const char* op = "attention_each_sequence";
    const int64_t n = q.ne[2] * q.ne[3];
    const bool f16 = k_cache.dtype == DType::F16;
    if (!attention_operands_ok(q, k_cache, v_cache, positions, p, out, op) ||
        !expect(seq_slots > 0 && k_cache.ne[2] * k_cache.ne[3] >= n * seq_slots, op,
                "caches " + shape_string(k_cache) + " hold fewer than " + std::to_string(n) + " sequences of " +
                    std::to_string(seq_slots) + " slots"))
      return;
    cuda::AttentionLaunch al{p.n_head, p.n_head_kv, p.head_dim, p.scale, n, seq_slots, f16, 1, seq_slots};
    al.window = p.window;
    launch_split_kv_attention(q, k_cache, v_cache, positions, p, al, out, op);
  }

  void rope_kv_store_each_sequence(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                   const Tensor& positions, const RopeParams& p, int64_t seq_slots) override {
    const char* op = "rope_kv_store_each_sequence";
    const int64_t n = q.ne[2] * q.ne[3];
    if (!expect(seq_slots > 0 && k_cache.ne[2] * k_cache.ne[3] >= n * seq_slots && v_cache.ne == k_cache.ne, op,
                "caches " + shape_string(k_cache) + " hold fewer than " + std::to_string(n) + " sequences of " +
                    std::to_string(seq_slots) + " slots"))
      return;
    rope_kv_store_checked(q, k, v, k_cache, v_cache, positions, p, seq_slots, op);
  }

  // ---- fused ops (backend.h): one kernel where the GEMV takes the fusion, else the plain ops ----

  void fused_matmul(const Tensor& w, const Tensor& x, Tensor& out, const MatmulFusion& f, const Tensor* bias) override {
    const char* op = "fused_matmul";
    const int64_t cols = w.ne[0], n = x.rows();
    if (!fusion_ok(f, cols, n, op)) return;
    const Tensor* extra = f.norm ? f.norm : f.up;
    // A prompt chunk: the prologue makes the GEMM's fp16 operand, the residual add is its beta.
    if (n > cuda::kGemvMaxTokens && w.dtype != DType::F32) {
      if (matmul_operands_ok(w, x, out, bias, op)) prefill_matmul(w, x, out, f, bias);
      check_launch(op);
      return;
    }
    cuda::GemvFusion g{f.norm ? f.norm->as<float>() : nullptr, f.eps,
                       f.up ? f.up->as<float>() : nullptr, f.accumulate};
    if (n == 1) g.rope_store = rope_store_for(w, out, f);
    const bool operands_ok = on_device({&w, &x, &out}, op) && all_f32({&x, &out}, op) && supports(w.dtype) &&
                             x.ne[0] == cols && out.ne[0] == w.rows() && out.rows() == n &&
                             (!bias || (bias->dtype == DType::F32 && bias->elements() == w.rows()));
    // The GEMV before staged x for this one (MatmulFusion::norm_next): no quantize kernel.
    const std::optional<StagedNext> staged = std::exchange(staged_next_, std::nullopt);
    if (staged && f.norm && staged->x == x.data && staged->norm == f.norm->data && staged->w == w.data && n == 1 &&
        operands_ok && cuda::launch_gemv_staged(view(w), staged->bytes, out.as<float>(), bias ? bias->as<float>() : nullptr,
                                                g, stream_)) {
      check_launch(op);
      note_rope_store(g, f);
      return;
    }
    // The attention just before left x as unnormalised sums for this GEMV to divide
    // (AttentionParams::out_matmul_next; attention_sums_launch checked that the GEMV takes them).
    if (const std::optional<PendingAttention> a = std::exchange(pending_attention_, std::nullopt)) {
      if (expect(x.data == a->out && w.data == a->w && n == 1 && !extra && operands_ok, op,
                 "the attention before left its output unnormalised for its out_matmul_next, which is not this "
                 "matmul") &&
          expect(cuda::launch_gemv_after_attention(view(w), a->sums, out.as<float>(),
                                                   bias ? bias->as<float>() : nullptr, f.accumulate, stream_),
                 op, "the GEMV after the attention did not launch"))
        check_launch(op);
      return;
    }
    // The norm / SwiGLU prologue inside the GEMV pays off for narrow inputs only: every block
    // redoes it before its weights stream (H100, docs/cuda.md: 8B q8_0, 4096 / 14336 columns,
    // -18 %; 8B q4_0 / q8_0 with the norm alone inside at 4096 columns, -15 / -22 %). At 2048
    // columns (1B), since the quantize kernel lets the GEMV launch before it waits, it depends on
    // the format: staged, q8_0 1073 -> 1184 tok/s, q4_0 1499 -> 1505, q4_1 the same, but q4_k
    // 1467 -> 1410 and q6_k 1282 -> 1259; so the block formats of 32 stage from 1025 columns,
    // the k-quants from 2049. Wider inputs: one token on the dp4a path has x quantized once by a
    // small kernel into the scratch (replacing the rms_norm / silu_mul kernel), else the
    // separate kernel first; both keep the fused residual add.
    // F16 / BF16 / F32 weights, one token: the fp32 GEMV applies the norm (and with
    // fp32_prologue_ all, SwiGLU) to x itself, so the rms_norm (silu_mul) kernel goes. A
    // prologue it is not to take runs as a kernel of its own (below). Measured on the H100 (8B
    // f16, docs/cuda.md "Eleventh session"): the norm inside, 87 -> 90 % of HBM read; the whole
    // SwiGLU inside the down GEMV, slower (every block recomputes silu over all of x).
    // With swiglu_next (MatmulFusion) the gate/up GEMV stores silu(gate), and the down GEMV right
    // after it multiplies by up only: no silu_mul kernel between them.
    const bool plain = w.dtype == DType::F16 || w.dtype == DType::BF16 || w.dtype == DType::F32;
    const std::optional<ActivatedGate> activated = std::exchange(activated_gate_, std::nullopt);
    const bool gate_activated = f.up && activated && activated->gate == x.data && activated->up == f.up->data &&
                                activated->cols == cols && activated->down == w.data;
    const bool fp32_prologue = f.norm ? fp32_prologue_ != Fp32Prologue::none
                                      : fp32_prologue_ == Fp32Prologue::all || gate_activated;
    const bool prologue_apart = extra && plain && !fp32_prologue;
    if (extra && plain && fp32_prologue && n == 1 && operands_ok) {
      cuda::GemvFusion gp = g;
      gp.gate_activated = gate_activated;
      const int64_t half = out.ne[0] / 2;
      const bool activate = f.norm && f.swiglu_next && f.swiglu_next->device == Device::cuda &&
                            fp32_prologue_ == Fp32Prologue::split && out.ne[0] % 2 == 0 && f.swiglu_next->ne[0] == half &&
                            cuda::gemv_fp32_prologue_applies(view(*f.swiglu_next), out.as<float>(), out.as<float>() + half);
      if (activate) gp.silu_rows = half;
      if (cuda::launch_gemv_fused(view(w), x.as<float>(), 1, out.as<float>(), bias ? bias->as<float>() : nullptr, gp,
                                  stream_)) {
        check_launch(op);
        if (activate) activated_gate_ = ActivatedGate{out.data, out.as<float>() + half, half, f.swiglu_next->data};
        note_rope_store(gp, f);
        return;
      }
      expect(!gate_activated, op, "the gate was stored activated for this SwiGLU, but its GEMV did not launch");
    }
    // bl<b>g<g> as the block formats of 32 (not measured apart).
    const bool block32 = w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0 || w.dtype == DType::Q4_1 ||
                         quant::is_bl_group(w.dtype);
    const int64_t prologue_max_cols = block32 ? 1024 : 2048;
    const bool scratch_ok = f.scratch && f.scratch->dtype == DType::F32 && f.scratch->elements() >= cols * n;
    if (extra && cols > prologue_max_cols && scratch_ok && operands_ok) {
      // A GEMV adding into x may also stage the next one's x (MatmulFusion::norm_next; set only
      // where gemv_stages_next_applies, so it adds no reason for the launch to fail).
      cuda::GemvFusion gq = g;
      gq.stage_next = stage_next_for(w, out, f);
      if (cuda::launch_gemv_x_quantized_once(view(w), x.as<float>(), static_cast<int>(n), out.as<float>(),
                                             bias ? bias->as<float>() : nullptr, gq, f.scratch->data,
                                             f.scratch->bytes(), stream_)) {
        check_launch(op);
        if (gq.stage_next.dst)
          staged_next_ = StagedNext{out.data, f.norm_next->data, f.norm_next_matmul->data,
                                    cuda::staged_next_x(gq.stage_next, w.rows())};
        note_rope_store(gq, f);
        return;
      }
    }
    if (extra && cols > prologue_max_cols && scratch_ok) {
      Tensor xin = *f.scratch;
      xin.ne = {cols, n, 1, 1};
      if (f.norm)
        rms_norm(x, *f.norm, f.eps, xin);
      else
        silu_mul(x, *f.up, xin);
      Tensor rest_scratch = *f.scratch;  // after xin, for the default composition's product
      rest_scratch.data = xin.as<float>() + cols * n;
      rest_scratch.ne = {f.scratch->elements() - cols * n, 1, 1, 1};
      MatmulFusion rest = f;
      rest.norm = rest.up = nullptr;
      rest.scratch = &rest_scratch;
      fused_matmul(w, xin, out, rest, bias);
      return;
    }
    // The same checks as matmul; then the fused GEMV if one takes it.
    if (operands_ok && !prologue_apart && cuda::launch_gemv_fused(view(w), x.as<float>(), static_cast<int>(n), out.as<float>(),
                                               bias ? bias->as<float>() : nullptr, g, stream_)) {
      check_launch(op);
      note_rope_store(g, f);
      return;
    }
    Backend::fused_matmul(w, x, out, f, bias);  // the plain ops check and report
  }

  // A prompt chunk with fp16 (or all bf16) weights: x' made once, then one GEMM per matrix (at
  // pp2048 on the 8B shape each norm -> fp16 pass is ~18 us, a layer's GEMMs ~1.2 ms). Anything
  // else: fused_matmul for each.
  void fused_matmul_same_input(std::span<const MatmulOutput> outputs, const Tensor& x, const MatmulFusion& f) override {
    const char* op = "fused_matmul_same_input";
    const int64_t n = x.rows();
    bool one_operand = n > cuda::kGemvMaxTokens && outputs.size() > 1;
    for (const MatmulOutput& o : outputs)
      one_operand = one_operand && o.w->dtype != DType::F32 && o.w->ne[0] == outputs[0].w->ne[0] &&
                    (o.w->dtype == DType::BF16) == (outputs[0].w->dtype == DType::BF16);
    if (!one_operand) return Backend::fused_matmul_same_input(outputs, x, f);
    const int64_t cols = outputs[0].w->ne[0];
    if (!fusion_ok(f, cols, n, op)) return;
    for (const MatmulOutput& o : outputs)
      if (!matmul_operands_ok(*o.w, x, *o.out, o.bias, op)) return;
    const PrefillOperand x_half =
        prefill_operand(x, f, static_cast<int>(cols), static_cast<int>(n), outputs[0].w->dtype == DType::BF16);
    if (x_half.plain_ops) return Backend::fused_matmul_same_input(outputs, x, f);
    if (!x_half.data) return;  // the workspace failure is recorded
    if (cuda::in_loop_gemm_use() != cuda::InLoopGemmUse::off && outputs.size() <= cuda::kGemmMaxRowRanges) {
      const Tensor* ws[cuda::kGemmMaxRowRanges];
      void* outs[cuda::kGemmMaxRowRanges];
      for (size_t i = 0; i < outputs.size(); ++i) ws[i] = outputs[i].w, outs[i] = outputs[i].out->data;
      if (gemm_rows_together({ws, outputs.size()}, {outs, outputs.size()}, x_half.data, n, false, f.accumulate)) {
        for (const MatmulOutput& o : outputs)
          if (o.bias) cuda::launch_add_bias(o.out->as<float>(), o.bias->as<float>(), o.w->rows(), n, stream_);
        check_launch(op);
        return;
      }
    }
    for (const MatmulOutput& o : outputs) prefill_gemm(*o.w, x_half.data, *o.out, f.accumulate, o.bias);
    check_launch(op);
  }

  // Matrices stored one after another in device memory (a layer's q, k, v or gate, up, fused
  // at load: LlamaModel's row ranges): one in-loop GEMM over all their rows, each range
  // written to its own output [n][its rows] (H100: the 8B k and v products alone fill half the
  // SMs, docs/cuda.md). false (nothing launched) when they are not such a run or the GEMM does
  // not apply.
  bool gemm_rows_together(std::span<const Tensor* const> ws, std::span<void* const> outs, const uint16_t* x_half,
                          int64_t n, bool out_half, bool accumulate) {
    if (ws.size() < 2 || ws.size() > cuda::kGemmMaxRowRanges || outs.size() != ws.size()) return false;
    cuda::WeightView all = view(*ws[0]);
    cuda::GemmRowRange ranges[cuda::kGemmMaxRowRanges];
    for (size_t i = 0; i < ws.size(); ++i) {
      const cuda::WeightView v = view(*ws[i]);
      if (i > 0 && (v.dtype != all.dtype || v.cols != all.cols || v.row_bytes != all.row_bytes || v.tiled != all.tiled ||
                    v.data != static_cast<const uint8_t*>(all.data) + all.rows * all.row_bytes))
        return false;
      ranges[i] = {i == 0 ? 0 : all.rows, outs[i], v.rows};
      if (i > 0) all.rows += v.rows;
    }
    return cuda::launch_gemm_in_loop_row_ranges(all, x_half, n,
                                                std::span<const cuda::GemmRowRange>(ranges, ws.size()), out_half,
                                                accumulate, stream_);
  }

  // A prompt chunk with fp16 (or all bf16) operands: x' once, the gate and up GEMMs write fp16
  // (bf16) into a workspace, silu(gate) * up is made in place there as the down GEMM's operand,
  // and the down GEMM adds into x (beta = 1). At 8B pp2048 gate and up are 2 x 117 MB as fp32,
  // written by the GEMMs and read back by the SwiGLU pass; half of that as fp16. fp16's range
  // (65504) now bounds gate and up themselves, as it bounded silu(gate) * up, the down GEMM's
  // operand, before (bf16 has fp32's). f.gate and f.up are not written. Anything else: the
  // default.
  void fused_ffn(Tensor& x, const FfnBlock& f) override {
    const char* op = "fused_ffn";
    const int64_t n = x.rows(), cols = x.ne[0], n_ff = f.w_gate->rows();
    const bool bf16 = f.w_gate->dtype == DType::BF16;
    bool staged = n > cuda::kGemvMaxTokens && f.norm;
    for (const Tensor* w : {f.w_gate, f.w_up, f.w_down})
      staged = staged && w->dtype != DType::F32 && (w->dtype == DType::BF16) == bf16;
    if (!staged) return Backend::fused_ffn(x, f);
    if (!on_device({f.w_gate, f.w_up, f.w_down, &x, f.norm}, op) || !all_f32({&x, f.norm}, op) ||
        !expect(supports(f.w_gate->dtype) && supports(f.w_up->dtype) && supports(f.w_down->dtype), op,
                "weight format unsupported") ||
        !expect(f.w_gate->ne[0] == cols && f.w_up->ne[0] == cols && f.w_up->rows() == n_ff && f.w_down->ne[0] == n_ff &&
                    f.w_down->rows() == cols && f.norm->elements() == cols,
                op, "gate " + shape_string(*f.w_gate) + ", up " + shape_string(*f.w_up) + ", down " +
                        shape_string(*f.w_down) + ", x " + shape_string(x) + ", norm " + shape_string(*f.norm)))
      return;
    const PrefillOperand x_half =
        prefill_operand(x, MatmulFusion{.norm = f.norm, .eps = f.eps}, static_cast<int>(cols), static_cast<int>(n), bf16);
    if (x_half.plain_ops) return Backend::fused_ffn(x, f);
    const size_t elems = static_cast<size_t>(n_ff) * static_cast<size_t>(n);
    auto* gate_up = static_cast<uint16_t*>(workspace(ffn_ws_, 2 * elems * sizeof(uint16_t), "fp16 gate and up"));
    if (!x_half.data || !gate_up) return;
    const cudaDataType_t half_type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    const Tensor* gate_and_up[] = {f.w_gate, f.w_up};
    void* gate_and_up_out[] = {gate_up, gate_up + elems};
    if (bf16 || cuda::in_loop_gemm_use() != cuda::InLoopGemmUse::everywhere ||
        !gemm_rows_together(gate_and_up, gate_and_up_out, x_half.data, n, true, false)) {
      prefill_gemm_to(*f.w_gate, x_half.data, static_cast<int>(n), gate_up, half_type, false);
      prefill_gemm_to(*f.w_up, x_half.data, static_cast<int>(n), gate_up + elems, half_type, false);
    }
    cuda::launch_silu_mul_halves(gate_up, gate_up + elems, static_cast<int64_t>(elems), gate_up, bf16, stream_);
    prefill_gemm_to(*f.w_down, gate_up, static_cast<int>(n), x.data, CUDA_R_32F, true);
    check_launch(op);
  }

  void rope_kv_store(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache, const Tensor& positions,
                     const RopeParams& p) override {
    rope_kv_store_checked(q, k, v, k_cache, v_cache, positions, p, 0, "rope_kv_store");
  }

  // The operand checks of rope_kv_store (reported through op).
  bool rope_kv_operands_ok(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& k_cache,
                           const Tensor& v_cache, const Tensor& positions, const RopeParams& p, const char* op) {
    const int64_t n = q.ne[2] * q.ne[3], kv_dim = k.ne[0] * k.ne[1];
    const bool f16 = k_cache.dtype == DType::F16;
    return on_device({&q, &k, &v, &k_cache, &v_cache, &positions}, op) && all_f32({&q, &k, &v}, op) &&
           expect(q.ne[0] == k.ne[0] && k.ne == v.ne && k.ne[2] * k.ne[3] == n, op,
                "q " + shape_string(q) + ", k " + shape_string(k) + ", v " + shape_string(v) + " do not match") &&
           expect(p.n_dims > 0 && p.n_dims % 2 == 0 && p.n_dims <= q.ne[0] && p.n_dims <= cuda::kAttentionMaxHeadDim, op,
                "n_dims " + std::to_string(p.n_dims) + " must be even and <= head_dim " + std::to_string(q.ne[0]) +
                    " and <= " + std::to_string(cuda::kAttentionMaxHeadDim)) &&
           expect((f16 || k_cache.dtype == DType::F32) && v_cache.dtype == k_cache.dtype, op, "caches must both be f16 or f32") &&
           expect(k_cache.ne == v_cache.ne && k_cache.ne[0] * k_cache.ne[1] == kv_dim, op,
                "cache " + shape_string(k_cache) + " does not match k " + shape_string(k)) &&
           expect(positions.dtype == DType::I32 && positions.elements() == n, op, "positions must be i32 [n_tokens]");
  }

  // One token of one sequence with head_dim >= 128: the rope inside the attention kernel
  // (attention.cu, launch_rope_attention), one launch less per layer; otherwise the two ops.
  // Measured on an H100 (docs/cuda.md, "Decode step timeline"): 8B shapes (head_dim 128) q4_0
  // +3.7 %, q8_0 +3.5 %, f16 unchanged; the 1B shape (head_dim 64) q4_0 -4 %, not understood
  // yet, so smaller heads keep the rope kernel.
  static constexpr int kRopeInAttentionMinHeadDim = 128;
  void rope_kv_store_attention(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                               const Tensor& positions, const RopeParams& rope, const AttentionParams& attn,
                               Tensor& out) override {
    const char* op = "rope_kv_store_attention";
    const int64_t n = q.ne[2] * q.ne[3];
    // The QKV GEMV before rotated q, k and stored k, v already (MatmulFusion::rope_next).
    if (const std::optional<RopedQkv> r = std::exchange(roped_qkv_, std::nullopt);
        r && r->q == q.data && r->k_cache == k_cache.data && r->positions == positions.data && n == 1) {
      attention(q, k_cache, v_cache, positions, attn, out);
      return;
    }
    const bool f16 = k_cache.dtype == DType::F16;
    cuda::AttentionLaunch al{attn.n_head, attn.n_head_kv, attn.head_dim, attn.scale, n, k_cache.ne[2] * k_cache.ne[3],
                             f16, 1};
    al.window = attn.window;
    cuda::RopeLaunch rl = rope_launch(q, rope);
    if (rope_in_attention_ && prefill_attention_takes(q, k_cache, v_cache, out, al) && rope.n_dims == attn.head_dim &&
        q.ne[0] == attn.head_dim && cuda::rope_q_angles_apply(q.as<float>(), k.as<float>(), k_cache.data, rl)) {
      prompt_rope_kv_store_attention(q, k, v, k_cache, v_cache, positions, rope, attn, al, rl, out);
      return;
    }
    if (!rope_in_attention_ || (attn.head_dim < kRopeInAttentionMinHeadDim && !rope_in_attention_all_heads_) ||
        !cuda::rope_attention_applies(al, rl)) {
      Backend::rope_kv_store_attention(q, k, v, k_cache, v_cache, positions, rope, attn, out);
      return;
    }
    if (!rope_kv_operands_ok(q, k, v, k_cache, v_cache, positions, rope, op) ||
        !attention_operands_ok(q, k_cache, v_cache, positions, attn, out, op))
      return;
    if (!with_freq_factors(rope, rl)) return;
    float* ws;
    if (!split_kv_workspace(al, ws)) return;
    // No K/V rows loaded before the wait with the rope inside the kernel (al.kv_loads_early stays
    // false): allowed there, the 8B q4_0 step measured slower (H100, 451 -> 436-440 tok/s,
    // docs/cuda.md "Eleventh session"). This kernel's own write replaces the record before.
    note_cache_write(k_cache, positions, n, 0);  // the kernel stores the token's k and v
    cuda::launch_rope_attention(q.as<float>(), k.as<float>(), v.as<float>(), k_cache.data, v_cache.data,
                                positions.as<int32_t>(), al, rl, ws, out.as<float>(), stream_,
                                attention_sums_launch(attn, al, ws, out));
    check_launch(op);
  }

  // A prompt chunk (prefill attention, whole-head rotary, the one-block-per-token rope kernel):
  // the rope kernel rotates and stores k, stores v and writes each token's angles; the
  // attention kernel rotates q with them as it loads it (q is left unrotated).
  // al and rl as rope_kv_store_attention made them.
  void prompt_rope_kv_store_attention(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                      const Tensor& positions, const RopeParams& rope, const AttentionParams& attn,
                                      const cuda::AttentionLaunch& al, cuda::RopeLaunch rl, Tensor& out) {
    const char* op = "rope_kv_store_attention";
    if (!rope_kv_operands_ok(q, k, v, k_cache, v_cache, positions, rope, op) ||
        !attention_operands_ok(q, k_cache, v_cache, positions, attn, out, op))
      return;
    if (!with_freq_factors(rope, rl)) return;
    auto* angles = static_cast<float2*>(workspace(
        angles_ws_, static_cast<size_t>(al.n_tokens) * (rope.n_dims / 2) * sizeof(float2), "rope angles of a prompt chunk"));
    if (!angles) return;
    cuda::launch_rope_kv_store(q.as<float>(), k.as<float>(), v.as<float>(), k_cache.data, v_cache.data, al.cache_f16,
                               static_cast<int>(q.ne[1]), static_cast<int>(k.ne[1]), al.n_ctx, positions.as<int32_t>(),
                               rl, stream_, 0, angles);
    note_cache_write(k_cache, positions, al.n_tokens, 0);
    cuda::launch_prefill_attention(q.as<float>(), k_cache.data, v_cache.data, positions.as<int32_t>(), al,
                                   out.as<float>(), stream_, cuda::PrefillRope{angles, rope.neox});
    check_launch(op);
  }

  // rope_kv_store, or with seq_slots > 0 its one-sequence-per-token form.
  void rope_kv_store_checked(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                             const Tensor& positions, const RopeParams& p, int64_t seq_slots, const char* op) {
    const bool f16 = k_cache.dtype == DType::F16;
    if (!rope_kv_operands_ok(q, k, v, k_cache, v_cache, positions, p, op)) return;
    cuda::RopeLaunch rl = rope_launch(q, p);
    if (!with_freq_factors(p, rl)) return;
    cuda::launch_rope_kv_store(q.as<float>(), k.as<float>(), v.as<float>(), k_cache.data, v_cache.data, f16,
                               static_cast<int>(q.ne[1]), static_cast<int>(k.ne[1]), k_cache.ne[2] * k_cache.ne[3],
                               positions.as<int32_t>(), rl, stream_, seq_slots);
    note_cache_write(k_cache, positions, q.ne[2] * q.ne[3], seq_slots);
    check_launch(op);
  }

  void argmax(const Tensor& logits, Tensor& ids) override {
    const char* op = "argmax";
    const int64_t n = logits.rows();
    if (!on_device({&logits, &ids}, op) || !all_f32({&logits}, op) ||
        !expect(ids.dtype == DType::I32 && ids.elements() == n, op, "ids must be i32 [" + std::to_string(n) + "]"))
      return;
    if (!counter_workspace(argmax_ws_, argmax_capacity_, n, cuda::argmax_workspace_bytes, "argmax partial results", op))
      return;
    cuda::launch_argmax(logits.as<float>(), logits.ne[0], n, ids.as<int32_t>(), argmax_ws_.ptr, argmax_capacity_, stream_);
    check_launch(op);
  }

  bool can_sample_top_k(int top_k, int64_t n_vocab) const override { return cuda::sample_top_k_applies(top_k, n_vocab); }

  // The draw on the device (sample_top_k.cu). The records stay in device memory (a captured
  // graph replays with the numbers written before each step), so their top_k is not checked
  // here: callers ask can_sample_top_k first; an out-of-range top_k is clamped by the kernel.
  void sample_top_k(const Tensor& logits, const Tensor& draws, Tensor& ids) override {
    const char* op = "sample_top_k";
    const int64_t n = logits.rows();
    if (!on_device({&logits, &draws, &ids}, op) || !all_f32({&logits}, op) ||
        !expect(ids.dtype == DType::I32 && ids.elements() == n, op, "ids must be i32 [" + std::to_string(n) + "]") ||
        !expect(draws.bytes() >= static_cast<size_t>(n) * sizeof(cuda::TopKDrawParams), op,
                "draws must hold " + std::to_string(n) + " records"))
      return;
    if (!expect(cuda::sample_top_k_applies(1, logits.ne[0]), op,
                "a vocabulary of " + std::to_string(logits.ne[0]) + " is past the kernel's 64 slices of 4096"))
      return;
    if (!counter_workspace(sample_ws_, sample_capacity_, n, cuda::sample_top_k_workspace_bytes, "sampling partial results",
                           op))
      return;
    const auto* records = reinterpret_cast<const cuda::TopKDrawParams*>(draws.data);
    cuda::launch_sample_top_k(logits.as<float>(), logits.ne[0], n, records, ids.as<int32_t>(), sample_ws_.ptr,
                              sample_capacity_, stream_);
    check_launch(op);
  }

  // ---- graphs and errors ----

  Status capture_graph(const std::function<void()>& step) override {
    BL_RETURN_IF_ERROR(status());
    destroy_graph();
    cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) return internal_error("cuda: cudaStreamBeginCapture: " + cuda_error_text(e));
    capturing_ = true;
    // The graph zeroes the attention sums buffer its first attention adds into (see
    // attention_sums_launch): between replays the buffer may have been used by other work or,
    // with an odd number of attentions a step, by the graph's own last one. Capturing runs
    // nothing, so the buffers' turn is put back after it; a replay leaves it where the graph does.
    const int sums_before = sums_next_;
    if (const Workspace& first = sums_ws_[sums_next_]; first.ptr)
      note(cudaMemsetAsync(first.ptr, 0, first.bytes, stream_), "attention sums");
    step();
    sums_next_after_graph_ = sums_next_;
    sums_next_ = sums_before;
    pending_attention_.reset();
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    e = cudaStreamEndCapture(stream_, &graph);
    if (!error_.ok()) {
      if (graph) cudaGraphDestroy(graph);
      return take_error().with_context("cuda graph capture");
    }
    if (e != cudaSuccess) return internal_error("cuda: cudaStreamEndCapture: " + cuda_error_text(e));
    e = cudaGraphInstantiate(&graph_exec_, graph, 0);
    graph_ = graph;
    if (e != cudaSuccess) {
      destroy_graph();
      return internal_error("cuda: cudaGraphInstantiate: " + cuda_error_text(e));
    }
    return Status::Ok();
  }

  Status replay_graph() override {
    if (!graph_exec_) return invalid_argument("cuda: replay_graph without a captured graph");
    const cudaError_t e = cudaGraphLaunch(graph_exec_, stream_);
    if (e != cudaSuccess) return internal_error("cuda: cudaGraphLaunch: " + cuda_error_text(e));
    sums_next_ = sums_next_after_graph_;
    return Status::Ok();
  }

  Status status() override {
    if (!capturing_) note(cudaStreamSynchronize(stream_), "synchronize");
    return take_error();
  }

 private:
  struct Workspace {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  // tiled: w starts on a row of a weight that upload_weight stored tiled (a view of whole rows
  // of it is tiled too).
  cuda::WeightView view(const Tensor& w) const {
    cuda::WeightView v{w.data, w.dtype, w.ne[0], w.rows(), w.row_size(), false};
    const auto* p = static_cast<const uint8_t*>(w.data);
    auto it = tiled_.upper_bound(p);
    if (p && it != tiled_.begin()) {
      --it;
      const size_t off = static_cast<size_t>(p - it->first);
      v.tiled = off < it->second.bytes && off % it->second.row_bytes == 0 && it->second.row_bytes == w.row_size();
    }
    return v;
  }

  static bool whole_bl_tile_groups(DType t, size_t offset_bytes, size_t bytes) {
    const size_t group = cuda::bl_tile_group_bytes(t);
    return offset_bytes % group == 0 && bytes % group == 0;
  }

  void record(Status s) {
    if (error_.ok()) {
      std::fprintf(stderr, "bitlight cuda: %s\n", s.message().c_str());
      error_ = std::move(s);
    }
  }
  Status take_error() {
    Status s = std::move(error_);
    error_ = Status::Ok();
    return s;
  }
  bool expect(bool cond, const char* op, const std::string& what) {
    if (!cond) record(invalid_argument(std::string(op) + ": " + what));
    return cond;
  }
  bool on_device(std::initializer_list<const Tensor*> ts, const char* op) {
    for (const Tensor* t : ts)
      if (t->device != Device::cuda || (!t->data && t->elements() > 0))
        return expect(false, op, "tensor " + shape_string(*t) + " is not in this backend's memory");
    return true;
  }
  bool all_f32(std::initializer_list<const Tensor*> ts, const char* op) {
    for (const Tensor* t : ts)
      if (t->dtype != DType::F32) return expect(false, op, "tensor " + shape_string(*t) + " must be f32");
    return true;
  }
  void note(cudaError_t e, const char* what) {
    if (e != cudaSuccess) record(internal_error(std::string("cuda ") + what + ": " + cuda_error_text(e)));
  }
  // After every op's launches; an activated gate is for the op right after its GEMV only.
  void check_launch(const char* op) {
    note(cudaGetLastError(), op);
    activated_gate_.reset();
    staged_next_.reset();
    roped_qkv_.reset();
  }

  // MatmulFusion::rope_next for the one-token GEMV of w into out: the GemvRopeStore to launch it
  // with where the hint's operands are views of out = [q; k; v] and a GEMV takes the epilogue
  // (gemv_rope_store_applies: the dp4a, fp32 or bl one), else none (positions null).
  cuda::GemvRopeStore rope_store_for(const Tensor& w, const Tensor& out, const MatmulFusion& f) {
    const RopeNext& r = f.rope_next;
    if (!rope_store_enabled_ || !r.q || !r.k || !r.v || !r.k_cache || !r.v_cache || !r.positions || !r.rope ||
        out.rows() != 1 || r.q->ne[0] <= 0)
      return {};
    const Tensor &q = *r.q, &k = *r.k, &v = *r.v, &k_cache = *r.k_cache, &v_cache = *r.v_cache;
    const int64_t q_rows = q.elements(), kv_rows = k.elements();
    const bool views_of_out = q.data == out.data && k.data == out.as<float>() + q_rows &&
                              v.data == out.as<float>() + q_rows + kv_rows && v.elements() == kv_rows &&
                              out.elements() == q_rows + 2 * kv_rows && q.ne[2] * q.ne[3] == 1;
    auto here = [](const Tensor& t) { return t.device == Device::cuda && t.data; };
    const bool caches_ok = here(k_cache) && here(v_cache) && here(*r.positions) &&
                           (k_cache.dtype == DType::F16 || k_cache.dtype == DType::F32) && v_cache.dtype == k_cache.dtype &&
                           k_cache.ne == v_cache.ne && k_cache.ne[0] * k_cache.ne[1] == kv_rows &&
                           r.positions->dtype == DType::I32 && r.positions->elements() == 1;
    if (!views_of_out || !caches_ok) return {};
    cuda::GemvRopeStore e{r.positions->as<int32_t>(), rope_launch(q, *r.rope), q_rows, kv_rows, k_cache.data,
                          v_cache.data, k_cache.dtype == DType::F16, k_cache.ne[2] * k_cache.ne[3]};
    if (!cuda::gemv_rope_store_applies(view(w), e) || !with_freq_factors(*r.rope, e.rope)) return {};
    return e;
  }
  // After a GEMV launched with g: where it took the rope epilogue, the attention op after it
  // skips its rope (rope_kv_store_attention) and may load the cache rows before it waits.
  void note_rope_store(const cuda::GemvFusion& g, const MatmulFusion& f) {
    if (!g.rope_store.positions) return;
    roped_qkv_ = RopedQkv{f.rope_next.q->data, f.rope_next.k_cache->data, f.rope_next.positions->data};
    note_cache_write(*f.rope_next.k_cache, *f.rope_next.positions, 1, 0);
  }

  // MatmulFusion::norm_next for the one-token GEMV of w into out: the StageNext to launch it
  // with where it can stage the next GEMV's x and that GEMV can take it (gemv_stages_next_applies,
  // gemv_staged_applies), else none (dst null).
  cuda::StageNext stage_next_for(const Tensor& w, const Tensor& out, const MatmulFusion& f) {
    const Tensor* norm = f.norm_next;
    const Tensor* next = f.norm_next_matmul;
    if (!stage_next_enabled_ || !norm || !next || !f.accumulate || out.rows() != 1 || norm->device != Device::cuda ||
        norm->dtype != DType::F32 || norm->elements() != w.rows() || next->device != Device::cuda ||
        next->ne[0] != w.rows() || !cuda::gemv_stages_next_applies(view(w)) || !cuda::gemv_staged_applies(view(*next)))
      return {};
    void* dst = workspace(stage_next_ws_, static_cast<size_t>(cuda::stage_next_bytes(w.rows())), "the next GEMV's x");
    if (!dst) return {};  // the allocation failure is recorded
    return {norm->as<float>(), static_cast<uint8_t*>(dst)};
  }

  void* device_alloc(size_t bytes, const std::string& what) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky allocation error
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      record(out_of_memory("cuda: cannot allocate " + bytes_text(bytes) + " for " + what + " on device " +
                           std::to_string(device_) + " (" + bytes_text(free_bytes) + " free of " +
                           bytes_text(total_bytes) + "): " + cuda_error_text(e)));
      return nullptr;
    }
    allocations_.push_back(p);
    return p;
  }

  // Grows by replacement; the old buffer stays allocated (a captured graph may use it).
  // The workspace of a kernel whose last block reduces per-token partial results behind a counter
  // (argmax, sample_top_k), laid out for `capacity` tokens: grown and zeroed only when n exceeds
  // it, since each launch leaves the counters it used at zero. False (error noted) when it
  // cannot grow.
  bool counter_workspace(Workspace& ws, int64_t& capacity, int64_t n, size_t (*bytes_for)(int64_t), const char* what,
                         const char* op) {
    if (n <= capacity) return true;
    const size_t bytes = bytes_for(n);
    void* p = workspace(ws, bytes, what);
    if (!p) return false;
    note(cudaMemsetAsync(p, 0, bytes, stream_), op);
    capacity = n;
    return true;
  }

  void* workspace(Workspace& ws, size_t bytes, const char* what) {
    if (bytes > ws.bytes) {
      void* p = device_alloc(bytes, what);
      if (!p) return nullptr;
      ws = {p, bytes};
    }
    return ws.ptr;
  }

  // The rope of p over x [head_dim, n_heads, n_tokens]; its frequency factors are put on the
  // device by with_freq_factors.
  static cuda::RopeLaunch rope_launch(const Tensor& x, const RopeParams& p) {
    return {static_cast<int>(x.ne[0]), static_cast<int>(x.ne[1]), x.ne[2] * x.ne[3], p.n_dims, p.freq_base,
            p.freq_scale, p.neox, nullptr};
  }
  // rl.freq_factors = p.freq_factors on the device (null without them); false when they cannot
  // be uploaded (the error is recorded).
  bool with_freq_factors(const RopeParams& p, cuda::RopeLaunch& rl) {
    if (!p.freq_factors) return true;
    rl.freq_factors = device_freq_factors(p.freq_factors, p.n_dims / 2);
    return rl.freq_factors != nullptr;
  }

  // Device copy of a host freq_factors array, made once per array: found by its pointer and
  // checked against the values it was made from, since the same pointer may come with more
  // pairs later (another head_dim) or, once its vector is freed, hold other values.
  const float* device_freq_factors(const float* host, int n) {
    auto it = freq_factors_.find(host);
    if (it != freq_factors_.end() && std::ssize(it->second.values) >= n &&
        std::equal(host, host + n, it->second.values.begin()))
      return it->second.data;
    auto* p = static_cast<float*>(device_alloc(n * sizeof(float), "rope freq_factors"));
    if (!p) return nullptr;
    // cudaMemcpy from pageable memory may return once the bytes are staged, before they land,
    // and stream_ (non-blocking) does not wait for the legacy stream: a rope kernel launched
    // right after read the fresh allocation instead (a flake of RopeKvStoreAttention beside
    // other GPU work). Waiting for the legacy stream makes the copy complete here; it runs
    // once per array, outside capture in practice (prefill meets the array first).
    note(cudaMemcpy(p, host, n * sizeof(float), cudaMemcpyHostToDevice), "rope freq_factors copy");
    note(cudaStreamSynchronize(cudaStreamLegacy), "rope freq_factors copy");
    freq_factors_[host] = {p, std::vector<float>(host, host + n)};
    return p;
  }

  // f's norm ([cols] F32) or up ([cols, n] F32, like x) on this device, not both.
  bool fusion_ok(const MatmulFusion& f, int64_t cols, int64_t n, const char* op) {
    const Tensor* extra = f.norm ? f.norm : f.up;
    return expect(!(f.norm && f.up), op, "norm and up are exclusive") &&
           expect(!extra || (extra->device == Device::cuda && extra->dtype == DType::F32 &&
                             extra->elements() == (f.norm ? cols : cols * n)),
                  op, "norm must be f32 [cols], up f32 like x");
  }

  bool matmul_operands_ok(const Tensor& w, const Tensor& x, const Tensor& out, const Tensor* bias, const char* op) {
    const int64_t cols = w.ne[0], rows = w.rows(), n = x.rows();
    return on_device({&w, &x, &out}, op) && all_f32({&x, &out}, op) &&
           expect(supports(w.dtype), op, "weight format " + std::string(dtype_name(w.dtype)) + " unsupported") &&
           expect(x.ne[0] == cols && out.ne[0] == rows && out.rows() == n, op,
                  "w " + shape_string(w) + ", x " + shape_string(x) + ", out " + shape_string(out)) &&
           expect(!bias || (bias->dtype == DType::F32 && bias->elements() == rows && bias->device == Device::cuda), op,
                  "bias must be f32 [" + std::to_string(rows) + "] on the device");
  }

  // Prefill product on tensor cores (n > kGemvMaxTokens tokens): out = W x' (+ bias), or with
  // f.accumulate out += W x' (+ bias), where x' = x, rms_norm(x) * f.norm or silu(x) * f.up.
  // One kernel writes x' as the fp16 operand (bf16 for BF16 weights, prefill_operand);
  // Quantized weights are dequantized into an fp16 workspace first (prefill_gemm), or for Q4_0,
  // Q4_1, Q8_0, Q4_K and Q5_K on Hopper where chosen inside the GEMM (gemm_in_loop_wgmma.cu,
  // InLoopGemmUse). F32 weights:
  // cublasSgemm on x (with the plain ops around it when fused).
  void prefill_matmul(const Tensor& w, const Tensor& x, Tensor& out, const MatmulFusion& f, const Tensor* bias) {
    const int m = static_cast<int>(w.rows()), k = static_cast<int>(w.ne[0]), n = static_cast<int>(x.rows());
    if (w.dtype == DType::F32) {
      if (f.norm || f.up || f.accumulate) return Backend::fused_matmul(w, x, out, f, bias);
      const float alpha = 1.0f, zero = 0.0f;
      const cublasStatus_t st = cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.as<float>(), k,
                                            x.as<float>(), k, &zero, out.as<float>(), m);
      if (st != CUBLAS_STATUS_SUCCESS) record_gemm_failure(m, n, k, st);
      if (bias) cuda::launch_add_bias(out.as<float>(), bias->as<float>(), m, n, stream_);
      return;
    }
    const PrefillOperand x_half = prefill_operand(x, f, k, n, w.dtype == DType::BF16);
    if (x_half.plain_ops) return Backend::fused_matmul(w, x, out, f, bias);
    if (x_half.data) prefill_gemm(w, x_half.data, out, f.accumulate, bias);
  }

  // The fp16 (bf16) operand x' [n][k] of a prefill GEMM, in xh_ws_: data null when the
  // workspace failed (recorded), plain_ops when the norm kernel does not take this width or
  // alignment (the caller falls back to the plain ops).
  struct PrefillOperand {
    const uint16_t* data = nullptr;
    bool plain_ops = false;
  };
  PrefillOperand prefill_operand(const Tensor& x, const MatmulFusion& f, int k, int n, bool bf16) {
    auto* xh = static_cast<uint16_t*>(workspace(xh_ws_, static_cast<size_t>(k) * n * sizeof(uint16_t), "fp16 activations"));
    if (!xh) return {};
    if (f.up) {
      cuda::launch_silu_mul_to_half(x.as<float>(), f.up->as<float>(), static_cast<int64_t>(k) * n, xh, bf16, stream_);
    } else if (f.norm) {
      if (!cuda::launch_rms_norm_to_half(x.as<float>(), f.norm->as<float>(), f.eps, k, n, xh, bf16, stream_))
        return {nullptr, true};
    } else {
      cuda::launch_f32_to_half(x.as<float>(), xh, static_cast<int64_t>(k) * n, bf16, stream_);
    }
    return {xh, false};
  }

  // out (+)= W x_half (+ bias) with fp32 accumulation on cuBLAS, the residual add being its
  // beta = 1; W not F32, dequantized into an fp16 workspace of rows x cols unless F16 / BF16 (or
  // Q4_0, Q4_1, Q8_0, Q4_K and Q5_K through the in-loop GEMM where chosen).
  // cuBLAS is column-major: W's rows are the columns of a (cols x rows) matrix with ld = cols,
  // so out = op_T(W) * x'.
  void prefill_gemm(const Tensor& w, const uint16_t* x_half, Tensor& out, bool accumulate, const Tensor* bias) {
    prefill_gemm_to(w, x_half, static_cast<int>(out.rows()), out.data, CUDA_R_32F, accumulate);
    if (bias) cuda::launch_add_bias(out.as<float>(), bias->as<float>(), w.rows(), out.rows(), stream_);
  }

  // The GEMM of prefill_gemm for n tokens into out [n][rows] of type out_type (fp32, or the
  // operand's fp16 / bf16).
  void prefill_gemm_to(const Tensor& w, const uint16_t* x_half, int n, void* out, cudaDataType_t out_type,
                       bool accumulate) {
    const int m = static_cast<int>(w.rows()), k = static_cast<int>(w.ne[0]);
    const bool bf16 = w.dtype == DType::BF16;
    // Q4_0, Q4_1, Q8_0, Q4_K and Q5_K on Hopper, where chosen (launchers.h, InLoopGemmUse): the weights
    // dequantized inside the GEMM's main loop, no workspace pass.
    if (out_type != CUDA_R_16BF && cuda::in_loop_gemm_use() == cuda::InLoopGemmUse::everywhere &&
        cuda::launch_gemm_in_loop(view(w), x_half, n, out, out_type == CUDA_R_16F, accumulate, stream_))
      return;
    const void* a = w.data;
    if (w.dtype != DType::F16 && !bf16) {
      void* deq = workspace(deq_ws_, static_cast<size_t>(m) * k * sizeof(uint16_t), "dequantized weight");
      if (!deq || !expect(cuda::launch_dequantize(view(w), static_cast<uint16_t*>(deq), false, stream_), "matmul",
                          "no fp16 dequantization for " + shape_string(w)))
        return;
      a = deq;
    }
    const float alpha = 1.0f, zero = 0.0f, one = 1.0f;
    const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    const cublasStatus_t st = cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, t, k, x_half, t, k,
                                           accumulate ? &one : &zero, out, out_type, m, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) record_gemm_failure(m, n, k, st);
  }

  void record_gemm_failure(int m, int n, int k, cublasStatus_t st) {
    record(internal_error("matmul: cuBLAS GEMM " + std::to_string(m) + "x" + std::to_string(n) + "x" +
                          std::to_string(k) + " failed: " + cublasGetStatusString(st)));
  }

  void destroy_graph() {
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
    if (graph_) cudaGraphDestroy(graph_);
    graph_exec_ = nullptr;
    graph_ = nullptr;
  }

  int device_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  std::vector<void*> host_allocations_;  // alloc_host's page-locked buffers
  cudaEvent_t read_events_[kReadsInFlight] = {};
  uint64_t reads_issued_ = 0;
  cublasHandle_t cublas_ = nullptr;
  std::vector<void*> allocations_;  // every cudaMalloc of this backend, freed in the destructor
  Workspace deq_ws_, xh_ws_, ffn_ws_, attn_ws_, argmax_ws_, sample_ws_, angles_ws_;
  int64_t argmax_capacity_ = 0;  // tokens argmax_ws_ is laid out for (sampling.cu)
  int64_t sample_capacity_ = 0;  // tokens sample_ws_ is laid out for (sample_top_k.cu)
  struct DeviceFactors {
    float* data;
    std::vector<float> values;  // what data holds
  };
  std::unordered_map<const float*, DeviceFactors> freq_factors_;
  struct TiledWeight {
    size_t bytes, row_bytes;
  };
  std::map<const uint8_t*, TiledWeight> tiled_;  // start -> extent of each weight stored tiled
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t graph_exec_ = nullptr;
  bool capturing_ = false;
  bool rope_in_attention_ = true;  // rope_kv_store_attention as one kernel where it applies
  bool rope_in_attention_all_heads_ = false;  // also below kRopeInAttentionMinHeadDim
  bool kv_loads_early_enabled_ = true;
  bool rope_store_enabled_ = true;
  // The last GEMV's rope epilogue (MatmulFusion::rope_next) for the attention op right after it.
  struct RopedQkv {
    const void* q;
    const void* k_cache;
    const void* positions;
  };
  std::optional<RopedQkv> roped_qkv_;
  // What the last gate/up GEMV left activated for the down GEMV right after it (swiglu_next):
  // the gate and up halves, their length, the down weight.
  struct ActivatedGate {
    const void* gate;
    const void* up;
    int64_t cols;
    const void* down;
  };
  std::optional<ActivatedGate> activated_gate_;
  // What the last GEMV staged for the next one (MatmulFusion::norm_next): the x it wrote (the
  // residual stream), the norm and weight of the GEMV it was staged for, and the bytes.
  bool stage_next_enabled_ = true;
  int attention_max_splits_ = cuda::kAttentionMaxSplits;
  Workspace stage_next_ws_;
  struct StagedNext {
    const void* x;
    const void* norm;
    const void* w;
    cuda::StagedX bytes;
  };
  std::optional<StagedNext> staged_next_;
  // The attention sums (attention_sums_launch): two buffers, the one the next launch adds into,
  // where a replay of the graph leaves that turn, and what the last launch left for its GEMV.
  bool attention_sums_enabled_ = true;
  Workspace sums_ws_[2];
  int sums_next_ = 0;
  int sums_next_after_graph_ = 0;
  struct PendingAttention {
    const void* out;  // the attention's out, which it did not write
    const void* w;    // the GEMV's weight (out_matmul_next)
    cuda::AttentionSums sums;
  };
  std::optional<PendingAttention> pending_attention_;
  enum class Fp32Prologue { none, norm, split, all };
  Fp32Prologue fp32_prologue_ = Fp32Prologue::split;
  // The last KV-cache write that no split-KV attention launch has been told of (kv_loads_early).
  struct CacheWrite {
    const void* k_cache;
    const void* positions;
    int64_t n_tokens, seq_slots;
  };
  std::optional<CacheWrite> unread_cache_write_;
  Status error_;
};

}  // namespace

Expected<std::unique_ptr<CudaBackend>> open_cuda_backend(int device_index) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) return unsupported("cuda: no usable driver or device: " + cuda_error_text(e));
  if (device_index < 0 || device_index >= count)
    return invalid_argument("cuda: device " + std::to_string(device_index) + " requested, " + std::to_string(count) +
                            " present");
  auto backend = std::make_unique<CudaBackendImpl>(device_index);
  BL_RETURN_IF_ERROR(backend->init());
  return std::unique_ptr<CudaBackend>(std::move(backend));
}

std::unique_ptr<Backend> make_cuda_backend(int device_index) {
  auto b = open_cuda_backend(device_index);
  if (!b) {
    std::fprintf(stderr, "bitlight: %s\n", b.status().message().c_str());
    return nullptr;
  }
  return std::move(b).value();
}

bool cuda_device_present() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

}  // namespace bl
