"""Involution2d, RedNet (Tables 1 and 6 of the paper), FLOP counting, dense-prediction options,
official checkpoint loading, heat maps, and RedNet under script / compile / export / autocast."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import involution_ext
from involution_ext import Involution2d
from involution_ext.checkpoint import CheckpointError, load_official_checkpoint
from involution_ext.models import rednet, rednet26, rednet50
from conftest import run_in_fresh_process
from reference_loops import involution_loops

SMALL = 64  # input size for the fast whole-model checks: feature maps 16, 8, 4, 2


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def multiply_adds(model, size=224):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 2  # FlopCounterMode counts 2 FLOPs per multiply-add


# ---------------------------------------------------------------- Involution2d


def eq6_kernel(module: Involution2d, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6 written out in fp64 from the module's parameters: pool, W0, BN (eval), ReLU, W1."""
    x = x.double()
    if module.stride > 1:
        x = F.avg_pool2d(x, module.stride, module.stride, ceil_mode=True)
    if isinstance(module.conv1, torch.nn.Identity):
        hidden = x
    else:
        bn = module.conv1.bn
        w0 = module.conv1.conv.weight.double()[:, :, 0, 0]
        hidden = torch.einsum("oc,bchw->bohw", w0, x)
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        hidden = (hidden - bn.running_mean.double()[:, None, None]) * scale[:, None, None] + bn.bias.double()[:, None, None]
        hidden = hidden.clamp_min(0)
    w1 = module.conv2.conv.weight.double()[:, :, 0, 0]
    k = torch.einsum("oc,bchw->bohw", w1, hidden) + module.conv2.conv.bias.double()[:, None, None]
    B, _, H, W = k.shape
    return k.view(B, module.groups, module.kernel_size, module.kernel_size, H, W)


@pytest.mark.parametrize(
    "channels,kernel_size,stride,group_channels,reduction,dilation,generator,size",
    [
        (32, 7, 1, 16, 4, 1, "bottleneck", (13, 11)),
        (32, 3, 2, 8, 4, 1, "bottleneck", (15, 10)),  # odd size with stride 2
        (16, 5, 1, None, 1, 2, "bottleneck", (9, 9)),
        (24, 3, 1, 4, 2, 1, "linear", (7, 12)),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_involution2d_matches_eq4_eq6(channels, kernel_size, stride, group_channels, reduction, dilation, generator,
                                      size, channels_last):
    torch.manual_seed(0)
    module = Involution2d(channels, kernel_size, stride, group_channels, reduction, dilation, generator)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):  # non-trivial statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    module = module.double().eval()
    x = torch.randn(2, channels, *size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        module = module.to(memory_format=torch.channels_last)
    y = module(x)
    kernel = eq6_kernel(module, x)
    pad = dilation * (kernel_size - 1) // 2
    expected = involution_loops(x, kernel, (stride, stride), (pad, pad), (dilation, dilation))
    assert y.shape == (2, channels, -(-size[0] // stride), -(-size[1] // stride))
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_involution2d_gradients_reach_generator():
    module = Involution2d(16, 3, stride=2, group_channels=4).double()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,), fast_mode=True)
    module(x).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(channels=30, group_channels=16), "multiple of group_channels"),
        (dict(channels=16, generator="mlp"), "generator"),
        (dict(channels=4, group_channels=4, reduction_ratio=8), "reduction_ratio"),
        (dict(channels=64, kernel_size=4), "kernel_size must be a positive odd number .* got 4"),
        (dict(channels=64, kernel_size=0), "kernel_size must be a positive odd number"),
        (dict(channels=64, stride=0), "stride"),
        (dict(channels=64, dilation=0), "dilation"),
    ],
)
def test_involution2d_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Involution2d(**kwargs)


# ---------------------------------------------------------------- Tables 1 and 6, FLOPs

TABLE1 = {26: (9.23, 1.73), 38: (12.39, 2.22), 50: (15.54, 2.71), 101: (25.65, 4.74), 152: (33.99, 6.79)}


@pytest.mark.parametrize("depth", sorted(TABLE1))
def test_table1_params_and_multiply_adds(depth):
    params_m, gmacs = TABLE1[depth]
    model = rednet(depth)
    assert abs(n_params(model) / 1e6 / params_m - 1) < 0.005
    # The paper also counts BN and activations, which FlopCounterMode does not: within 4 %.
    assert abs(multiply_adds(model) / 1e9 / gmacs - 1) < 0.04


TABLE6 = [  # RedNet-50 with the 7x7 conv stem (the ablation setting), millions of parameters
    (dict(kernel_size=3), 14.7), (dict(kernel_size=5), 15.1), (dict(kernel_size=7), 15.5), (dict(kernel_size=9), 16.2),
    (dict(group_channels=1), 30.2), (dict(group_channels=4), 18.5), (dict(group_channels=16), 15.5),
    (dict(group_channels=None), 14.6),
    (dict(generator="linear"), 18.1), (dict(reduction_ratio=1), 19.4), (dict(reduction_ratio=4), 15.5),
    (dict(reduction_ratio=16), 14.6),
]


@pytest.mark.parametrize("kwargs,params_m", TABLE6, ids=[str(k) for k, _ in TABLE6])
def test_table6_params(kwargs, params_m):
    assert abs(n_params(rednet50(stem="conv7x7", **kwargs)) / 1e6 / params_m - 1) < 0.01


def test_flop_formulas_forward_and_backward():
    x = torch.randn(2, 8, 9, 10, requires_grad=True)
    w = torch.randn(2, 2, 3, 5, 5, 10, requires_grad=True)
    macs = 2 * 8 * 5 * 10 * 3 * 5
    with FlopCounterMode(display=False) as counter:
        y = involution_ext.involution2d(x, w, stride=(2, 1), padding=(1, 2))
    assert counter.get_total_flops() == 2 * macs
    with FlopCounterMode(display=False) as counter:
        y.sum().backward()
    assert counter.get_flop_counts()["Global"][torch.ops.involution.backward] == 2 * 2 * macs
    with FlopCounterMode(display=False) as counter:
        torch.autograd.grad(involution_ext.involution2d(x, w.detach(), stride=(2, 1), padding=(1, 2)).sum(), x)
    assert counter.get_flop_counts()["Global"][torch.ops.involution.backward] == 2 * macs


# ---------------------------------------------------------------- dense prediction


def test_features_only_strides_and_channels():
    model = rednet26(features_only=True).eval()
    feats = model(torch.randn(2, 3, SMALL, SMALL))
    assert [tuple(f.shape) for f in feats] == [(2, 256, 16, 16), (2, 512, 8, 8), (2, 1024, 4, 4), (2, 2048, 2, 2)]
    assert model.out_channels == [256, 512, 1024, 2048]
    subset = rednet26(features_only=True, out_indices=(1, 2)).eval()
    subset.load_state_dict(model.state_dict())
    out = subset(torch.randn(2, 3, SMALL, SMALL))
    assert [f.shape[1] for f in out] == [512, 1024]
    with pytest.raises(ValueError, match="out_indices"):
        rednet26(features_only=True, out_indices=(4,))


def test_frozen_stages_and_norm_eval():
    model = rednet26(features_only=True, frozen_stages=1, norm_eval=True)
    model.train()
    frozen = [model.stem, model.layer1]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not sub.training for sub in m.modules())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert model.layer2.training  # the stage trains, its BNs stay in eval
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = model.layer2[0].bn1.running_mean.clone()
    sum(f.sum() for f in model(torch.randn(2, 3, SMALL, SMALL))).backward()
    assert torch.equal(stats, model.layer2[0].bn1.running_mean)
    assert model.layer1[0].conv1.weight.grad is None and model.layer2[0].conv1.weight.grad is not None


# ---------------------------------------------------------------- official checkpoints


def bn_entries(prefix, channels):
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def official_layout(depth, num_classes=1000):
    """Key -> shape, written from the naming rules of the official mmcls checkpoints
    (independently of our modules)."""
    blocks = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}[depth]
    keys = {"stem.0.conv.weight": (32, 3, 3, 3), **bn_entries("stem.0.bn", 32),
            "stem.1.conv1.conv.weight": (8, 32, 1, 1), **bn_entries("stem.1.conv1.bn", 8),
            "stem.1.conv2.conv.weight": (9 * 2, 8, 1, 1), "stem.1.conv2.conv.bias": (9 * 2,),
            **bn_entries("stem.2", 32), "stem.4.conv.weight": (64, 32, 3, 3), **bn_entries("stem.4.bn", 64)}
    cin = 64
    for stage, n in enumerate(blocks):
        cout = 256 * 2**stage
        mid = cout // 4
        for b in range(n):
            p = f"layer{stage + 1}.{b}"
            inp = cin if b == 0 else cout
            keys.update({f"{p}.conv1.weight": (mid, inp, 1, 1), **bn_entries(f"{p}.bn1", mid),
                         f"{p}.conv2.conv1.conv.weight": (mid // 4, mid, 1, 1), **bn_entries(f"{p}.conv2.conv1.bn", mid // 4),
                         f"{p}.conv2.conv2.conv.weight": (49 * (mid // 16), mid // 4, 1, 1),
                         f"{p}.conv2.conv2.conv.bias": (49 * (mid // 16),),
                         **bn_entries(f"{p}.bn2", mid), f"{p}.conv3.weight": (cout, mid, 1, 1), **bn_entries(f"{p}.bn3", cout)})
            if b == 0:
                keys.update({f"{p}.downsample.0.weight": (cout, inp, 1, 1), **bn_entries(f"{p}.downsample.1", cout)})
        cin = cout
    state = {f"backbone.{k}": v for k, v in keys.items()}
    state.update({"head.fc.weight": (num_classes, 2048), "head.fc.bias": (num_classes,)})
    return state


def official_checkpoint(path, depth=26, num_classes=1000, drop=(), extra=(), reshape=None):
    gen = torch.Generator().manual_seed(depth)
    state = {}
    for key, shape in official_layout(depth, num_classes).items():
        if key in drop:
            continue
        if reshape and key in reshape:
            shape = reshape[key]
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.05
    for key in extra:
        state[key] = torch.zeros(3)
    torch.save({"meta": {"mmcls_version": "0.12.0", "epoch": 130}, "state_dict": state}, path)
    return state


@pytest.mark.parametrize("depth", sorted(TABLE1))
def test_official_layout_matches_model_keys(depth):
    ours = {k: tuple(v.shape) for k, v in rednet(depth).state_dict().items()}
    assert ours == official_layout(depth)


def test_load_official_checkpoint_classifier_and_backbone(tmp_path):
    path = tmp_path / "rednet26.pth"
    state = official_checkpoint(path)
    model = load_official_checkpoint(rednet26(), path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    backbone = load_official_checkpoint(rednet26(features_only=True), path)
    assert torch.equal(backbone.layer3[2].conv2.conv2.conv.bias, state["backbone.layer3.2.conv2.conv2.conv.bias"])
    # Fine-tuning: a new head of another size, head keys ignored.
    tuned = load_official_checkpoint(rednet26(num_classes=10), path, ignore_prefixes=("head.",))
    assert torch.equal(tuned.backbone.stem[0].conv.weight, state["backbone.stem.0.conv.weight"])
    assert tuned(torch.randn(1, 3, SMALL, SMALL)).shape == (1, 10)


def test_load_official_checkpoint_reports_every_mismatch(tmp_path):
    path = tmp_path / "bad.pth"
    official_checkpoint(path, drop=("backbone.layer2.1.bn2.running_var",), extra=("backbone.layer9.weight",),
                        reshape={"head.fc.weight": (10, 2048)})
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(rednet26(), path)
    text = str(err.value)
    assert "missing (1): backbone.layer2.1.bn2.running_var" in text
    assert "unexpected (1): backbone.layer9.weight" in text
    assert "head.fc.weight: checkpoint (10, 2048) vs model (1000, 2048)" in text
    official_checkpoint(path, depth=50)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_official_checkpoint(rednet26(), path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _torch_file_that_runs_code(path):
    """A torch zip checkpoint whose data.pkl imports os.system."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as z:
        items = {n: z.read(n) for n in z.namelist()}
    items[next(n for n in items if n.endswith("data.pkl"))] = pickle.dumps({"x": _RunsCode()}, protocol=2)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items.items():
            z.writestr(name, data)


def _truncated(path, legacy=False):
    torch.save({"w": torch.randn(4096)}, path, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zip_without_torch_data(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")


NOT_CHECKPOINTS = {
    "text": (lambda p: p.write_text("notes about the run\nepoch 1\n"), "a text file, not a torch checkpoint"),
    "text with digits": (lambda p: p.write_text("101 102\n"), "a text file, not a torch checkpoint"),
    "json": (lambda p: p.write_text('{"epochs": 8, "lr": 0.1}'), "a JSON file, not a torch checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "binary": (lambda p: p.write_bytes(bytes(range(7, 64))), "binary file that is not a torch checkpoint"),
    "truncated zip": (_truncated, "truncated"),
    "truncated legacy": (lambda p: _truncated(p, legacy=True), "truncated"),
    "zip, not torch": (_zip_without_torch_data, "zip archive but not a torch checkpoint"),
    "plain pickle": (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "pickle file but not a checkpoint of plain tensors"),
    "pickle that runs code": (lambda p: p.write_bytes(pickle.dumps({"x": _RunsCode()})), r"would run code \(posix\.system\)"),
    "torch file that runs code": (_torch_file_that_runs_code, r"would run code \(posix\.system\)"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "missing": (lambda p: None, "no such file"),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_non_checkpoint_gives_one_clear_error(tmp_path, kind):
    """Each kind of file that is not a loadable checkpoint: a CheckpointError naming the file
    and what it is, never a raw IndexError/KeyError nor torch's advice to drop weights_only."""
    make, what = NOT_CHECKPOINTS[kind]
    path = tmp_path / "model.pth"
    make(path)
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(rednet26(), path)
    text = str(err.value)
    assert re.search(what, text), text
    assert str(path) in text and "weights_only` set to `False" not in text and "weights_only=False" not in text
    assert err.value.__cause__ is None  # torch's own message (with that advice) is not chained either


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights\n")
    for cmd in (["-m", "involution_ext", "heatmap", "--image", str(notes), "--out", str(tmp_path / "h.png"),
                 "--checkpoint", str(notes), "--depth", "26"],
                ["-m", "involution_ext.train", "--pretrained", str(notes), "--out", str(tmp_path / "run"),
                 "--max-steps", "1", "--no-progress", "--no-plot"]):
        result = subprocess.run([sys.executable, *cmd], capture_output=True, text=True)
        assert result.returncode == 1, result.stderr[-2000:]
        assert result.stderr.strip() == f"error: {notes} is a text file, not a torch checkpoint (it starts with 'not weights')"


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    from involution_ext._images import load_image
    from involution_ext._optional import MissingDependencyError

    for module in ("PIL", "PIL.Image"):  # None in sys.modules: importing it fails as if absent
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=r"reading images needs Pillow.*pip install 'involution_ext\[viz\]'"):
        load_image("any.png")


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "cut.pth"
    official_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_official_checkpoint(rednet26(), path)


# ---------------------------------------------------------------- RedNet everywhere


def test_rednet50_torchscript_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = torch.jit.script(rednet50(num_classes=10).eval())
    x = torch.randn(1, 3, SMALL, SMALL)
    model.save(str(tmp_path / "rednet50.pt"))
    torch.save(x, tmp_path / "x.pt")
    torch.save(model(x), tmp_path / "y.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        torch.ops.load_library({str(involution_ext.library_path())!r})
        m = torch.jit.load({str(tmp_path / 'rednet50.pt')!r})
        y = m(torch.load({str(tmp_path / 'x.pt')!r}))
        torch.testing.assert_close(y, torch.load({str(tmp_path / 'y.pt')!r}))
        assert 'involution_ext' not in sys.modules
        print('ok')
        """)
    run_in_fresh_process(script, tmp_path)


def test_rednet26_compile_fullgraph():
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_rednet26_export_dynamic_batch():
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    batch = torch.export.Dim("batch", min=1, max=32)
    program = torch.export.export(model, (torch.randn(2, 3, SMALL, SMALL),), dynamic_shapes={"x": {0: batch}})
    x = torch.randn(3, 3, SMALL, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-4, atol=1e-4)


def test_rednet26_channels_last_end_to_end_without_copies():
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        feats = model.backbone(x_cl)
        assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            y = model(x_cl)
    # Layout copies would be copy_/clone/contiguous of 4-D or 6-D tensors (scalar and bias
    # copies inside mean and linear are fine).
    copies = [(e.name, e.input_shapes) for e in prof.events()
              if e.name in ("aten::copy_", "aten::contiguous", "aten::clone")
              and any(len(s) >= 4 for s in e.input_shapes)]
    assert copies == [], copies
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_rednet26_cpu_bf16_autocast():
    torch.manual_seed(0)
    model = rednet26(num_classes=10).eval()
    for m in model.modules():  # the zero-initialised last BNs would hide the residual branches
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.0)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    assert y.dtype == torch.bfloat16
    err = (y.float() - expected).norm() / expected.norm()
    assert err < 0.05, err


def test_rednet26_training_step_all_parameters_get_gradients():
    torch.manual_seed(0)
    model = rednet26(num_classes=10)
    loss = F.cross_entropy(model(torch.randn(4, 3, SMALL, SMALL)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- heat maps


def test_heatmap_sums_kernel_per_group():
    from involution_ext.visualize import kernel_heatmaps

    torch.manual_seed(0)
    model = rednet26().eval()
    x = torch.randn(1, 3, SMALL, SMALL)
    maps, layer = kernel_heatmaps(model, x, "backbone.layer2.0.conv2")
    module = model.get_submodule(layer)
    captured = []
    module.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    with torch.no_grad():
        model(x)
        expected = module.kernel(captured[0])[0].sum(dim=(1, 2))
    assert maps.shape == (128 // 16, 8, 8)  # stride-2 layer: 16x16 -> 8x8
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ValueError, match="not an Involution2d layer"):
        kernel_heatmaps(model, x, "backbone.layer2.0.conv1")


def test_heatmap_cli_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (96, 80), (200, 30, 30)).save(image)
    out = tmp_path / "heat.png"
    # A checkpoint fine-tuned for 10 classes: the heat map needs only the backbone.
    checkpoint = tmp_path / "tuned.pth"
    official_checkpoint(checkpoint, depth=26, num_classes=10)
    result = subprocess.run([sys.executable, "-m", "involution_ext", "heatmap", "--image", str(image), "--out", str(out),
                             "--depth", "26", "--checkpoint", str(checkpoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
