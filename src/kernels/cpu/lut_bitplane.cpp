// bitplane_matmul: quantize the activations per weight group, then one row kernel per (weight
// row, tile of up to kBitplaneTile tokens), rows split across the thread pool; plus the scalar
// row kernels, which are the reference the SIMD ones are tested against.
#include "kernels/cpu/lut_bitplane.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

#include "kernels/cpu/lut_bitplane_kernels.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;

constexpr size_t kAlign = 64;
constexpr size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }
// Rows per parallel_for grain, as cpu::matmul's.
constexpr int64_t kRowGrain = 16;

// Scratch layout of one column: q [cols] int8 | d [groups] f32 | sum [groups] i32, each part
// 64-byte aligned.
struct ColumnLayout {
  size_t q_bytes, d_bytes, column_bytes;
  ColumnLayout(int64_t cols, int group_size) {
    q_bytes = align_up(static_cast<size_t>(cols));
    d_bytes = align_up(static_cast<size_t>(cols / group_size) * 4);
    column_bytes = q_bytes + 2 * d_bytes;
  }
  BitplaneActs acts(char* base) const {
    return {reinterpret_cast<const int8_t*>(base), reinterpret_cast<const float*>(base + q_bytes),
            reinterpret_cast<const int32_t*>(base + q_bytes + d_bytes)};
  }
  void quantize(const BitplaneKernels& k, const float* x, int64_t cols, int g, char* base) const {
    k.quantize(x, cols, g, reinterpret_cast<int8_t*>(base), reinterpret_cast<float*>(base + q_bytes),
               reinterpret_cast<int32_t*>(base + q_bytes + d_bytes));
  }
};

// ---- scalar row kernels ----

void unpack_scalar(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, uint8_t* codes) {
  for (int64_t grp = 0; grp < cols / shape.group_size; ++grp)
    quant::unpack_bl_group_codes(shape, w_row + grp * shape.group_bytes(), codes + grp * shape.group_size);
}

void dot_codes_scalar(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, const uint8_t* codes,
                      const BitplaneActs* acts, int nc, float* out) {
  const int g = shape.group_size;
  for (int c = 0; c < nc; ++c) {
    float acc = 0.0f;
    for (int64_t grp = 0; grp < cols / g; ++grp) {
      int32_t isum = 0;
      for (int j = 0; j < g; ++j) isum += codes[grp * g + j] * acts[c].q[grp * g + j];
      float s, z;
      bitplane_group_scale(shape, w_row, grp, s, z);
      acc += s * acts[c].d[grp] * (static_cast<float>(isum) - z * static_cast<float>(acts[c].sum[grp]));
    }
    out[c] = acc;
  }
}

void dot_scalar(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, const BitplaneActs* acts, int nc,
                float* out) {
  std::vector<uint8_t> codes(static_cast<size_t>(cols));
  unpack_scalar(shape, cols, w_row, codes.data());
  dot_codes_scalar(shape, cols, w_row, codes.data(), acts, nc, out);
}

// The kernels of level isa, lowered to the nearest level this CPU supports.
const BitplaneKernels& kernels_for(Isa isa, const BlGroupShape& shape) {
  if (isa >= Isa::avx512 && isa_supported(Isa::avx512) && cpu_features().has_avx512vnni)
    if (const BitplaneKernels* k = bitplane_kernels_avx512(shape)) return *k;
  if (isa >= Isa::avx2 && isa_supported(Isa::avx2))
    if (const BitplaneKernels* k = bitplane_kernels_avx2(shape)) return *k;
  return bitplane_kernels_scalar();
}

}  // namespace

void bitplane_quantize_scalar(const float* x, int64_t cols, int g, int8_t* q, float* d, int32_t* sum) {
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const float* xg = x + grp * g;
    float amax = 0.0f;
    for (int j = 0; j < g; ++j) amax = std::max(amax, std::fabs(xg[j]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int j = 0; j < g; ++j) {
      const int v = static_cast<int>(std::nearbyint(xg[j] * inv));
      q[grp * g + j] = static_cast<int8_t>(v);
      s += v;
    }
    d[grp] = amax / 127.0f;
    sum[grp] = s;
  }
}

const BitplaneKernels& bitplane_kernels_scalar() {
  static const BitplaneKernels k{dot_scalar, unpack_scalar, dot_codes_scalar, bitplane_quantize_scalar};
  return k;
}

bool bitplane_matmul_supported(DType weight_type) { return quant::is_bl_group(weight_type); }

size_t bitplane_matmul_scratch_bytes(DType weight_type, int64_t cols, int64_t n) {
  const auto shape = quant::bl_group_shape(weight_type);
  if (!shape) return 0;
  return ColumnLayout(cols, shape->group_size).column_bytes * static_cast<size_t>(n);
}

void bitplane_matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
                     AlignedBuffer& scratch, Isa isa) {
  const BlGroupShape shape = *quant::bl_group_shape(w.dtype);
  const BitplaneKernels& k = kernels_for(isa, shape);
  const int64_t cols = w.cols(), rows = w.rows(), n = x.rows();
  const ColumnLayout layout(cols, shape.group_size);
  const size_t need = layout.column_bytes * static_cast<size_t>(n);
  if (scratch.bytes() < need && !scratch.resize(need)) {
    assert(!"bitplane_matmul: cannot allocate activation scratch");
    return;
  }
  char* act = scratch.as<char>();
  const float* xf = x.as<const float>();
  pool.parallel_for(n, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      layout.quantize(k, xf + c * cols, cols, shape.group_size, act + layout.column_bytes * static_cast<size_t>(c));
  });

  float* o = out.as<float>();
  const float* b = bias ? bias->as<const float>() : nullptr;
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  const size_t w_row_bytes = w.row_size();
  pool.parallel_for(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    // Prefill: each row's codes are unpacked once and reused by every tile of tokens.
    AlignedBuffer codes(n > kBitplaneTile ? static_cast<size_t>(cols) : 0);
    BitplaneActs tile_acts[kBitplaneTile];
    float tile[kBitplaneTile];
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* wr = wbase + w_row_bytes * static_cast<size_t>(r);
      if (n > kBitplaneTile) k.unpack(shape, cols, wr, codes.as<uint8_t>());
      const float add = b ? b[r] : 0.0f;
      for (int64_t c0 = 0; c0 < n; c0 += kBitplaneTile) {
        const int nc = static_cast<int>(std::min<int64_t>(kBitplaneTile, n - c0));
        for (int c = 0; c < nc; ++c) tile_acts[c] = layout.acts(act + layout.column_bytes * static_cast<size_t>(c0 + c));
        if (n > kBitplaneTile)
          k.dot_codes(shape, cols, wr, codes.as<uint8_t>(), tile_acts, nc, tile);
        else
          k.dot(shape, cols, wr, tile_acts, nc, tile);
        for (int c = 0; c < nc; ++c) o[(c0 + c) * rows + r] = tile[c] + add;
      }
    }
  });
}

}  // namespace bl::cpu
