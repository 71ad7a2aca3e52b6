"""The op's correctness suite on CUDA (skipped, with the reason, where no GPU is
present): dtypes x layouts vs the fp64 reference, gradients, opcheck, compile,
TorchScript, determinism, bad inputs, streams and CUDA graphs."""

from __future__ import annotations

import pytest
import torch

import involution_ext  # noqa: F401
from conftest import Case, assert_close_scaled, involution_loops, random_cases

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CASES = random_cases(120, seed=4321)
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def to_cuda(*tensors):
    return [t.detach().cuda().requires_grad_(t.requires_grad) for t in tensors]


def check(case, dtype, channels_last, seed, backward=True):
    x, w = case.tensors(dtype, channels_last, seed=seed)
    xc, wc = to_cuda(x, w)
    xc.requires_grad_(backward), wc.requires_grad_(backward)
    y = torch.ops.involution.forward(xc, wc, *case.args())
    want = torch.channels_last if channels_last and case.C > 1 else torch.contiguous_format
    assert y.is_cuda and y.dtype == dtype and y.is_contiguous(memory_format=want)
    ref = involution_loops(x, w, *case.args())
    scale = involution_loops(x.abs(), w.abs(), *case.args())
    assert_close_scaled(y.cpu(), ref, scale, dtype, f"cuda forward {case} {dtype}")
    if not backward:
        return
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    y.backward(gy.cuda())
    # Fresh leaves: for fp64, x.double() is x itself, and must not collect these gradients.
    xr, wr = (t.detach().double().clone().requires_grad_() for t in (x, w))
    involution_loops(xr, wr, *case.args()).backward(gy.double())
    xa, wa = (t.detach().double().abs().requires_grad_() for t in (x, w))
    involution_loops(xa, wa, *case.args()).backward(gy.double().abs())
    assert_close_scaled(xc.grad.cpu(), xr.grad, xa.grad, dtype, f"cuda grad_input {case} {dtype}")
    assert_close_scaled(wc.grad.cpu(), wr.grad, wa.grad, dtype, f"cuda grad_weight {case} {dtype}")


@pytest.mark.parametrize("idx", range(len(CASES)))
def test_random_shapes(idx):
    check(CASES[idx], torch.float32, bool(idx % 2), idx)
    check(CASES[idx], torch.float64, not idx % 2, idx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtypes_layouts(dtype, channels_last):
    for i, case in enumerate(CASES[:20]):
        check(case, dtype, channels_last, i)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_special_paths(dtype):
    # 40 channels per group: several shared-memory chunks (fp32 running sums for halves);
    # a dilated 9x9 window too large for shared memory: the global-memory kernels.
    check(Case(B=2, C=80, G=2, H=20, W=24, K=(7, 7), stride=(2, 1), padding=(3, 3), dilation=(1, 1)), dtype, False, 1)
    check(Case(B=1, C=8, G=1, H=60, W=80, K=(9, 9), stride=(1, 1), padding=(48, 48), dilation=(12, 12)), dtype, True, 2)


def test_gradcheck_gradgradcheck():
    case = Case(B=1, C=4, G=2, H=6, W=7, K=(3, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    x, w = to_cuda(*case.tensors(torch.float64))
    x.requires_grad_(), w.requires_grad_()
    fn = lambda x, w: torch.ops.involution.forward(x, w, *case.args())  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_opcheck():
    case = Case(B=2, C=8, G=2, H=7, W=9, K=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    x, w = to_cuda(*case.tensors(torch.float32))
    torch.library.opcheck(torch.ops.involution.forward.default, (x.requires_grad_(), w.requires_grad_(), *case.args()))
    gy = torch.randn(2, 8, *case.out, device="cuda")
    torch.library.opcheck(torch.ops.involution.backward.default, (gy, x.detach(), w.detach(), *case.args(), [True, True]))


def test_compile_dynamic_and_torchscript():
    from test_compile_script_export import Block

    model = Block(stride=2).cuda()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    scripted = torch.jit.script(model)
    for shape in [(2, 8, 12, 12), (3, 8, 10, 14)]:
        x = torch.randn(shape, device="cuda")
        torch.testing.assert_close(compiled(x), model(x))
        torch.testing.assert_close(scripted(x), model(x))


def test_backward_deterministic():
    case = Case(B=2, C=64, G=4, H=30, W=33, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = to_cuda(*case.tensors(torch.float32))
    gy = torch.randn(2, 64, *case.out, device="cuda")
    a = torch.ops.involution.backward(gy, x, w, *case.args(), [True, True])
    b = torch.ops.involution.backward(gy, x, w, *case.args(), [True, True])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_inputs():
    x, w = torch.randn(2, 8, 6, 6, device="cuda"), torch.randn(2, 2, 3, 3, 6, 6, device="cuda")
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.involution.forward(x.cpu(), w, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="must equal the output size"):
        torch.ops.involution.forward(x, w[..., :5], [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.involution.forward(x, w.half(), [1, 1], [1, 1], [1, 1])


def test_non_default_stream_and_cuda_graph():
    case = Case(B=2, C=32, G=2, H=14, W=14, K=(7, 7), stride=(1, 1), padding=(3, 3), dilation=(1, 1))
    x, w = to_cuda(*case.tensors(torch.float32))
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


def test_autocast_cuda_runs_in_half():
    x, w = torch.randn(2, 8, 6, 6, device="cuda"), torch.randn(2, 2, 3, 3, 6, 6, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        y = torch.ops.involution.forward(x, w, [1, 1], [1, 1], [1, 1])
    assert y.dtype == torch.float16


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
