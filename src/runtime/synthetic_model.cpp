#include "runtime/synthetic_model.h"

#include <cmath>
#include <vector>

#include "io/gguf_writer.h"
#include "quant/bl_group.h"
#include "quant/quant.h"
#include "tokenizer/byte_level.h"

namespace bl {
namespace {

// SplitMix64: a fast, seedable generator; one stream per (tensor, row), so rows can be filled
// in parallel and the file is the same for the same seed whatever the thread count.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [-amplitude, amplitude].
void fill_uniform(float* out, int64_t n, uint64_t stream, float amplitude) {
  uint64_t state = stream;
  for (int64_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
    out[i] = static_cast<float>((2 * u - 1) * amplitude);
  }
}

Status add_matrix(GgufWriter& w, const std::string& name, DType type, int64_t cols, int64_t rows, uint64_t seed,
                  ThreadPool& pool) {
  if (cols % dtype_info(type)->block_elems != 0)
    return invalid_argument("type " + std::string(dtype_name(type)) + " needs rows that are multiples of " +
                            std::to_string(dtype_info(type)->block_elems) + " elements; tensor '" + name + "' has " +
                            std::to_string(cols));
  // A row count that does not fill the type's tiles is refused by GgufWriter::add_tensor.
  const int64_t tile = dtype_info(type)->tile_rows;
  const uint64_t stream = seed ^ std::hash<std::string>{}(name);
  // Amplitude ~ 1/sqrt(fan-in) keeps activations of the random model in a sane range.
  const float amplitude = 1.0f / std::sqrt(static_cast<float>(cols));
  return w.add_tensor(name, type, {cols, rows}, [=, &pool](void* dst, uint64_t) {
    const size_t row_size = row_bytes(type, cols);
    // One tile of rows at a time (16 rows for the bl types, which store 16 rows together).
    pool.parallel_for(rows / tile, 1, [&](int64_t t0, int64_t t1) {
      std::vector<float> values(static_cast<size_t>(tile * cols));
      for (int64_t i = t0; i < t1; ++i) {
        for (int64_t r = 0; r < tile; ++r)
          fill_uniform(values.data() + r * cols, cols, stream + static_cast<uint64_t>(i * tile + r) * 0x632be59bd9b4e019ull,
                       amplitude);
        char* out = static_cast<char*>(dst) + static_cast<size_t>(i * tile) * row_size;
        // bl types without the clipping search (8B bl4g128: minutes with it, on 16 cores).
        if (quant::is_bl_group(type))
          quant::quantize_bl_matrix_nearest(type, values.data(), out, tile, cols);
        else
          quantize_matrix(type, values.data(), out, tile, cols);
      }
    });
    return Status::Ok();
  });
}

Status add_norm(GgufWriter& w, const std::string& name, int64_t n, uint64_t seed) {
  return w.add_tensor(name, DType::F32, {n}, [=](void* dst, uint64_t) {
    float* out = static_cast<float*>(dst);
    fill_uniform(out, n, seed ^ std::hash<std::string>{}(name), 0.1f);
    for (int64_t i = 0; i < n; ++i) out[i] += 1.0f;  // norm gains near 1
    return Status::Ok();
  });
}

}  // namespace

const std::vector<SynthShape>& synth_shapes() {
  static const std::vector<SynthShape> shapes = {
      {"tiny", 2, 256, 512, 4, 2, 1024, 2048, 10000.0f, false},
      {"smollm2-135m", 30, 576, 1536, 9, 3, 49152, 8192, 100000.0f, true},
      // Untied output matrices, like the synthetic shapes of the peer numbers in PERF.md.
      {"llama3-1b", 16, 2048, 8192, 32, 8, 128256, 131072, 500000.0f, false},
      {"llama3-8b", 32, 4096, 14336, 32, 8, 128256, 131072, 500000.0f, false},
      // Gemma 3 270M: head_dim 256 (not n_embd / n_head), one KV head, a 262144-token tied vocabulary.
      {"gemma3-270m", 18, 640, 2048, 4, 1, 262144, 32768, 1000000.0f, true, "gemma3", 256, 512},
  };
  return shapes;
}

Expected<SynthShape> find_synth_shape(const std::string& name) {
  std::string names;
  for (const auto& s : synth_shapes()) {
    if (s.name == name) return s;
    names += (names.empty() ? "" : ", ") + s.name;
  }
  return invalid_argument("unknown shape '" + name + "' (choices: " + names + ")");
}

Status write_synthetic_model(const SynthShape& s, DType type, uint64_t seed, const std::string& path, ThreadPool& pool) {
  if (!can_quantize(type)) return unsupported("cannot write weights of type " + std::string(dtype_name(type)));
  if (s.n_vocab < 256) return internal_error("synthetic vocabularies start with the 256 byte tokens");
  GgufWriter w;
  const bool gemma3 = s.arch == "gemma3";
  if (!gemma3 && s.arch != "llama") return internal_error("synthetic models are llama or gemma3, not " + s.arch);
  const int head_dim = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head;
  const std::string a = s.arch + ".";
  w.set_string("general.architecture", s.arch);
  w.set_string("general.name", "bitlight synthetic " + s.name + " " + std::string(dtype_name(type)));
  w.set_u32(a + "block_count", static_cast<uint32_t>(s.n_layer));
  w.set_u32(a + "context_length", static_cast<uint32_t>(s.n_ctx));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(s.n_embd));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(s.n_ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.n_head_kv));
  w.set_u32(a + "attention.key_length", static_cast<uint32_t>(head_dim));
  w.set_u32(a + "attention.value_length", static_cast<uint32_t>(head_dim));
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(head_dim));
  w.set_f32(a + "rope.freq_base", s.rope_freq_base);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", gemma3 ? 1e-6f : 1e-5f);
  w.set_u32(a + "vocab_size", static_cast<uint32_t>(s.n_vocab));
  if (gemma3) w.set_u32(a + "attention.sliding_window", static_cast<uint32_t>(s.sliding_window));

  std::vector<std::string> tokens;
  std::vector<int64_t> token_types;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(byte_level::encode(std::string(1, static_cast<char>(b))));
    token_types.push_back(1);  // normal
  }
  for (int i = 256; i < s.n_vocab; ++i) {
    tokens.push_back("<|synth_" + std::to_string(i) + "|>");
    token_types.push_back(3);  // control
  }
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "gpt2");
  w.set_string_array("tokenizer.ggml.tokens", std::move(tokens));
  w.set_int_array("tokenizer.ggml.token_type", GgufType::i32, std::move(token_types));
  w.set_string_array("tokenizer.ggml.merges", {});
  w.set_u32("tokenizer.ggml.bos_token_id", 256);
  w.set_u32("tokenizer.ggml.eos_token_id", 257);
  w.set_bool("tokenizer.ggml.add_bos_token", true);

  const int64_t q_dim = static_cast<int64_t>(s.n_head) * head_dim, kv_dim = static_cast<int64_t>(s.n_head_kv) * head_dim;
  BL_RETURN_IF_ERROR(add_matrix(w, "token_embd.weight", type, s.n_embd, s.n_vocab, seed, pool));
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    BL_RETURN_IF_ERROR(add_norm(w, p + "attn_norm.weight", s.n_embd, seed));
    BL_RETURN_IF_ERROR(add_matrix(w, p + "attn_q.weight", type, s.n_embd, q_dim, seed, pool));
    BL_RETURN_IF_ERROR(add_matrix(w, p + "attn_k.weight", type, s.n_embd, kv_dim, seed, pool));
    BL_RETURN_IF_ERROR(add_matrix(w, p + "attn_v.weight", type, s.n_embd, kv_dim, seed, pool));
    BL_RETURN_IF_ERROR(add_matrix(w, p + "attn_output.weight", type, q_dim, s.n_embd, seed, pool));
    if (gemma3) {
      BL_RETURN_IF_ERROR(add_norm(w, p + "attn_q_norm.weight", head_dim, seed));
      BL_RETURN_IF_ERROR(add_norm(w, p + "attn_k_norm.weight", head_dim, seed));
      BL_RETURN_IF_ERROR(add_norm(w, p + "post_attention_norm.weight", s.n_embd, seed));
      BL_RETURN_IF_ERROR(add_norm(w, p + "post_ffw_norm.weight", s.n_embd, seed));
    }
    BL_RETURN_IF_ERROR(add_norm(w, p + "ffn_norm.weight", s.n_embd, seed));
    BL_RETURN_IF_ERROR(add_matrix(w, p + "ffn_gate.weight", type, s.n_embd, s.n_ff, seed, pool));
    BL_RETURN_IF_ERROR(add_matrix(w, p + "ffn_up.weight", type, s.n_embd, s.n_ff, seed, pool));
    BL_RETURN_IF_ERROR(add_matrix(w, p + "ffn_down.weight", type, s.n_ff, s.n_embd, seed, pool));
  }
  BL_RETURN_IF_ERROR(add_norm(w, "output_norm.weight", s.n_embd, seed));
  if (!s.tied_embeddings) BL_RETURN_IF_ERROR(add_matrix(w, "output.weight", type, s.n_embd, s.n_vocab, seed, pool));
  return w.write(path);
}

}  // namespace bl
