// The Backend interface: memory and the ops a transformer forward pass is built from.
//
// Model code (model/) calls these ops in order on tensors that live in the backend's memory;
// the backend runs them (CPU: at once on its thread pool; CUDA: queued on a stream, so a
// decode step can be captured in a CUDA graph and replayed). Every op of every backend is
// tested against ReferenceBackend (tests/ops/).
//
// Conventions (core/tensor.h): ne[0] is the contiguous dim. Activations are F32
// [d, n_tokens]. Weights are [cols, rows] in any format the backend supports(). Positions
// and token ids are I32 tensors in backend memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace bl {

// Rotary position embedding. `neox` rotates pairs (i, i + n_dims/2) (GPT-NeoX, Qwen2, HF
// Llama); otherwise pairs (2i, 2i+1) (GGUF Llama, whose q/k rows were permuted to match).
struct RopeParams {
  int n_dims = 0;            // rotated dims per head (<= head_dim; the rest pass through)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;   // linear scaling: position *= freq_scale
  bool neox = false;
  // Per-pair divisors of the frequency (n_dims/2 values, Llama 3 "rope_freqs"), or nullptr.
  // A host pointer owned by the model; backends copy it at plan time if they need to.
  const float* freq_factors = nullptr;
};

struct AttentionParams {
  int n_head = 0;     // query heads
  int n_head_kv = 0;  // key/value heads; n_head % n_head_kv == 0 (GQA)
  int head_dim = 0;
  float scale = 1.0f; // usually 1/sqrt(head_dim)
  // Sliding-window attention (Gemma 3's local layers): > 0 lets the token at position p see
  // only slots [p - window + 1, p] (clipped at 0); 0 = every slot up to p.
  int window = 0;
  // A hint for one token of one sequence: the op right after this attention is
  // fused_matmul(*out_matmul_next, out as [n_head * head_dim, 1], x, {.accumulate = ...}) (the
  // output projection) and nothing else reads out. A backend may then leave out unwritten and
  // hand that op the softmax's unnormalised sums to divide (CUDA: no combine kernel between the
  // attention and the GEMV). Results are the same up to rounding either way.
  const Tensor* out_matmul_next = nullptr;
};

// The rope_kv_store_attention right after a one-token QKV matmul (MatmulFusion::rope_next): its
// operands, q, k and v being views of that matmul's out = [q; k; v].
struct RopeNext {
  const Tensor* q = nullptr;
  const Tensor* k = nullptr;
  const Tensor* v = nullptr;
  const Tensor* k_cache = nullptr;
  const Tensor* v_cache = nullptr;
  const Tensor* positions = nullptr;
  const RopeParams* rope = nullptr;
};

// The extra work of Backend::fused_matmul around W · x.
struct MatmulFusion {
  const Tensor* norm = nullptr;  // x' = rms_norm(x, eps) * norm
  float eps = 1e-5f;
  const Tensor* up = nullptr;    // x' = silu(x) * up
  bool accumulate = false;       // out += W · x' instead of out = W · x'
  Tensor* scratch = nullptr;     // F32 room for the default composition (see fused_matmul)
  // A hint for one token: the op right after this one is fused_matmul(*swiglu_next, gate, ..)
  // with up, where out = [gate; up] (rows / 2 each) and nothing else reads out. A backend may
  // then store silu(gate) in out's first half and have that op multiply by up only (CUDA, plain
  // types: the silu_mul kernel between the two GEMVs goes). Results are the same either way.
  const Tensor* swiglu_next = nullptr;
  // A hint for one token with accumulate: the op right after this one is
  // fused_matmul(*norm_next_matmul, out, .., {.norm = norm_next}) (the next sub-block's first
  // matmul reading the residual stream out). A backend may then have this matmul also prepare
  // that op's normed input (CUDA: the int8 x of the next GEMV, so no quantize kernel runs
  // between the two). Results are the same up to rounding either way.
  const Tensor* norm_next = nullptr;
  const Tensor* norm_next_matmul = nullptr;
  // A hint for one token: the op right after this one is rope_kv_store_attention on rope_next's
  // operands. A backend may then rotate q and k and store k, v into the caches in this matmul
  // (CUDA: the epilogue of the dp4a, fp32 or bl GEMV, so no rope step runs between the two and
  // the attention loads its K/V rows before it waits). Results are the same up to rounding either
  // way.
  RopeNext rope_next = {};
};

// One product of Backend::fused_matmul_same_input: *out = *w · x' (+ *bias), or += with
// accumulate.
struct MatmulOutput {
  const Tensor* w = nullptr;
  Tensor* out = nullptr;
  const Tensor* bias = nullptr;
};

// The operands of Backend::fused_ffn.
struct FfnBlock {
  const Tensor* w_gate = nullptr;  // [cols, n_ff]
  const Tensor* w_up = nullptr;    // [cols, n_ff]
  const Tensor* w_down = nullptr;  // [n_ff, cols]
  const Tensor* norm = nullptr;    // [cols] F32
  float eps = 1e-5f;
  Tensor* gate = nullptr;          // [n_ff, n] F32: the default's intermediates, left undefined
  Tensor* up = nullptr;            // [n_ff, n] F32, likewise
  Tensor* scratch = nullptr;       // as MatmulFusion::scratch
};

enum class BackendKind { reference, cpu, cuda };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const = 0;
  virtual std::string name() const = 0;   // "cpu (avx512, 2 threads)"
  virtual Device device() const = 0;
  virtual bool supports(DType weight_type) const = 0;

  // Memory. alloc returns a tensor owned by the backend (freed when it is destroyed).
  // upload_weight makes a weight usable by this backend: the CPU backends return a view of the
  // host data (mmap) as it is; CUDA copies (and may repack) it.
  virtual Expected<Tensor> alloc(DType dtype, std::array<int64_t, 4> ne) = 0;
  virtual Expected<Tensor> upload_weight(const Tensor& host) = 0;
  // Whether upload_weight makes its own copy of a weight of this type and row count, so the host
  // bytes may be freed after it returns. The model then uploads Q/K/V and gate/up each as one
  // matrix (a host concatenation) and runs one matmul for them at decode.
  virtual bool copies_weights(DType /*type*/, int64_t /*rows*/) const { return false; }
  virtual void write(Tensor& dst, const void* src, size_t bytes, size_t offset_bytes = 0) = 0;
  virtual void read(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes = 0) = 0;
  virtual void synchronize() = 0;
  // Host memory that write() copies from and read_async() copies to without the host waiting for
  // the queued work: page-locked on CUDA (a copy from pageable memory may wait), plain elsewhere.
  // Lives as long as the backend; nullptr (and an error in status()) when it cannot be had.
  virtual void* alloc_host(size_t bytes);
  // read() that returns at once: the copy runs after the work queued so far, and
  // wait_read(ticket) returns once it has landed in dst (alloc_host memory), with the first error
  // recorded since the last status() or wait_read(), as status() gives it (waiting for a read
  // more than kReadsInFlight reads old may wait longer: until a later one has landed). Backends
  // that run ops as they are issued (CPU, reference) copy at once.
  static constexpr int kReadsInFlight = 4;
  virtual uint64_t read_async(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes = 0) {
    read(src, dst, bytes, offset_bytes);
    return 0;
  }
  virtual Status wait_read(uint64_t /*ticket*/) { return status(); }

  // Device memory read bandwidth in 1e9 bytes/s, measured now (a large on-device reduction).
  // Host-memory backends leave this unsupported: perf/ measures host memory for them.
  virtual Expected<double> measure_read_bandwidth_gbps() { return unsupported(name() + " has no device memory"); }
  // Peak dense matrix-product rate in 1e12 FLOP/s, measured now: a bf16 GEMM of 8192^3 with fp32
  // accumulation (the compute roofline of prefill). Backends without such a probe: unsupported.
  virtual Expected<double> measure_bf16_tflops() { return unsupported(name() + " has no matrix-product probe"); }
  // The PCI bus id of the GPU the backend runs on ("0000:3b:00.0"; empty for the host): where
  // the benchmark's energy meter finds its counter (perf/energy_meter.h).
  virtual std::string pci_bus_id() const { return {}; }

  // First error recorded by an op since the last call (ops cannot return one); backends that
  // check everything before running (CPU, reference) have none.
  virtual Status status() { return Status::Ok(); }

  // Step graphs (CUDA): record the ops `step` issues once, then replay them per token, which
  // removes the launch cost of each op. Replay requires that the step's inputs live in tensors
  // written before the replay (ids, positions). A backend holds one graph: graph_owner says
  // whose it is, so a session whose graph was replaced captures again.
  virtual bool supports_graphs() const { return false; }
  virtual Status capture_graph(const std::function<void()>& step) { return unsupported(name() + " has no graphs"); }
  virtual Status replay_graph() { return unsupported(name() + " has no graphs"); }
  const void* graph_owner() const { return graph_owner_; }
  void set_graph_owner(const void* owner) { graph_owner_ = owner; }

  // ---- ops (all outputs F32 unless noted; in-place where out aliases an input is allowed
  // for the elementwise ops and rope) ----

  // out[d, n] = rows ids[i] of table [d, n_vocab] (any weight format), dequantized.
  virtual void get_rows(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  // out = x / rms(x) * weight, per token (per row of ne[0] floats); x [d, n], weight [d] F32;
  // out may be x.
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // out[rows, n] = W[cols, rows] · x[cols, n] (+ bias[rows] F32 when bias is non-null).
  virtual void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias = nullptr) = 0;
  // out = a + b, same shapes.
  virtual void add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // out = silu(gate) * up, same shapes.
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // out = gelu(gate) * up, same shapes, with GELU's tanh approximation (Gemma's
  // gelu_pytorch_tanh): gelu(g) = g / 2 * (1 + tanh(sqrt(2 / pi) * (g + 0.044715 g^3))).
  virtual void gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // out = x * factor, same shapes (Gemma's embedding scale).
  virtual void scale(const Tensor& x, float factor, Tensor& out) = 0;
  // Rotates x [head_dim, n_heads, n] in place; positions I32 [n].
  virtual void rope(Tensor& x, const Tensor& positions, const RopeParams& p) = 0;
  // Stores k, v [head_dim, n_head_kv, n] into caches [head_dim, n_head_kv, n_ctx] at
  // positions [n] (cache dtype F32 or F16).
  virtual void kv_store(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                        const Tensor& positions) = 0;
  // Causal attention of q [head_dim, n_head, n] over the caches: token i sees cache slots
  // [0, positions[i]] (with p.window, only the last p.window of them). out [head_dim, n_head, n].
  virtual void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                         const Tensor& positions, const AttentionParams& p, Tensor& out) = 0;

  // ---- fused ops of a decode step. Each default runs the plain ops above in order (so every
  // backend has them, with the same numerics); the CUDA backend replaces them with one kernel
  // where it has one (docs/cuda.md: a launch costs a few us, the whole 8B step ~2-3 ms). ----

  // out[rows, n] = W · x' (+ bias), or out += W · x' with f.accumulate (the residual add), where
  // x' = x, or rms_norm(x) * f.norm (f.norm [cols] F32), or silu(x) * f.up (x is the gate,
  // f.up [cols, n] F32); norm and up are not both given. f.scratch (F32) holds the default's
  // x' (cols * n floats, with norm or up) followed by its W · x' (rows * n, with accumulate);
  // its contents are left undefined. out must not alias x, f.up or f.scratch.
  virtual void fused_matmul(const Tensor& w, const Tensor& x, Tensor& out, const MatmulFusion& f,
                            const Tensor* bias = nullptr);
  // fused_matmul of each matrix in `outputs` (same cols) with the same x and f: q, k and v of a
  // prompt chunk, gate and up. A backend that stages x' makes it once (CUDA prefill: the fp16
  // GEMM operand, 3 of a layer's 5 norm passes saved); the default calls fused_matmul for each.
  // No out may alias x, f.up, f.scratch or another out.
  virtual void fused_matmul_same_input(std::span<const MatmulOutput> outputs, const Tensor& x, const MatmulFusion& f);
  // A feed-forward block: x += W_down · (silu(x' · W_gate) * (x' · W_up)), x' = rms_norm(x) *
  // f.norm. The default: fused_matmul_same_input of gate and up into f.gate, f.up, then
  // fused_matmul of W_down with the SwiGLU and the residual add. CUDA prefill keeps gate and up
  // in fp16 (bf16) between its GEMMs, half the bytes of the fp32 round trip.
  virtual void fused_ffn(Tensor& x, const FfnBlock& f);
  // x += rms_norm(s) * weight, per token: a sub-block's output normalised before the residual
  // add (Gemma 3's post-attention and post-FFN norms). x, s [d, n], weight [d] F32; s is left
  // undefined (the default normalises it in place, then adds; CUDA does both in one kernel).
  virtual void add_rms_norm(Tensor& x, Tensor& s, const Tensor& weight, float eps);
  // rope(q); rope(k); kv_store(k, v, caches, positions): q and k are rotated in place.
  virtual void rope_kv_store(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                             const Tensor& positions, const RopeParams& p);
  // rope_kv_store(q, k, v, caches, positions, rope), then attention(q, caches, positions, attn,
  // out): a layer's attention from the QKV matmul's output. q and k are left rotated or not
  // (CUDA rotates them on the fly for one token, one kernel instead of two).
  virtual void rope_kv_store_attention(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                       const Tensor& positions, const RopeParams& rope, const AttentionParams& attn,
                                       Tensor& out);
  // One token per sequence (SequenceBatch's decode step): token i of q, k, v [head_dim, heads,
  // n] is sequence i's, whose cache is slots [i * seq_slots, (i + 1) * seq_slots) of caches
  // [head_dim, n_head_kv, >= n * seq_slots], and positions[i] counts within that sequence.
  // rope_kv_store / attention as above on each token and its own cache. The defaults run the
  // single-sequence ops per token on views (2 x n calls); CUDA runs one kernel each for all.
  virtual void rope_kv_store_each_sequence(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                           const Tensor& positions, const RopeParams& p, int64_t seq_slots);
  virtual void attention_each_sequence(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                       const Tensor& positions, const AttentionParams& p, int64_t seq_slots,
                                       Tensor& out);
  // Greedy sampling: ids[i] = argmax over logits[:, i] (the lowest index among equal maxima;
  // NaN logits are never picked unless all are NaN, then 0). logits [n_vocab, n] F32, ids I32
  // [n]. The default reads the logits through read() (host-memory backends); CUDA runs a
  // kernel, so a decode step copies 4 bytes per token to the host instead of the logits.
  virtual void argmax(const Tensor& logits, Tensor& ids);
  // Sampling at temperature > 0: ids[i] = cpu::draw_from_top_k(logits[:, i], draws[i])
  // (kernels/cpu/top_k_draw.h: top-k, softmax, min-p, top-p, the draw at draws[i].u). draws
  // holds n cpu::TopKDraw records (24 bytes each) in this backend's memory, written before the
  // step, so a captured graph replays with new numbers; callers check can_sample_top_k for the
  // records' top_k first (a device backend does not read them back). The default reads the
  // logits through read(); CUDA runs a kernel.
  virtual void sample_top_k(const Tensor& logits, const Tensor& draws, Tensor& ids);
  // Whether sample_top_k takes top_k (0 = every token) over n_vocab logits.
  virtual bool can_sample_top_k(int top_k, int64_t n_vocab) const {
    (void)top_k, (void)n_vocab;
    return true;
  }

 private:
  const void* graph_owner_ = nullptr;
  std::vector<std::unique_ptr<std::byte[]>> host_buffers_;  // alloc_host's default
};

// threads: 0 = all hardware threads. Unknown names give an error naming the choices.
Expected<std::unique_ptr<Backend>> make_backend(const std::string& name, int n_threads);
std::unique_ptr<Backend> make_reference_backend();
std::unique_ptr<Backend> make_cpu_backend(int n_threads);
bool cuda_available();  // a CUDA device is present and this build has the CUDA backend

}  // namespace bl
