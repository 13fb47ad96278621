// The synthetic "tiny" model (runtime/synthetic_model.h: 2 layers, 256 wide, a byte-level
// vocabulary of 1024) written to the temp folder and loaded with its tokenizer, for tests of
// what runs on top of a model (generation, the server's engines).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "core/thread_pool.h"
#include "io/model_file.h"
#include "model/llama_model.h"
#include "runtime/synthetic_model.h"
#include "tokenizer/tokenizer.h"

namespace bl {

struct TinyModel {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// device: "ref" (scalar, deterministic: a batch step's logits equal one sequence's to ~1e-6) or "cpu".
inline TinyModel load_tiny_model(const std::string& file_name, const std::string& device, uint64_t seed = 5) {
  const std::string path = (std::filesystem::temp_directory_path() / file_name).string();
  ThreadPool pool(2);
  const Status s = write_synthetic_model(*find_synth_shape("tiny"), DType::F32, seed, path, pool);
  EXPECT_TRUE(s.ok()) << s.message();
  TinyModel m;
  m.file = std::move(ModelFile::open(path)).value();
  m.backend = std::move(make_backend(device, 1)).value();
  m.model = std::move(LlamaModel::load(*m.file, *m.backend)).value();
  m.tokenizer = std::move(Tokenizer::from_model_file(*m.file)).value();
  return m;
}

}  // namespace bl
