// Malformed GGUF files, built byte by byte: each must give StatusCode::invalid_file (or
// unsupported for valid-but-unsupported content) with a message naming the problem, and
// none may crash or hang.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "io/gguf_reader.h"
#include "io/model_file.h"
#include "gguf_test_util.h"

namespace bl {
namespace {

// Little-endian GGUF pieces appended to a byte string.
class Bytes {
 public:
  Bytes& u8(uint8_t v) { return put(v); }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& f32(float v) { return put(v); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b_ += s;
    return *this;
  }
  Bytes& raw(const std::string& s) {
    b_ += s;
    return *this;
  }
  Bytes& pad_to(size_t alignment) {
    b_.resize((b_.size() + alignment - 1) / alignment * alignment, '\0');
    return *this;
  }
  Bytes& zeros(size_t n) {
    b_.append(n, '\0');
    return *this;
  }
  const std::string& bytes() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  template <typename T>
  Bytes& put(T v) {
    b_.append(reinterpret_cast<const char*>(&v), sizeof v);
    return *this;
  }
  std::string b_;
};

Bytes header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  Bytes b;
  b.raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
  return b;
}

// One tensor-info record.
void tensor_info(Bytes& b, const std::string& name, std::vector<uint64_t> ne, uint32_t dtype, uint64_t offset) {
  b.str(name).u32(static_cast<uint32_t>(ne.size()));
  for (uint64_t n : ne) b.u64(n);
  b.u32(dtype).u64(offset);
}

Status parse(const std::string& bytes, const ParseLimits& limits = {}) {
  return parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), limits).status();
}

// Expects an error of `code` whose message contains every fragment.
void expect_error(const std::string& bytes, std::initializer_list<const char*> fragments,
                  StatusCode code = StatusCode::invalid_file, const ParseLimits& limits = {}) {
  Status s = parse(bytes, limits);
  ASSERT_FALSE(s.ok()) << "parsed a malformed file";
  EXPECT_EQ(s.code(), code) << s.message();
  for (const char* f : fragments) EXPECT_NE(s.message().find(f), std::string::npos) << "'" << f << "' not in: " << s.message();
}

// A valid file: one key of each kind (array included), two F32 tensors and a Q4_0 tensor.
Bytes valid_file(uint32_t version = 3) {
  Bytes b = header(3, 4, version);
  b.str("general.architecture").u32(8).str("llama");
  b.str("llama.block_count").u32(4).u32(2);
  b.str("llama.rope.freq_base").u32(6).f32(10000.0f);
  b.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(2).str("a").str("b");
  tensor_info(b, "a", {4, 2}, 0, 0);      // 32 bytes at 0
  tensor_info(b, "b", {3}, 0, 32);        // 12 bytes at 32
  tensor_info(b, "q", {32, 1}, 2, 64);    // 18 bytes at 64
  b.pad_to(32);
  b.zeros(64 + 18);
  return b;
}

TEST(GgufMalformed, ValidFileParses) {
  for (uint32_t version : {2u, 3u}) {
    Bytes b = valid_file(version);
    auto r = parse_gguf(reinterpret_cast<const uint8_t*>(b.bytes().data()), b.size());
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->version, version);
    EXPECT_EQ(r->metadata.size(), 4u);
    EXPECT_EQ(r->tensors.size(), 3u);
    EXPECT_EQ(r->tensors[2].bytes, 18u);
  }
}

TEST(GgufMalformed, EveryTruncationIsAnError) {
  const std::string full = valid_file().bytes();
  const size_t data_end = full.size();  // the last tensor ends exactly at the end of the file
  for (size_t n = 0; n < data_end; ++n) {
    Status s = parse(full.substr(0, n));
    ASSERT_FALSE(s.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(s.code(), StatusCode::invalid_file) << n << ": " << s.message();
  }
}

TEST(GgufMalformed, TruncationMessagesSayWhere) {
  const std::string full = valid_file().bytes();
  expect_error(full.substr(0, 2), {"too small"});
  expect_error(full.substr(0, 10), {"truncated", "tensor count"});
  expect_error(full.substr(0, 30), {"kv count 4 needs at least 52 bytes but only 6 follow the header"});
  Bytes key_only = header(0, 1);
  key_only.str("some.long.key.name");
  expect_error(key_only.bytes(), {"file truncated: key 'some.long.key.name' value type at byte offset 50 needs 4 bytes"});
  expect_error(full.substr(0, full.size() - 1), {"tensor 'q'", "runs past the end of the file"});
}

TEST(GgufMalformed, BadMagic) {
  std::string b = valid_file().bytes();
  b[3] = 'X';
  expect_error(b, {"bad magic 'GGUX'"});
}

TEST(GgufMalformed, BadVersion) {
  expect_error(header(0, 0, 1).bytes(), {"version 1"});
  expect_error(header(0, 0, 4).bytes(), {"unknown GGUF version 4"});
  expect_error(header(0, 0, 0x03000000).bytes(), {"big-endian"});
}

TEST(GgufMalformed, AbsurdCounts) {
  expect_error(header(0, 1ull << 40).bytes(), {"kv count 1099511627776", "limit"});
  expect_error(header(1ull << 62, 0).bytes(), {"tensor count 4611686018427387904", "limit"});
  // Under the limits but larger than the file could hold.
  expect_error(header(0, 60000).bytes(), {"kv count 60000 needs at least 780000 bytes but only 0 follow"});
  expect_error(header(60000, 0).bytes(), {"tensor count 60000 (with kv count 0) needs at least 1920000 bytes"});
}

TEST(GgufMalformed, StringLengthPastEnd) {
  Bytes b = header(0, 1);
  b.u64(1000).raw("general.name").u32(8).str("x");  // key length 1000
  expect_error(b.bytes(), {"metadata key #0", "string of 1000 bytes", "runs past the end"});
  Bytes v = header(0, 1);
  v.str("general.name").u32(8).u64(1ull << 60);
  expect_error(v.bytes(), {"'general.name'", "string length 1152921504606846976 exceeds the limit"});
}

TEST(GgufMalformed, ArrayLengthPastEnd) {
  Bytes b = header(0, 1);
  b.str("tokenizer.ggml.scores").u32(9).u32(6).u64(1000).f32(1.0f);
  expect_error(b.bytes(), {"'tokenizer.ggml.scores'", "array of 1000 f32", "runs past the end"});
  Bytes s = header(0, 1);
  s.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(100).str("a");
  expect_error(s.bytes(), {"'tokenizer.ggml.tokens'", "array of 100 string"});
  Bytes huge = header(0, 1);
  huge.str("k").u32(9).u32(0).u64(~0ull);
  expect_error(huge.bytes(), {"'k'", "array length 18446744073709551615 exceeds the limit"});
}

TEST(GgufMalformed, StringElementPastEnd) {
  Bytes b = header(0, 1);
  b.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(2).str("a").u64(500).zeros(8);
  expect_error(b.bytes(), {"'tokenizer.ggml.tokens' element 1", "string of 500 bytes"});
}

TEST(GgufMalformed, UnknownValueTypes) {
  Bytes b = header(0, 1);
  b.str("general.name").u32(13).u32(0);
  expect_error(b.bytes(), {"'general.name'", "unknown value type 13"});
  Bytes a = header(0, 1);
  a.str("k.arr").u32(9).u32(99).u64(0);
  expect_error(a.bytes(), {"'k.arr'", "unknown array element type 99"});
}

TEST(GgufMalformed, NestedArraysAreRejectedByName) {
  Bytes b = header(0, 1);
  b.str("k.nested").u32(9).u32(9).u64(1).u32(4).u64(1).u32(7);
  expect_error(b.bytes(), {"'k.nested'", "arrays of arrays"}, StatusCode::unsupported);
}

TEST(GgufMalformed, DuplicateKeyAndEmptyKey) {
  Bytes b = header(0, 2);
  b.str("a.b").u32(4).u32(1).str("a.b").u32(4).u32(2);
  expect_error(b.bytes(), {"duplicate metadata key 'a.b'"});
  Bytes e = header(0, 1);
  e.str("").u32(4).u32(1);
  expect_error(e.bytes(), {"metadata key #0 is empty"});
}

// A file with the given tensor infos (no metadata) and `data_bytes` zero bytes of data.
std::string tensors_file(const std::function<void(Bytes&)>& infos, uint64_t n_tensors, size_t data_bytes) {
  Bytes b = header(n_tensors, 0);
  infos(b);
  b.pad_to(32).zeros(data_bytes);
  return b.bytes();
}

TEST(GgufMalformed, UnknownTensorDtype) {
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "blk.0.attn_q.weight", {32}, 4, 0); }, 1, 64),
               {"tensor 'blk.0.attn_q.weight'", "unknown dtype id 4"});
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "t", {32}, 0xFFFFFFFF, 0); }, 1, 64), {"unknown dtype id 4294967295"});
}

TEST(GgufMalformed, RowNotAMultipleOfTheBlock) {
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "w", {48, 2}, 2, 0); }, 1, 64),
               {"tensor 'w'", "ne[0] = 48", "q4_0 block size (32)"});
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "k", {100}, 12, 0); }, 1, 512), {"q4_k block size (256)"});
}

TEST(GgufMalformed, ShapeOverflow) {
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "big", {1ull << 32, 1ull << 32}, 0, 0); }, 1, 64),
               {"tensor 'big'", "shape [4294967296, 4294967296] overflows"});
  // Elements fit in int64 but bytes do not.
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "big", {1ull << 31, 1ull << 31}, 0, 0); }, 1, 64),
               {"tensor 'big'", "overflows in bytes"});
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "neg", {~0ull}, 0, 0); }, 1, 64), {"ne[0] = 18446744073709551615 is out of range"});
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "zero", {4, 0}, 0, 0); }, 1, 64), {"tensor 'zero' ne[1] = 0"});
}

TEST(GgufMalformed, BadDimensionCount) {
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "scalar", {}, 0, 0); }, 1, 64), {"tensor 'scalar'", "n_dims = 0"});
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "t5", {1, 1, 1, 1, 1}, 0, 0); }, 1, 64), {"tensor 't5'", "n_dims = 5"});
  ParseLimits two_dims;
  two_dims.max_dims = 2;
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "t3", {1, 1, 1}, 0, 0); }, 1, 64), {"n_dims = 3 (must be 1..2)"},
               StatusCode::invalid_file, two_dims);
}

TEST(GgufMalformed, TensorDataOutOfRange) {
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "blk.0.attn_q.weight", {16}, 0, 32); }, 1, 64),
               {"tensor 'blk.0.attn_q.weight': data [offset 32, 64 bytes] runs past the end of the file"});
  // An offset near 2^64 must not wrap around.
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "w", {8}, 0, ~0ull - 31); }, 1, 64), {"tensor 'w'", "runs past the end"});
}

TEST(GgufMalformed, OverlappingTensors) {
  expect_error(tensors_file(
                   [](Bytes& b) {
                     tensor_info(b, "first", {16}, 0, 0);   // bytes 0..64
                     tensor_info(b, "second", {8}, 0, 32);  // bytes 32..64
                   },
                   2, 64),
               {"tensors 'first' [offset 0, 64 bytes] and 'second' [offset 32] overlap"});
  // Same offset, listed in the other order.
  expect_error(tensors_file(
                   [](Bytes& b) {
                     tensor_info(b, "x", {8}, 0, 0);
                     tensor_info(b, "y", {8}, 0, 0);
                   },
                   2, 64),
               {"overlap"});
}

TEST(GgufMalformed, DuplicateTensorName) {
  expect_error(tensors_file(
                   [](Bytes& b) {
                     tensor_info(b, "output.weight", {8}, 0, 0);
                     tensor_info(b, "output.weight", {8}, 0, 32);
                   },
                   2, 64),
               {"duplicate tensor 'output.weight'"});
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "", {8}, 0, 0); }, 1, 64), {"tensor #0 has an empty name"});
}

TEST(GgufMalformed, MisalignedOffset) {
  expect_error(tensors_file([](Bytes& b) { tensor_info(b, "w", {4}, 0, 4); }, 1, 64),
               {"tensor 'w'", "data offset 4 is not a multiple of the alignment (32)"});
}

TEST(GgufMalformed, BadAlignmentKey) {
  Bytes b = header(0, 1);
  b.str("general.alignment").u32(4).u32(48);
  expect_error(b.bytes(), {"general.alignment = 48", "power of two"});
  Bytes z = header(0, 1);
  z.str("general.alignment").u32(4).u32(0);
  expect_error(z.bytes(), {"general.alignment = 0"});
  Bytes s = header(0, 1);
  s.str("general.alignment").u32(8).str("32");
  expect_error(s.bytes(), {"general.alignment must be an integer, found string"});
}

TEST(GgufMalformed, CustomAlignmentIsHonoured) {
  Bytes b = header(1, 1);
  b.str("general.alignment").u32(4).u32(256);
  tensor_info(b, "w", {4}, 0, 0);
  b.pad_to(256).zeros(16);
  auto r = parse_gguf(reinterpret_cast<const uint8_t*>(b.bytes().data()), b.size());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->alignment, 256u);
  EXPECT_EQ(r->data_offset, 256u);
}

TEST(GgufMalformed, MetadataMemoryLimit) {
  ParseLimits small;
  small.max_metadata_bytes = 100;
  Bytes b = header(0, 1);
  b.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(4).str("a").str("b").str("c").str("d");
  expect_error(b.bytes(), {"'tokenizer.ggml.tokens'", "limit of 100 bytes"}, StatusCode::invalid_file, small);
  ParseLimits few;
  few.max_array_elems = 3;
  expect_error(b.bytes(), {"array length 4 exceeds the limit of 3"}, StatusCode::invalid_file, few);
  ParseLimits short_strings;
  short_strings.max_string_bytes = 8;
  expect_error(b.bytes(), {"metadata key #0: string length 21 exceeds the limit of 8"}, StatusCode::invalid_file,
               short_strings);
}

// Names from the file are escaped in messages, so a binary name cannot garble a terminal.
TEST(GgufMalformed, BinaryNamesAreEscaped) {
  std::string name = "bad\x1b[31m\n";
  expect_error(tensors_file([&](Bytes& b) { tensor_info(b, name, {32}, 77, 0); }, 1, 64), {"'bad\\x1b[31m\\x0a'"});
}

// Random corruption of a valid file: every result is either a parse or an error, never a crash.
TEST(GgufMalformed, RandomByteFlipsNeverCrash) {
  const std::string full = valid_file().bytes();
  std::mt19937 rng(1234);
  int errors = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string b = full;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    Status s = parse(b);
    if (!s.ok()) {
      ++errors;
      EXPECT_FALSE(s.message().empty());
    }
  }
  EXPECT_GT(errors, 10000);  // most corruptions are detected (the rest hit tensor data bytes)
}

TEST(GgufMalformed, OpenNamesThePath) {
  test::TempDir dir;
  test::write_bytes(dir.file("bad.gguf"), std::string("GGUF\x07\0\0\0", 8));
  auto r = ModelFile::open(dir.file("bad.gguf"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::invalid_file);
  EXPECT_NE(r.status().message().find("bad.gguf: "), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("unknown GGUF version 7"), std::string::npos);
  test::write_bytes(dir.file("empty.gguf"), "");
  auto e = ModelFile::open(dir.file("empty.gguf"));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("0 bytes, too small"), std::string::npos) << e.status().message();
}

}  // namespace
}  // namespace bl

namespace bl {
namespace {

// A bl3g32 tensor [32, rows] (16 bytes per row) with or without the tile-layout key.
std::string bl_file(uint64_t rows, bool layout_key, uint32_t layout_version = kTileLayoutVersion) {
  Bytes b = header(1, layout_key ? 1 : 0);
  if (layout_key) b.str(kTileLayoutKey).u32(4).u32(layout_version);
  tensor_info(b, "w", {32, rows}, static_cast<uint32_t>(DType::BL3G32), 0);
  b.pad_to(32);
  b.zeros(16 * rows);
  return b.bytes();
}

TEST(GgufMalformed, TiledTypesNeedWholeTilesAndTheLayoutKey) {
  ASSERT_TRUE(parse(bl_file(16, true)).ok()) << parse(bl_file(16, true)).message();
  expect_error(bl_file(16, false), {"tensor 'w'", "bl3g32", "bitlight.tile_layout = 2", "older bitlight"});
  expect_error(bl_file(16, true, 1), {"tensor 'w'", "bitlight.tile_layout = 2"});
  expect_error(bl_file(24, true), {"tensor 'w'", "24 rows", "tile of 16 rows"});
}

}  // namespace
}  // namespace bl
