// The CPU backend: runs each op at once on a thread pool, with the widest ISA the CPU has
// (kernels/cpu/cpu_features.h; BITLIGHT_ISA lowers it). Weights stay where they were loaded
// (the mmap of the model file), except Q4_0 / Q4_1 / Q8_0 / Q4_K matrices when the AVX-512 VNNI
// kernels run: those are copied with 16 rows interleaved (kernels/cpu/interleaved_rows.h;
// BITLIGHT_CPU_INTERLEAVE=0 keeps them as they are). Activations and caches are 64-byte
// aligned buffers owned here.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "core/aligned_buffer.h"
#include "core/thread_pool.h"
#include "kernels/cpu/rope.h"

namespace bl {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads);  // 0 = all hardware threads

  BackendKind kind() const override { return BackendKind::cpu; }
  std::string name() const override;  // "cpu (avx512, 2 threads)"
  Device device() const override { return Device::cpu; }
  bool supports(DType weight_type) const override;

  Expected<Tensor> alloc(DType dtype, std::array<int64_t, 4> ne) override;
  Expected<Tensor> upload_weight(const Tensor& host) override;
  bool copies_weights(DType type, int64_t rows) const override;
  void write(Tensor& dst, const void* src, size_t bytes, size_t offset_bytes) override;
  void read(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes) override;
  void synchronize() override {}

  void get_rows(const Tensor& table, const Tensor& ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias) override;
  // One token with bl<b>g<g> weights: the norm or SwiGLU and the residual add inside the
  // matmul's threads (cpu::matmul_decode_fused); otherwise the default composition.
  void fused_matmul(const Tensor& w, const Tensor& x, Tensor& out, const MatmulFusion& f, const Tensor* bias) override;
  void add(const Tensor& a, const Tensor& b, Tensor& out) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void scale(const Tensor& x, float factor, Tensor& out) override;
  void argmax(const Tensor& logits, Tensor& ids) override;
  void rope(Tensor& x, const Tensor& positions, const RopeParams& p) override;
  void kv_store(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache, const Tensor& positions) override;
  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& positions,
                 const AttentionParams& p, Tensor& out) override;

 private:
  // TQ1_0 / TQ2_0 -> an exact bl2g128 copy (quant::ternary_to_bl2) that the LUT kernels run.
  Expected<Tensor> upload_ternary(const Tensor& host);
  // Q4_0 / Q4_1 / Q4_K / Q5_0 / Q5_1 / Q5_K -> bl<b>g32 where cpu::blocks_as_bl says so
  // (quant::blocks_to_bl), for the LUT kernels.
  Expected<Tensor> upload_as_bl(const Tensor& host, DType bl_type);
  ThreadPool pool_;
  std::vector<AlignedBuffer> buffers_;  // everything alloc() handed out
  AlignedBuffer matmul_scratch_;        // quantized activations; grows on first use
  AlignedBuffer attention_scratch_;     // softmax states; grows on first use
  cpu::RopeTable rope_table_;           // cos/sin of the current step's positions
};

}  // namespace bl
