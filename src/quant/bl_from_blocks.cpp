// GGUF's 32-weight-scaled block formats as bl<b>g32 (quant/bl_group.h), per group of 32 weights:
//
//   Q4_0, Q5_0   d (q - 8), d (q - 16)   s = d, z = 8 or 16: exact (the same fp32 products)
//   Q4_1, Q5_1   d q + m                 s = d, z = -m / d in fp16
//   Q4_K, Q5_K   a q - b per sub-block   s = a = d sc in fp16, z = b / s in fp16 (b = dmin m)
//
// The rounded ones move a weight by at most ~2^-11 (|a q| + 2 |b|): s rounds by 2^-11 of a, z by
// 2^-11 of b / s. A group whose scale rounds to 0, or whose z leaves fp16's range (b > 65504 a,
// so a q is under 2^-11 of b), is stored as its constant value -b: codes 1, s = -b, z = 0.
#include <cassert>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "core/half.h"
#include "quant/bl_group.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/quant_formats.h"

namespace bl::quant {
namespace {

constexpr int kGroup = 32;  // weights per bl group (g) and per source scale

// One row's group of 32 weights as bl stores it: codes and fp16 s, z.
struct Group {
  uint8_t q[kGroup];
  uint16_t s = 0, z = 0;
};

// Every weight of the group is v.
void set_constant(Group& g, float v) {
  std::memset(g.q, 1, sizeof g.q);
  g.s = f32_to_fp16(v);
  g.z = 0;
}

// Weights a q - b for the codes already in g.
void set_affine(Group& g, float a, float b) {
  g.s = f32_to_fp16(a);
  const float s = fp16_to_f32(g.s);
  const float z = s != 0.0f ? b / s : INFINITY;
  if (!(std::fabs(z) <= 65504.0f)) return set_constant(g, -b);
  g.z = f32_to_fp16(z);
}

// Codes of a 32-weight block's nibbles (byte j: weight j low, j + 16 high), plus Q5's fifth bits
// (bit j of qh: weight j).
void nibble_codes(const uint8_t* qs, const uint8_t* qh, Group& g) {
  uint32_t high = 0;
  if (qh) std::memcpy(&high, qh, sizeof high);
  for (int j = 0; j < kGroup / 2; ++j) {
    g.q[j] = static_cast<uint8_t>((qs[j] & 0x0F) | (((high >> j) & 1) << 4));
    g.q[j + 16] = static_cast<uint8_t>((qs[j] >> 4) | (((high >> (j + 16)) & 1) << 4));
  }
}

// The groups of one row of `cols` weights in format `from`, into out[cols / 32].
void row_groups(DType from, const uint8_t* row, int64_t cols, Group* out) {
  switch (from) {
    case DType::Q4_0:
    case DType::Q5_0:
    case DType::Q4_1:
    case DType::Q5_1: {
      const size_t bytes = static_cast<size_t>(dtype_info(from)->block_bytes);
      // Without a min the codes sit 8 (or 16) above the value: z = 8 or 16, exactly.
      const uint16_t offset = f32_to_fp16(from == DType::Q5_0 ? 16.0f : 8.0f);
      for (int64_t b = 0; b < cols / kGroup; ++b, row += bytes) {
        Group& g = out[b];
        const LegacyBlockFields f = legacy_block_fields(from, row);
        nibble_codes(f.qs, f.qh, g);
        if (f.m) {
          set_affine(g, fp16_to_f32(*f.d), -fp16_to_f32(*f.m));
        } else {
          g.s = *f.d;
          g.z = offset;
        }
      }
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      const bool five = from == DType::Q5_K;
      const size_t bytes = five ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
      for (int64_t sb = 0; sb < cols / kQKK; ++sb, row += bytes) {
        // Both block types start d, dmin, scales[12]; Q5_K then has qh[32] before qs.
        const auto* head = reinterpret_cast<const BlockQ4_K*>(row);
        const uint8_t* qs = five ? reinterpret_cast<const BlockQ5_K*>(row)->qs : head->qs;
        const uint8_t* qh = five ? reinterpret_cast<const BlockQ5_K*>(row)->qh : nullptr;
        const float d = fp16_to_f32(head->d), dmin = fp16_to_f32(head->dmin);
        // Sub-block j: element l is the low (j even) or high nibble of qs[32 (j / 2) + l], its
        // fifth bit (Q5_K) bit j of qh[l]; value (d sc_j) q - dmin m_j (dequantize_q4_k).
        for (int j = 0; j < kQKK / kGroup; ++j) {
          Group& g = out[sb * (kQKK / kGroup) + j];
          for (int l = 0; l < kGroup; ++l) {
            const uint8_t byte = qs[kGroup * (j / 2) + l];
            const int nibble = j % 2 ? byte >> 4 : byte & 0x0F;
            const int fifth = qh ? (qh[l] >> j) & 1 : 0;
            g.q[l] = static_cast<uint8_t>(nibble | (fifth << 4));
          }
          uint8_t sc, m;
          get_scale_min_k4(j, head->scales, &sc, &m);
          set_affine(g, d * sc, dmin * m);
        }
      }
      return;
    }
    default:
      assert(false && "not a format with a bl equivalent");
  }
}

// Row r's scale, zero and codes into one tile group of bl<kBits>g32 (bl_group.h): nibble register
// k holds, for chunk c = k / kBits, nibbles pi = 4 (k % kBits) .. + 3 (pi = q kBits + p: quad q,
// plane p), nibble bit m = bit p of code 16 c + 4 q + m; line l, byte 4 r + i = register 2 l's
// nibble i, register 2 l + 1's in the high half. A constant kBits unrolls the index arithmetic.
// Bits p of a quad's 4 codes (one a byte) sit at bits 0, 8, 16, 24; multiplying by 0x01020408
// moves them to bits 24..27 without carries (each lands at its own place).
template <int kBits>
void pack_group(const Group& g, int r, uint8_t* tile_group) {
  constexpr int kChunks = kGroup / 16, kRegisters = kChunks * kBits;
  std::memcpy(tile_group + 2 * r, &g.s, 2);
  std::memcpy(tile_group + 32 + 2 * r, &g.z, 2);
  if constexpr (kBits == 4) {
    // Line l = 2 c + h holds quads 2 h (low nibbles) and 2 h + 1 (high) of chunk c, byte i = plane
    // i: bit m of the byte is bit i of code 16 c + 8 h + m. Those 8 codes as the bytes of a
    // word, bit i of each at 8 m; times 0x0102040810204080 gathers them into bits 56 + m
    // (distinct places, no carries).
    for (int line = 0; line < kRegisters / 2; ++line) {
      uint64_t codes;
      std::memcpy(&codes, g.q + 8 * line, sizeof codes);
      for (int i = 0; i < 4; ++i)
        tile_group[64 + 64 * line + 4 * r + i] =
            static_cast<uint8_t>((((codes >> i) & 0x0101010101010101u) * 0x0102040810204080u) >> 56);
    }
    return;
  }
  uint8_t nibbles[kRegisters][4];
  for (int c = 0; c < kChunks; ++c)
    for (int q = 0; q < 4; ++q) {
      uint32_t quad;
      std::memcpy(&quad, g.q + 16 * c + 4 * q, sizeof quad);
      for (int p = 0; p < kBits; ++p) {
        const int pi = q * kBits + p;
        nibbles[c * kBits + pi / 4][pi % 4] = static_cast<uint8_t>((((quad >> p) & 0x01010101u) * 0x01020408u) >> 24);
      }
    }
  for (int line = 0; line < kRegisters / 2; ++line)
    for (int i = 0; i < 4; ++i)
      tile_group[64 + 64 * line + 4 * r + i] = static_cast<uint8_t>(nibbles[2 * line][i] | nibbles[2 * line + 1][i] << 4);
}

}  // namespace

std::optional<DType> bl_equivalent(DType from) {
  switch (from) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q4_K:
      return DType::BL4G32;
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q5_K:
      return DType::BL5G32;
    default:
      return std::nullopt;
  }
}

void blocks_to_bl(DType from, const void* src, void* dst, int64_t rows, int64_t cols) {
  const std::optional<DType> to = bl_equivalent(from);
  assert(to && rows % kBlTileRows == 0 && cols % dtype_info(from)->block_elems == 0);
  const BlGroupShape shape = *bl_group_shape(*to);
  const int64_t groups = cols / kGroup;
  const size_t in_row = row_bytes(from, cols);
  auto* out = static_cast<uint8_t*>(dst);
  std::vector<Group> row_of_groups(static_cast<size_t>(groups));
  for (int64_t row = 0; row < rows; ++row) {
    row_groups(from, static_cast<const uint8_t*>(src) + in_row * static_cast<size_t>(row), cols, row_of_groups.data());
    uint8_t* tile = out + (row / kBlTileRows) * groups * shape.tile_group_bytes();
    for (int64_t grp = 0; grp < groups; ++grp)
      (shape.bits == 4 ? pack_group<4> : pack_group<5>)(row_of_groups[static_cast<size_t>(grp)],
                                                         static_cast<int>(row % kBlTileRows),
                                                         tile + grp * shape.tile_group_bytes());
  }
}

}  // namespace bl::quant
