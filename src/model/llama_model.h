// The Llama-family transformer (Llama 2/3, Mistral, Qwen2, SmolLM2) as a sequence of Backend
// ops. Pre-norm blocks: x += Attn(RMSNorm(x)); x += SwiGLU(RMSNorm(x)); GQA; rope. Gemma 3 is
// the same skeleton with its parts switched on by LlamaConfig (q/k norms, post-norms, GeGLU,
// sliding-window layers; model/gemma3_layer.h).
//
// The model owns the weights (uploaded to the backend once); a ForwardState owns everything a
// session needs per step (KV cache, activations), allocated once by plan(), so forward()
// allocates nothing.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/aligned_buffer.h"
#include "model/llama_config.h"

namespace bl {

class ModelFile;

struct LlamaLayerWeights {
  Tensor attn_norm;          // [d] f32
  Tensor wq, wk, wv, wo;     // [d, q_dim], [d, kv_dim], [d, kv_dim], [q_dim, d]
  Tensor bq, bk, bv;         // [q_dim], [kv_dim], [kv_dim] f32 (Qwen2 only; data null otherwise)
  Tensor ffn_norm;           // [d] f32
  Tensor w_gate, w_up, w_down;  // [d, n_ff], [d, n_ff], [n_ff, d]
  // Gemma 3 only (data null otherwise): RMSNorm weights of each q / k head [head_dim] and of
  // the attention's / feed-forward's output [d].
  Tensor attn_q_norm, attn_k_norm, post_attention_norm, post_ffw_norm;
  // When the backend copies weights (Backend::copies_weights) and the parts share a format:
  // Q, K, V uploaded as one matrix [d, q_dim + 2 kv_dim] (wq, wk, wv are row ranges of it) and
  // gate, up as one [d, 2 n_ff]; a decode step runs one matmul for each. Data null otherwise.
  Tensor wqkv, bqkv, w_gate_up;
};

// Per-session buffers. Activations are sized for max_tokens tokens per forward call; views of
// n < max_tokens tokens share the same memory.
struct LlamaForwardState {
  int n_ctx = 0;  // cache slots per sequence
  int max_tokens = 0;
  int n_seq = 1;  // sequences with a cache each (LlamaModel::forward's `seq`)
  Tensor ids, positions;          // I32 [max_tokens]
  Tensor x;                       // [d, max_tokens] residual stream
  // Room for the fused ops' default composition (Backend::fused_matmul): a normed or gated
  // input and a product to add, [n_ff + d, max_tokens]; the CUDA decode kernels do not use it.
  Tensor scratch;
  // q, k, v of n tokens: [q_dim, n], [kv_dim, n], [kv_dim, n] one after the other, so that for
  // one token they are the output of the fused Q/K/V matmul; gate, up likewise.
  Tensor qkv;                     // [q_dim + 2 kv_dim, max_tokens]
  Tensor attn;                    // [q_dim, max_tokens]
  Tensor gate_up;                 // [2 n_ff, max_tokens]
  Tensor sublayer_out;            // [d, max_tokens]: a sub-block's output before its post-norm (Gemma 3 only)
  Tensor logits;                  // [n_vocab, max_tokens] (or [n_vocab, 1] when logits_all is off and n_seq is 1)
  Tensor sampled;                 // I32 [max_tokens]: the token picked from each row of logits
  Tensor draws;                   // [max_tokens] cpu::TopKDraw (24 bytes each), as I32 [6 max_tokens]
  // Per layer [head_dim, n_head_kv, n_seq * n_ctx]: sequence q's slots are q * n_ctx .. + n_ctx.
  std::vector<Tensor> k_cache, v_cache;
  bool logits_all = false;
};

using LoadProgress = std::function<void(size_t bytes_done, size_t bytes_total)>;

// What LlamaModel::forward picks from the logits it leaves, on the backend (where the logits
// are: on CUDA a decode step then copies 4 bytes to the host instead of the logits).
enum class TokenPick {
  none,
  argmax,        // greedy (Backend::argmax)
  sample_top_k,  // a draw with the parameters the caller wrote into state.draws (Backend::sample_top_k)
};

class LlamaModel {
 public:
  static Expected<std::unique_ptr<LlamaModel>> load(const ModelFile& file, Backend& backend,
                                                    const LoadProgress& progress = {});

  const LlamaConfig& config() const { return config_; }
  Backend& backend() const { return backend_; }
  size_t weight_bytes() const { return weight_bytes_; }
  // Weight bytes one decode step reads: every matrix and norm, but one row of the embedding
  // table (the whole table when it doubles as the output matrix).
  size_t decode_weight_bytes() const;
  DType main_weight_type() const { return layers_.empty() ? DType::F32 : layers_[0].wq.dtype; }
  // The file's format of that matrix, and both as text: "q4_0", or "q4_0 as bl4g32" where the
  // backend stores it in another format (the CPU backend's bl<b>g32 conversion, cpu::blocks_as_bl).
  DType file_weight_type() const { return file_weight_type_; }
  std::string weight_format() const;

  // Allocates a session's buffers: n_ctx cache slots for each of n_seq sequences, up to
  // max_tokens tokens per forward call (at least n_seq when n_seq > 1), logits for every token
  // (logits_all, or n_seq > 1) or only the last one.
  Expected<LlamaForwardState> plan(int n_ctx, int max_tokens, bool logits_all, DType kv_type, int n_seq = 1) const;

  // Runs n tokens whose ids and positions the caller wrote into state.ids / state.positions
  // (with TokenSource::picked the ids are state.sampled as the step before left it: pipelined
  // greedy decoding, Session::decode_greedy). seq >= 0: all n belong to sequence seq (its cache,
  // positions within it); kEachOwnSequence: token i is the next token of sequence i (a decode
  // step of n sequences at once; the matmuls see n tokens, attention runs per sequence). Leaves
  // logits in state.logits: [n_vocab, n] with logits_all or kEachOwnSequence, else [n_vocab, 1]
  // of the last token. With a pick, also writes the token picked from each row of logits into
  // state.sampled.
  static constexpr int kEachOwnSequence = -1;
  enum class TokenSource { ids, picked };
  void forward(LlamaForwardState& state, int n, TokenPick pick = TokenPick::none, int seq = 0,
               TokenSource source = TokenSource::ids) const;

 private:
  LlamaModel(LlamaConfig config, Backend& backend) : config_(std::move(config)), backend_(backend) {}

  LlamaConfig config_;
  Backend& backend_;
  Tensor token_embd_;   // [d, n_vocab]
  Tensor output_norm_;  // [d]
  Tensor output_;       // [d, n_vocab]; = token_embd_ when tied
  std::vector<LlamaLayerWeights> layers_;
  RopeParams rope_;
  RopeParams rope_local_;  // Gemma 3's local (sliding-window) layers
  std::vector<AlignedBuffer> converted_;  // f32 copies of non-f32 norms/biases (host)
  size_t weight_bytes_ = 0;
  DType file_weight_type_ = DType::F32;
};

}  // namespace bl
