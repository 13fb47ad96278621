// Backend::alloc_host for backends whose ops run on the host as they are issued: plain memory,
// kept until the backend goes (the CUDA backend overrides it with page-locked memory).
#include <new>

#include "backend/backend.h"

namespace bl {

void* Backend::alloc_host(size_t bytes) {
  std::byte* p = new (std::nothrow) std::byte[bytes == 0 ? 1 : bytes];
  if (!p) return nullptr;
  host_buffers_.emplace_back(p);
  return p;
}

}  // namespace bl
