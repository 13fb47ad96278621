// libFuzzer target for the GGUF reader: each input is written to a memfd and opened through
// ModelFile::open (so the mmap path runs too); then every metadata value is formatted, every
// getter called, and the first and last byte of every tensor's data touched. Any crash,
// sanitizer report or hang is a bug: malformed input must come back as a Status.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/gguf_value.h"
#include "io/model_file.h"

namespace {

int memfd() {
  static int fd = [] {
    int f = memfd_create("gguf_fuzz_input", MFD_CLOEXEC);
    if (f < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return f;
  }();
  return fd;
}

bool write_input(const uint8_t* data, size_t size) {
  int fd = memfd();
  if (ftruncate(fd, 0) != 0) return false;
  size_t done = 0;
  while (done < size) {
    ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Keeps the compiler from dropping reads whose results are otherwise unused.
volatile uint64_t g_sink;

void exercise(const bl::ModelFile& file) {
  for (const bl::GgufKeyValue& kv : file.metadata()) {
    g_sink = g_sink + bl::gguf_value_text(kv.value).size();
    g_sink = g_sink + file.get_int(kv.key).ok() + file.get_float(kv.key).ok() + file.get_bool(kv.key).ok();
    g_sink = g_sink + file.get_string(kv.key).ok() + file.get_string_array(kv.key).ok();
    g_sink = g_sink + file.get_int_array(kv.key).ok() + file.get_float_array(kv.key).ok();
  }
  for (const bl::TensorInfo& t : file.tensors()) {
    bl::Tensor v = t.view();
    g_sink = g_sink + static_cast<uint64_t>(v.elements());
    if (t.bytes > 0) {
      const uint8_t* p = static_cast<const uint8_t*>(t.data);
      g_sink = g_sink + p[0] + p[t.bytes - 1];
    }
    g_sink = g_sink + (file.find_tensor(t.name) != nullptr);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!write_input(data, size)) return 0;
  const std::string path = "/proc/self/fd/" + std::to_string(memfd());
  auto file = bl::ModelFile::open(path);
  if (file.ok()) exercise(**file);
  return 0;
}
