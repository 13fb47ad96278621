// parse_safetensors on files built in the test: valid files, then each malformed field.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace bl {
namespace {

using nlohmann::json;

// u64 header length + JSON header (padded with spaces to 8 bytes, as the library does) + data.
std::string safetensors_bytes(const json& header, const std::string& data) {
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  uint64_t n = h.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + h + data;
}

std::string raw_with_header_length(uint64_t n, const std::string& rest) {
  return std::string(reinterpret_cast<const char*>(&n), 8) + rest;
}

Expected<SafetensorsContents> parse(const std::string& b) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(b.data()), b.size());
}

void expect_error(const std::string& b, const std::string& fragment, StatusCode code = StatusCode::invalid_file) {
  auto r = parse(b);
  ASSERT_FALSE(r.ok()) << "parsed a malformed file";
  EXPECT_EQ(r.status().code(), code) << r.status().message();
  EXPECT_NE(r.status().message().find(fragment), std::string::npos) << "'" << fragment << "' not in: " << r.status().message();
}

TEST(Safetensors, ReadsTensorsAndMetadata) {
  std::string data(2 * 3 * 4 + 4 * 2 + 2, '\0');
  float w[6] = {1, 2, 3, 4, 5, 6};
  std::memcpy(data.data(), w, sizeof w);
  json h = {{"__metadata__", {{"format", "pt"}}},
            {"w", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
            {"h", {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {24, 32}}}},
            {"s", {{"dtype", "F16"}, {"shape", json::array()}, {"data_offsets", {32, 34}}}}};
  std::string b = safetensors_bytes(h, data);
  auto r = parse(b);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->metadata.at("format"), "pt");
  ASSERT_EQ(r->tensors.size(), 3u);
  const SafetensorsTensor* w_t = nullptr;
  for (const auto& t : r->tensors)
    if (t.name == "w") w_t = &t;
  ASSERT_NE(w_t, nullptr);
  EXPECT_EQ(w_t->dtype, DType::F32);
  EXPECT_EQ(w_t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w_t->file_offset, r->data_offset);
  EXPECT_EQ(r->data_offset % 8, 0u);
  EXPECT_EQ(w_t->bytes, 24u);
  EXPECT_EQ(static_cast<const float*>(w_t->data)[5], 6.0f);
  for (const auto& t : r->tensors) {
    if (t.name == "s") {
      EXPECT_TRUE(t.shape.empty());
    }
    if (t.name == "h") {
      EXPECT_EQ(t.dtype, DType::BF16);
    }
  }
}

TEST(Safetensors, EmptyFileAndHeaderBounds) {
  expect_error("", "too small");
  expect_error("abc", "too small");
  expect_error(raw_with_header_length(1000, "{}"), "header of 1000 bytes runs past the end");
  expect_error(raw_with_header_length(~0ull, "{}"), "exceeds the limit");
  expect_error(raw_with_header_length(5, "{\"a\":"), "not valid JSON");
  expect_error(raw_with_header_length(2, "[]"), "not a JSON object");
}

TEST(Safetensors, MalformedEntries) {
  auto one = [](json entry, const std::string& data = std::string(16, '\0')) {
    return safetensors_bytes(json{{"blk.w", entry}}, data);
  };
  expect_error(one("x"), "'blk.w': header entry is not an object");
  expect_error(one({{"shape", {4}}, {"data_offsets", {0, 16}}}), "'blk.w': missing string field 'dtype'");
  expect_error(one({{"dtype", "F8_E4M3"}, {"shape", {4}}, {"data_offsets", {0, 4}}}), "dtype 'F8_E4M3' is not supported",
               StatusCode::unsupported);
  expect_error(one({{"dtype", "F32"}, {"data_offsets", {0, 16}}}), "missing array field 'shape'");
  expect_error(one({{"dtype", "F32"}, {"shape", {-4}}, {"data_offsets", {0, 16}}}), "non-integer or negative");
  expect_error(one({{"dtype", "F32"}, {"shape", {1, 1, 1, 1, 1}}, {"data_offsets", {0, 4}}}), "5 dims");
  expect_error(one({{"dtype", "F32"}, {"shape", {1ull << 40, 1ull << 40}}, {"data_offsets", {0, 16}}}), "overflows");
  expect_error(one({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0}}}), "'data_offsets' must be [begin, end]");
  expect_error(one({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {16, 0}}}), "reversed");
  expect_error(one({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {8, 24}}}),
               "'blk.w': data [8, 24) runs past the end of the data section (16 bytes)");
  expect_error(one({{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, 16}}}),
               "shape [3] of F32 needs 12 bytes but data_offsets span 16");
  // Offsets that would wrap.
  expect_error(one({{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {~0ull - 7, ~0ull}}}), "runs past the end");
}

TEST(Safetensors, OverlappingTensors) {
  json h = {{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}}},
            {"b", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 16}}}}};
  expect_error(safetensors_bytes(h, std::string(16, '\0')), "'a' and 'b' overlap");
}

TEST(Safetensors, TensorCountLimit) {
  json h = json::object();
  for (int i = 0; i < 5; ++i) {
    std::string name = "t";
    name += std::to_string(i);  // appended: "t" + std::to_string(i) trips g++ 12's -Wrestrict at -O3
    h[name] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {4 * i, 4 * i + 4}}};
  }
  std::string b = safetensors_bytes(h, std::string(20, '\0'));
  ParseLimits limits;
  limits.max_tensors = 3;
  auto r = parse_safetensors(reinterpret_cast<const uint8_t*>(b.data()), b.size(), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("over the limit of 3"), std::string::npos);
  EXPECT_TRUE(parse(b).ok());
}

}  // namespace
}  // namespace bl
