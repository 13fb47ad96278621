// Rotary position embedding (RoPE).
#pragma once

#include <cstdint>
#include <vector>

namespace bl::cpu {

struct RopeConfig {
  int n_dims = 0;                        // rotated dims per head (even, <= head_dim)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;               // position *= freq_scale
  const float* freq_factors = nullptr;   // [n_dims / 2] divisors of the frequencies, or nullptr
  bool operator==(const RopeConfig&) const = default;
};

// cos and sin of the angle θ(t, i) = positions[t] · freq_scale · base^(-2i / n_dims) / factor_i
// for every token t and pair i, computed in double and stored as float. Layers share the
// positions of a step, so update() recomputes only when the config or the positions changed:
// once per step instead of twice per layer.
class RopeTable {
 public:
  void update(const RopeConfig& config, const int32_t* positions, int64_t n_tokens);
  int pairs() const { return pairs_; }
  const float* cos_row(int64_t t) const { return cos_.data() + t * pairs_; }  // [pairs]
  const float* sin_row(int64_t t) const { return sin_.data() + t * pairs_; }

 private:
  bool valid_ = false;
  RopeConfig config_;
  int pairs_ = 0;
  std::vector<double> inv_freq_;    // [pairs]
  std::vector<float> factors_;      // [pairs] config_.freq_factors' values, or empty
  std::vector<int32_t> positions_;  // [n_tokens]
  std::vector<float> cos_, sin_;    // [pairs, n_tokens]
};

// Rotates tokens [t_begin, t_end) of x [head_dim, n_heads, n] in place with table's angles.
// neox: pairs (i, i + n_dims/2); otherwise pairs (2i, 2i + 1). Dims >= n_dims pass through.
void rope(float* x, int64_t head_dim, int64_t n_heads, bool neox, const RopeTable& table, int64_t t_begin,
          int64_t t_end);

}  // namespace bl::cpu
