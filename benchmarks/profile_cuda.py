"""One forward + backward of the op on CUDA, then of the fused op (kernel generated from R = C/4
hidden features), for a profiler to record their kernels (forward, grad_input, grad_weight;
fused forward, fused grad_input, span gradients):

    ncu --set full -k regex:"gather|grad_weight|span_grads" -c 6 python benchmarks/profile_cuda.py

Defaults: RedNet's first stage at batch 32 (C=64, 56x56, K=7, 16 channels per group), fp32.
"""

from __future__ import annotations

import argparse

import torch

import involution_ext  # noqa: F401


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--group-channels", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    B, C, H, K = args.batch, args.channels, args.size, args.kernel
    x = torch.randn(B, C, H, H, device="cuda", dtype=dtype)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(B, C // args.group_channels, K, K, H, H, device="cuda", dtype=dtype)
    x.requires_grad_(), w.requires_grad_()
    y = torch.ops.involution.forward(x, w, [1, 1], [K // 2, K // 2], [1, 1])
    y.backward(torch.randn_like(y))
    G, R = C // args.group_channels, C // 4
    hidden = torch.randn(B, R, H, H, device="cuda", dtype=dtype, requires_grad=True)
    span_weight = torch.randn(G * K * K, R, device="cuda", dtype=dtype, requires_grad=True)
    span_bias = torch.randn(G * K * K, device="cuda", dtype=dtype, requires_grad=True)
    y = torch.ops.involution.fused_forward(x, hidden, span_weight, span_bias, [K, K], [1, 1],
                                           [K // 2, K // 2], [1, 1])
    y.backward(torch.randn_like(y))
    torch.cuda.synchronize()
    print(f"profiled B={B} C={C} {H}x{H} K={K} {args.dtype}{' channels_last' if args.channels_last else ''}")


if __name__ == "__main__":
    main()
