#include "kernels/cpu/interleaved_rows.h"

#include <cassert>
#include <cstring>

#include "core/half.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace bl::cpu {
namespace {

// The byte stored for quant byte q: Q8_0 weights move to uint8 (w + 128).
inline uint8_t stored_quant(DType type, uint8_t q) { return type == DType::Q8_0 ? static_cast<uint8_t>(q ^ 0x80) : q; }

}  // namespace

bool can_interleave(DType type, int64_t rows) {
  return (type == DType::Q4_0 || type == DType::Q4_1 || type == DType::Q8_0 || type == DType::Q4_K) && rows > 0 &&
         rows % kTileRows == 0;
}

int interleaved_groups(DType type) { return type == DType::Q8_0 ? 8 : type == DType::Q4_K ? 32 : 4; }

TileOffsets tile_offsets(DType type, int64_t nb) {
  const size_t blocks = static_cast<size_t>(nb);
  TileOffsets o{};
  o.quant_bytes = static_cast<size_t>(64 * interleaved_groups(type));
  o.d_offset = o.quant_bytes * blocks;
  o.m_offset = o.d_offset + blocks * kTileRows * sizeof(uint16_t);
  o.tile_bytes = kTileRows * blocks * static_cast<size_t>(dtype_info(type)->block_bytes);
  return o;
}

namespace {

// Q4_K: quants by chunk / group / row, then the per-super-block headers (interleaved_rows.h).
void interleave_q4_k_tile(const Tensor& src, int64_t t, uint8_t* tile, const TileOffsets& o) {
  const int64_t nb = src.cols() / kQKK;
  for (int r = 0; r < kTileRows; ++r) {
    const auto* row = static_cast<const BlockQ4_K*>(src.row(t * kTileRows + r));
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* quants = tile + o.quant_bytes * static_cast<size_t>(b);
      for (int j = 0; j < 4; ++j)
        for (int g = 0; g < 8; ++g)
          for (int i = 0; i < 4; ++i) quants[64 * (8 * j + g) + 4 * r + i] = row[b].qs[32 * j + 4 * g + i];
      uint8_t* header = tile + o.d_offset + kQ4KHeaderBytes * static_cast<size_t>(b);
      reinterpret_cast<uint16_t*>(header)[r] = row[b].d;
      reinterpret_cast<uint16_t*>(header + 32)[r] = row[b].dmin;
      for (int k = 0; k < kScaleBytesK; ++k) header[64 + 16 * k + r] = row[b].scales[k];
    }
  }
}

}  // namespace

void interleave_rows(const Tensor& src, void* dst, ThreadPool& pool) {
  assert(src.layout == Layout::rows && can_interleave(src.dtype, src.rows()));
  const DType type = src.dtype;
  if (type == DType::Q4_K) {
    const TileOffsets o = tile_offsets(type, src.cols() / kQKK);
    pool.parallel_for(src.rows() / kTileRows, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        interleave_q4_k_tile(src, t, static_cast<uint8_t*>(dst) + o.tile_bytes * static_cast<size_t>(t), o);
    });
    return;
  }
  const int64_t nb = src.cols() / kQK;
  const int groups = interleaved_groups(type);
  const size_t block_bytes = static_cast<size_t>(dtype_info(type)->block_bytes);
  const TileOffsets o = tile_offsets(type, nb);
  pool.parallel_for(src.rows() / kTileRows, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      uint8_t* tile = static_cast<uint8_t*>(dst) + o.tile_bytes * static_cast<size_t>(t);
      auto* d = reinterpret_cast<uint16_t*>(tile + o.d_offset);
      auto* m = reinterpret_cast<uint16_t*>(tile + o.m_offset);
      for (int r = 0; r < kTileRows; ++r) {
        const auto* row = static_cast<const uint8_t*>(src.row(t * kTileRows + r));
        for (int64_t b = 0; b < nb; ++b) {
          const LegacyBlockFields f = legacy_block_fields(type, row + block_bytes * static_cast<size_t>(b));
          d[b * kTileRows + r] = *f.d;
          if (f.m) m[b * kTileRows + r] = *f.m;
          uint8_t* quants = tile + o.quant_bytes * static_cast<size_t>(b);
          for (int g = 0; g < groups; ++g)
            for (int i = 0; i < 4; ++i) quants[64 * g + 4 * r + i] = stored_quant(type, f.qs[4 * g + i]);
        }
      }
    }
  });
}

void dequantize_interleaved_row(const Tensor& w, int64_t r, float* out) {
  assert(w.layout == Layout::tiles16 && can_interleave(w.dtype, w.rows()) && r >= 0 && r < w.rows());
  const DType type = w.dtype;
  if (type == DType::Q4_K) {  // the row's blocks put back together, then the reference dequantizer
    const int64_t nbk = w.cols() / kQKK;
    const TileOffsets o = tile_offsets(type, nbk);
    const uint8_t* tile = static_cast<const uint8_t*>(w.data) + o.tile_bytes * static_cast<size_t>(r / kTileRows);
    const int lane = static_cast<int>(r % kTileRows);
    for (int64_t b = 0; b < nbk; ++b) {
      BlockQ4_K block;
      const uint8_t* quants = tile + o.quant_bytes * static_cast<size_t>(b);
      for (int j = 0; j < 4; ++j)
        for (int g = 0; g < 8; ++g)
          for (int i = 0; i < 4; ++i) block.qs[32 * j + 4 * g + i] = quants[64 * (8 * j + g) + 4 * lane + i];
      const uint8_t* header = tile + o.d_offset + kQ4KHeaderBytes * static_cast<size_t>(b);
      block.d = reinterpret_cast<const uint16_t*>(header)[lane];
      block.dmin = reinterpret_cast<const uint16_t*>(header + 32)[lane];
      for (int k = 0; k < kScaleBytesK; ++k) block.scales[k] = header[64 + 16 * k + lane];
      dequantize_row(DType::Q4_K, &block, out + b * kQKK, kQKK);
    }
    return;
  }
  const int64_t nb = w.cols() / kQK;
  const TileOffsets o = tile_offsets(type, nb);
  const uint8_t* tile = static_cast<const uint8_t*>(w.data) + o.tile_bytes * static_cast<size_t>(r / kTileRows);
  const int lane = static_cast<int>(r % kTileRows);
  const auto* d = reinterpret_cast<const uint16_t*>(tile + o.d_offset);
  const auto* m = reinterpret_cast<const uint16_t*>(tile + o.m_offset);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* quants = tile + o.quant_bytes * static_cast<size_t>(b);
    const float scale = fp16_to_f32(d[b * kTileRows + lane]);
    float* y = out + b * kQK;
    for (int j = 0; j < kQK; ++j) {
      if (type == DType::Q8_0) {
        const uint8_t q = quants[64 * (j / 4) + 4 * lane + j % 4];
        y[j] = static_cast<float>(static_cast<int>(q) - 128) * scale;
        continue;
      }
      const uint8_t q = quants[64 * ((j % 16) / 4) + 4 * lane + j % 4];
      const int nibble = j < 16 ? q & 0x0F : q >> 4;
      // As the reference dequantizers: Q4_0 (q - 8) * d, Q4_1 q * d + m.
      y[j] = type == DType::Q4_0 ? static_cast<float>(nibble - 8) * scale
                                 : static_cast<float>(nibble) * scale + fp16_to_f32(m[b * kTileRows + lane]);
    }
  }
}

}  // namespace bl::cpu
