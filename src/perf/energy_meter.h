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

  class Source;  // one kind of counter (energy_meter.cpp)

 private:
  EnergyMeter(std::unique_ptr<Source> source, std::string description);
  std::unique_ptr<Source> source_;
  std::string description_;
};

}  // namespace bl
