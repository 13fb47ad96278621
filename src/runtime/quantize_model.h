// Re-quantizes a model file (GGUF of any dequantizable type, or a Hugging Face folder) into a
// GGUF whose weight matrices are of one chosen type (`bitlight quantize`).
//
// Which tensor gets which type (the "type rule", also in docs/formats.md):
//  - tensors of one dimension (norms, biases) and non-float tensors: kept, float ones as f32;
//  - token_embd.weight: embd_type (default: q8_0, or the main type when that has >= 8 bits
//    per weight) — an embedding row is read once per token, so it costs little to keep it
//    precise, and its errors are not averaged over a dot product;
//  - output.weight: output_type (default: the same rule as embd_type) — logits are the most
//    error-sensitive product of the model;
//  - every other tensor of two or more dimensions: the main type.
// A matrix whose rows are not a multiple of its type's block / group size gets fallback_type
// when one is given (it must fit), else the whole run fails naming the tensor. A tensor already
// stored in its target type is copied byte for byte.
//
// Metadata is copied; general.file_type is set (llama.cpp's LLAMA_FTYPE values for the GGUF
// types; the bitlight dtype id, 1010..1082, for bl<b>g<g>), and bitlight.quantize.* record the
// type rule's outcome and the importance matrix used.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace bl {

class ModelFile;
struct ImportanceMatrix;

struct QuantizeOptions {
  DType type = DType::Q4_0;
  std::optional<DType> embd_type;      // token_embd.weight; nullopt = the rule above
  std::optional<DType> output_type;    // output.weight; nullopt = the rule above
  std::optional<DType> fallback_type;  // for matrices whose rows do not fit `type`'s blocks
  // Activation-aware mode: per-input-feature importance of each matrix (bl<b>g<g> types use
  // it in their clipping search; other types ignore it and say so in the log).
  const ImportanceMatrix* imatrix = nullptr;
};

// What quantize_model will write for one tensor.
struct TensorPlan {
  std::string name;
  DType from, to;
};

// The type each tensor of `in` gets under `options`, or an error naming the first tensor that
// cannot be converted.
Expected<std::vector<TensorPlan>> plan_quantization(const ModelFile& in, const QuantizeOptions& options);

// Called after each tensor is written: (tensors done, tensors total, bytes of input done,
// bytes total, name of the last tensor).
using QuantizeProgress = std::function<void(size_t, size_t, uint64_t, uint64_t, const std::string&)>;

Status quantize_model(const ModelFile& in, const std::string& out_path, const QuantizeOptions& options,
                      ThreadPool& pool, const QuantizeProgress& progress = {});

// llama.cpp's general.file_type for a main weight type (LLAMA_FTYPE_MOSTLY_*), or the dtype
// id for bitlight's own types.
uint32_t gguf_file_type(DType main_type);

}  // namespace bl
