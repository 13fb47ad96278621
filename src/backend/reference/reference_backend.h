// The reference backend: plain scalar C++, fp32 everywhere (fp64 accumulation in reductions),
// weights dequantized with the format registry's reference code. It is slow on purpose: it is
// the independent implementation every other backend is tested against, and the "exact fp32"
// path that model outputs are compared with transformers on.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "core/aligned_buffer.h"

namespace bl {

class ReferenceBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::reference; }
  std::string name() const override { return "reference (scalar fp32)"; }
  Device device() const override { return Device::cpu; }
  bool supports(DType weight_type) const override;

  Expected<Tensor> alloc(DType dtype, std::array<int64_t, 4> ne) override;
  Expected<Tensor> upload_weight(const Tensor& host) override { return host; }
  void write(Tensor& dst, const void* src, size_t bytes, size_t offset_bytes) override;
  void read(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes) override;
  void synchronize() override {}

  void get_rows(const Tensor& table, const Tensor& ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias) override;
  void add(const Tensor& a, const Tensor& b, Tensor& out) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void scale(const Tensor& x, float factor, Tensor& out) override;
  void rope(Tensor& x, const Tensor& positions, const RopeParams& p) override;
  void kv_store(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache, const Tensor& positions) override;
  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& positions,
                 const AttentionParams& p, Tensor& out) override;

 private:
  std::vector<AlignedBuffer> buffers_;
};

}  // namespace bl
