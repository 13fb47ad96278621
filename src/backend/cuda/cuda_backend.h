// The CUDA backend: every Backend op on one NVIDIA GPU, queued on one stream.
//
// Memory: alloc() and upload_weight() cudaMalloc device tensors owned by the backend (freed
// with it). Weights keep their GGUF bytes, except Q4_0, Q4_1, Q8_0 and Q6_K rows of whole
// 8-block tiles, which upload_weight rearranges within each row (kernels/cuda/weight_layout.cuh:
// scales apart from quants, 16-byte aligned); same size and dtype, and read() of a weight returns
// the uploaded GGUF bytes either way (in whole rows for a tiled one). Ops only queue kernels:
// no allocation once warm, no host synchronisation; read() and synchronize() wait for the stream.
//
// Matmul: 1..16 tokens run a fused-dequant GEMV (Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K at 2..16 tokens
// and cols % 256 == 0: the skinny tensor-core GEMM, kernels/cuda/gemv_skinny.cu; block formats at
// 1 token (else 1..4): int8 x and dp4a, gemv_dp4a.cu; at 8..16 tokens and >= 2048 rows on tensor
// cores, gemv_tensor_core.cu; otherwise fp32, gemv.cu); more tokens (prefill) dequantize the weight
// into an fp16/bf16 workspace and call cuBLAS with fp32 accumulation.
// rope's freq_factors (a host array) are copied to the device once per pointer: the model
// must not change the values behind a pointer it has passed.
// Workspaces (dequantized weight, fp16 activations, split-KV partials) grow on first use and
// are never freed before the backend, so graphs captured earlier keep valid pointers.
//
// Decode step as a CUDA graph: the model keeps token ids and positions in device tensors and
// writes them with write() before each step (outside the graph). Run the step once eagerly
// (that sizes the workspaces), then
//     BL_RETURN_IF_ERROR(cuda.capture_graph([&] { model.decode_step(); }));
//     per token: cuda.write(ids...); cuda.write(positions...);
//                BL_RETURN_IF_ERROR(cuda.replay_graph()); cuda.read(logits...);
// capture_graph records the ops that the callable issues (nothing runs), replacing any earlier
// graph; replay_graph launches it on the backend's stream (asynchronous, like an op). The
// graph bakes in tensor pointers and shapes: capture again when they change (another batch
// size). Errors inside ops (a bad shape, an unsupported format) cannot be returned by the void
// op methods: they are recorded, the op is skipped, and status() / capture_graph() report the
// first one.
#pragma once

#include <functional>
#include <memory>

#include "backend/backend.h"

namespace bl {

class CudaBackend : public Backend {
 public:
  ~CudaBackend() override;

  bool supports_graphs() const override { return true; }
  // Capture the ops `step` issues on this backend into a CUDA graph (see the file comment).
  Status capture_graph(const std::function<void()>& step) override = 0;
  // Launch the captured graph; an error when none was captured.
  Status replay_graph() override = 0;
  // First error recorded by an op or a CUDA call since the last call of status(); it
  // synchronizes the stream first so that asynchronous kernel faults are seen too.
  Status status() override = 0;
  // Multiprocessors of the device (for benchmarks and launch heuristics).
  virtual int multiprocessor_count() const = 0;
};

// A CUDA backend on device `device_index`, or the reason there is none (no device, no driver,
// too little memory for the stream and cuBLAS handle).
Expected<std::unique_ptr<CudaBackend>> open_cuda_backend(int device_index);
// The same for make_backend (backend/backend.h): nullptr after printing the reason to stderr.
std::unique_ptr<Backend> make_cuda_backend(int device_index);
// A CUDA device is present and the driver answers (backend_factory.cpp's cuda_available()).
bool cuda_device_present();

}  // namespace bl
