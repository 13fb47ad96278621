// The benchmark's energy meter (perf/energy_meter.h) on a fake powercap tree: package domains
// summed, sub-domains left out, a counter's wraparound, an unreadable counter and a tree with no
// packages reported as such; NVML's absence named where the driver library is missing; the
// counter's update period and the rule that tells a phase's energy only where the counter keeps
// up with it. And bench_model's joules per token from the readings around its timed phases.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "backend/backend.h"
#include "io/model_file.h"
#include "model/llama_model.h"
#include "perf/energy_meter.h"
#include "perf/model_bench.h"
#include "runtime/synthetic_model.h"

namespace bl {
namespace {

namespace fs = std::filesystem;

class FakePowercap : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("bl_powercap_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const std::string& domain, const std::string& file, uint64_t value) {
    fs::create_directories(root_ / domain);
    std::ofstream(root_ / domain / file) << value << "\n";
  }
  fs::path root_;
};

TEST_F(FakePowercap, PackagesSummedSubdomainsLeftOutWrapsAdded) {
  constexpr uint64_t kRange = 262143328850;  // max_energy_range_uj of a common part
  write("intel-rapl:0", "energy_uj", 1'000'000);
  write("intel-rapl:0", "max_energy_range_uj", kRange);
  write("intel-rapl:0:0", "energy_uj", 5'000'000);  // the cores of package 0: inside its count
  write("intel-rapl:1", "energy_uj", kRange - 250'000);
  write("intel-rapl:1", "max_energy_range_uj", kRange);
  EnergyMeter meter = EnergyMeter::rapl(root_.string());
  ASSERT_TRUE(meter.available()) << meter.description();
  EXPECT_NE(meter.description().find("2 packages"), std::string::npos) << meter.description();
  ASSERT_EQ(meter.joules(), 0.0);

  write("intel-rapl:0", "energy_uj", 3'500'000);   // +2.5 J
  write("intel-rapl:0:0", "energy_uj", 9'000'000);  // ignored
  write("intel-rapl:1", "energy_uj", 250'000);      // wrapped: +0.5 J
  const std::optional<double> j = meter.joules();
  ASSERT_TRUE(j.has_value());
  EXPECT_NEAR(*j, 3.0, 1e-9);

  write("intel-rapl:0", "energy_uj", 4'000'000);  // +0.5 J
  EXPECT_NEAR(meter.joules().value_or(-1), 3.5, 1e-9);
}

TEST_F(FakePowercap, NoPackagesOrUnreadableCountersSayWhy) {
  EnergyMeter none = EnergyMeter::rapl(root_.string());
  EXPECT_FALSE(none.available());
  EXPECT_NE(none.description().find("no RAPL package domain"), std::string::npos) << none.description();
  EXPECT_FALSE(none.joules().has_value());

  EnergyMeter missing = EnergyMeter::rapl((root_ / "does-not-exist").string());
  EXPECT_FALSE(missing.available());

  // A counter that cannot be read as a number (here a directory; on Linux >= 5.10 a file only
  // root may read).
  fs::create_directories(root_ / "intel-rapl:0" / "energy_uj");
  EnergyMeter unreadable = EnergyMeter::rapl(root_.string());
  EXPECT_FALSE(unreadable.available());
  EXPECT_NE(unreadable.description().find("not readable"), std::string::npos) << unreadable.description();
}

TEST_F(FakePowercap, ACounterLostLaterFailsTheRead) {
  write("intel-rapl:0", "energy_uj", 10);
  EnergyMeter meter = EnergyMeter::rapl(root_.string());
  ASSERT_TRUE(meter.available());
  fs::remove(root_ / "intel-rapl:0" / "energy_uj");
  EXPECT_FALSE(meter.joules().has_value());
}

TEST(EnergyMeter, NvmlAbsenceIsNamed) {
  if (void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL)) {
    dlclose(lib);
    GTEST_SKIP() << "this machine has the NVIDIA driver's NVML";
  }
  EnergyMeter meter = EnergyMeter::nvml("0000:00:00.0");
  EXPECT_FALSE(meter.available());
  EXPECT_NE(meter.description().find("libnvidia-ml"), std::string::npos) << meter.description();
}

// A counter that moves every 25 ms of a fake clock (1 ms a clock reading): the period is found
// within the polling's resolution; a counter that never moves, or fails, gives none.
TEST(EnergyMeter, UpdatePeriodFromPolling) {
  double now = 0;
  auto clock = [&now] { return now += 1e-3; };
  auto stepped = [&now]() -> std::optional<double> { return std::floor(now / 0.025) * 7.0; };
  const std::optional<double> period = measure_update_period(stepped, clock, 2.0);
  ASSERT_TRUE(period.has_value());
  EXPECT_NEAR(*period, 0.025, 2.5e-3);

  now = 0;
  auto frozen = []() -> std::optional<double> { return 5.0; };
  EXPECT_FALSE(measure_update_period(frozen, clock, 0.1).has_value());
  auto failing = []() -> std::optional<double> { return std::nullopt; };
  EXPECT_FALSE(measure_update_period(failing, clock, 0.1).has_value());
}

// A phase's energy is told only when its shortest repetition spans enough counter updates: the
// bound is 2 x period / repetition seconds.
TEST(EnergyMeter, PhaseEnergyToldOnlyWhereTheCounterKeepsUp) {
  // 100 tokens a repetition at 200 and 250 tok/s: 0.5 and 0.4 s; a 25 ms counter: +-12.5 %.
  const std::vector<double> joules = {1.0, 1.2}, rates = {200, 250};
  const PhaseEnergy told = phase_energy(joules, rates, 100, 0.025);
  ASSERT_TRUE(told.joules_per_token.has_value()) << told.why_not;
  EXPECT_DOUBLE_EQ(*told.joules_per_token, 1.1);
  EXPECT_DOUBLE_EQ(told.watts, 1.1 * 225);
  EXPECT_DOUBLE_EQ(told.uncertainty, 2 * 0.025 / 0.4);
  EXPECT_TRUE(told.why_not.empty());

  // 100 ms updates: +-50 % for the 0.4 s repetition: not told, and the message says why.
  const PhaseEnergy coarse = phase_energy(joules, rates, 100, 0.1);
  EXPECT_FALSE(coarse.joules_per_token.has_value());
  EXPECT_NE(coarse.why_not.find("400.0 ms"), std::string::npos) << coarse.why_not;
  EXPECT_NE(coarse.why_not.find("100.0 ms"), std::string::npos) << coarse.why_not;

  EXPECT_FALSE(phase_energy({}, {}, 100, 0.025).joules_per_token.has_value());
  EXPECT_FALSE(phase_energy(joules, rates, 100, std::nullopt).joules_per_token.has_value());
}

// bench_model reads the counter right around each timed phase: a fake counter that gains 1 J per
// read gives every prefill (one feed) and every decode (one loop) exactly 1 J.
TEST(EnergyMeter, BenchModelGivesJoulesPerToken) {
  const std::string path = (fs::temp_directory_path() / "bl_energy_bench_tiny.gguf").string();
  ThreadPool pool(2);
  ASSERT_TRUE(write_synthetic_model(*find_synth_shape("tiny"), DType::F32, 3, path, pool).ok());
  auto file = ModelFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  auto backend = make_backend("cpu", 2);
  ASSERT_TRUE(backend.ok());
  auto model = LlamaModel::load(**file, **backend);
  ASSERT_TRUE(model.ok()) << model.status().message();
  double counter = 0;
  ModelBenchOptions o;
  o.n_prompt = 8, o.n_gen = 4, o.repetitions = 2, o.n_batch = 8;
  o.read_joules = [&counter]() -> std::optional<double> { return counter += 1.0; };
  auto r = bench_model(**model, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->prefill_joules_per_token.size(), 2u);
  ASSERT_EQ(r->decode_joules_per_token.size(), 2u);
  for (double j : r->prefill_joules_per_token) EXPECT_DOUBLE_EQ(j, 1.0 / 8);
  for (double j : r->decode_joules_per_token) EXPECT_DOUBLE_EQ(j, 1.0 / 4);

  // One failed read: no energy figures, the benchmark itself still ran.
  int reads = 0;
  o.read_joules = [&reads]() -> std::optional<double> {
    if (++reads == 3) return std::nullopt;
    return static_cast<double>(reads);
  };
  auto failed = bench_model(**model, o);
  ASSERT_TRUE(failed.ok()) << failed.status().message();
  EXPECT_TRUE(failed->prefill_joules_per_token.empty());
  EXPECT_TRUE(failed->decode_joules_per_token.empty());
  EXPECT_EQ(failed->decode.tokens_per_second.size(), 2u);
  fs::remove(path);
}

}  // namespace
}  // namespace bl
