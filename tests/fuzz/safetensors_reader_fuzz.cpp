// libFuzzer target for the safetensors parser (header length, JSON header, offsets, shapes):
// parses the input in memory and touches the first and last byte of every tensor it accepts.
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"

namespace {
volatile uint64_t g_sink;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = bl::parse_safetensors(data, size);
  if (!parsed.ok()) return 0;
  for (const bl::SafetensorsTensor& t : parsed->tensors) {
    if (t.bytes == 0) continue;
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    g_sink = g_sink + p[0] + p[t.bytes - 1] + t.shape.size();
  }
  return 0;
}
