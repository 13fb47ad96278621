#include "model/llama_model.h"

#include <cmath>
#include <cstring>
#include <string>

#include "core/aligned_buffer.h"
#include "io/model_file.h"
#include "kernels/cpu/top_k_draw.h"
#include "model/forward_views.h"
#include "model/gemma3_layer.h"
#include "quant/quant.h"

namespace bl {
namespace {

std::string layer_name(int layer, const char* suffix) { return "blk." + std::to_string(layer) + "." + suffix; }

std::string ne_string(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// Rows [r0, r0 + rows) of a weight: contiguous in the file's layout, and in the backends'
// repacked layouts when r0 and rows are multiples of 16 (what LlamaModel fuses).
Tensor row_range(const Tensor& w, int64_t r0, int64_t rows) {
  Tensor v = w;
  v.data = static_cast<char*>(w.data) + static_cast<size_t>(r0) * w.row_size();
  v.ne = {w.ne[0], rows, 1, 1};
  return v;
}

// Reads one byte per page so a memory-mapped weight is resident before the first token (and
// the load progress bar measures the real read).
void touch_pages(const void* data, size_t bytes) {
  constexpr size_t kPage = 4096;
  const volatile unsigned char* p = static_cast<const unsigned char*>(data);
  unsigned char sink = 0;
  for (size_t i = 0; i < bytes; i += kPage) sink ^= p[i];
  (void)sink;
}

// Loads weights by name, checking shape and format, converting small f16/bf16 vectors (norms,
// biases) to f32, and uploading everything to the backend.
class WeightLoader {
 public:
  WeightLoader(const ModelFile& file, Backend& backend, const LoadProgress& progress)
      : file_(file), backend_(backend), progress_(progress) {
    for (const auto& t : file.tensors()) total_bytes_ += t.bytes;
  }

  Expected<Tensor> matrix(const std::string& name, int64_t cols, int64_t rows) {
    const TensorInfo* info;
    BL_ASSIGN_OR_RETURN(info, find(name, {cols, rows}));
    if (!backend_.supports(info->dtype))
      return unsupported("tensor '" + name + "': format " + std::string(dtype_name(info->dtype)) +
                         " is not supported by the " + backend_.name() + " backend");
    return upload(*info);
  }

  // The matrices `names` ([cols, rows[i]]) stacked into one [cols, sum rows] when the backend
  // copies weights of their common format and every part is whole 16-row tiles; an empty tensor
  // (data null) when they cannot be fused. The host concatenation is freed after the upload.
  Expected<Tensor> fused_matrix(const std::vector<std::string>& names, int64_t cols, const std::vector<int64_t>& rows) {
    std::vector<const TensorInfo*> parts;
    int64_t total_rows = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      const TensorInfo* info;
      BL_ASSIGN_OR_RETURN(info, find(names[i], {cols, rows[i]}));
      if (rows[i] % 16 != 0 || (!parts.empty() && info->dtype != parts[0]->dtype)) return Tensor{};
      parts.push_back(info);
      total_rows += rows[i];
    }
    const DType type = parts[0]->dtype;
    if (!backend_.supports(type) || !backend_.copies_weights(type, total_rows)) return Tensor{};
    AlignedBuffer host;
    size_t bytes = 0;
    for (const TensorInfo* info : parts) bytes += info->bytes;
    if (!host.resize(bytes)) return out_of_memory("cannot allocate " + std::to_string(bytes) + " bytes to join " + names[0]);
    size_t offset = 0;
    for (const TensorInfo* info : parts) {
      std::memcpy(host.as<char>() + offset, info->data, info->bytes);
      offset += info->bytes;
    }
    Expected<Tensor> t = backend_.upload_weight(make_tensor_2d(host.data(), type, cols, total_rows));
    if (!t.ok()) return t.status().with_context("tensor '" + names[0] + "' and the matrices joined to it");
    count_uploaded(bytes);
    return t;
  }

  // f32 vectors joined into one (kept on the host for backends that use host memory in place).
  Expected<Tensor> joined_vector(const std::vector<Tensor>& parts) {
    int64_t n = 0;
    for (const Tensor& p : parts) n += p.elements();
    AlignedBuffer& buffer = converted_.emplace_back(static_cast<size_t>(n) * sizeof(float));
    int64_t at = 0;
    for (const Tensor& p : parts) {
      backend_.read(p, buffer.as<float>() + at, p.bytes());
      at += p.elements();
    }
    return backend_.upload_weight(make_tensor_2d(buffer.data(), DType::F32, n, 1));
  }

  // A 1-D f32 vector; other float formats are converted on the host first.
  Expected<Tensor> vector(const std::string& name, int64_t n) {
    const TensorInfo* info;
    BL_ASSIGN_OR_RETURN(info, find(name, {n}));
    if (info->dtype == DType::F32) return upload(*info);
    if (!can_dequantize(info->dtype))
      return unsupported("tensor '" + name + "': format " + std::string(dtype_name(info->dtype)) + " cannot be read");
    AlignedBuffer& buffer = converted_.emplace_back(static_cast<size_t>(n) * sizeof(float));
    dequantize_row(info->dtype, info->data, buffer.as<float>(), n);
    TensorInfo f32 = *info;
    f32.dtype = DType::F32;
    f32.data = buffer.data();
    f32.bytes = static_cast<size_t>(n) * sizeof(float);
    return upload(f32);
  }

  bool has(const std::string& name) const { return file_.find_tensor(name) != nullptr; }
  size_t uploaded_bytes() const { return done_bytes_; }
  std::vector<AlignedBuffer> take_converted() { return std::move(converted_); }

 private:
  Expected<const TensorInfo*> find(const std::string& name, std::vector<int64_t> ne) {
    const TensorInfo* info = file_.find_tensor(name);
    if (!info) return not_found("tensor '" + name + "' is missing from the model file");
    std::vector<int64_t> got = info->ne;
    while (got.size() > ne.size() && got.back() == 1) got.pop_back();
    if (got != ne)
      return invalid_file("tensor '" + name + "' has shape " + ne_string(info->ne) + ", expected " + ne_string(ne) +
                          " from the model's hyper-parameters");
    return info;
  }

  Expected<Tensor> upload(const TensorInfo& info) {
    if (backend_.device() == Device::cpu) touch_pages(info.data, info.bytes);
    Expected<Tensor> t = backend_.upload_weight(info.view());
    if (!t.ok()) return t.status().with_context("tensor '" + info.name + "'");
    count_uploaded(info.bytes);
    return t;
  }

  void count_uploaded(size_t bytes) {
    done_bytes_ += bytes;
    if (progress_) progress_(done_bytes_, total_bytes_);
  }

  const ModelFile& file_;
  Backend& backend_;
  const LoadProgress& progress_;
  size_t total_bytes_ = 0, done_bytes_ = 0;
  std::vector<AlignedBuffer> converted_;
};

}  // namespace

Expected<std::unique_ptr<LlamaModel>> LlamaModel::load(const ModelFile& file, Backend& backend,
                                                       const LoadProgress& progress) {
  LlamaConfig config;
  BL_ASSIGN_OR_RETURN(config, read_llama_config(file));
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, backend));
  const LlamaConfig& c = model->config_;
  WeightLoader w(file, backend, progress);

  BL_ASSIGN_OR_RETURN(model->token_embd_, w.matrix("token_embd.weight", c.n_embd, c.n_vocab));
  BL_ASSIGN_OR_RETURN(model->output_norm_, w.vector("output_norm.weight", c.n_embd));
  if (w.has("output.weight")) {
    BL_ASSIGN_OR_RETURN(model->output_, w.matrix("output.weight", c.n_embd, c.n_vocab));
  } else {
    model->output_ = model->token_embd_;  // tied embeddings (SmolLM2, small Qwen2)
  }
  model->layers_.resize(static_cast<size_t>(c.n_layer));
  for (int il = 0; il < c.n_layer; ++il) {
    LlamaLayerWeights& l = model->layers_[static_cast<size_t>(il)];
    BL_ASSIGN_OR_RETURN(l.attn_norm, w.vector(layer_name(il, "attn_norm.weight"), c.n_embd));
    BL_ASSIGN_OR_RETURN(l.wqkv, w.fused_matrix({layer_name(il, "attn_q.weight"), layer_name(il, "attn_k.weight"),
                                                layer_name(il, "attn_v.weight")},
                                               c.n_embd, {c.q_dim(), c.kv_dim(), c.kv_dim()}));
    if (l.wqkv.data) {
      l.wq = row_range(l.wqkv, 0, c.q_dim());
      l.wk = row_range(l.wqkv, c.q_dim(), c.kv_dim());
      l.wv = row_range(l.wqkv, c.q_dim() + c.kv_dim(), c.kv_dim());
    } else {
      BL_ASSIGN_OR_RETURN(l.wq, w.matrix(layer_name(il, "attn_q.weight"), c.n_embd, c.q_dim()));
      BL_ASSIGN_OR_RETURN(l.wk, w.matrix(layer_name(il, "attn_k.weight"), c.n_embd, c.kv_dim()));
      BL_ASSIGN_OR_RETURN(l.wv, w.matrix(layer_name(il, "attn_v.weight"), c.n_embd, c.kv_dim()));
    }
    BL_ASSIGN_OR_RETURN(l.wo, w.matrix(layer_name(il, "attn_output.weight"), c.q_dim(), c.n_embd));
    if (c.qkv_bias) {
      BL_ASSIGN_OR_RETURN(l.bq, w.vector(layer_name(il, "attn_q.bias"), c.q_dim()));
      BL_ASSIGN_OR_RETURN(l.bk, w.vector(layer_name(il, "attn_k.bias"), c.kv_dim()));
      BL_ASSIGN_OR_RETURN(l.bv, w.vector(layer_name(il, "attn_v.bias"), c.kv_dim()));
      if (l.wqkv.data) {
        BL_ASSIGN_OR_RETURN(l.bqkv, w.joined_vector({l.bq, l.bk, l.bv}));
      }
    }
    BL_ASSIGN_OR_RETURN(l.ffn_norm, w.vector(layer_name(il, "ffn_norm.weight"), c.n_embd));
    BL_ASSIGN_OR_RETURN(l.w_gate_up, w.fused_matrix({layer_name(il, "ffn_gate.weight"), layer_name(il, "ffn_up.weight")},
                                                    c.n_embd, {c.n_ff, c.n_ff}));
    if (l.w_gate_up.data) {
      l.w_gate = row_range(l.w_gate_up, 0, c.n_ff);
      l.w_up = row_range(l.w_gate_up, c.n_ff, c.n_ff);
    } else {
      BL_ASSIGN_OR_RETURN(l.w_gate, w.matrix(layer_name(il, "ffn_gate.weight"), c.n_embd, c.n_ff));
      BL_ASSIGN_OR_RETURN(l.w_up, w.matrix(layer_name(il, "ffn_up.weight"), c.n_embd, c.n_ff));
    }
    BL_ASSIGN_OR_RETURN(l.w_down, w.matrix(layer_name(il, "ffn_down.weight"), c.n_ff, c.n_embd));
    if (c.qk_norm) {
      BL_ASSIGN_OR_RETURN(l.attn_q_norm, w.vector(layer_name(il, "attn_q_norm.weight"), c.head_dim));
      BL_ASSIGN_OR_RETURN(l.attn_k_norm, w.vector(layer_name(il, "attn_k_norm.weight"), c.head_dim));
    }
    if (c.post_norms) {
      BL_ASSIGN_OR_RETURN(l.post_attention_norm, w.vector(layer_name(il, "post_attention_norm.weight"), c.n_embd));
      BL_ASSIGN_OR_RETURN(l.post_ffw_norm, w.vector(layer_name(il, "post_ffw_norm.weight"), c.n_embd));
    }
  }

  // Llama 3 frequency factors: the GGUF tensor wins over the metadata-derived ones.
  if (w.has("rope_freqs.weight")) {
    const TensorInfo* info = file.find_tensor("rope_freqs.weight");
    if (info->dtype != DType::F32 || info->ne.empty() || info->ne[0] != c.rope_dims / 2)
      return invalid_file("tensor 'rope_freqs.weight' must be f32 [" + std::to_string(c.rope_dims / 2) + "]");
    const float* f = static_cast<const float*>(info->data);
    model->config_.rope_freq_factors.assign(f, f + c.rope_dims / 2);
  }
  if (const TensorInfo* q = file.find_tensor(layer_name(0, "attn_q.weight")); q && c.n_layer > 0)
    model->file_weight_type_ = q->dtype;
  model->converted_ = w.take_converted();
  model->weight_bytes_ = w.uploaded_bytes();
  model->rope_ = RopeParams{c.rope_dims, c.rope_freq_base, c.rope_freq_scale, c.rope_neox,
                            model->config_.rope_freq_factors.empty() ? nullptr : model->config_.rope_freq_factors.data()};
  model->rope_local_ = RopeParams{c.rope_dims, c.rope_freq_base_local, 1.0f, c.rope_neox, nullptr};
  return model;
}

Expected<LlamaForwardState> LlamaModel::plan(int n_ctx, int max_tokens, bool logits_all, DType kv_type,
                                             int n_seq) const {
  const LlamaConfig& c = config_;
  if (n_ctx <= 0 || max_tokens <= 0) return invalid_argument("context and batch sizes must be positive");
  if (n_seq <= 0 || (n_seq > 1 && max_tokens < n_seq))
    return invalid_argument("sequences must be >= 1 and at most the batch size (" + std::to_string(max_tokens) +
                            "), got " + std::to_string(n_seq));
  if (kv_type != DType::F32 && kv_type != DType::F16) return invalid_argument("KV cache type must be f32 or f16");
  LlamaForwardState s;
  s.n_ctx = n_ctx;
  s.max_tokens = max_tokens;
  s.n_seq = n_seq;
  s.logits_all = logits_all;
  const int64_t t = max_tokens;
  BL_ASSIGN_OR_RETURN(s.ids, backend_.alloc(DType::I32, {t, 1, 1, 1}));
  BL_ASSIGN_OR_RETURN(s.positions, backend_.alloc(DType::I32, {t, 1, 1, 1}));
  BL_ASSIGN_OR_RETURN(s.x, backend_.alloc(DType::F32, {c.n_embd, t, 1, 1}));
  BL_ASSIGN_OR_RETURN(s.scratch, backend_.alloc(DType::F32, {c.n_ff + c.n_embd, t, 1, 1}));
  BL_ASSIGN_OR_RETURN(s.qkv, backend_.alloc(DType::F32, {c.q_dim() + 2 * c.kv_dim(), t, 1, 1}));
  BL_ASSIGN_OR_RETURN(s.attn, backend_.alloc(DType::F32, {c.q_dim(), t, 1, 1}));
  BL_ASSIGN_OR_RETURN(s.gate_up, backend_.alloc(DType::F32, {2 * c.n_ff, t, 1, 1}));
  if (c.post_norms) {
    BL_ASSIGN_OR_RETURN(s.sublayer_out, backend_.alloc(DType::F32, {c.n_embd, t, 1, 1}));
  }
  BL_ASSIGN_OR_RETURN(s.logits, backend_.alloc(DType::F32, {c.n_vocab, logits_all || n_seq > 1 ? t : 1, 1, 1}));
  BL_ASSIGN_OR_RETURN(s.sampled, backend_.alloc(DType::I32, {t, 1, 1, 1}));
  constexpr int64_t kDrawWords = sizeof(cpu::TopKDraw) / sizeof(int32_t);
  BL_ASSIGN_OR_RETURN(s.draws, backend_.alloc(DType::I32, {kDrawWords * t, 1, 1, 1}));
  for (int il = 0; il < c.n_layer; ++il) {
    Tensor kc, vc;
    const int64_t slots = static_cast<int64_t>(n_ctx) * n_seq;
    BL_ASSIGN_OR_RETURN(kc, backend_.alloc(kv_type, {c.head_dim, c.n_head_kv, slots, 1}));
    BL_ASSIGN_OR_RETURN(vc, backend_.alloc(kv_type, {c.head_dim, c.n_head_kv, slots, 1}));
    s.k_cache.push_back(kc);
    s.v_cache.push_back(vc);
  }
  return s;
}

std::string LlamaModel::weight_format() const {
  const std::string stored(dtype_name(main_weight_type())), in_file(dtype_name(file_weight_type_));
  return stored == in_file ? stored : in_file + " as " + stored;
}

size_t LlamaModel::decode_weight_bytes() const {
  const bool tied = output_.data == token_embd_.data;
  return weight_bytes_ - (tied ? 0 : token_embd_.bytes() - token_embd_.row_size());
}

void LlamaModel::forward(LlamaForwardState& s, int n, TokenPick pick, int seq, TokenSource source) const {
  const LlamaConfig& c = config_;
  Backend& b = backend_;
  Tensor ids = view(source == TokenSource::picked ? s.sampled : s.ids, {n, 1, 1, 1});
  ForwardViews f = forward_views(s, c, n);
  Tensor &pos = f.pos, &x = f.x, &q = f.q, &k = f.k, &v = f.v, &qkv = f.qkv, &attn = f.attn, &up = f.up;
  Tensor &q_heads = f.q_heads, &k_heads = f.k_heads, &v_heads = f.v_heads, &attn_heads = f.attn_heads;
  Tensor &gate = f.gate, &gate_up = f.gate_up;
  const AttentionParams attn_params{.n_head = c.n_head, .n_head_kv = c.n_head_kv, .head_dim = c.head_dim, .scale = c.attn_scale};
  // Each sub-block is: normed input -> matmul(s) -> ... -> matmul added to x. The norms, the
  // residual adds and SwiGLU ride along with the matmuls (Backend::fused_matmul).
  auto normed = [&](const Tensor& weight) { return MatmulFusion{.norm = &weight, .eps = c.rms_eps, .scratch = &s.scratch}; };
  const MatmulFusion add_to_x{.accumulate = true, .scratch = &s.scratch};
  const MatmulFusion swiglu_add_to_x{.up = &up, .accumulate = true, .scratch = &s.scratch};

  b.get_rows(token_embd_, ids, x);
  if (c.embd_scale != 1.0f) b.scale(x, c.embd_scale, x);
  for (int il = 0; il < c.n_layer; ++il) {
    const LlamaLayerWeights& l = layers_[static_cast<size_t>(il)];
    if (c.arch == "gemma3") {
      gemma3_layer(b, c, l, c.is_local_layer(il) ? rope_local_ : rope_, il, seq, s, f);
      continue;
    }
    // Attention: q,k,v = norm(x)·W (+b); rope; cache; attn; x += attn·Wo
    MatmulFusion attn_norm = normed(l.attn_norm);
    // The caches of this layer (one sequence) for the attention below; the QKV matmul of one token
    // may do its rope and cache store (MatmulFusion::rope_next).
    Tensor k_cache, v_cache;
    if (seq != kEachOwnSequence) {
      k_cache = sequence_slots(s.k_cache[static_cast<size_t>(il)], seq, s.n_ctx);
      v_cache = sequence_slots(s.v_cache[static_cast<size_t>(il)], seq, s.n_ctx);
    }
    if (n == 1 && l.wqkv.data) {
      if (seq != kEachOwnSequence) attn_norm.rope_next = {&q_heads, &k_heads, &v_heads, &k_cache, &v_cache, &pos, &rope_};
      b.fused_matmul(l.wqkv, x, qkv, attn_norm, c.qkv_bias ? &l.bqkv : nullptr);
    } else {
      const MatmulOutput qkv_outputs[] = {{&l.wq, &q, c.qkv_bias ? &l.bq : nullptr},
                                          {&l.wk, &k, c.qkv_bias ? &l.bk : nullptr},
                                          {&l.wv, &v, c.qkv_bias ? &l.bv : nullptr}};
      b.fused_matmul_same_input(qkv_outputs, x, attn_norm);
    }
    if (seq != kEachOwnSequence) {
      AttentionParams attn_then_wo = attn_params;
      if (n == 1) attn_then_wo.out_matmul_next = &l.wo;  // the fused_matmul below
      b.rope_kv_store_attention(q_heads, k_heads, v_heads, k_cache, v_cache, pos, rope_, attn_then_wo, attn_heads);
    } else {
      // One token of each sequence, each with its own cache region of n_ctx slots.
      b.rope_kv_store_each_sequence(q_heads, k_heads, v_heads, s.k_cache[static_cast<size_t>(il)],
                                    s.v_cache[static_cast<size_t>(il)], pos, rope_, s.n_ctx);
      b.attention_each_sequence(q_heads, s.k_cache[static_cast<size_t>(il)], s.v_cache[static_cast<size_t>(il)], pos,
                                attn_params, s.n_ctx, attn_heads);
    }
    b.fused_matmul(l.wo, attn, x, add_to_x);
    // Feed-forward: x += W_down · (silu(h·W_gate) * (h·W_up)), h = norm(x)
    if (n == 1 && l.w_gate_up.data) {
      MatmulFusion ffn_norm_then_swiglu = normed(l.ffn_norm);
      ffn_norm_then_swiglu.swiglu_next = &l.w_down;
      b.fused_matmul(l.w_gate_up, x, gate_up, ffn_norm_then_swiglu);
      // The op after this one is the next layer's normed q, k, v, or after the last layer the
      // output matrix (MatmulFusion::norm_next).
      MatmulFusion down_then_norm = swiglu_add_to_x;
      const bool last = il + 1 == c.n_layer;
      const Tensor& matmul_next = last ? output_ : layers_[static_cast<size_t>(il) + 1].wqkv;
      if (matmul_next.data) {
        down_then_norm.norm_next = last ? &output_norm_ : &layers_[static_cast<size_t>(il) + 1].attn_norm;
        down_then_norm.norm_next_matmul = &matmul_next;
      }
      b.fused_matmul(l.w_down, gate, x, down_then_norm);
    } else {
      b.fused_ffn(x, FfnBlock{&l.w_gate, &l.w_up, &l.w_down, &l.ffn_norm, c.rms_eps, &gate, &up, &s.scratch});
    }
  }
  // Only the tokens whose logits are wanted go through the final norm and the output matrix.
  Tensor x_out = x;
  if (!s.logits_all && seq != kEachOwnSequence)
    x_out = make_tensor_2d(static_cast<float*>(x.data) + static_cast<size_t>(n - 1) * c.n_embd, DType::F32, c.n_embd, 1, x.device);
  Tensor logits = view(s.logits, {c.n_vocab, x_out.ne[1], 1, 1});
  b.fused_matmul(output_, x_out, logits, normed(output_norm_));
  Tensor sampled = view(s.sampled, {x_out.ne[1], 1, 1, 1});
  if (pick == TokenPick::argmax) b.argmax(logits, sampled);
  if (pick == TokenPick::sample_top_k) {
    constexpr int64_t kDrawWords = sizeof(cpu::TopKDraw) / sizeof(int32_t);
    const Tensor draws = view(s.draws, {x_out.ne[1] * kDrawWords, 1, 1, 1});
    b.sample_top_k(logits, draws, sampled);
  }
}

}  // namespace bl
