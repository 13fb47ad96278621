// End-to-end model timing for `bitlight bench`: prefill of a prompt (ppN) and decode of N
// tokens one at a time (tgN), repeated, on random token ids; with n_seq > 1, n_seq sequences
// each prefilled, then decoded together (rates count the tokens of all sequences).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "core/status.h"
#include "model/llama_model.h"

namespace bl {

struct ModelBenchOptions {
  int n_prompt = 512;  // 0: skip prefill
  int n_gen = 128;     // 0: skip decode
  int repetitions = 3;
  int n_batch = 512;   // prompt tokens per forward pass
  int n_seq = 1;       // sequences decoded together (each step: one token of each)
  int n_ctx = 0;       // cache slots per sequence; 0: what the tests need (-p + -n)
  DType kv_type = DType::F16;
  uint64_t seed = 1;
  // Read bandwidth of the weights' memory in GB/s (0: no probe), taken before each timed
  // repetition and after the last, so that each decode is judged by the limit measured next
  // to it (ModelBenchResult::decode_fraction).
  std::function<double()> probe_read_gbps;
  // Joules since some fixed moment (EnergyMeter::joules), read around each timed phase; null,
  // or nullopt from a read, and the phase's energy is not reported.
  std::function<std::optional<double>()> read_joules;
};

struct RateStats {
  std::vector<double> tokens_per_second;  // one per repetition
  double mean() const;
  double stddev() const;  // sample standard deviation (0 for one sample)
};

struct ModelBenchResult {
  RateStats prefill, decode;
  int n_ctx = 0;  // cache slots allocated per sequence
  // With a probe: its readings (repetitions + 1: before each repetition and after the last),
  // and per repetition the decode's bytes per second over the larger of the two readings
  // around it.
  std::vector<double> read_gbps;
  std::vector<double> decode_fraction;
  // Bytes one decode step reads per token it makes: weights (decode_weight_bytes) over the
  // sequences of the step, plus one sequence's KV cache at the mean context of the decode.
  double decode_bytes_per_token = 0;
  // 2 * (layer matrix weights) + the output matrix once per forward pass (spread over the
  // prompt) + attention at the mean prompt position.
  double prefill_flops_per_token = 0;
  // With read_joules: per repetition, joules per prompt token and per decoded token (empty when
  // any read failed).
  std::vector<double> prefill_joules_per_token, decode_joules_per_token;
};

Expected<ModelBenchResult> bench_model(const LlamaModel& model, const ModelBenchOptions& options);

}  // namespace bl
