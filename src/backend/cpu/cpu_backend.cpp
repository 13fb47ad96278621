#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <vector>

#include "core/checked_math.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/argmax.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/blocks_as_bl.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/interleaved_rows.h"
#include "kernels/cpu/kv_store.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_interleaved.h"
#include "quant/bl_group.h"
#include "kernels/cpu/rms_norm.h"

namespace bl {
namespace {

// Below this much work (floats touched) an op runs on the calling thread: waking the pool
// (~1 µs) costs more than splitting saves. Decode-sized norms, adds and activations
// (d ~ 500..15000) stay on one thread; prefill batches spread.
constexpr int64_t kMinParallelWork = 1 << 15;

// Runs fn(begin, end) on contiguous pieces of [0, n), one per thread, when n items of
// `work_per_item` each are worth spreading. The pool gets a lambda holding one pointer, so its
// std::function does not allocate.
template <class Fn>
void parallel_range(ThreadPool& pool, int64_t n, int64_t work_per_item, const Fn& fn) {
  const int threads = n * work_per_item < kMinParallelWork ? 1 : static_cast<int>(std::min<int64_t>(pool.size(), n));
  if (threads <= 1) {
    if (n > 0) fn(int64_t{0}, n);
    return;
  }
  struct Split {
    const Fn* fn;
    int64_t n;
    int threads;
  } split{&fn, n, threads};
  pool.run([&split](int t, int) {
    if (t >= split.threads) return;
    const int64_t begin = split.n * t / split.threads, end = split.n * (t + 1) / split.threads;
    if (begin < end) (*split.fn)(begin, end);
  });
}

// Elementwise ops split into 64-float pieces (a cache line is 16 floats; 64 keeps pieces of
// different threads off each other's lines).
constexpr int64_t kElementPiece = 64;

// fn(i0, i1) over [0, n) in pieces of kElementPiece elements, spread over the pool; cost is an
// element's work in adds (parallel_range's grain).
template <typename F>
void for_element_ranges(ThreadPool& pool, int64_t n, int64_t cost, F&& fn) {
  parallel_range(pool, (n + kElementPiece - 1) / kElementPiece, cost * kElementPiece, [&](int64_t begin, int64_t end) {
    fn(begin * kElementPiece, std::min(n, end * kElementPiece));
  });
}

}  // namespace

CpuBackend::CpuBackend(int n_threads) : pool_(n_threads) {}

std::string CpuBackend::name() const {
  const int n = pool_.size();
  return "cpu (" + std::string(cpu::isa_name(cpu::active_isa())) + ", " + std::to_string(n) +
         (n == 1 ? " thread)" : " threads)");
}

namespace {
// Ternary GGUF weights run as bl2g128 (converted exactly at upload, quant::ternary_to_bl2).
bool is_ternary(DType t) { return t == DType::TQ1_0 || t == DType::TQ2_0; }
}  // namespace

bool CpuBackend::supports(DType weight_type) const {
  return cpu::matmul_supported(weight_type) || is_ternary(weight_type);
}

Expected<Tensor> CpuBackend::alloc(DType dtype, std::array<int64_t, 4> ne) {
  Tensor t = make_tensor(nullptr, dtype, ne);
  const DTypeInfo* info = dtype_info(dtype);
  if (!info) return invalid_argument("cpu backend: alloc of unknown dtype id " + std::to_string(static_cast<uint32_t>(dtype)));
  for (int64_t n : ne)
    if (n < 0) return invalid_argument("cpu backend: alloc with a negative dimension: " + shape_string(t));
  if (ne[0] % info->block_elems != 0)
    return invalid_argument("cpu backend: alloc " + shape_string(t) + ": ne[0] is not a multiple of the block size " +
                            std::to_string(info->block_elems));
  if ((ne[1] * ne[2] * ne[3]) % info->tile_rows != 0)
    return invalid_argument("cpu backend: alloc " + shape_string(t) + ": the row count is not a multiple of the " +
                            std::string(info->name) + " tile of " + std::to_string(info->tile_rows) + " rows");
  std::optional<uint64_t> bytes = static_cast<uint64_t>(ne[0] / info->block_elems);
  bytes = checked_mul(*bytes, static_cast<uint64_t>(info->block_bytes));
  for (int i = 1; i < 4 && bytes; ++i) bytes = checked_mul(*bytes, static_cast<uint64_t>(ne[i]));
  if (!bytes) return invalid_argument("cpu backend: alloc " + shape_string(t) + ": size overflows");
  AlignedBuffer buffer;
  if (!buffer.resize(*bytes))
    return out_of_memory("cpu backend: cannot allocate " + std::to_string(*bytes) + " bytes for " + shape_string(t));
  t.data = buffer.data();
  buffers_.push_back(std::move(buffer));
  return t;
}

Expected<Tensor> CpuBackend::upload_weight(const Tensor& host) {
  if (host.device != Device::cpu) return invalid_argument("cpu backend: upload_weight of a tensor that is not in host memory");
  if (is_ternary(host.dtype)) return upload_ternary(host);
  if (host.layout == Layout::rows)
    if (const std::optional<DType> bl = cpu::blocks_as_bl(host.dtype, host.rows()))
      return upload_as_bl(host, *bl);
  const bool interleave = host.layout == Layout::rows && cpu::interleave_at_load() && cpu::can_interleave(host.dtype, host.rows());
  if (!interleave && !quant::is_bl_group(host.dtype)) return host;  // used in place (mmap)
  // Q4_0 / Q4_1 / Q8_0 / Q4_K: a copy with 16 rows interleaved for the VNNI kernels; bl<b>g<g>
  // (already in 16-row tiles in the file): a plain copy. Both on 2 MiB pages, whose TLB reach
  // the streaming kernels need (the mmap'd original stays in the page cache, clean, and is no
  // longer read).
  AlignedBuffer buffer;
  if (!buffer.resize(host.bytes(), AlignedBuffer::Pages::huge))
    return out_of_memory("cpu backend: cannot allocate " + std::to_string(host.bytes()) + " bytes to copy " +
                         shape_string(host));
  Tensor t = host;
  t.data = buffer.data();
  if (interleave) {
    cpu::interleave_rows(host, buffer.data(), pool_);
    t.layout = Layout::tiles16;
  } else {
    std::memcpy(buffer.data(), host.data, host.bytes());
  }
  buffers_.push_back(std::move(buffer));
  return t;
}

Expected<Tensor> CpuBackend::upload_ternary(const Tensor& host) {
  if (host.rows() % quant::kBlTileRows != 0)
    return unsupported("cpu backend: ternary weight " + shape_string(host) + " has " + std::to_string(host.rows()) +
                       " rows; the CPU runs ternary weights as bl2g128, in tiles of 16 rows");
  Tensor t = make_tensor_2d(nullptr, DType::BL2G128, host.cols(), host.rows());
  AlignedBuffer buffer;
  if (!buffer.resize(t.bytes(), AlignedBuffer::Pages::huge))
    return out_of_memory("cpu backend: cannot allocate " + std::to_string(t.bytes()) + " bytes to convert " +
                         shape_string(host));
  quant::ternary_to_bl2(host.dtype, host.data, buffer.data(), host.rows(), host.cols());
  t.data = buffer.data();
  buffers_.push_back(std::move(buffer));
  return t;
}

// Q4_0 / Q4_1 / Q4_K / Q5_0 / Q5_1 / Q5_K where cpu::blocks_as_bl says so: converted to bl<b>g32
// (quant::blocks_to_bl), tile ranges in parallel, for the lookup-table kernels.
Expected<Tensor> CpuBackend::upload_as_bl(const Tensor& host, DType bl_type) {
  const int64_t rows = host.rows(), cols = host.cols();
  Tensor t = make_tensor_2d(nullptr, bl_type, cols, rows);
  AlignedBuffer buffer;
  if (!buffer.resize(t.bytes(), AlignedBuffer::Pages::huge))
    return out_of_memory("cpu backend: cannot allocate " + std::to_string(t.bytes()) + " bytes to convert " +
                         shape_string(host) + " to " + std::string(dtype_name(bl_type)));
  const size_t in_tile = host.row_size() * quant::kBlTileRows, out_tile = t.row_size() * quant::kBlTileRows;
  pool_.parallel_for(rows / quant::kBlTileRows, 1, [&](int64_t t0, int64_t t1) {
    quant::blocks_to_bl(host.dtype, static_cast<const uint8_t*>(host.data) + in_tile * static_cast<size_t>(t0),
                        buffer.as<uint8_t>() + out_tile * static_cast<size_t>(t0), (t1 - t0) * quant::kBlTileRows, cols);
  });
  t.data = buffer.data();
  buffers_.push_back(std::move(buffer));
  return t;
}

bool CpuBackend::copies_weights(DType type, int64_t rows) const {
  return (cpu::interleave_at_load() && cpu::can_interleave(type, rows)) || quant::is_bl_group(type) || is_ternary(type) ||
         cpu::blocks_as_bl(type, rows).has_value();
}

void CpuBackend::write(Tensor& dst, const void* src, size_t bytes, size_t offset_bytes) {
  assert(offset_bytes <= dst.bytes() && bytes <= dst.bytes() - offset_bytes);
  if (offset_bytes > dst.bytes() || bytes > dst.bytes() - offset_bytes) return;
  std::memcpy(static_cast<char*>(dst.data) + offset_bytes, src, bytes);
}

void CpuBackend::read(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes) {
  assert(offset_bytes <= src.bytes() && bytes <= src.bytes() - offset_bytes);
  if (offset_bytes > src.bytes() || bytes > src.bytes() - offset_bytes) return;
  std::memcpy(dst, static_cast<const char*>(src.data) + offset_bytes, bytes);
}

void CpuBackend::get_rows(const Tensor& table, const Tensor& ids, Tensor& out) {
  cpu::get_rows(table, ids.as<const int32_t>(), ids.elements(), out);
}

void CpuBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t d = x.cols();
  assert(weight.elements() == d && out.elements() == x.elements());
  const float* xp = x.as<const float>();
  const float* wp = weight.as<const float>();
  float* op = out.as<float>();
  parallel_range(pool_, x.rows(), d, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) cpu::rms_norm_row(xp + r * d, wp, eps, op + r * d, d);
  });
}

void CpuBackend::matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias) {
  cpu::matmul(w, x, out, bias, pool_, matmul_scratch_);
}

void CpuBackend::fused_matmul(const Tensor& w, const Tensor& x, Tensor& out, const MatmulFusion& f, const Tensor* bias) {
  const int64_t cols = w.ne[0];
  auto f32_of_cols = [&](const Tensor* t) { return t->dtype == DType::F32 && t->elements() == cols; };
  const bool fuse = x.rows() == 1 && cpu::matmul_fuses_decode(w) && cpu::check_matmul(w, x, out, bias).ok() &&
                    !(f.norm && f.up) && (!f.norm || f32_of_cols(f.norm)) && (!f.up || f32_of_cols(f.up));
  if (!fuse) return Backend::fused_matmul(w, x, out, f, bias);
  const cpu::DecodeFusion fusion{.norm = f.norm ? f.norm->as<const float>() : nullptr,
                                 .eps = f.eps,
                                 .up = f.up ? f.up->as<const float>() : nullptr,
                                 .accumulate = f.accumulate};
  cpu::matmul_decode_fused(w, x, out, bias, fusion, pool_, matmul_scratch_);
}

void CpuBackend::add(const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = a.elements();
  assert(b.elements() == n && out.elements() == n);
  const float* ap = a.as<const float>();
  const float* bp = b.as<const float>();
  float* op = out.as<float>();
  for_element_ranges(pool_, n, 1, [&](int64_t i0, int64_t i1) { cpu::add(ap + i0, bp + i0, op + i0, i1 - i0); });
}

// In place on the logits (no copy, unlike the default). One token's row is split over the
// threads as the output matmul split its rows, so each thread scans what it just wrote.
void CpuBackend::argmax(const Tensor& logits, Tensor& ids) {
  const int64_t n_vocab = logits.ne[0], n = logits.rows();
  if (logits.dtype != DType::F32 || ids.dtype != DType::I32 || ids.elements() != n) return;
  for (int64_t t = 0; t < n; ++t) {
    const float* row = logits.as<const float>() + t * n_vocab;
    std::vector<cpu::RangeMax> parts(static_cast<size_t>(pool_.size()));
    pool_.run([&](int thread, int n_threads) {
      parts[static_cast<size_t>(thread)] =
          cpu::argmax_range(row, n_vocab * thread / n_threads, n_vocab * (thread + 1) / n_threads);
    });
    cpu::RangeMax m;
    for (const cpu::RangeMax& part : parts) m = cpu::later_range(m, part);
    ids.as<int32_t>()[t] = static_cast<int32_t>(m.index < 0 ? 0 : m.index);
  }
}

namespace {

// out = act(gate) * up by one of cpu::silu_mul / cpu::gelu_mul: an exp and a few FMAs an
// element, ~4x the work of an add.
void gated_product(ThreadPool& pool, const Tensor& gate, const Tensor& up, Tensor& out,
                   void (*activation_mul)(const float*, const float*, float*, int64_t)) {
  const int64_t n = gate.elements();
  assert(up.elements() == n && out.elements() == n);
  const float* gp = gate.as<const float>();
  const float* up_p = up.as<const float>();
  float* op = out.as<float>();
  for_element_ranges(pool, n, 4, [&](int64_t i0, int64_t i1) { activation_mul(gp + i0, up_p + i0, op + i0, i1 - i0); });
}

}  // namespace

void CpuBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  gated_product(pool_, gate, up, out, cpu::silu_mul);
}

void CpuBackend::gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  gated_product(pool_, gate, up, out, cpu::gelu_mul);
}

void CpuBackend::scale(const Tensor& x, float factor, Tensor& out) {
  const int64_t n = x.elements();
  assert(out.elements() == n);
  const float* xp = x.as<const float>();
  float* op = out.as<float>();
  for_element_ranges(pool_, n, 1, [&](int64_t i0, int64_t i1) { cpu::scale(xp + i0, factor, op + i0, i1 - i0); });
}

void CpuBackend::rope(Tensor& x, const Tensor& positions, const RopeParams& p) {
  const int64_t head_dim = x.ne[0], n_heads = x.ne[1], n = x.ne[2];
  assert(p.n_dims > 0 && p.n_dims % 2 == 0 && p.n_dims <= head_dim && positions.elements() == n);
  // Out-of-contract n_dims would write past a head: rotate only whole pairs inside the head.
  const int n_dims = static_cast<int>(std::min<int64_t>(p.n_dims, head_dim)) & ~1;
  if (n_dims <= 0) return;
  rope_table_.update({n_dims, p.freq_base, p.freq_scale, p.freq_factors}, positions.as<const int32_t>(), n);
  float* xp = x.as<float>();
  parallel_range(pool_, n, n_heads * n_dims, [&](int64_t begin, int64_t end) {
    cpu::rope(xp, head_dim, n_heads, p.neox, rope_table_, begin, end);
  });
}

void CpuBackend::kv_store(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache, const Tensor& positions) {
  assert(k.ne[0] * k.ne[1] == k_cache.ne[0] * k_cache.ne[1] && v.elements() == k.elements());
  cpu::kv_store(k, k_cache, positions.as<const int32_t>());
  cpu::kv_store(v, v_cache, positions.as<const int32_t>());
}

void CpuBackend::attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& positions,
                           const AttentionParams& p, Tensor& out) {
  assert(q.ne[0] == p.head_dim && q.ne[1] == p.n_head && out.elements() == q.elements());
  assert(k_cache.ne[0] == p.head_dim && k_cache.ne[1] == p.n_head_kv && positions.elements() == q.ne[2]);
  const cpu::AttentionShape shape{p.n_head, p.n_head_kv, p.head_dim, p.scale, p.window};
  cpu::attention(q, k_cache, v_cache, positions.as<const int32_t>(), shape, out, pool_, attention_scratch_);
}

std::unique_ptr<Backend> make_cpu_backend(int n_threads) { return std::make_unique<CpuBackend>(n_threads); }

}  // namespace bl
