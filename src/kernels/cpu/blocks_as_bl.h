// Which block-format weights the CPU backend converts to bl<b>g32 at load and multiplies with the
// lookup-table kernels (lut_matmul.h) instead of its dot kernels.
//
// Why: at the AVX2 level the dot kernels of the 4- and 5-bit block formats are compute-bound
// (maddubs / madd per 32 weights and row; AMD Zen 3, one core in cache: Q4_0 and Q4_K ~9 GB/s,
// the lookup tables ~24 GB/s), so a 1B model decodes at 35-55 % of the memory's bandwidth; as
// bl4g32 / bl5g32 (+0.5 bit per weight: an fp16 zero point per 32) it decodes 1.4-2x and
// prefills 2.2-3.4x as fast (docs/cpu_kernels.md, "Fourteenth session"). With AVX-512 VNNI the
// interleaved kernels (matmul_interleaved.h) stream at the memory's rate: no conversion there.
//
// Q4_0 / Q5_0 convert exactly; Q4_1 / Q5_1 / Q4_K / Q5_K round their per-32 scale and offset to
// the bl format's fp16 s, z (quant::bl_equivalent): ~2^-11 of a weight's terms.
#pragma once

#include <cstdint>
#include <optional>

#include "core/dtype.h"

namespace bl::cpu {

// automatic: where interleave_at_load() is off and the CPU has AVX2. BITLIGHT_CPU_AS_BL=0 / 1
// starts the process at never / always (comparisons).
enum class BlocksAsBl { automatic, always, never };
void set_blocks_as_bl(BlocksAsBl mode);  // process-wide (tests)

// The bl type the CPU backend stores a weight of `type` with `rows` rows as, or nullopt: kept as
// it is. Needs whole 16-row tiles (bl's layout); columns come in whole blocks of any of these
// formats, so in whole bl groups of 32.
std::optional<DType> blocks_as_bl(DType type, int64_t rows);

}  // namespace bl::cpu
