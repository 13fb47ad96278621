#include "kernels/cpu/cpu_features.h"

#include <cstdint>
#include <cstdlib>

#include "core/env_switch.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define BL_X86 1
#endif

namespace bl::cpu {
namespace {

#if defined(BL_X86)
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(BL_X86)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  f.has_fma = (c >> 12) & 1;
  f.has_f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;         // XMM and YMM state
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;    // plus opmask and ZMM state
  if (!os_avx) {
    f.has_fma = f.has_f16c = false;
    return f;
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.has_avx2 = (b >> 5) & 1;
    f.has_bmi2 = (b >> 8) & 1;
    if (os_avx512) {
      f.has_avx512f = (b >> 16) & 1;
      f.has_avx512dq = (b >> 17) & 1;
      f.has_avx512bw = (b >> 30) & 1;
      f.has_avx512vl = (b >> 31) & 1;
      f.has_avx512vnni = (c >> 11) & 1;
      f.has_avx512vbmi = (c >> 1) & 1;
    }
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.has_avx_vnni = (a >> 4) & 1;
    if (os_avx512) f.has_avx512bf16 = (a >> 5) & 1;
  }
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::scalar: break;
  }
  return "scalar";
}

std::optional<Isa> isa_from_name(std::string_view name) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    if (name == isa_name(isa)) return isa;
  return std::nullopt;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.has_avx2 && f.has_fma && f.has_f16c && f.has_bmi2;
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::avx2: return avx2;
    case Isa::avx512: return avx2 && f.has_avx512f && f.has_avx512bw && f.has_avx512vl && f.has_avx512dq;
  }
  return false;
}

Isa active_isa() {
  static const Isa isa = [] {
    Isa best = Isa::scalar;
    for (Isa candidate : {Isa::avx2, Isa::avx512})
      if (isa_supported(candidate)) best = candidate;
    if (const char* env = std::getenv("BITLIGHT_ISA")) {
      const auto wanted = isa_from_name(env);
      if (!wanted)
        warn_ignored_env("BITLIGHT_ISA", env, "scalar|avx2|avx512");
      else if (static_cast<int>(*wanted) < static_cast<int>(best))
        best = *wanted;
    }
    return best;
  }();
  return isa;
}

}  // namespace bl::cpu
