// Energy counters of the machine a benchmark runs on, read around each timed phase so that
// `bitlight bench` can say what a token cost in joules (DESIGN.md, perf/):
//  - CPU: Linux powercap RAPL package domains (/sys/class/powercap/intel-rapl:N/energy_uj; the
//    same files on AMD Zen with the kernel's RAPL driver), summed over the packages. The counter
//    is the whole package's (other processes included) and wraps at max_energy_range_uj.
//  - NVIDIA GPU: NVML's total energy counter of the board (nvmlDeviceGetTotalEnergyConsumption,
//    mJ since the driver loaded; Volta and newer), libnvidia-ml.so.1 loaded with dlopen, so the
//    build needs no NVML headers or library; the device is found by its PCI bus id (the CUDA
//    device the backend uses, whatever CUDA_VISIBLE_DEVICES renumbers).
// Where no counter is readable (a VM without powercap, files readable by root only, no NVIDIA
// driver), the meter says why and the benchmark reports energy as not measured.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bl {

class EnergyMeter {
 public:
  // The RAPL package domains under powercap_root (the tests point it at a fake tree).
  static EnergyMeter rapl(const std::string& powercap_root = "/sys/class/powercap");
  // The NVIDIA board with this PCI bus id ("0000:3b:00.0", as cudaDeviceGetPCIBusId gives it).
  static EnergyMeter nvml(const std::string& pci_bus_id);

  EnergyMeter(EnergyMeter&&) noexcept;
  EnergyMeter& operator=(EnergyMeter&&) noexcept;
  ~EnergyMeter();

  bool available() const { return source_ != nullptr; }
  // What is measured ("RAPL, 1 package (whole package)", "NVML, NVIDIA H100 80GB HBM3 (board)"),
  // or why nothing is.
  const std::string& description() const { return description_; }
  // Joules since the meter was made (wraparounds of the counters added in), or nullopt when a
  // read fails (then the phase's energy is not reported).
  std::optional<double> joules();
  // Seconds between two updates of the counter, measured on the first call (it polls the
  // counter for up to ~2 s) and kept; nullopt when the counter did not move or a read failed.
  // RAPL updates about every millisecond; NVML's board counter far less often, which bounds
  // how short a phase can be and still have its energy told (phase_energy).
  std::optional<double> update_period_seconds();

  class Source;  // one kind of counter (energy_meter.cpp)

 private:
  EnergyMeter(std::unique_ptr<Source> source, std::string description);
  std::unique_ptr<Source> source_;
  std::string description_;
  std::optional<std::optional<double>> update_period_;  // outer: measured yet
};

// The counter's update period, from polling read() (seconds_now() the clock) until it has
// changed three times: the longer of the two intervals between the changes. nullopt when a read
// fails or the counter has not changed three times within timeout_s.
std::optional<double> measure_update_period(const std::function<std::optional<double>()>& read,
                                            const std::function<double()>& seconds_now, double timeout_s);

// What a benchmark may say of one phase's energy. Each reading of the counter can lag the real
// energy by up to one update period, so a phase of t seconds has its joules wrong by up to
// 2 * period / t of them (power held steady). The phase is reported when that bound is at most
// kMaxEnergyUncertainty for its shortest repetition; otherwise why_not says why.
constexpr double kMaxEnergyUncertainty = 0.2;
struct PhaseEnergy {
  std::optional<double> joules_per_token;  // mean over the repetitions
  double watts = 0;                        // joules per token x tokens per second
  double uncertainty = 0;                  // the bound above, a fraction of the figure
  std::string why_not;                     // empty when joules_per_token is set
};
// joules_per_token and tokens_per_second: one per repetition (the same length; empty: no reading).
PhaseEnergy phase_energy(const std::vector<double>& joules_per_token, const std::vector<double>& tokens_per_second,
                         double tokens_per_repetition, std::optional<double> update_period_seconds);

}  // namespace bl
