"""``python -m involution_ext demo``: the op against the fp64 reference on random inputs, its
time against the unfold formulation, and a RedNet-50 forward pass."""

from __future__ import annotations

import time

import torch

import involution_ext
from involution_ext.reference import involution2d_unfold


def main() -> int:
    torch.manual_seed(0)
    B, C, H, G, K = 8, 64, 56, 4, 7
    x = torch.randn(B, C, H, H)
    w = torch.randn(B, G, K, K, H, H)
    y = involution_ext.involution2d(x, w, padding=3)
    ref = involution2d_unfold(x.double(), w.double(), padding=3)
    err = (y.double() - ref).abs().max().item()
    print(f"op vs fp64 unfold reference at {tuple(x.shape)}, K={K}: max abs error {err:.2e}")

    def bench(fn, reps=5):
        fn()
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return sorted(t)[len(t) // 2] * 1e3

    t_op = bench(lambda: involution_ext.involution2d(x, w, padding=3))
    t_unfold = bench(lambda: involution2d_unfold(x, w, padding=3), reps=3)
    ratio = t_unfold / t_op
    versus = f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"
    print(f"forward: op {t_op:.2f} ms, unfold {t_unfold:.1f} ms (the op is {versus}), "
          f"{torch.get_num_threads()} threads, CPU kernels: {involution_ext.cpu_isa()}")

    model = involution_ext.rednet50().eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        t_model = bench(lambda: model(image), reps=5)
        top5 = model(image).softmax(-1).topk(5)
    print(f"RedNet-50 ({params:.2f} M parameters, random weights): batch 1 at 224x224 in {t_model:.1f} ms; "
          f"top-5 classes {top5.indices[0].tolist()}")
    return 0 if err < 1e-3 else 1
