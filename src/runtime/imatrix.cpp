#include "runtime/imatrix.h"

#include <mutex>
#include <string_view>
#include <unordered_map>

#include "backend/backend.h"
#include "io/gguf_writer.h"
#include "io/model_file.h"

namespace bl {
namespace {

constexpr std::string_view kSumSuffix = ".in_sum2";
constexpr std::string_view kCountSuffix = ".counts";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Forwards every op; matmuls on known weights also add sum_t x[j, t]^2 to the entry.
class ImatrixRecorder final : public Backend {
 public:
  ImatrixRecorder(Backend& inner, const ModelFile& file, ImportanceMatrix& out) : inner_(inner), out_(out) {
    for (const TensorInfo& t : file.tensors())
      if (t.ne.size() >= 2) names_[t.data] = t.name;
  }

  BackendKind kind() const override { return inner_.kind(); }
  std::string name() const override { return inner_.name() + " + imatrix"; }
  Device device() const override { return inner_.device(); }
  bool supports(DType t) const override { return inner_.supports(t); }
  Expected<Tensor> alloc(DType dtype, std::array<int64_t, 4> ne) override { return inner_.alloc(dtype, ne); }
  // copies_weights stays false: the model then uploads Q/K/V and gate/up one by one, so each
  // matmul's weight is a tensor of the file with a name to record under.
  Expected<Tensor> upload_weight(const Tensor& host) override {
    Expected<Tensor> t = inner_.upload_weight(host);
    // The model refers to weights by the uploaded tensor: map it to the file's name too.
    if (t.ok()) {
      auto it = names_.find(host.data);
      if (it != names_.end()) names_[t->data] = it->second;
    }
    return t;
  }
  void write(Tensor& dst, const void* src, size_t bytes, size_t offset) override { inner_.write(dst, src, bytes, offset); }
  void read(const Tensor& src, void* dst, size_t bytes, size_t offset) override { inner_.read(src, dst, bytes, offset); }
  void synchronize() override { inner_.synchronize(); }
  void get_rows(const Tensor& table, const Tensor& ids, Tensor& out) override { inner_.get_rows(table, ids, out); }
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override { inner_.rms_norm(x, w, eps, out); }
  void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias) override {
    record(w, x);
    inner_.matmul(w, x, out, bias);
  }
  void add(const Tensor& a, const Tensor& b, Tensor& out) override { inner_.add(a, b, out); }
  void silu_mul(const Tensor& g, const Tensor& u, Tensor& out) override { inner_.silu_mul(g, u, out); }
  void gelu_mul(const Tensor& g, const Tensor& u, Tensor& out) override { inner_.gelu_mul(g, u, out); }
  void scale(const Tensor& x, float factor, Tensor& out) override { inner_.scale(x, factor, out); }
  void rope(Tensor& x, const Tensor& pos, const RopeParams& p) override { inner_.rope(x, pos, p); }
  void kv_store(const Tensor& k, const Tensor& v, Tensor& kc, Tensor& vc, const Tensor& pos) override {
    inner_.kv_store(k, v, kc, vc, pos);
  }
  void attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& pos, const AttentionParams& p,
                 Tensor& out) override {
    inner_.attention(q, kc, vc, pos, p, out);
  }

 private:
  void record(const Tensor& w, const Tensor& x) {
    auto it = names_.find(w.data);
    if (it == names_.end() || x.device != Device::cpu || x.dtype != DType::F32) return;
    inner_.synchronize();
    const int64_t cols = x.cols(), n = x.rows();
    const float* xf = x.as<const float>();
    std::lock_guard<std::mutex> lock(mu_);
    ImportanceMatrix::Entry& e = out_.entries[it->second];
    if (e.sum_sq.empty()) e.sum_sq.assign(static_cast<size_t>(cols), 0.0);
    if (static_cast<int64_t>(e.sum_sq.size()) != cols) return;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < cols; ++j) {
        const double v = xf[t * cols + j];
        e.sum_sq[static_cast<size_t>(j)] += v * v;
      }
    e.count += n;
  }

  Backend& inner_;
  ImportanceMatrix& out_;
  std::unordered_map<const void*, std::string> names_;
  std::mutex mu_;
};

}  // namespace

std::vector<float> ImportanceMatrix::importance(const std::string& tensor, int64_t cols) const {
  auto it = entries.find(tensor);
  if (it == entries.end() || it->second.count <= 0 || static_cast<int64_t>(it->second.sum_sq.size()) != cols)
    return {};
  std::vector<float> mean(static_cast<size_t>(cols));
  for (size_t j = 0; j < mean.size(); ++j)
    mean[j] = static_cast<float>(it->second.sum_sq[j] / static_cast<double>(it->second.count));
  return mean;
}

Status save_imatrix(const ImportanceMatrix& m, const std::string& path) {
  GgufWriter w;
  w.set_string("general.type", "imatrix");
  w.set_string_array("imatrix.datasets", m.datasets);
  // The writer copies tensor data at write(); keep the f32 copies alive until then.
  std::vector<std::vector<float>> data;
  data.reserve(2 * m.entries.size());
  for (const auto& [name, e] : m.entries) {
    data.emplace_back(e.sum_sq.begin(), e.sum_sq.end());
    const auto& sums = data.back();
    BL_RETURN_IF_ERROR(w.add_tensor(name + std::string(kSumSuffix), DType::F32, {static_cast<int64_t>(sums.size())},
                                    sums.data(), sums.size() * sizeof(float)));
    data.push_back({static_cast<float>(e.count)});
    BL_RETURN_IF_ERROR(w.add_tensor(name + std::string(kCountSuffix), DType::F32, {1}, data.back().data(), sizeof(float)));
  }
  return w.write(path);
}

Expected<ImportanceMatrix> load_imatrix(const std::string& path) {
  std::unique_ptr<ModelFile> file;
  BL_ASSIGN_OR_RETURN(file, ModelFile::open(path));
  std::string type;
  BL_ASSIGN_OR_RETURN(type, file->get_string_or("general.type", ""));
  if (type != "imatrix") return invalid_file(path + ": not an importance matrix (general.type is '" + type + "')");
  ImportanceMatrix m;
  if (file->has("imatrix.datasets")) {
    BL_ASSIGN_OR_RETURN(m.datasets, file->get_string_array("imatrix.datasets"));
  }
  for (const TensorInfo& t : file->tensors()) {
    if (!ends_with(t.name, kSumSuffix)) continue;
    const std::string name = t.name.substr(0, t.name.size() - kSumSuffix.size());
    const TensorInfo* counts = file->find_tensor(name + std::string(kCountSuffix));
    if (t.dtype != DType::F32 || !counts || counts->dtype != DType::F32 || counts->bytes < sizeof(float))
      return invalid_file(path + ": entry '" + name + "' needs F32 " + std::string(kSumSuffix) + " and " +
                          std::string(kCountSuffix) + " tensors");
    // Matrices of experts (ne[1] > 1) are summed into one row of importances.
    const int64_t cols = t.ne[0];
    ImportanceMatrix::Entry e;
    e.sum_sq.assign(static_cast<size_t>(cols), 0.0);
    const auto* sums = static_cast<const float*>(t.data);
    for (uint64_t i = 0; i < t.bytes / sizeof(float); ++i) e.sum_sq[i % static_cast<uint64_t>(cols)] += sums[i];
    const auto* c = static_cast<const float*>(counts->data);
    for (uint64_t i = 0; i < counts->bytes / sizeof(float); ++i) e.count += static_cast<int64_t>(c[i]);
    m.entries.emplace(name, std::move(e));
  }
  return m;
}

std::unique_ptr<Backend> make_imatrix_recorder(Backend& inner, const ModelFile& file, ImportanceMatrix& out) {
  return std::make_unique<ImatrixRecorder>(inner, file, out);
}

}  // namespace bl
