#include "kernels/cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/half.h"
#include "kernels/cpu/attention_span.h"

namespace bl::cpu {

void prefetch_span_rows(const AttentionSpan& s, int64_t first, int64_t last) {
  const int64_t elem = s.f16 ? 2 : 4, row_bytes = s.head_dim * elem;
  for (int64_t j = first; j < last && j < s.end; ++j) {
    const char* k = static_cast<const char*>(s.k) + j * s.slot_stride * elem;
    const char* v = static_cast<const char*>(s.v) + j * s.slot_stride * elem;
    for (int64_t off = 0; off < row_bytes; off += 64) {
      __builtin_prefetch(k + off, 0, 3);
      __builtin_prefetch(v + off, 0, 3);
    }
  }
}

// Plain C++ fallback for CPUs without AVX2: one online-softmax update per slot.
void attend_span_scalar(const AttentionSpan& s) {
  const int hd = s.head_dim;
  auto load = [&](const void* base, int64_t i) {
    return s.f16 ? fp16_to_f32(static_cast<const uint16_t*>(base)[i]) : static_cast<const float*>(base)[i];
  };
  for (int h = 0; h < s.n_heads; ++h) {
    const float* q = s.q + static_cast<int64_t>(h) * hd;
    float* o = s.o + static_cast<int64_t>(h) * hd;
    for (int64_t j = s.begin; j < s.end; ++j) {
      const int64_t row = j * s.slot_stride;
      float dot = 0.0f;
      for (int c = 0; c < hd; ++c) dot += q[c] * load(s.k, row + c);
      const float score = dot * s.scale;
      if (score > s.m[h]) {  // new max: rescale what was accumulated so far
        const float correction = s.m[h] == -INFINITY ? 0.0f : std::exp(s.m[h] - score);
        s.l[h] *= correction;
        for (int c = 0; c < hd; ++c) o[c] *= correction;
        s.m[h] = score;
      }
      const float p = std::exp(score - s.m[h]);
      s.l[h] += p;
      for (int c = 0; c < hd; ++c) o[c] += p * load(s.v, row + c);
    }
  }
}

namespace {

using SpanFn = void (*)(const AttentionSpan&);

SpanFn span_fn(Isa isa) {
  switch (isa) {
    case Isa::avx512: return attend_span_avx512;
    case Isa::avx2: return attend_span_avx2;
    case Isa::scalar: break;
  }
  return attend_span_scalar;
}

// Below this many multiply-adds (q·k plus p·v, all heads) the pool's dispatch (~1 µs) costs
// more than it saves: early decode steps run on the calling thread.
constexpr int64_t kMinParallelMacs = 1 << 15;
// A slot chunk shorter than this is not worth its merge.
constexpr int64_t kMinChunkSlots = 64;

// Everything a worker needs; passed to the pool by reference so the std::function the pool
// builds holds one pointer and never allocates.
struct Job {
  SpanFn fn = nullptr;
  const float* q = nullptr;
  float* out = nullptr;
  const char* k = nullptr;
  const char* v = nullptr;
  size_t elem_bytes = 4;
  bool f16 = false;
  const int32_t* positions = nullptr;
  int64_t n_ctx = 0;
  int64_t n_tokens = 0;
  int n_head = 0, n_head_kv = 0, group = 0, head_dim = 0;
  float scale = 1.0f;
  int window = 0;
  int64_t chunks = 1;
  int64_t n_items = 0;
  int64_t state_floats = 0;  // one state: m[group], l[group], o[group * head_dim]
  float* states = nullptr;   // chunks > 1: one state per item; else one per thread
  std::atomic<int64_t> next{0};
};

// The slots token sees: [first_key, first_key + n_keys).
int64_t end_key(const Job& job, int64_t token) {
  const int64_t pos = job.positions[token];
  if (pos < 0) return 0;
  return std::min<int64_t>(pos + 1, job.n_ctx);
}
int64_t first_key(const Job& job, int64_t token) {
  return job.window > 0 ? std::max<int64_t>(0, end_key(job, token) - job.window) : 0;
}
int64_t n_keys(const Job& job, int64_t token) { return end_key(job, token) - first_key(job, token); }

// Item order: tokens last to first (the causal spans shrink), then kv heads, then chunks.
struct Item {
  int64_t token, kv_head, chunk;
};
Item decode_item(const Job& job, int64_t item) {
  const int64_t rest = item / job.chunks;
  return {job.n_tokens - 1 - rest / job.n_head_kv, rest % job.n_head_kv, item % job.chunks};
}
int64_t item_index(const Job& job, int64_t token, int64_t kv_head, int64_t chunk) {
  return ((job.n_tokens - 1 - token) * job.n_head_kv + kv_head) * job.chunks + chunk;
}

// Output offset (floats) of the first query head of kv head g at token t.
int64_t head_offset(const Job& job, int64_t token, int64_t kv_head) {
  return (token * job.n_head + kv_head * job.group) * job.head_dim;
}

void run_item(const Job& job, int64_t index, float* state) {
  const Item it = decode_item(job, index);
  const int64_t first = first_key(job, it.token), keys = n_keys(job, it.token);
  const int g = job.group;
  AttentionSpan s;
  s.q = job.q + head_offset(job, it.token, it.kv_head);
  s.k = job.k + static_cast<size_t>(it.kv_head * job.head_dim) * job.elem_bytes;
  s.v = job.v + static_cast<size_t>(it.kv_head * job.head_dim) * job.elem_bytes;
  s.f16 = job.f16;
  s.slot_stride = static_cast<int64_t>(job.head_dim) * job.n_head_kv;
  s.begin = first + keys * it.chunk / job.chunks;
  s.end = first + keys * (it.chunk + 1) / job.chunks;
  s.n_heads = g;
  s.head_dim = job.head_dim;
  s.scale = job.scale;
  s.m = state;
  s.l = state + g;
  s.o = state + 2 * g;
  std::fill(s.m, s.m + g, -INFINITY);
  std::fill(s.l, s.l + g + static_cast<int64_t>(g) * job.head_dim, 0.0f);
  if (s.begin < s.end) job.fn(s);
  if (job.chunks > 1) return;  // merged after all items are done
  float* out = job.out + head_offset(job, it.token, it.kv_head);
  for (int h = 0; h < g; ++h) {
    const float inv_l = s.l[h] > 0.0f ? 1.0f / s.l[h] : 0.0f;
    for (int c = 0; c < job.head_dim; ++c) out[h * job.head_dim + c] = s.o[h * job.head_dim + c] * inv_l;
  }
}

void worker(Job& job, int thread) {
  float* own_state = job.chunks > 1 ? nullptr : job.states + thread * job.state_floats;
  for (;;) {
    const int64_t item = job.next.fetch_add(1, std::memory_order_relaxed);
    if (item >= job.n_items) return;
    run_item(job, item, own_state ? own_state : job.states + item * job.state_floats);
  }
}

// out = Σ_c e^(m_c - M) o_c / Σ_c e^(m_c - M) l_c over the chunks c of each (token, head).
void merge_chunks(const Job& job) {
  const int g = job.group, hd = job.head_dim;
  for (int64_t t = 0; t < job.n_tokens; ++t) {
    for (int64_t kvh = 0; kvh < job.n_head_kv; ++kvh) {
      const float* first = job.states + item_index(job, t, kvh, 0) * job.state_floats;
      float* out = job.out + head_offset(job, t, kvh);
      for (int h = 0; h < g; ++h) {
        float m = -INFINITY;
        for (int64_t c = 0; c < job.chunks; ++c) m = std::max(m, first[c * job.state_floats + h]);
        float* o = out + h * hd;
        std::fill(o, o + hd, 0.0f);
        float l = 0.0f;
        for (int64_t c = 0; c < job.chunks; ++c) {
          const float* st = first + c * job.state_floats;
          if (st[h] == -INFINITY) continue;  // empty chunk
          const float w = std::exp(st[h] - m);
          l += w * st[g + h];
          const float* oc = st + 2 * g + h * hd;
          for (int i = 0; i < hd; ++i) o[i] += w * oc[i];
        }
        const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
        for (int i = 0; i < hd; ++i) o[i] *= inv_l;
      }
    }
  }
}

}  // namespace

void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const int32_t* positions,
               const AttentionShape& shape, Tensor& out, ThreadPool& pool, AlignedBuffer& scratch, Isa isa) {
  assert(shape.n_head_kv > 0 && shape.n_head % shape.n_head_kv == 0);
  assert(k_cache.dtype == v_cache.dtype && (k_cache.dtype == DType::F32 || k_cache.dtype == DType::F16));
  Job job;
  job.fn = span_fn(isa);
  job.q = q.as<const float>();
  job.out = out.as<float>();
  job.k = static_cast<const char*>(k_cache.data);
  job.v = static_cast<const char*>(v_cache.data);
  job.f16 = k_cache.dtype == DType::F16;
  job.elem_bytes = job.f16 ? 2 : 4;
  job.positions = positions;
  job.n_ctx = k_cache.ne[2];
  job.n_tokens = q.ne[2];
  job.n_head = shape.n_head;
  job.n_head_kv = shape.n_head_kv;
  job.group = shape.n_head / shape.n_head_kv;
  job.head_dim = shape.head_dim;
  job.scale = shape.scale;
  job.window = shape.window;
  job.state_floats = static_cast<int64_t>(job.group) * (2 + shape.head_dim);

  int64_t total_keys = 0, max_keys = 0;
  for (int64_t t = 0; t < job.n_tokens; ++t) {
    total_keys += n_keys(job, t);
    max_keys = std::max(max_keys, n_keys(job, t));
  }
  const int64_t macs = 2 * total_keys * shape.n_head * shape.head_dim;
  const int threads = macs < kMinParallelMacs ? 1 : pool.size();

  // Too few (token, kv head) pairs for the threads (decode): split the slots into chunks so the
  // item count is a multiple of the thread count.
  const int64_t pairs = job.n_tokens * job.n_head_kv;
  if (threads > 1 && pairs < 4 * threads) {
    job.chunks = threads / std::gcd(pairs, static_cast<int64_t>(threads));
    while (job.chunks > 1 && max_keys / job.chunks < kMinChunkSlots) --job.chunks;
  }
  job.n_items = pairs * job.chunks;

  const int64_t n_states = job.chunks > 1 ? job.n_items : threads;
  const size_t state_bytes = static_cast<size_t>(n_states * job.state_floats) * sizeof(float);
  if (scratch.bytes() < state_bytes) scratch.resize(state_bytes);
  job.states = scratch.as<float>();
  assert(job.states != nullptr || state_bytes == 0);

  if (threads == 1) {
    worker(job, 0);
  } else {
    pool.run([&job](int thread, int) {
      if (thread < static_cast<int>(job.n_items)) worker(job, thread);
    });
  }
  if (job.chunks > 1) merge_chunks(job);
}

}  // namespace bl::cpu
