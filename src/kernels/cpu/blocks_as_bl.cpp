#include "kernels/cpu/blocks_as_bl.h"

#include "core/env_switch.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul_interleaved.h"
#include "quant/bl_group.h"

namespace bl::cpu {
namespace {

BlocksAsBl mode_from_env() {
  const auto v = env_choice("BITLIGHT_CPU_AS_BL", {"0", "1", "auto"});
  if (v == "0") return BlocksAsBl::never;
  if (v == "1") return BlocksAsBl::always;
  return BlocksAsBl::automatic;
}
BlocksAsBl mode_now = mode_from_env();

}  // namespace

void set_blocks_as_bl(BlocksAsBl mode) { mode_now = mode; }

std::optional<DType> blocks_as_bl(DType type, int64_t rows) {
  const std::optional<DType> to = quant::bl_equivalent(type);
  if (!to || rows <= 0 || rows % quant::kBlTileRows != 0) return std::nullopt;
  switch (mode_now) {
    case BlocksAsBl::never:
      return std::nullopt;
    case BlocksAsBl::always:
      return to;
    case BlocksAsBl::automatic:
      return !interleave_at_load() && active_isa() >= Isa::avx2 ? to : std::nullopt;
  }
  return std::nullopt;
}

}  // namespace bl::cpu
