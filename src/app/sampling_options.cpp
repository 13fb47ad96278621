#include "app/sampling_options.h"

#include <random>

namespace bl::app {

void add_sampling_options(CLI::App* command, SamplingOptions& o) {
  command->add_option("--temp", o.params.temperature, "temperature (0 = greedy)")->capture_default_str();
  command->add_option("--top-k", o.params.top_k, "top-k sampling (0 = off)")->capture_default_str();
  command->add_option("--top-p", o.params.top_p, "top-p sampling (1 = off)")->capture_default_str();
  command->add_option("--min-p", o.params.min_p, "min-p sampling (0 = off)")->capture_default_str();
  command->add_option("--repeat-penalty", o.params.repeat_penalty, "repetition penalty (1 = off)")->capture_default_str();
  command->add_option("--repeat-last-n", o.params.repeat_last_n, "tokens the penalty looks back")->capture_default_str();
  command->add_option("-s,--seed", o.seed, "random seed (-1 = random)")->capture_default_str();
}

SamplerParams resolve_sampling(SamplingOptions& o) {
  if (o.seed < 0) o.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
  o.params.seed = static_cast<uint64_t>(o.seed);
  return o.params;
}

}  // namespace bl::app
