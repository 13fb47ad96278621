// File-driven quantize / dequantize, the C++ half of tests/reference/test_quant_vs_ggufpy.py.
//
// The gtest glob builds every *_test.cpp into a test binary, so rather than adding a separate
// helper executable, this test reads its job from environment variables set by the pytest:
//   BL_QUANT_MODE   "dequantize" (blocks in, fp32 out) or "quantize" (fp32 in, blocks out)
//   BL_QUANT_DTYPE  format name as dtype_from_name reads it ("q4_k", "f16")
//   BL_QUANT_IN     input file: raw blocks, or little-endian fp32
//   BL_QUANT_OUT    output file, written by this test
// Without them (a plain ctest run) the test skips; the invalid-input checks always run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "quant/quant.h"

namespace bl {
namespace {

std::vector<char> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST(QuantFileIo, RunsTheJobFromEnvironment) {
  const char* mode = std::getenv("BL_QUANT_MODE");
  const char* type_name = std::getenv("BL_QUANT_DTYPE");
  const char* in_path = std::getenv("BL_QUANT_IN");
  const char* out_path = std::getenv("BL_QUANT_OUT");
  if (!mode || !type_name || !in_path || !out_path) GTEST_SKIP() << "driven by tests/reference/test_quant_vs_ggufpy.py";

  const auto type = dtype_from_name(type_name);
  ASSERT_TRUE(type.has_value()) << "unknown dtype " << type_name;
  const DTypeInfo* info = dtype_info(*type);
  const std::vector<char> in = read_all(in_path);
  ASSERT_FALSE(in.empty()) << "cannot read " << in_path;
  std::vector<char> out;
  if (std::string(mode) == "dequantize") {
    ASSERT_TRUE(can_dequantize(*type));
    ASSERT_EQ(in.size() % info->block_bytes, 0u) << "input is not a whole number of blocks";
    const int64_t n = static_cast<int64_t>(in.size()) / info->block_bytes * info->block_elems;
    out.resize(static_cast<size_t>(n) * sizeof(float));
    dequantize_row(*type, in.data(), reinterpret_cast<float*>(out.data()), n);
  } else {
    ASSERT_EQ(std::string(mode), "quantize");
    ASSERT_TRUE(can_quantize(*type));
    const int64_t n = static_cast<int64_t>(in.size() / sizeof(float));
    ASSERT_EQ(n % info->block_elems, 0) << "element count is not a multiple of the block size";
    out.resize(row_bytes(*type, n));
    quantize_row(*type, reinterpret_cast<const float*>(in.data()), out.data(), n);
  }
  std::ofstream f(out_path, std::ios::binary);
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << out_path;
}

TEST(QuantFileIo, EveryBlockFormatIsSupported) {
  for (const char* name : {"f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q2_k", "q3_k", "q4_k",
                           "q5_k", "q6_k", "q8_k", "tq1_0", "tq2_0"}) {
    const auto t = dtype_from_name(name);
    ASSERT_TRUE(t.has_value()) << name;
    EXPECT_TRUE(can_dequantize(*t)) << name;
    EXPECT_TRUE(can_quantize(*t)) << name;
  }
  EXPECT_FALSE(can_dequantize(DType::I32));
}

}  // namespace
}  // namespace bl
