// involution_bench: times involution::forward / backward (called through the dispatcher,
// as any LibTorch program would) against at::conv2d — dense 3x3 and depthwise 7x7 — at the
// RedNet stage shapes, and optionally TorchScript models end to end. Prints a table of
// medians, spreads and ratios and writes JSON (tools/plot_cpp_bench.py draws it).
//
//   involution_bench [--device cpu|cuda] [--batch N] [--threads T] [--reps N] [--warmup N]
//                    [--dtypes float32,float16,bfloat16] [--tiny] [--json OUT.json]
//                    [--model NAME=PATH ...] [--model-batches 1,16] [--check OUT.bin]
#include <involution_ext/involution.h>

#include <torch/script.h>
#include <torch/torch.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string device = "cpu";
  int64_t batch = 0;  // 0: 8 on CPU, 32 on CUDA
  int threads = 0;
  int reps = 20;
  int warmup = 3;
  std::vector<std::string> dtypes;
  bool tiny = false;
  std::string json;
  std::vector<std::pair<std::string, std::string>> models;
  std::vector<int64_t> model_batches = {1, 16};
  std::string check;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

constexpr const char* kUsage = R"(usage: involution_bench [options]

Times involution::forward / backward against at::conv2d (dense 3x3, depthwise 7x7) at the
RedNet stage shapes, and TorchScript models end to end.

options:
  --device cpu|cuda        device to time on (default cpu)
  --batch N                batch size (default 8 on CPU, 32 on CUDA)
  --threads T              intra-op threads (default: torch's)
  --reps N                 timed repetitions per measurement (default 20)
  --warmup N               untimed repetitions first (default 3)
  --dtypes LIST            comma-separated: float32,float64,float16,bfloat16
                           (default float32 on CPU, float32,float16,bfloat16 on CUDA)
  --tiny                   small shapes only (a quick smoke run)
  --json OUT.json          also write the results as JSON (tools/plot_cpp_bench.py draws it)
  --model NAME=PATH        time a TorchScript model end to end (repeatable)
  --model-batches LIST     batch sizes for --model (default 1,16)
  --check OUT.bin          write the op's outputs for fixed inputs (a cross-language check) and exit
  -h, --help               show this text and exit
)";

// A mistake on the command line: reported with the usage text, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int64_t parse_int(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const int64_t value = std::stoll(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  throw UsageError(option + " wants an integer, got '" + text + "'");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--device") o.device = next();
    else if (a == "--batch") o.batch = parse_int(a, next());
    else if (a == "--threads") o.threads = static_cast<int>(parse_int(a, next()));
    else if (a == "--reps") o.reps = static_cast<int>(parse_int(a, next()));
    else if (a == "--warmup") o.warmup = static_cast<int>(parse_int(a, next()));
    else if (a == "--dtypes") o.dtypes = split(next(), ',');
    else if (a == "--tiny") o.tiny = true;
    else if (a == "--json") o.json = next();
    else if (a == "--check") o.check = next();
    else if (a == "--model-batches") {
      o.model_batches.clear();
      for (const auto& b : split(next(), ',')) o.model_batches.push_back(parse_int(a, b));
    } else if (a == "--model") {
      auto spec = next();
      auto eq = spec.find('=');
      if (eq == std::string::npos) throw UsageError("--model wants NAME=PATH, got '" + spec + "'");
      o.models.emplace_back(spec.substr(0, eq), spec.substr(eq + 1));
    } else {
      throw UsageError("unknown option '" + a + "'");
    }
  }
  if (o.device != "cpu" && o.device != "cuda") throw UsageError("--device wants cpu or cuda, got '" + o.device + "'");
  if (o.dtypes.empty()) {
    o.dtypes = o.device == "cuda" ? std::vector<std::string>{"float32", "float16", "bfloat16"}
                                  : std::vector<std::string>{"float32"};
  }
  if (o.batch == 0) o.batch = o.device == "cuda" ? 32 : 8;
  return o;
}

at::ScalarType dtype_of(const std::string& name) {
  static const std::map<std::string, at::ScalarType> names = {
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"float16", at::kHalf}, {"bfloat16", at::kBFloat16}};
  auto it = names.find(name);
  if (it == names.end()) throw UsageError("unknown dtype '" + name + "' (float32, float64, float16, bfloat16)");
  return it->second;
}

struct Timing {
  double median_ms;
  double spread_ms;  // max - min of the middle half
};

// Device-generic timing: CUDA events on the current stream for CUDA (through c10's event
// interface, so no CUDA headers are needed), a monotonic clock on the CPU.
Timing time_it(const std::function<void()>& fn, const c10::Device& device, int reps, int warmup) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  if (device.is_cuda()) {
    const auto* impl = c10::impl::getDeviceGuardImpl(device.type());
    auto stream = impl->getStream(device);
    impl->synchronizeStream(stream);
    for (int i = 0; i < reps; ++i) {
      c10::Event start(device.type(), c10::EventFlag::BACKEND_DEFAULT);
      c10::Event stop(device.type(), c10::EventFlag::BACKEND_DEFAULT);
      start.record(stream);
      fn();
      stop.record(stream);
      stop.synchronize();
      ms.push_back(start.elapsedTime(stop));
    }
  } else {
    for (int i = 0; i < reps; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  size_t q = ms.size() / 4;
  return {ms[ms.size() / 2], ms[ms.size() - 1 - q] - ms[q]};
}

struct Shape {
  int64_t C, H, stride;
};

constexpr int64_t kKernel = 7;
constexpr int64_t kGroupChannels = 16;

struct Row {
  std::string shape, dtype, pass;
  std::map<std::string, Timing> t;
  double gbps = 0;
};

void write_check(const std::string& path) {
  // Seeded inputs: Python's torch.manual_seed(0) + torch.randn draws the same values.
  torch::manual_seed(0);
  auto x = torch::randn({2, 32, 14, 14});
  auto w = torch::randn({2, 2, kKernel, kKernel, 14, 14});
  auto y = involution::forward(x, w, {1, 1}, {3, 3}, {1, 1});
  auto [gx, gw] = involution::backward(torch::ones_like(y), x, w, {1, 1}, {3, 3}, {1, 1}, {true, true});
  std::ofstream out(path, std::ios::binary);
  for (const auto& t : {y, gx, gw}) {
    auto c = t.contiguous();
    out.write(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
  }
  std::printf("wrote forward, grad_input, grad_weight of the seeded check case to %s\n", path.c_str());
}

std::vector<Row> bench_ops(const Options& o, const c10::Device& device) {
  std::vector<Shape> shapes = {{64, 56, 1}, {128, 28, 1}, {256, 14, 1}, {512, 7, 1}, {128, 56, 2}};
  if (o.tiny) shapes = {{32, 14, 1}, {32, 14, 2}};
  std::vector<Row> rows;
  std::printf("%-24s %-9s %-8s %10s %10s %10s %9s %9s %8s\n", "shape (B,C,H) K=7", "dtype", "pass",
              "invol ms", "dense3x3", "dw7x7", "/dense", "/dw", "GB/s");
  for (const auto& dname : o.dtypes) {
    auto opts = torch::TensorOptions().dtype(dtype_of(dname)).device(device);
    for (const auto& s : shapes) {
      const int64_t B = o.batch, C = s.C, H = s.H, G = C / kGroupChannels, pad = kKernel / 2;
      const int64_t Ho = (H + 2 * pad - kKernel) / s.stride + 1;
      auto x = torch::randn({B, C, H, H}, opts).requires_grad_();
      auto w = torch::randn({B, G, kKernel, kKernel, Ho, Ho}, opts).requires_grad_();
      auto gy = torch::randn({B, C, Ho, Ho}, opts);
      auto dense = torch::randn({C, C, 3, 3}, opts).mul_(0.05).requires_grad_();
      auto dw = torch::randn({C, 1, kKernel, kKernel}, opts).mul_(0.05).requires_grad_();
      const std::vector<int64_t> st = {s.stride, s.stride}, pd = {pad, pad}, dl = {1, 1};
      auto inv_fwd = [&] { torch::NoGradGuard g; involution::forward(x, w, st, pd, dl); };
      auto inv_bwd = [&] { involution::backward(gy, x, w, st, pd, dl, {true, true}); };
      auto inv_both = [&] {
        auto y = involution::forward(x, w, st, pd, dl);
        torch::autograd::grad({y}, {x, w}, {gy});
      };
      auto conv = [&](const torch::Tensor& k, int64_t p, int64_t groups, bool backward) {
        if (!backward) {
          torch::NoGradGuard g;
          at::conv2d(x, k, {}, st, {p, p}, dl, groups);
          return;
        }
        auto y = at::conv2d(x, k, {}, st, {p, p}, dl, groups);
        torch::autograd::grad({y}, {x, k}, {gy});
      };
      char shape[64];
      std::snprintf(shape, sizeof shape, "(%lld,%lld,%lld)%s", (long long)B, (long long)C, (long long)H,
                    s.stride == 2 ? " s2" : "");
      const double elem = static_cast<double>(at::elementSize(dtype_of(dname)));
      const double fwd_bytes = elem * (x.numel() + w.numel() + gy.numel());
      for (const std::string pass : {"fwd", "bwd", "fwd+bwd"}) {
        Row r{shape, dname, pass, {}, 0};
        bool bwd = pass != "fwd";
        r.t["involution"] = time_it(pass == "fwd" ? std::function<void()>(inv_fwd)
                                    : pass == "bwd" ? std::function<void()>(inv_bwd) : std::function<void()>(inv_both),
                                    device, o.reps, o.warmup);
        if (pass != "bwd") {
          r.t["dense3x3"] = time_it([&] { conv(dense, 1, 1, bwd); }, device, o.reps, o.warmup);
          r.t["depthwise7x7"] = time_it([&] { conv(dw, pad, C, bwd); }, device, o.reps, o.warmup);
        }
        // Minimum traffic: forward reads x and w, writes y; the backward reads gy, x, w and
        // writes both gradients (twice the forward's bytes).
        double bytes = pass == "fwd" ? fwd_bytes : pass == "bwd" ? 2 * fwd_bytes : 3 * fwd_bytes;
        r.gbps = bytes / (r.t["involution"].median_ms * 1e-3) / 1e9;
        double inv = r.t["involution"].median_ms;
        if (pass != "bwd") {
          std::printf("%-24s %-9s %-8s %10.3f %10.3f %10.3f %8.2fx %8.2fx %8.1f\n", shape, dname.c_str(), pass.c_str(),
                      inv, r.t["dense3x3"].median_ms, r.t["depthwise7x7"].median_ms, inv / r.t["dense3x3"].median_ms,
                      inv / r.t["depthwise7x7"].median_ms, r.gbps);
        } else {
          std::printf("%-24s %-9s %-8s %10.3f %10s %10s %9s %9s %8.1f\n", shape, dname.c_str(), pass.c_str(), inv, "-",
                      "-", "-", "-", r.gbps);
        }
        std::fflush(stdout);
        rows.push_back(r);
      }
    }
  }
  return rows;
}

struct ModelRow {
  std::string name;
  int64_t batch;
  Timing t;
};

std::vector<ModelRow> bench_models(const Options& o, const c10::Device& device) {
  std::vector<ModelRow> rows;
  for (const auto& [name, path] : o.models) {
    auto module = torch::jit::load(path, device);
    module.eval();
    for (auto b : o.model_batches) {
      auto x = torch::randn({b, 3, 224, 224}, torch::TensorOptions().device(device));
      torch::NoGradGuard g;
      auto t = time_it([&] { module.forward({x}); }, device, std::max(3, o.reps / 4), 2);
      std::printf("TorchScript %-12s batch %-3lld %10.2f ms (spread %.2f)\n", name.c_str(), (long long)b, t.median_ms,
                  t.spread_ms);
      rows.push_back({name, b, t});
    }
  }
  return rows;
}

void write_json(const Options& o, const std::vector<Row>& rows, const std::vector<ModelRow>& models) {
  std::ofstream f(o.json);
  f << "{\n \"device\": \"" << o.device << "\", \"batch\": " << o.batch << ", \"threads\": " << at::get_num_threads()
    << ", \"library\": \"" << involution::version() << "\",\n \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    f << "  {\"shape\": \"" << r.shape << "\", \"dtype\": \"" << r.dtype << "\", \"pass\": \"" << r.pass
      << "\", \"gbps\": " << r.gbps << ", \"times_ms\": {";
    size_t k = 0;
    for (const auto& [name, t] : r.t) {
      f << (k++ ? ", " : "") << "\"" << name << "\": [" << t.median_ms << ", " << t.spread_ms << "]";
    }
    f << "}}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  f << " ],\n \"models\": [";
  for (size_t i = 0; i < models.size(); ++i) {
    f << (i ? ", " : "") << "{\"name\": \"" << models[i].name << "\", \"batch\": " << models[i].batch
      << ", \"median_ms\": " << models[i].t.median_ms << ", \"spread_ms\": " << models[i].t.spread_ms << "}";
  }
  f << "]\n}\n";
  std::printf("wrote %s\n", o.json.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  try {
    Options o = parse(argc, argv);
    for (const auto& name : o.dtypes) dtype_of(name);  // a typo fails before any timing
    if (o.threads > 0) at::set_num_threads(o.threads);
    c10::Device device(o.device);
    std::printf("# involution_bench | op library %s | device %s | batch %lld | %d threads\n", involution::version(),
                o.device.c_str(), (long long)o.batch, at::get_num_threads());
    if (!o.check.empty()) {
      write_check(o.check);
      return 0;
    }
    auto rows = bench_ops(o, device);
    auto models = bench_models(o, device);
    if (!o.json.empty()) write_json(o, rows, models);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "involution_bench: %s\n\n%s", e.what(), kUsage);
    return 2;
  } catch (const c10::Error& e) {  // without the C++ stack trace torch appends
    std::fprintf(stderr, "involution_bench: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "involution_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
