"""What only CUDA has: the kernels' special paths (several shared-memory channel chunks, the
unstaged global-memory kernels), streams and CUDA graphs, tensors on a second GPU, more than
2^31 elements, and mixing CPU and CUDA tensors. Everything else runs on CUDA from the shared
suite's device axis (helpers.cpu_and_cuda)."""

from __future__ import annotations

import pytest
import torch

import involution_ext  # noqa: F401
from helpers import CUDA_MARKS, Case, assert_close_scaled, check_backward, check_forward, involution_loops, to_device

pytestmark = CUDA_MARKS


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_special_paths(dtype):
    # 40 channels per group: several shared-memory chunks (fp32 running sums for halves);
    # a dilated 9x9 window too large for shared memory: the global-memory kernels.
    for case, channels_last in [
        (Case(B=2, C=80, G=2, H=20, W=24, K=(7, 7), stride=(2, 1), padding=(3, 3), dilation=(1, 1)), False),
        (Case(B=1, C=8, G=1, H=60, W=80, K=(9, 9), stride=(1, 1), padding=(48, 48), dilation=(12, 12)), True),
    ]:
        check_forward(case, dtype, channels_last, seed=1, device="cuda")
        check_backward(case, dtype, channels_last, seed=1, device="cuda")


def test_cpu_and_cuda_tensors_do_not_mix():
    x, w = torch.randn(2, 8, 6, 6, device="cuda"), torch.randn(2, 2, 3, 3, 6, 6, device="cuda")
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.involution.forward(x.cpu(), w, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="grad_output must be on the input's device"):
        torch.ops.involution.backward(torch.randn(2, 8, 6, 6), x, w, [1, 1], [1, 1], [1, 1], [True, True])


def test_non_default_stream_and_cuda_graph():
    case = Case(B=2, C=32, G=2, H=14, W=14, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = to_device("cuda", *case.tensors(torch.float32))
    expected = torch.ops.involution.forward(x, w, *case.args())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = torch.ops.involution.forward(x, w, *case.args())
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(y, expected)

    static_x, static_w = x.clone(), w.clone()
    with torch.cuda.stream(stream):  # warm up on a side stream, as graph capture requires
        torch.ops.involution.forward(static_x, static_w, *case.args())
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = torch.ops.involution.forward(static_x, static_w, *case.args())
    x2, w2 = torch.randn_like(x), torch.randn_like(w)
    static_x.copy_(x2), static_w.copy_(w2)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_y, torch.ops.involution.forward(x2, w2, *case.args()))


def test_int64_indexing_over_2_pow_31_elements():
    # 17 channels of 11586^2 fp16 (2.28e9 elements > 2^31): offsets past 2^31 must not wrap.
    # A 1x1 kernel keeps the weight small and the exact answer cheap: y = w * x per pixel.
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip(f"needs 24 GiB free GPU memory, {free / 2**30:.1f} GiB free")
    C, H = 17, 11586
    assert C * H * H > 2**31
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, C, H, H, device="cuda", dtype=torch.float16, generator=g)
    w = torch.randn(1, 1, 1, 1, H, H, device="cuda", dtype=torch.float16, generator=g)
    y = torch.ops.involution.forward(x, w, [1, 1], [0, 0], [1, 1])
    for c in range(C):  # per channel, so the check itself needs no 4.5 GB temporaries
        assert torch.equal(y[0, c], (x[0, c].float() * w[0, 0, 0, 0].float()).half()), f"channel {c}"
    del y
    gy = torch.randn(1, C, H, H, device="cuda", dtype=torch.float16, generator=g)
    gx, gw = torch.ops.involution.backward(gy, x, w, [1, 1], [0, 0], [1, 1], [True, True])
    for c in range(C):
        assert torch.equal(gx[0, c], (gy[0, c].float() * w[0, 0, 0, 0].float()).half()), f"channel {c}"
    want = torch.zeros(H, H, device="cuda")
    for c in range(C):
        want += gy[0, c].float() * x[0, c].float()
    torch.testing.assert_close(gw[0, 0, 0, 0].float(), want, rtol=2e-3, atol=2e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_second_device():
    # The device guard: kernels run on cuda:1 while cuda:0 is current.
    case = Case(B=2, C=32, G=2, H=10, W=13, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = case.tensors(torch.float32)
    xd, wd = (t.to("cuda:1").requires_grad_() for t in (x, w))
    assert torch.cuda.current_device() == 0
    y = torch.ops.involution.forward(xd, wd, *case.args())
    assert y.device == torch.device("cuda:1")
    ref = involution_loops(x, w, *case.args())
    assert_close_scaled(y.cpu(), ref, involution_loops(x.abs(), w.abs(), *case.args()), torch.float32, "cuda:1")
    y.sum().backward()
    assert xd.grad.device == wd.grad.device == torch.device("cuda:1")
