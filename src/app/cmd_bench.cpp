// bitlight bench: prefill and decode speed of a model, decode as a fraction of the memory read
// bandwidth and (CUDA) prefill as a fraction of the bf16 matrix peak, both measured in the same
// run, and what a token cost in energy where the machine has a readable counter.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>

#include "app/file_io.h"
#include "app/commands.h"
#include "app/loaded_model.h"
#include "perf/energy_meter.h"
#include "perf/memory_bandwidth.h"
#include "perf/model_bench.h"

namespace bl::app {
namespace {

struct BenchOptions {
  ModelOptions model;
  int n_prompt = 512;
  int n_gen = 128;
  int repetitions = 3;
  int n_seq = 1;
  bool ctx_given = false;  // -c: allocate that many cache slots, not just the -p + -n the tests use
  std::string json_out;
};

// Read bandwidth of the memory the weights live in, in GB/s (0 when the probe fails): the
// device's for CUDA, else host DRAM read by as many threads as the model runs with. Called
// between the benchmark's repetitions (bench_model).
class BandwidthProbe {
 public:
  BandwidthProbe(Backend& backend, int threads) : backend_(backend) {
    if (backend.device() != Device::cpu) return;
    pool_ = std::make_unique<ThreadPool>(backend.kind() == BackendKind::reference ? 1 : threads);
    host_ = std::make_unique<ReadBandwidthProbe>(*pool_);
  }
  double operator()() {
    if (host_) return host_->measure().read_gbps;
    const Expected<double> gbps = backend_.measure_read_bandwidth_gbps();
    return gbps.ok() ? *gbps : 0.0;
  }

 private:
  Backend& backend_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<ReadBandwidthProbe> host_;
};

std::string percent_list(const std::vector<double>& fractions) {
  std::string s;
  for (double f : fractions) s += (s.empty() ? "" : ", ") + std::to_string(static_cast<int>(std::lround(100 * f)));
  return s;
}

Status bench(const BenchOptions& o) {
  DType kv_type;
  BL_ASSIGN_OR_RETURN(kv_type, parse_kv_type(o.model.kv_type));
  LoadedModel m;
  BL_ASSIGN_OR_RETURN(m, load_model(o.model, /*with_tokenizer=*/false));
  BandwidthProbe probe(*m.backend, o.model.threads);
  // The energy counter of what runs the model: the GPU board (NVML) or the CPU packages (RAPL).
  EnergyMeter meter = m.backend->device() == Device::cuda ? EnergyMeter::nvml(m.backend->pci_bus_id())
                                                          : EnergyMeter::rapl();
  std::function<std::optional<double>()> read_joules;
  if (meter.available()) read_joules = [&meter] { return meter.joules(); };
  // The compute roofline of prefill, where the backend has a probe (CUDA): bf16 tensor cores.
  Expected<double> bf16_tflops = m.backend->measure_bf16_tflops();
  const double peak_tflops = bf16_tflops.ok() ? *bf16_tflops : 0.0;
  ModelBenchResult r;
  BL_ASSIGN_OR_RETURN(r, bench_model(*m.model, {.n_prompt = o.n_prompt,
                                               .n_gen = o.n_gen,
                                               .repetitions = o.repetitions,
                                               .n_batch = o.model.n_batch,
                                               .n_seq = o.n_seq,
                                               .n_ctx = o.ctx_given ? o.model.n_ctx : 0,
                                               .kv_type = kv_type,
                                               .probe_read_gbps = std::ref(probe),
                                               .read_joules = read_joules}));
  const auto [min_gbps, max_gbps] = std::minmax_element(r.read_gbps.begin(), r.read_gbps.end());
  if (r.read_gbps.empty() || *min_gbps <= 0)
    return out_of_memory(
        "bench: the read-bandwidth probe could not allocate its buffer (1 GiB of host memory, 4 GiB on a GPU)");

  const std::string path = o.model.path.empty() ? kDefaultModelPath : o.model.path;
  const std::string name = std::filesystem::path(path).filename().string();
  const std::string format = m.model->weight_format();
  const double size_gb = static_cast<double>(m.model->weight_bytes()) / 1e9;
  const double decode_gbps = r.decode.mean() * r.decode_bytes_per_token / 1e9;
  const double decode_fraction =
      r.decode_fraction.empty() ? 0 : std::accumulate(r.decode_fraction.begin(), r.decode_fraction.end(), 0.0) /
                                           static_cast<double>(r.decode_fraction.size());

  // With -B N: the tests run N sequences (ppP x N prompts, tgG x N tokens per step), and tok/s
  // counts the tokens of all of them.
  const std::string seqs = o.n_seq > 1 ? " x" + std::to_string(o.n_seq) : "";
  std::printf("| model | format | size (GB) | backend | test | tok/s |\n|---|---|---|---|---|---|\n");
  if (o.n_prompt > 0)
    std::printf("| %s | %s | %.2f | %s | pp%d%s | %.2f ± %.2f |\n", name.c_str(), format.c_str(), size_gb,
                m.backend->name().c_str(), o.n_prompt, seqs.c_str(), r.prefill.mean(), r.prefill.stddev());
  if (o.n_gen > 0)
    std::printf("| %s | %s | %.2f | %s | tg%d%s | %.2f ± %.2f |\n", name.c_str(), format.c_str(), size_gb,
                m.backend->name().c_str(), o.n_gen, seqs.c_str(), r.decode.mean(), r.decode.stddev());
  const double prefill_tflops = r.prefill.mean() * r.prefill_flops_per_token / 1e12;
  const double prefill_fraction = peak_tflops > 0 ? prefill_tflops / peak_tflops : 0;
  std::printf("\nmeasured read bandwidth: %.1f-%.1f GB/s (%zu probes: before each repetition and after the last)\n",
              *min_gbps, *max_gbps, r.read_gbps.size());
  if (peak_tflops > 0) {
    std::printf("measured bf16 matrix peak (8192^3 GEMM): %.1f TFLOP/s\n", peak_tflops);
    if (o.n_prompt > 0)
      std::printf("prefill: %.2f GFLOP per token -> %.1f TFLOP/s = %.0f %% of the measured bf16 peak\n",
                  r.prefill_flops_per_token / 1e9, prefill_tflops, 100 * prefill_fraction);
  }
  if (o.n_gen > 0)
    std::printf(
        "decode: %.1f MB read per step of %d token%s -> %.1f GB/s = %.0f %% of the measured read bandwidth\n"
        "        (per repetition, against the larger probe on either side of it: %s %%)\n",
        r.decode_bytes_per_token * o.n_seq / 1e6, o.n_seq, o.n_seq > 1 ? "s (one per sequence)" : "", decode_gbps,
        100 * decode_fraction, percent_list(r.decode_fraction).c_str());
  // Energy: each phase is told only where the counter updates often enough for its length
  // (perf/energy_meter.h, phase_energy); else why not.
  const std::optional<double> update_period = meter.available() ? meter.update_period_seconds() : std::nullopt;
  const double prompt_tokens = static_cast<double>(o.n_seq) * o.n_prompt, gen_tokens = static_cast<double>(o.n_seq) * o.n_gen;
  const PhaseEnergy prefill_energy =
      phase_energy(r.prefill_joules_per_token, r.prefill.tokens_per_second, prompt_tokens, update_period);
  const PhaseEnergy decode_energy =
      phase_energy(r.decode_joules_per_token, r.decode.tokens_per_second, gen_tokens, update_period);
  auto print_phase = [](const char* phase, const PhaseEnergy& e) {
    if (e.joules_per_token)
      std::printf("%s %.4f J per token (%.0f W, +-%.0f %%)", phase, *e.joules_per_token, e.watts, 100 * e.uncertainty);
    else
      std::printf("%s not measured (%s)", phase, e.why_not.c_str());
  };
  if (!meter.available()) {
    std::printf("energy: not measured (%s)\n", meter.description().c_str());
  } else if (r.prefill_joules_per_token.empty() && r.decode_joules_per_token.empty()) {
    std::printf("energy: not measured (a read of the counter failed; %s)\n", meter.description().c_str());
  } else {
    std::printf("energy (%s", meter.description().c_str());
    if (update_period) std::printf("; updates every %.1f ms", 1e3 * *update_period);
    std::printf("):");
    if (o.n_prompt > 0) print_phase(" prefill", prefill_energy);
    if (o.n_gen > 0) print_phase(o.n_prompt > 0 ? ", decode" : " decode", decode_energy);
    std::printf("\n");
  }

  if (!o.json_out.empty()) {
    nlohmann::json j = {
        {"model", name},
        {"format", format},
        {"weight_bytes", m.model->weight_bytes()},
        {"backend", m.backend->name()},
        {"threads", o.model.threads},
        {"n_prompt", o.n_prompt},
        {"n_gen", o.n_gen},
        {"n_seq", o.n_seq},
        {"n_ctx", r.n_ctx},
        {"prefill_tokens_per_second", r.prefill.tokens_per_second},
        {"decode_tokens_per_second", r.decode.tokens_per_second},
        {"decode_bytes_per_token", r.decode_bytes_per_token},
        {"prefill_flops_per_token", r.prefill_flops_per_token},
        {"read_bandwidth_gbps", *max_gbps},
        {"read_bandwidth_probes_gbps", r.read_gbps},
        {"decode_fraction_of_bandwidth", decode_fraction},  // mean of the repetitions' fractions
        {"decode_fraction_per_repetition", r.decode_fraction},
        {"bf16_peak_tflops", peak_tflops},  // 0 where the backend has no probe
        {"prefill_tflops", prefill_tflops},
        {"prefill_fraction_of_bf16_peak", prefill_fraction},
        {"energy_source", meter.description()},  // what is measured, or why nothing is
        {"energy_update_period_s", update_period.value_or(0)},  // 0: not measured
        // Mean over the repetitions, null where not told; *_energy_uncertainty: the bound as a
        // fraction; *_energy_not_measured: why not, empty where told.
        {"prefill_joules_per_token", prefill_energy.joules_per_token ? nlohmann::json(*prefill_energy.joules_per_token) : nullptr},
        {"prefill_energy_uncertainty", prefill_energy.uncertainty},
        {"prefill_energy_not_measured", prefill_energy.why_not},
        {"decode_joules_per_token", decode_energy.joules_per_token ? nlohmann::json(*decode_energy.joules_per_token) : nullptr},
        {"decode_energy_uncertainty", decode_energy.uncertainty},
        {"decode_energy_not_measured", decode_energy.why_not},
    };
    BL_RETURN_IF_ERROR(write_file_atomically(o.json_out, j.dump(2) + "\n"));
  }
  return Status::Ok();
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchOptions>();
  o->model.n_batch = 512;
  CLI::App* cmd = app.add_subcommand("bench", "measure prefill and decode speed against the memory bandwidth");
  add_model_options(cmd, o->model);
  cmd->add_option("-p,--n-prompt", o->n_prompt, "prompt tokens (prefill test ppN; 0 = skip)")->capture_default_str();
  cmd->add_option("-n,--n-gen", o->n_gen, "generated tokens (decode test tgN; 0 = skip)")->capture_default_str();
  cmd->add_option("-r,--repetitions", o->repetitions, "repetitions")->capture_default_str();
  cmd->add_option("-B,--sequences", o->n_seq, "sequences decoded together: each decode step takes one token of each")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("--json", o->json_out, "also write the results as JSON");
  cmd->callback([o, cmd, &exit_code] {
    // bench allocates the cache the tests need (-p + -n slots) unless -c asks for more, as a
    // server or `run -c` allocates up front (decode then runs over a mostly empty cache).
    o->ctx_given = cmd->count("--ctx-size") > 0;
    Status s = bench(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
