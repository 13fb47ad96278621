// One Gemma 3 decoder layer as Backend ops (HF transformers' Gemma3DecoderLayer, llama.cpp's
// gemma3 graph):
//   h = RMSNorm(x) * attn_norm;  q, k, v = Wq h, Wk h, Wv h
//   q, k = RMSNorm(each head) * attn_q_norm / attn_k_norm;  rope (NeoX pairs)
//   x += RMSNorm(Wo · attention(q, k, v)) * post_attention_norm
//   h = RMSNorm(x) * ffn_norm;  x += RMSNorm(W_down (gelu(W_gate h) * W_up h)) * post_ffw_norm
// A local layer (LlamaConfig::is_local_layer) attends over the last sliding_window slots only,
// with its own rope base; a global one over every slot. GGUF files store the norm weights with
// Gemma's "1 +" already added (convert_hf_to_gguf), so they are plain RMSNorm weights here.
#pragma once

#include "backend/backend.h"
#include "model/forward_views.h"
#include "model/llama_config.h"
#include "model/llama_model.h"

namespace bl {

// The layer's ops on the n tokens of f (LlamaModel::forward's views); seq as in forward. rope
// is the layer's (local or global). Reads and writes f.x; uses s's buffers.
void gemma3_layer(Backend& b, const LlamaConfig& c, const LlamaLayerWeights& l, const RopeParams& rope, int il,
                  int seq, LlamaForwardState& s, ForwardViews& f);

}  // namespace bl
