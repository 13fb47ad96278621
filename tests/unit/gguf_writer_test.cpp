// GgufWriter -> reader round trips: every value type, arrays, alignment, tensor data from
// memory and from fill callbacks, and the .tmp + rename protocol on failure.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <numeric>

#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "io/model_file.h"
#include "gguf_test_util.h"

namespace bl {
namespace {

std::unique_ptr<ModelFile> open_ok(const std::string& path) {
  auto f = ModelFile::open(path);
  EXPECT_TRUE(f.ok()) << f.status().message();
  return f.ok() ? std::move(*f) : nullptr;
}

TEST(GgufWriter, EveryScalarTypeKeepsItsDeclaredType) {
  test::TempDir dir;
  GgufWriter w;
  w.set_u8("u8", 255);
  w.set_i8("i8", -128);
  w.set_u16("u16", 65535);
  w.set_i16("i16", -32768);
  w.set_u32("u32", 4294967295u);
  w.set_i32("i32", -2147483647 - 1);
  w.set_u64("u64", 1ull << 63);
  w.set_i64("i64", INT64_MIN);
  w.set_f32("f32", 3.25f);
  w.set_f64("f64", 0.1);
  w.set_bool("bool", false);
  w.set_string("string", std::string("with\0nul", 8));
  ASSERT_TRUE(w.write(dir.file("s.gguf")).ok());
  auto f = open_ok(dir.file("s.gguf"));
  ASSERT_TRUE(f);
  const std::vector<std::pair<std::string, GgufType>> expected = {
      {"u8", GgufType::u8},     {"i8", GgufType::i8},   {"u16", GgufType::u16},   {"i16", GgufType::i16},
      {"u32", GgufType::u32},   {"i32", GgufType::i32}, {"u64", GgufType::u64},   {"i64", GgufType::i64},
      {"f32", GgufType::f32},   {"f64", GgufType::f64}, {"bool", GgufType::boolean}, {"string", GgufType::string}};
  ASSERT_EQ(f->metadata().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(f->metadata()[i].key, expected[i].first);  // written in the order set
    EXPECT_EQ(f->metadata()[i].value.type, expected[i].second) << expected[i].first;
  }
  EXPECT_EQ(f->get_int("u8").value(), 255);
  EXPECT_EQ(f->get_int("i8").value(), -128);
  EXPECT_EQ(f->get_int("u16").value(), 65535);
  EXPECT_EQ(f->get_int("i16").value(), -32768);
  EXPECT_EQ(f->get_int("u32").value(), 4294967295ll);
  EXPECT_EQ(f->get_int("i32").value(), INT32_MIN);
  EXPECT_EQ(std::get<uint64_t>(f->find("u64")->value), 1ull << 63);
  EXPECT_EQ(f->get_int("i64").value(), INT64_MIN);
  EXPECT_EQ(f->get_float("f32").value(), 3.25);
  EXPECT_EQ(f->get_float("f64").value(), 0.1);
  EXPECT_FALSE(f->get_bool("bool").value());
  EXPECT_EQ(f->get_string("string").value(), std::string("with\0nul", 8));
}

TEST(GgufWriter, ArraysOfEveryElementType) {
  test::TempDir dir;
  GgufWriter w;
  const std::vector<GgufType> int_types = {GgufType::u8,  GgufType::i8,  GgufType::u16, GgufType::i16,
                                           GgufType::u32, GgufType::i32, GgufType::u64, GgufType::i64};
  for (GgufType t : int_types) w.set_int_array(std::string("a.") + gguf_type_name(t), t, {0, 1, 100});
  w.set_int_array("a.i8.neg", GgufType::i8, {-1, -128, 127});
  w.set_float_array("a.f32", GgufType::f32, {1.5, -2.25});
  w.set_float_array("a.f64", GgufType::f64, {1e-200, 3.0});
  w.set_bool_array("a.bool", {true, false, true});
  w.set_string_array("a.string", {"x", "", "ü"});
  w.set_string_array("a.empty", {});
  ASSERT_TRUE(w.write(dir.file("a.gguf")).ok());
  auto f = open_ok(dir.file("a.gguf"));
  ASSERT_TRUE(f);
  for (GgufType t : int_types) {
    std::string key = std::string("a.") + gguf_type_name(t);
    const GgufValue* v = f->find(key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(v->type, GgufType::array);
    EXPECT_EQ(v->elem_type, t);
    EXPECT_EQ(f->get_int_array(key).value(), (std::vector<int64_t>{0, 1, 100})) << key;
  }
  EXPECT_EQ(f->get_int_array("a.i8.neg").value(), (std::vector<int64_t>{-1, -128, 127}));
  EXPECT_EQ(f->get_float_array("a.f32").value(), (std::vector<float>{1.5f, -2.25f}));
  EXPECT_EQ(std::get<std::vector<double>>(f->find("a.f64")->value), (std::vector<double>{1e-200, 3.0}));
  EXPECT_EQ(f->find("a.f64")->elem_type, GgufType::f64);
  EXPECT_EQ(std::get<std::vector<bool>>(f->find("a.bool")->value), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(f->get_string_array("a.string").value(), (std::vector<std::string>{"x", "", "ü"}));
  EXPECT_TRUE(f->get_string_array("a.empty").value().empty());
}

TEST(GgufWriter, SetReplacesAndRemoveDeletes) {
  test::TempDir dir;
  GgufWriter w;
  w.set_u32("a", 1);
  w.set_string("b", "x");
  w.set_f32("a", 2.0f);  // replaces, keeps position
  EXPECT_TRUE(w.remove("b"));
  EXPECT_FALSE(w.remove("b"));
  ASSERT_TRUE(w.write(dir.file("r.gguf")).ok());
  auto f = open_ok(dir.file("r.gguf"));
  ASSERT_TRUE(f);
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->metadata()[0].value.type, GgufType::f32);
  EXPECT_FALSE(f->has("b"));
}

// Tensors of several dtypes with odd sizes; data must come back bit-exact and aligned.
void check_tensor_round_trip(uint32_t alignment) {
  test::TempDir dir;
  GgufWriter w;
  if (alignment != kGgufDefaultAlignment) w.set_alignment(alignment);
  std::vector<float> a(7 * 3);
  std::iota(a.begin(), a.end(), 0.5f);
  std::vector<uint8_t> q(2 * 20);  // two Q4_1 rows of 32 elements (20 bytes each)
  std::iota(q.begin(), q.end(), uint8_t{1});
  std::vector<uint16_t> h(5);
  std::iota(h.begin(), h.end(), uint16_t{0x3c00});
  ASSERT_TRUE(w.add_tensor("a", DType::F32, {7, 3}, a.data(), a.size() * 4).ok());
  ASSERT_TRUE(w.add_tensor("q", DType::Q4_1, {32, 2}, q.data(), q.size()).ok());
  ASSERT_TRUE(w.add_tensor("h", DType::F16, {5}, h.data(), h.size() * 2).ok());
  int fills = 0;
  ASSERT_TRUE(w.add_tensor("gen", DType::I32, {3, 1, 2, 1},
                           [&](void* dst, uint64_t bytes) {
                             ++fills;
                             EXPECT_EQ(bytes, 24u);
                             EXPECT_EQ(reinterpret_cast<uintptr_t>(dst) % 64, 0u);
                             int32_t* p = static_cast<int32_t*>(dst);
                             for (int i = 0; i < 6; ++i) p[i] = -i;
                             return Status::Ok();
                           })
                  .ok());
  EXPECT_EQ(w.tensor_count(), 4u);
  ASSERT_TRUE(w.write(dir.file("t.gguf")).ok());
  EXPECT_EQ(fills, 1);

  auto opened = GgufFile::open(dir.file("t.gguf"));
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  const GgufFile& f = **opened;
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  EXPECT_EQ(f.file_bytes() % alignment, 0u);
  ASSERT_EQ(f.tensors().size(), 4u);
  for (const TensorInfo& t : f.tensors()) EXPECT_EQ(t.offset % alignment, 0u) << t.name;
  const TensorInfo* ta = f.find_tensor("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->ne, (std::vector<int64_t>{7, 3}));
  EXPECT_EQ(std::memcmp(ta->data, a.data(), a.size() * 4), 0);
  const TensorInfo* tq = f.find_tensor("q");
  ASSERT_NE(tq, nullptr);
  EXPECT_EQ(tq->dtype, DType::Q4_1);
  EXPECT_EQ(tq->bytes, 40u);
  EXPECT_EQ(std::memcmp(tq->data, q.data(), q.size()), 0);
  const TensorInfo* th = f.find_tensor("h");
  ASSERT_NE(th, nullptr);
  EXPECT_EQ(std::memcmp(th->data, h.data(), h.size() * 2), 0);
  const TensorInfo* tg = f.find_tensor("gen");
  ASSERT_NE(tg, nullptr);
  EXPECT_EQ(tg->ne, (std::vector<int64_t>{3, 1, 2, 1}));
  EXPECT_EQ(tg->view().as<int32_t>()[5], -5);
  EXPECT_EQ(tg->view().ne, (std::array<int64_t, 4>{3, 1, 2, 1}));
}

TEST(GgufWriter, TensorsDefaultAlignment) { check_tensor_round_trip(32); }
TEST(GgufWriter, TensorsAlignment64) { check_tensor_round_trip(64); }
TEST(GgufWriter, TensorsAlignment1) { check_tensor_round_trip(1); }
TEST(GgufWriter, TensorsAlignment4096) { check_tensor_round_trip(4096); }

TEST(GgufWriter, RejectsBadTensors) {
  GgufWriter w;
  float x[64] = {};
  EXPECT_EQ(w.add_tensor("q", DType::Q4_0, {33}, x, 18).code(), StatusCode::invalid_argument);  // not a block multiple
  EXPECT_EQ(w.add_tensor("f", DType::F32, {4}, x, 15).code(), StatusCode::invalid_argument);    // wrong byte count
  EXPECT_EQ(w.add_tensor("", DType::F32, {4}, x, 16).code(), StatusCode::invalid_argument);
  EXPECT_EQ(w.add_tensor("z", DType::F32, {4, 0}, x, 0).code(), StatusCode::invalid_argument);
  EXPECT_EQ(w.add_tensor("d", DType::F32, {1, 1, 1, 1, 1}, x, 4).code(), StatusCode::invalid_argument);
  EXPECT_EQ(w.add_tensor("u", static_cast<DType>(999), {4}, x, 16).code(), StatusCode::invalid_argument);
  EXPECT_TRUE(w.add_tensor("ok", DType::F32, {4}, x, 16).ok());
  Status dup = w.add_tensor("ok", DType::F32, {4}, x, 16);
  EXPECT_EQ(dup.code(), StatusCode::invalid_argument);
  EXPECT_NE(dup.message().find("'ok'"), std::string::npos);
  EXPECT_EQ(w.tensor_count(), 1u);
}

TEST(GgufWriter, RejectsValuesThatDoNotFitTheirType) {
  test::TempDir dir;
  GgufWriter w;
  w.set("k", gguf_int(GgufType::u8, 256));
  Status s = w.write(dir.file("x.gguf"));
  EXPECT_EQ(s.code(), StatusCode::invalid_argument);
  EXPECT_NE(s.message().find("'k'"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.gguf")));
  GgufWriter w2;
  w2.set_alignment(48);
  EXPECT_EQ(w2.write(dir.file("y.gguf")).code(), StatusCode::invalid_argument);
}

TEST(GgufWriter, FailedFillLeavesNoFile) {
  test::TempDir dir;
  GgufWriter w;
  float x[4] = {1, 2, 3, 4};
  ASSERT_TRUE(w.add_tensor("a", DType::F32, {4}, x, 16).ok());
  ASSERT_TRUE(w.add_tensor("b", DType::F32, {4}, [](void*, uint64_t) { return io_error("disk on fire"); }).ok());
  Status s = w.write(dir.file("m.gguf"));
  EXPECT_EQ(s.code(), StatusCode::io_error);
  EXPECT_NE(s.message().find("'b'"), std::string::npos) << s.message();
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.gguf")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.gguf.tmp")));
}

TEST(GgufWriter, OverwritesAnExistingFileAtomically) {
  test::TempDir dir;
  test::write_bytes(dir.file("m.gguf"), "old contents");
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  ASSERT_TRUE(w.write(dir.file("m.gguf")).ok());
  auto f = open_ok(dir.file("m.gguf"));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->get_string("general.architecture").value(), "llama");
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.gguf.tmp")));
}

TEST(GgufWriter, UnwritableDirectoryIsIoError) {
  GgufWriter w;
  Status s = w.write("/nonexistent/dir/m.gguf");
  EXPECT_EQ(s.code(), StatusCode::io_error);
  EXPECT_NE(s.message().find("/nonexistent/dir/m.gguf.tmp"), std::string::npos);
}

// Copying a real file's metadata and tensors through the writer gives the same file contents.
TEST(GgufWriter, RewritesTheRealModel) {
  std::string path = test::real_model_path();
  if (path.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found (set BITLIGHT_TEST_MODEL)";
  auto src = GgufFile::open(path);
  ASSERT_TRUE(src.ok()) << src.status().message();
  GgufWriter w;
  for (const GgufKeyValue& kv : (*src)->metadata()) w.set(kv.key, kv.value);
  for (const TensorInfo& t : (*src)->tensors()) ASSERT_TRUE(w.add_tensor(t.name, t.dtype, t.ne, t.data, t.bytes).ok());
  test::TempDir dir;
  ASSERT_TRUE(w.write(dir.file("copy.gguf")).ok());
  auto copy = GgufFile::open(dir.file("copy.gguf"));
  ASSERT_TRUE(copy.ok()) << copy.status().message();
  EXPECT_EQ((*copy)->file_bytes(), (*src)->file_bytes());  // llama.cpp lays files out the same way
  EXPECT_EQ((*copy)->data_offset(), (*src)->data_offset());
  ASSERT_EQ((*copy)->metadata().size(), (*src)->metadata().size());
  for (size_t i = 0; i < (*src)->metadata().size(); ++i) {
    EXPECT_EQ((*copy)->metadata()[i].key, (*src)->metadata()[i].key);
    EXPECT_EQ((*copy)->metadata()[i].value.type, (*src)->metadata()[i].value.type);
    EXPECT_EQ((*copy)->metadata()[i].value.value, (*src)->metadata()[i].value.value);
  }
  for (const TensorInfo& t : (*src)->tensors()) {
    const TensorInfo* c = (*copy)->find_tensor(t.name);
    ASSERT_NE(c, nullptr) << t.name;
    EXPECT_EQ(c->offset, t.offset);
    ASSERT_EQ(c->bytes, t.bytes);
    EXPECT_EQ(std::memcmp(c->data, t.data, t.bytes), 0) << t.name;
  }
}

}  // namespace
}  // namespace bl
