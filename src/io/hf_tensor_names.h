// Hugging Face tensor names -> GGUF tensor names (Llama / Mistral / Qwen2 layouts):
//   model.embed_tokens.weight                        -> token_embd.weight
//   model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias} -> blk.N.attn_{q,k,v,output}.{weight,bias}
//   model.layers.N.mlp.{gate,up,down}_proj.weight    -> blk.N.ffn_{gate,up,down}.weight
//   model.layers.N.input_layernorm.weight            -> blk.N.attn_norm.weight
//   model.layers.N.post_attention_layernorm.weight   -> blk.N.ffn_norm.weight
//   model.norm.weight                                -> output_norm.weight
//   lm_head.weight                                   -> output.weight
// model.layers.N.self_attn.rotary_emb.inv_freq (old checkpoints; recomputed from the config)
// is dropped; any other name is kept as it is.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace bl {

// nullopt: the tensor is dropped.
std::optional<std::string> gguf_tensor_name(std::string_view hf_name);

}  // namespace bl
