// Runs a TorchScript RedNet (saved from Python with torch.jit.script; the involution op
// inside) on one input and prints the top-5 classes and the latency. No Python at run time:
// linking involution_ext::ops registers torch.ops.involution.* for the TorchScript runtime.
//
//   rednet_infer MODEL.pt [--size 224] [--seed 0] [--reps 10] [--logits OUT.bin]
// The input is torch::randn(1, 3, size, size) after torch::manual_seed(seed) — the same
// values Python draws with torch.manual_seed(seed); torch.randn(...).
#include <involution_ext/involution.h>

#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.pt [--size N] [--seed S] [--reps N] [--logits OUT.bin]\n", argv[0]);
    return 2;
  }
  int64_t size = 224, seed = 0, reps = 10;
  std::string logits_path;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--size") size = std::stoll(argv[i + 1]);
    else if (a == "--seed") seed = std::stoll(argv[i + 1]);
    else if (a == "--reps") reps = std::stoll(argv[i + 1]);
    else if (a == "--logits") logits_path = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    std::printf("involution op library %s\n", involution::version());
    auto model = torch::jit::load(argv[1]);
    model.eval();
    torch::manual_seed(seed);
    auto x = torch::randn({1, 3, size, size});
    torch::NoGradGuard no_grad;
    auto logits = model.forward({x}).toTensor();
    std::vector<double> ms;
    for (int64_t i = 0; i < reps; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      model.forward({x});
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    auto probs = logits.softmax(1);
    auto [p, idx] = probs.topk(std::min<int64_t>(5, probs.size(1)), 1);
    std::printf("top-5 classes:");
    for (int64_t k = 0; k < idx.size(1); ++k) {
      std::printf(" %lld (%.4f)", static_cast<long long>(idx[0][k].item<int64_t>()), p[0][k].item<double>());
    }
    std::printf("\nlatency batch 1 at %lldx%lld: median %.2f ms over %lld runs\n", (long long)size, (long long)size,
                ms.empty() ? 0.0 : ms[ms.size() / 2], (long long)reps);
    if (!logits_path.empty()) {
      auto c = logits.contiguous().to(torch::kFloat);
      std::ofstream(logits_path, std::ios::binary)
          .write(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rednet_infer: %s\n", e.what());
    return 1;
  }
  return 0;
}
