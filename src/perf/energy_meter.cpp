#include "perf/energy_meter.h"

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
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
