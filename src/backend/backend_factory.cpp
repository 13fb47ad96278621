#include "backend/backend.h"

#ifdef BITLIGHT_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace bl {

bool cuda_available() {
#ifdef BITLIGHT_HAVE_CUDA
  return bl::cuda_device_present();
#else
  return false;
#endif
}

Expected<std::unique_ptr<Backend>> make_backend(const std::string& name, int n_threads) {
  if (name == "ref" || name == "reference") return make_reference_backend();
  if (name == "cpu") return make_cpu_backend(n_threads);
  if (name == "cuda") {
#ifdef BITLIGHT_HAVE_CUDA
    if (!cuda_available()) return unsupported("--device cuda: no CUDA device is present");
    auto cuda = open_cuda_backend(0);
    if (!cuda.ok()) return cuda.status();
    return std::unique_ptr<Backend>(std::move(cuda).value());
#else
    return unsupported("--device cuda: this build has no CUDA backend (configure with nvcc present)");
#endif
  }
  if (name == "auto") {
    if (cuda_available()) return make_backend("cuda", n_threads);
    return make_cpu_backend(n_threads);
  }
  return invalid_argument("unknown device '" + name + "' (choices: auto, cpu, cuda, ref)");
}

}  // namespace bl
