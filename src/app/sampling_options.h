// Sampling flags shared by `run` and `chat`, spelled as llama.cpp users expect.
#pragma once

#include <CLI/CLI.hpp>

#include "runtime/sampler.h"

namespace bl::app {

struct SamplingOptions {
  SamplerParams params;
  int64_t seed = -1;  // -1: a random seed, printed so the run can be repeated
};

void add_sampling_options(CLI::App* command, SamplingOptions& options);
// Resolves the seed (random when -1) into options.params and returns the params.
SamplerParams resolve_sampling(SamplingOptions& options);

}  // namespace bl::app
