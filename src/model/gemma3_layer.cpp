#include "model/gemma3_layer.h"

namespace bl {

void gemma3_layer(Backend& b, const LlamaConfig& c, const LlamaLayerWeights& l, const RopeParams& rope, int il,
                  int seq, LlamaForwardState& s, ForwardViews& f) {
  const int64_t n = f.x.ne[1];
  auto normed = [&](const Tensor& weight) { return MatmulFusion{.norm = &weight, .eps = c.rms_eps, .scratch = &s.scratch}; };
  // A sub-block's output before its post-norm, then added to x.
  Tensor sublayer = view(s.sublayer_out, {c.n_embd, n, 1, 1});
  auto add_post_normed = [&](const Tensor& post_norm) { b.add_rms_norm(f.x, sublayer, post_norm, c.rms_eps); };

  // Attention.
  const MatmulFusion attn_norm = normed(l.attn_norm);
  if (n == 1 && l.wqkv.data) {
    b.fused_matmul(l.wqkv, f.x, f.qkv, attn_norm);
  } else {
    const MatmulOutput qkv_outputs[] = {{&l.wq, &f.q, nullptr}, {&l.wk, &f.k, nullptr}, {&l.wv, &f.v, nullptr}};
    b.fused_matmul_same_input(qkv_outputs, f.x, attn_norm);
  }
  // Each head normalised on its own: q and k as rows of head_dim.
  Tensor q_rows = view(f.q_heads, {c.head_dim, c.n_head * n, 1, 1});
  Tensor k_rows = view(f.k_heads, {c.head_dim, c.n_head_kv * n, 1, 1});
  b.rms_norm(q_rows, l.attn_q_norm, c.rms_eps, q_rows);
  b.rms_norm(k_rows, l.attn_k_norm, c.rms_eps, k_rows);
  AttentionParams attn{.n_head = c.n_head, .n_head_kv = c.n_head_kv, .head_dim = c.head_dim, .scale = c.attn_scale};
  if (c.is_local_layer(il)) attn.window = c.sliding_window;
  Tensor& k_cache = s.k_cache[static_cast<size_t>(il)];
  Tensor& v_cache = s.v_cache[static_cast<size_t>(il)];
  if (seq != LlamaModel::kEachOwnSequence) {
    Tensor k_seq = sequence_slots(k_cache, seq, s.n_ctx), v_seq = sequence_slots(v_cache, seq, s.n_ctx);
    AttentionParams attn_then_wo = attn;
    if (n == 1) attn_then_wo.out_matmul_next = &l.wo;  // the fused_matmul below
    b.rope_kv_store_attention(f.q_heads, f.k_heads, f.v_heads, k_seq, v_seq, f.pos, rope, attn_then_wo, f.attn_heads);
  } else {
    b.rope_kv_store_each_sequence(f.q_heads, f.k_heads, f.v_heads, k_cache, v_cache, f.pos, rope, s.n_ctx);
    b.attention_each_sequence(f.q_heads, k_cache, v_cache, f.pos, attn, s.n_ctx, f.attn_heads);
  }
  b.fused_matmul(l.wo, f.attn, sublayer, MatmulFusion{});
  add_post_normed(l.post_attention_norm);

  // Feed-forward (GeGLU).
  const MatmulFusion ffn_norm = normed(l.ffn_norm);
  if (n == 1 && l.w_gate_up.data) {
    b.fused_matmul(l.w_gate_up, f.x, f.gate_up, ffn_norm);  // one token: gate, up = f.gate, f.up
  } else {
    const MatmulOutput gate_up_outputs[] = {{&l.w_gate, &f.gate, nullptr}, {&l.w_up, &f.up, nullptr}};
    b.fused_matmul_same_input(gate_up_outputs, f.x, ffn_norm);
  }
  b.gelu_mul(f.gate, f.up, f.gate);
  b.matmul(l.w_down, f.gate, sublayer);
  add_post_normed(l.post_ffw_norm);
}

}  // namespace bl
