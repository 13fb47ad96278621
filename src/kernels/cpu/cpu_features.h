// What this CPU can run, read once from CPUID, and the ISA level the kernels use.
//
// Kernels come in three levels: portable scalar C++, AVX2 (+FMA, F16C) and AVX-512
// (F, BW, VL, DQ; VNNI and BF16 used inside that level when present). The environment
// variable BITLIGHT_ISA=scalar|avx2|avx512 lowers the level (never raises it above what the
// CPU has), so tests and benchmarks can cover every path on one machine.
#pragma once

#include <optional>
#include <string_view>

namespace bl::cpu {

struct CpuFeatures {
  bool has_avx2 = false;
  bool has_fma = false;
  bool has_f16c = false;
  bool has_bmi2 = false;
  bool has_avx512f = false;
  bool has_avx512bw = false;
  bool has_avx512vl = false;
  bool has_avx512dq = false;
  bool has_avx512vnni = false;
  bool has_avx512vbmi = false;  // vpermb (byte permutes): the lookup-table kernels (lut_matmul.h)
  bool has_avx512bf16 = false;
  bool has_avx_vnni = false;  // VEX-encoded 256-bit VNNI (Alder Lake, Sapphire Rapids)
};

// Detected once (CPUID + XGETBV, so an OS that does not save the AVX-512 state disables it).
const CpuFeatures& cpu_features();

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

std::string_view isa_name(Isa isa);                     // "scalar", "avx2", "avx512"
std::optional<Isa> isa_from_name(std::string_view name);  // inverse of isa_name

// True when this CPU can run the kernels of that level.
bool isa_supported(Isa isa);
// The highest supported level, lowered to BITLIGHT_ISA when that is set (read once).
Isa active_isa();

}  // namespace bl::cpu
