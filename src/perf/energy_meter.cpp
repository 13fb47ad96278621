#include "perf/energy_meter.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <regex>
#include <thread>
#include <utility>

namespace bl {

class EnergyMeter::Source {
 public:
  virtual ~Source() = default;
  virtual std::optional<double> joules() = 0;  // since the source was made
};

namespace {

namespace fs = std::filesystem;

std::optional<uint64_t> read_u64(const fs::path& path) {
  std::ifstream f(path);
  uint64_t v = 0;
  if (!(f >> v)) return std::nullopt;
  return v;
}

// RAPL package domains, energy_uj in microjoules counting up to max_energy_range_uj, then from 0.
class RaplSource final : public EnergyMeter::Source {
 public:
  struct Domain {
    fs::path energy;
    uint64_t range;  // max_energy_range_uj
    uint64_t last;   // the previous reading
  };
  explicit RaplSource(std::vector<Domain> domains) : domains_(std::move(domains)) {}

  std::optional<double> joules() override {
    for (Domain& d : domains_) {
      const std::optional<uint64_t> now = read_u64(d.energy);
      if (!now) return std::nullopt;
      // A reading below the previous one is the counter having wrapped once (a wrap takes
      // minutes even at hundreds of watts: ~262 kJ on common parts).
      total_uj_ += *now >= d.last ? *now - d.last : (d.range - d.last) + *now;
      d.last = *now;
    }
    return static_cast<double>(total_uj_) * 1e-6;
  }

 private:
  std::vector<Domain> domains_;
  uint64_t total_uj_ = 0;
};

// NVML through dlopen: the few entry points used, declared as the library exports them.
using NvmlReturn = int;  // nvmlReturn_t, 0 = NVML_SUCCESS
using NvmlDevice = struct NvmlDeviceOpaque*;
constexpr NvmlReturn kNvmlSuccess = 0;

class NvmlSource final : public EnergyMeter::Source {
 public:
  // Opens the library and the device, or sets `why` and leaves the source unusable (ok() false).
  NvmlSource(const std::string& pci_bus_id, std::string& why, std::string& board) {
    library_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library_) {
      why = "libnvidia-ml.so.1 could not be loaded (no NVIDIA driver on this machine)";
      return;
    }
    init_ = symbol<NvmlReturn (*)()>("nvmlInit_v2");
    shutdown_ = symbol<NvmlReturn (*)()>("nvmlShutdown");
    by_bus_id_ = symbol<NvmlReturn (*)(const char*, NvmlDevice*)>("nvmlDeviceGetHandleByPciBusId_v2");
    energy_ = symbol<NvmlReturn (*)(NvmlDevice, unsigned long long*)>("nvmlDeviceGetTotalEnergyConsumption");
    name_ = symbol<NvmlReturn (*)(NvmlDevice, char*, unsigned int)>("nvmlDeviceGetName");
    if (!init_ || !shutdown_ || !by_bus_id_ || !energy_ || !name_) {
      why = "libnvidia-ml.so.1 lacks the NVML energy functions (driver too old)";
      return;
    }
    if (const NvmlReturn r = init_(); r != kNvmlSuccess) {
      why = "nvmlInit failed (NVML error " + std::to_string(r) + ")";
      return;
    }
    initialised_ = true;
    if (const NvmlReturn r = by_bus_id_(pci_bus_id.c_str(), &device_); r != kNvmlSuccess) {
      why = "NVML has no device at PCI bus id '" + pci_bus_id + "' (NVML error " + std::to_string(r) + ")";
      return;
    }
    if (const NvmlReturn r = energy_(device_, &first_mj_); r != kNvmlSuccess) {
      why = "the board has no NVML energy counter (NVML error " + std::to_string(r) + "; Volta and newer have one)";
      return;
    }
    char name[96] = {};
    board = name_(device_, name, sizeof(name)) == kNvmlSuccess ? name : "NVIDIA GPU";
    ok_ = true;
  }
  ~NvmlSource() override {
    if (initialised_) shutdown_();
    if (library_) dlclose(library_);
  }
  NvmlSource(const NvmlSource&) = delete;
  NvmlSource& operator=(const NvmlSource&) = delete;

  bool ok() const { return ok_; }
  std::optional<double> joules() override {
    unsigned long long mj = 0;
    if (energy_(device_, &mj) != kNvmlSuccess) return std::nullopt;
    return static_cast<double>(mj - first_mj_) * 1e-3;
  }

 private:
  template <typename Fn>
  Fn symbol(const char* name) {
    return reinterpret_cast<Fn>(dlsym(library_, name));
  }
  void* library_ = nullptr;
  NvmlReturn (*init_)() = nullptr;
  NvmlReturn (*shutdown_)() = nullptr;
  NvmlReturn (*by_bus_id_)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*energy_)(NvmlDevice, unsigned long long*) = nullptr;
  NvmlReturn (*name_)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlDevice device_ = nullptr;
  unsigned long long first_mj_ = 0;
  bool initialised_ = false, ok_ = false;
};

}  // namespace

EnergyMeter::EnergyMeter(std::unique_ptr<Source> source, std::string description)
    : source_(std::move(source)), description_(std::move(description)) {}
EnergyMeter::EnergyMeter(EnergyMeter&&) noexcept = default;
EnergyMeter& EnergyMeter::operator=(EnergyMeter&&) noexcept = default;
EnergyMeter::~EnergyMeter() = default;

std::optional<double> EnergyMeter::joules() { return source_ ? source_->joules() : std::nullopt; }

std::optional<double> EnergyMeter::update_period_seconds() {
  if (!update_period_) {
    using clock = std::chrono::steady_clock;
    const clock::time_point t0 = clock::now();
    update_period_ = measure_update_period([this] { return joules(); },
                                           [t0] { return std::chrono::duration<double>(clock::now() - t0).count(); },
                                           /*timeout_s=*/2.0);
  }
  return *update_period_;
}

std::optional<double> measure_update_period(const std::function<std::optional<double>()>& read,
                                            const std::function<double()>& seconds_now, double timeout_s) {
  std::optional<double> last = read();
  if (!last) return std::nullopt;
  double changes[3];
  int seen = 0;
  const double start = seconds_now();
  while (seen < 3) {
    const double now = seconds_now();
    if (now - start > timeout_s) return std::nullopt;
    const std::optional<double> j = read();
    if (!j) return std::nullopt;
    if (*j != *last) {
      changes[seen++] = now;
      last = j;
    }
    // Polling every ~50 us times a change within that (RAPL: ~1 ms updates, NVML: tens of ms).
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return std::max(changes[1] - changes[0], changes[2] - changes[1]);
}

PhaseEnergy phase_energy(const std::vector<double>& joules_per_token, const std::vector<double>& tokens_per_second,
                         double tokens_per_repetition, std::optional<double> update_period_seconds) {
  PhaseEnergy e;
  if (joules_per_token.empty() || joules_per_token.size() != tokens_per_second.size()) {
    e.why_not = "no reading of the counter";
    return e;
  }
  if (!update_period_seconds) {
    e.why_not = "the counter's update period could not be measured";
    return e;
  }
  const double fastest = *std::max_element(tokens_per_second.begin(), tokens_per_second.end());
  const double shortest_s = tokens_per_repetition / fastest;
  e.uncertainty = 2 * *update_period_seconds / shortest_s;
  if (e.uncertainty > kMaxEnergyUncertainty) {
    char why[200];
    std::snprintf(why, sizeof(why),
                  "a repetition lasts %.1f ms and the counter updates every %.1f ms: +-%.0f %%; more tokens a "
                  "repetition (-p, -n) give a figure",
                  1e3 * shortest_s, 1e3 * *update_period_seconds, 100 * e.uncertainty);
    e.why_not = why;
    return e;
  }
  const double n = static_cast<double>(joules_per_token.size());
  e.joules_per_token = std::accumulate(joules_per_token.begin(), joules_per_token.end(), 0.0) / n;
  e.watts = *e.joules_per_token * std::accumulate(tokens_per_second.begin(), tokens_per_second.end(), 0.0) / n;
  return e;
}

EnergyMeter EnergyMeter::rapl(const std::string& powercap_root) {
  // Packages are intel-rapl:N; their sub-domains (intel-rapl:N:M: cores, uncore, dram) are
  // parts of the package's count (dram is not on every part) and are left out.
  static const std::regex package_name("intel-rapl:[0-9]+");
  std::error_code ec;
  std::vector<fs::path> packages;
  for (const fs::directory_entry& e : fs::directory_iterator(powercap_root, ec))
    if (std::regex_match(e.path().filename().string(), package_name)) packages.push_back(e.path());
  if (ec || packages.empty())
    return EnergyMeter(nullptr, "no RAPL package domain under " + powercap_root + " (no powercap on this machine)");
  std::sort(packages.begin(), packages.end());
  std::vector<RaplSource::Domain> domains;
  for (const fs::path& p : packages) {
    const std::optional<uint64_t> now = read_u64(p / "energy_uj");
    if (!now)
      return EnergyMeter(nullptr, (p / "energy_uj").string() + " is not readable (root only on Linux >= 5.10)");
    const std::optional<uint64_t> range = read_u64(p / "max_energy_range_uj");
    domains.push_back({p / "energy_uj", range.value_or(std::numeric_limits<uint64_t>::max()), *now});
  }
  const size_t n = domains.size();
  return EnergyMeter(std::make_unique<RaplSource>(std::move(domains)),
                     "RAPL, " + std::to_string(n) + (n == 1 ? " package" : " packages") +
                         " (the whole package: other processes included, the GPU and DRAM not)");
}

EnergyMeter EnergyMeter::nvml(const std::string& pci_bus_id) {
  std::string why, board;
  auto source = std::make_unique<NvmlSource>(pci_bus_id, why, board);
  if (!source->ok()) return EnergyMeter(nullptr, why);
  return EnergyMeter(std::move(source), "NVML, " + board + " (the board only: not the host CPU)");
}

}  // namespace bl
