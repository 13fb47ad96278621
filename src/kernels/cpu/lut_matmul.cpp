// lut_matmul: build each token's tables, then run the tile kernel over the 16-row tiles, split
// across the thread pool (decode: one region, each thread building a share of the tables, then
// several tiles per call; prefill: blocks of up to kLutTokens tokens per call); plus the scalar
// builder and tile kernel, the reference that the SIMD levels are tested against.
#include "kernels/cpu/lut_matmul.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "core/half.h"
#include "core/spin_barrier.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/lut_matmul_kernels.h"
#include "kernels/cpu/rms_norm.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;
using quant::kBlTileRows;

constexpr size_t align64(size_t v) { return (v + 63) / 64 * 64; }

// Scratch of one token: table [cols / 16][64] int8 | (two terms) residual, the same |
// scale [groups] f32 | sum [groups] f32, each part 64-byte aligned.
struct TokenTablesLayout {
  int terms;
  size_t table_bytes, group_bytes, token_bytes;
  TokenTablesLayout(int64_t cols, int g, int terms) : terms(terms) {
    table_bytes = align64(static_cast<size_t>(cols) * 4);
    group_bytes = align64(static_cast<size_t>(cols / g) * 4);
    token_bytes = terms * table_bytes + 2 * group_bytes;
  }
  int8_t* table(char* token) const { return reinterpret_cast<int8_t*>(token); }
  int8_t* residual(char* token) const { return terms == 2 ? reinterpret_cast<int8_t*>(token + table_bytes) : nullptr; }
  float* scale(char* token) const { return reinterpret_cast<float*>(token + terms * table_bytes); }
  float* sum(char* token) const { return reinterpret_cast<float*>(token + terms * table_bytes + group_bytes); }
  LutTables tables(char* token) const { return {table(token), residual(token), scale(token), sum(token)}; }
};

// ---- scalar level ----

void build_scalar(const float* x, int64_t cols, int g, int8_t* table, int8_t* residual, float* scale, float* sum) {
  float entries[128 / 4][16];
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const float* xg = x + grp * g;
    float amax = 0.0f;
    for (int quad = 0; quad < g / 4; ++quad)
      for (int e = 0; e < 16; ++e) {
        float t = 0.0f;
        for (int m = 0; m < 4; ++m) t += ((e >> m) & 1) ? xg[4 * quad + m] : -xg[4 * quad + m];
        entries[quad][e] = 0.5f * t;
        amax = std::max(amax, std::fabs(entries[quad][e]));
      }
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int quad = 0; quad < g / 4; ++quad)
      for (int e = 0; e < 16; ++e) {
        const int64_t at = grp * g * 4 + 16 * quad + e;  // 16 bytes per quad
        const float u = entries[quad][e] * inv, first = std::nearbyint(u);
        table[at] = static_cast<int8_t>(first);
        if (residual) residual[at] = static_cast<int8_t>(std::nearbyint((u - first) * static_cast<float>(kLutResidualSteps)));
      }
    scale[grp] = residual ? amax / 127.0f / static_cast<float>(kLutResidualSteps) : amax / 127.0f;
    sum[grp] = lut_group_sum(xg, g);
  }
}

void tile_scalar(const BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens, int nt,
                 float* out) {
  const int b = shape.bits, g = shape.group_size;
  const int64_t groups = cols / g;
  const float half_range = 0.5f * static_cast<float>((1 << b) - 1);
  float result[kLutTokens][kBlTileRows] = {};
  for (int64_t grp = 0; grp < groups; ++grp) {
    const uint8_t* tg = tile + grp * shape.tile_group_bytes();
    int32_t acc[kLutTokens][kBlTileRows] = {};
    for (int k = 0; k < shape.registers(); ++k) {
      const uint8_t* line = tg + 64 + 64 * (k / 2);
      const int shift = 4 * (k % 2);
      const int64_t chunk = grp * shape.chunks() + k / b;
      for (int r = 0; r < kBlTileRows; ++r)
        for (int i = 0; i < 4; ++i) {
          const int nibble = (line[4 * r + i] >> shift) & 15;
          const int entry = 16 * lut_lane_quad(b, k, i) + nibble, mult = 1 << lut_lane_plane(b, k, i);
          for (int t = 0; t < nt; ++t) {
            const LutTables& tt = tokens[t];
            acc[t][r] += mult * (tt.residual ? kLutResidualSteps * tt.table[chunk * 64 + entry] + tt.residual[chunk * 64 + entry]
                                             : tt.table[chunk * 64 + entry]);
          }
        }
    }
    for (int r = 0; r < kBlTileRows; ++r) {
      uint16_t s16, z16;
      std::memcpy(&s16, tg + 2 * r, 2);
      std::memcpy(&z16, tg + 32 + 2 * r, 2);
      const float s = fp16_to_f32(s16), z = fp16_to_f32(z16);
      for (int t = 0; t < nt; ++t) {
        // The SIMD levels' order of operations: v = (half_range - z) * sum + s_T * acc (fused),
        // out += s * v (fused).
        const float v = std::fma(half_range - z, tokens[t].sum[grp], static_cast<float>(acc[t][r]) * tokens[t].scale[grp]);
        result[t][r] = std::fma(s, v, result[t][r]);
      }
    }
  }
  for (int t = 0; t < nt; ++t) std::memcpy(out + t * kBlTileRows, result[t], sizeof(result[t]));
}

// The first kLutStreamLead bytes of a tile a decode thread starts a stream with: the tile
// kernels prefetch that far ahead of what they read, so without this each matmul's first lines
// come cold, one DRAM latency at a time. (noipa: GCC deletes a function of prefetches alone
// when it sees through it, docs/cpu_kernels.md.)
__attribute__((noipa)) void prefetch_stream_start(const uint8_t* tile) {
  for (int off = 0; off < kLutStreamLead; off += 64) __builtin_prefetch(tile + off, 0, 3);
}

// The kernels of level isa, lowered to the nearest level this CPU supports.
const LutKernels& kernels_for(Isa isa, const BlGroupShape& shape) {
  if (isa >= Isa::avx512 && isa_supported(Isa::avx512))
    if (const LutKernels* k = lut_kernels_avx512(shape)) return *k;
  if (isa >= Isa::avx2 && isa_supported(Isa::avx2))
    if (const LutKernels* k = lut_kernels_avx2(shape)) return *k;
  return lut_kernels_scalar();
}

}  // namespace

const LutKernels& lut_kernels_scalar() {
  static const LutKernels k{build_scalar, tile_scalar};
  return k;
}

bool lut_matmul_supported(DType weight_type) { return quant::is_bl_group(weight_type); }

size_t lut_matmul_scratch_bytes(DType weight_type, int64_t cols, int64_t n) {
  const auto shape = quant::bl_group_shape(weight_type);
  if (!shape) return 0;
  return TokenTablesLayout(cols, shape->group_size, 2).token_bytes * static_cast<size_t>(n);
}

void lut_matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
                AlignedBuffer& scratch, Isa isa, ActPrecision precision, const DecodeFusion& fusion) {
  const BlGroupShape shape = *quant::bl_group_shape(w.dtype);
  const LutKernels& k = kernels_for(isa, shape);
  const int64_t cols = w.cols(), rows = w.rows(), n = x.rows();
  assert(rows % kBlTileRows == 0);
  const TokenTablesLayout layout(cols, shape.group_size, precision == ActPrecision::int8x2 ? 2 : 1);
  const float* xf = x.as<const float>();
  const int g = shape.group_size;
  const int64_t groups = cols / g;
  float* o = out.as<float>();
  const float* bias_f = bias ? bias->as<const float>() : nullptr;
  const auto* wbase = static_cast<const uint8_t*>(w.data);
  const size_t tile_bytes = w.row_size() * kBlTileRows;
  auto tile_at = [&](int64_t i) { return wbase + tile_bytes * static_cast<size_t>(i); };
  assert(n == 1 || (!fusion.norm && !fusion.up && !fusion.accumulate));
  // Row i * 16 + r of token t's output: the sums times `scale` (1 / rms with a norm), plus the
  // bias, stored or (fusion.accumulate) added.
  auto store = [&](int64_t i, int64_t t, const float* result, float scale) {
    for (int r = 0; r < kBlTileRows; ++r) {
      const int64_t row = i * kBlTileRows + r;
      const float v = result[r] * scale + (bias_f ? bias_f[row] : 0.0f);
      o[t * rows + row] = fusion.accumulate ? o[t * rows + row] + v : v;
    }
  };

  // Scratch: the tables of the n tokens; with a prologue then x' [cols] and each thread's sum
  // of x² (a cache line apart).
  const bool prologue = fusion.norm || fusion.up;
  constexpr size_t kLine = 64;
  const size_t tables_bytes = layout.token_bytes * static_cast<size_t>(n);
  const size_t need = tables_bytes + (prologue ? align64(static_cast<size_t>(cols) * sizeof(float)) +
                                                     kLine * static_cast<size_t>(pool.size())
                                               : 0);
  if (scratch.bytes() < need && !scratch.resize(need)) {
    assert(!"lut_matmul: cannot allocate the activation tables");
    return;
  }
  char* tables = scratch.as<char>();
  float* x_prime = prologue ? reinterpret_cast<float*>(tables + tables_bytes) : nullptr;
  char* sums_of_squares = prologue ? tables + tables_bytes + align64(static_cast<size_t>(cols) * sizeof(float)) : nullptr;
  auto thread_sum_sq = [&](int thread) -> double& { return *reinterpret_cast<double*>(sums_of_squares + kLine * thread); };
  auto token = [&](int64_t t) { return tables + layout.token_bytes * static_cast<size_t>(t); };
  // Tables of groups [g0, g1) of token t, from src (x, or x' for one token).
  auto build = [&](const float* src, int64_t t, int64_t g0, int64_t g1) {
    int8_t* residual = layout.residual(token(t));
    k.build(src + t * cols + g0 * g, (g1 - g0) * g, g, layout.table(token(t)) + g0 * g * 4,
            residual ? residual + g0 * g * 4 : nullptr, layout.scale(token(t)) + g0, layout.sum(token(t)) + g0);
  };

  if (n == 1) {
    // Decode in one region: each thread makes its share of x' (a fusion's prologue), prefetches
    // the starts of its tile streams, builds its share of the token's tables (all of them take
    // 4-12 us at 2048-8192 columns, with DRAM idle), meets the others, and multiplies its tiles:
    // the range cut into S = k.decode_tiles equal parts, tile j of every part in one call (S
    // streams), then the tiles left over one by one. (The prologue goes before the prefetches,
    // whose lines would hold the fill buffers its reads of x, half from the other core, need.)
    const int64_t tiles = rows / kBlTileRows;
    SpinBarrier built(pool.size());
    const LutTables tok = layout.tables(token(0));
    auto share = [&](int thread, int n_threads) {
      const int64_t i0 = tiles * thread / n_threads, i1 = tiles * (thread + 1) / n_threads;
      const int S = k.decode ? k.decode_tiles : 1;
      const int64_t part = (i1 - i0) / S;               // tiles per part
      const int64_t grouped = k.decode ? S * part : 0;  // tiles the decode kernel takes
      const int64_t g0 = groups * thread / n_threads, g1 = groups * (thread + 1) / n_threads;
      const float* src = xf;
      if (prologue) {
        const int64_t c0 = g0 * g, c1 = g1 * g;
        if (fusion.norm) {
          thread_sum_sq(thread) = sum_of_squares(xf + c0, c1 - c0);
          for (int64_t c = c0; c < c1; ++c) x_prime[c] = xf[c] * fusion.norm[c];
        } else {
          silu_mul(xf + c0, fusion.up + c0, x_prime + c0, c1 - c0);
        }
        src = x_prime;
      }
      for (int s = 0; s < S && part > 0; ++s) prefetch_stream_start(tile_at(i0 + s * part));
      build(src, 0, g0, g1);
      built.arrive_and_wait();
      float scale = 1.0f;
      if (fusion.norm) {
        double sum_sq = 0.0;
        for (int i = 0; i < n_threads; ++i) sum_sq += thread_sum_sq(i);
        scale = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(cols) + fusion.eps));
      }
      float result[kLutMaxDecodeTiles][kBlTileRows];
      const uint8_t* call_tiles[kLutMaxDecodeTiles];  // one from each part
      float* outs[kLutMaxDecodeTiles];
      for (int s = 0; s < S; ++s) outs[s] = result[s];
      for (int64_t j = 0; j < grouped / S; ++j) {
        for (int s = 0; s < S; ++s) call_tiles[s] = tile_at(i0 + s * part + j);
        k.decode(shape, cols, call_tiles, &tok, outs);
        for (int s = 0; s < S; ++s) store(i0 + s * part + j, 0, result[s], scale);
      }
      for (int64_t i = i0 + grouped; i < i1; ++i) {  // left over, or all without a decode kernel
        k.tile(shape, cols, tile_at(i), &tok, 1, result[0]);
        store(i, 0, result[0], scale);
      }
    };
    pool.run([fn = &share](int thread, int n_threads) { (*fn)(thread, n_threads); });
    return;
  }

  // Prefill: the tables of all tokens first, split over (token, group), then per tile every
  // block of kLutTokens tokens (the tile's weights stay in L1/L2 across the blocks).
  pool.parallel_for(n * groups, 1, [&](int64_t a, int64_t b) {
    while (a < b) {
      const int64_t t = a / groups, g0 = a % groups, g1 = std::min(groups, g0 + (b - a));
      build(xf, t, g0, g1);
      a += g1 - g0;
    }
  });
  pool.parallel_for(rows / kBlTileRows, 1, [&](int64_t i0, int64_t i1) {
    LutTables block[kLutTokens];
    float result[kLutTokens * kBlTileRows];
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t t0 = 0; t0 < n; t0 += kLutTokens) {
        const int nt = static_cast<int>(std::min<int64_t>(kLutTokens, n - t0));
        for (int t = 0; t < nt; ++t) block[t] = layout.tables(token(t0 + t));
        k.tile(shape, cols, tile_at(i), block, nt, result);
        for (int t = 0; t < nt; ++t) store(i, t0 + t, result + t * kBlTileRows, 1.0f);
      }
  });
}

}  // namespace bl::cpu
