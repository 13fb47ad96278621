// Importance matrix: for each weight matrix, the mean squared activation of each of its input
// features over calibration text. Quantizing W[cols, rows] so as to minimise
// sum_j E[x_j^2] * (w_rj - w'_rj)^2 per row minimises the expected squared error of the
// matmul output when features are uncorrelated (the activation-aware mode of `quantize`).
//
// File: a GGUF in the layout of llama.cpp's GGUF imatrix files, so either tool reads the
// other's: general.type = "imatrix"; per matrix two F32 tensors, "<weight name>.in_sum2"
// [cols] (sum over tokens of x_j^2) and "<weight name>.counts" [1] (number of tokens);
// imatrix.datasets (array of string) names the calibration text.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace bl {

class Backend;
class ModelFile;

struct ImportanceMatrix {
  struct Entry {
    std::vector<double> sum_sq;  // [cols] sum over tokens of x_j^2
    int64_t count = 0;           // tokens
  };
  std::map<std::string, Entry> entries;  // by weight tensor name
  std::vector<std::string> datasets;

  // Mean squared activation per input feature of `tensor` (cols values); empty when the
  // matrix has no entry, no tokens, or another length.
  std::vector<float> importance(const std::string& tensor, int64_t cols) const;
};

Expected<ImportanceMatrix> load_imatrix(const std::string& path);
Status save_imatrix(const ImportanceMatrix& m, const std::string& path);

// A backend that forwards every op to `inner` and, for each matmul whose weight is one of
// `file`'s tensors (matched by data pointer: CPU backends use the mapped file data as it is),
// adds the activations' squares to `out`. For `bitlight imatrix` on the CPU backends.
std::unique_ptr<Backend> make_imatrix_recorder(Backend& inner, const ModelFile& file, ImportanceMatrix& out);

}  // namespace bl
