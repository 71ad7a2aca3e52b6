"""RedNet as a backbone: multi-scale features, frozen stages and frozen BN statistics,
channels_last end to end without layout copies, and a training step reaching every parameter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import SMALL
from involution_ext.models import rednet26


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


def test_rednet26_training_step_all_parameters_get_gradients():
    torch.manual_seed(0)
    model = rednet26(num_classes=10)
    loss = F.cross_entropy(model(torch.randn(4, 3, SMALL, SMALL)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert torch.isfinite(loss)
