#include "runtime/quantize_model.h"

#include <cstring>
#include <vector>

#include "io/gguf_writer.h"
#include "io/model_file.h"
#include "quant/bl_group.h"
#include "quant/quant.h"
#include "runtime/imatrix.h"

namespace bl {
namespace {

// Bits per weight of a type as stored (scales included).
double bits_per_weight(DType t) {
  const DTypeInfo* info = dtype_info(t);
  return 8.0 * static_cast<double>(info->block_bytes) / static_cast<double>(info->block_elems);
}

bool is_float_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// q8_0, unless the main type is at least as precise (8.5 bits per weight).
DType default_high_precision_type(DType main_type) {
  return bits_per_weight(main_type) >= bits_per_weight(DType::Q8_0) ? main_type : DType::Q8_0;
}

// Rows of whole blocks, and a row count that fills the type's tiles (16 rows for bl types).
bool fits(DType t, const TensorInfo& tensor) {
  const DTypeInfo* info = dtype_info(t);
  return tensor.ne[0] % info->block_elems == 0 && tensor.view().rows() % info->tile_rows == 0;
}

// Why `t` does not fit `tensor`, as "<what>" for the error message.
std::string misfit_text(DType t, const TensorInfo& tensor) {
  const DTypeInfo* info = dtype_info(t);
  if (tensor.ne[0] % info->block_elems != 0)
    return "rows of " + std::to_string(tensor.ne[0]) + " elements, not a multiple of the " + std::string(info->name) +
           " block size " + std::to_string(info->block_elems);
  return std::to_string(tensor.view().rows()) + " rows, not a multiple of the " + std::string(info->name) +
         " tile of " + std::to_string(info->tile_rows) + " rows";
}

std::string type_text(DType t) { return std::string(dtype_name(t)); }

Expected<DType> target_type(const TensorInfo& t, const QuantizeOptions& o) {
  if (t.ne.size() < 2) return is_float_type(t.dtype) || can_dequantize(t.dtype) ? DType::F32 : t.dtype;
  if (!can_dequantize(t.dtype))
    return unsupported("tensor '" + t.name + "' is of type " + type_text(t.dtype) +
                       ", which bitlight cannot dequantize, so it cannot be re-quantized");
  DType want = o.type;
  if (t.name == "token_embd.weight") want = o.embd_type.value_or(default_high_precision_type(o.type));
  if (t.name == "output.weight") want = o.output_type.value_or(default_high_precision_type(o.type));
  if (fits(want, t)) return want;
  if (o.fallback_type && fits(*o.fallback_type, t)) return *o.fallback_type;
  return invalid_argument("tensor '" + t.name + "' has " + misfit_text(want, t) +
                          (o.fallback_type ? " (nor does it fit the fallback type: " + misfit_text(*o.fallback_type, t) + ")"
                                           : "; pass --fallback-type (e.g. q8_0) to quantize such matrices to another type"));
}

// Converts one tensor: rows dequantized to f32, then quantized to `to` (with importance for
// the bl types), split across the pool in whole tiles of `to`. dst holds rows * row_bytes(to,
// cols) bytes.
void convert(const TensorInfo& t, DType to, const std::vector<float>& importance, void* dst, ThreadPool& pool) {
  const int64_t cols = t.ne[0], rows = t.view().rows(), tile = dtype_info(to)->tile_rows;
  const size_t out_row = row_bytes(to, cols);
  auto* out = static_cast<char*>(dst);
  pool.parallel_for(rows / tile, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> values(static_cast<size_t>(tile * cols));
    for (int64_t i = t0; i < t1; ++i) {
      for (int64_t r = 0; r < tile; ++r) dequantize_matrix_row(t.dtype, t.data, cols, i * tile + r, values.data() + r * cols);
      quantize_matrix(to, values.data(), out + out_row * static_cast<size_t>(i * tile), tile, cols,
                      importance.empty() ? nullptr : importance.data());
    }
  });
}

}  // namespace

uint32_t gguf_file_type(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::Q2_K: return 10;
    case DType::Q3_K: return 12;  // Q3_K_M
    case DType::Q4_K: return 15;  // Q4_K_M
    case DType::Q5_K: return 17;  // Q5_K_M
    case DType::Q6_K: return 18;
    case DType::BF16: return 32;
    case DType::TQ1_0: return 36;
    case DType::TQ2_0: return 37;
    default: return static_cast<uint32_t>(t);
  }
}

Expected<std::vector<TensorPlan>> plan_quantization(const ModelFile& in, const QuantizeOptions& o) {
  for (const std::optional<DType>& t : {std::optional<DType>(o.type), o.embd_type, o.output_type, o.fallback_type})
    if (t && !can_quantize(*t)) return unsupported("bitlight cannot quantize to " + type_text(*t));
  std::vector<TensorPlan> plan;
  for (const TensorInfo& t : in.tensors()) {
    DType to;
    BL_ASSIGN_OR_RETURN(to, target_type(t, o));
    plan.push_back({t.name, t.dtype, to});
  }
  return plan;
}

Status quantize_model(const ModelFile& in, const std::string& out_path, const QuantizeOptions& o, ThreadPool& pool,
                      const QuantizeProgress& progress) {
  std::vector<TensorPlan> plan;
  BL_ASSIGN_OR_RETURN(plan, plan_quantization(in, o));

  GgufWriter w;
  for (const GgufKeyValue& kv : in.metadata()) w.set(kv.key, kv.value);
  w.set_u32("general.file_type", gguf_file_type(o.type));
  w.set_string("bitlight.quantize.type", type_text(o.type));
  const TensorInfo* embd = in.find_tensor("token_embd.weight");
  const TensorInfo* output = in.find_tensor("output.weight");
  for (const TensorPlan& p : plan) {
    if (embd && p.name == embd->name) w.set_string("bitlight.quantize.embd_type", type_text(p.to));
    if (output && p.name == output->name) w.set_string("bitlight.quantize.output_type", type_text(p.to));
  }
  if (o.imatrix) {
    w.set_string_array("bitlight.quantize.imatrix.datasets", o.imatrix->datasets);
    w.set_u32("bitlight.quantize.imatrix.entries", static_cast<uint32_t>(o.imatrix->entries.size()));
  }

  uint64_t total_bytes = 0;
  for (const TensorInfo& t : in.tensors()) total_bytes += t.bytes;
  auto done_tensors = std::make_shared<size_t>(0);
  auto done_bytes = std::make_shared<uint64_t>(0);
  const size_t n_tensors = plan.size();

  for (size_t i = 0; i < n_tensors; ++i) {
    const TensorInfo& t = in.tensors()[i];
    const DType to = plan[i].to;
    auto report = [=, &progress, &t] {
      ++*done_tensors;
      *done_bytes += t.bytes;
      if (progress) progress(*done_tensors, n_tensors, *done_bytes, total_bytes, t.name);
    };
    if (to == t.dtype) {
      BL_RETURN_IF_ERROR(w.add_tensor(t.name, to, t.ne, [&t, report](void* dst, uint64_t bytes) {
        if (bytes != t.bytes) return internal_error("size mismatch copying '" + t.name + "'");
        std::memcpy(dst, t.data, bytes);
        report();
        return Status::Ok();
      }));
      continue;
    }
    std::vector<float> importance;
    if (o.imatrix && quant::is_bl_group(to)) importance = o.imatrix->importance(t.name, t.ne[0]);
    BL_RETURN_IF_ERROR(w.add_tensor(t.name, to, t.ne, [&t, to, importance, &pool, report](void* dst, uint64_t) {
      convert(t, to, importance, dst, pool);
      report();
      return Status::Ok();
    }));
  }
  return w.write(out_path);
}

}  // namespace bl
