// A CUPTI injection library that writes every kernel the process runs, with its GPU start and
// end times, to a CSV file: the per-kernel timeline of a decode step *inside* the replayed CUDA
// graph, with programmatic dependent launch overlapping neighbours as it does in a real run.
//
// Why: Nsight Compute serialises kernels (no PDL overlap), so its per-kernel times misranked
// what to fuse (docs/cuda.md, "Decode step fusions tried"); Nsight Systems is not installed on
// the lent GPU machines. CUPTI's activity API (part of the CUDA toolkit) records the same
// timestamps nsys shows with --cuda-graph-trace=node.
//
//   export CUDA_INJECTION64_PATH=build-gpu/lib/libbitlight_kernel_trace.so
//   BITLIGHT_KERNEL_TRACE=trace.csv bitlight bench -m M --device cuda -p 512 -n 16 -r 1
//   python3 scripts/kernel_timeline.py trace.csv
//
// The CUDA driver loads the library named by CUDA_INJECTION64_PATH at initialisation and calls
// InitializeInjection; nothing in bitlight knows about it. Columns: start_ns, end_ns (GPU
// timestamps), grid x/y/z, block x, graph node id (0 outside graphs), mangled kernel name.
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace {

std::FILE* g_out = nullptr;
std::mutex g_mutex;
constexpr size_t kBufferBytes = size_t{16} << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid_size) {
  std::lock_guard<std::mutex> lock(g_mutex);
  CUpti_Activity* record = nullptr;
  while (g_out && cuptiActivityGetNextRecord(buffer, valid_size, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    // Read through version 9 of the record: later versions only append fields.
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel9*>(record);
    std::fprintf(g_out, "%llu,%llu,%d,%d,%d,%d,%llu,%s\n", static_cast<unsigned long long>(k->start),
                 static_cast<unsigned long long>(k->end), k->gridX, k->gridY, k->gridZ, k->blockX,
                 static_cast<unsigned long long>(k->graphNodeId), k->name ? k->name : "?");
  }
  std::free(buffer);
}

void flush_at_exit() {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_out) std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace

extern "C" int InitializeInjection(void) {
  const char* path = std::getenv("BITLIGHT_KERNEL_TRACE");
  g_out = std::fopen(path ? path : "kernel_trace.csv", "w");
  if (!g_out) return 0;
  std::fprintf(g_out, "start_ns,end_ns,grid_x,grid_y,grid_z,block_x,graph_node,name\n");
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "kernel_trace: CUPTI activity tracing could not be enabled\n");
    return 0;
  }
  std::atexit(flush_at_exit);
  return 1;
}
