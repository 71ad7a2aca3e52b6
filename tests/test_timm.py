"""The timm registry with real timm: every depth registered, the pretrained config, converted
checkpoints loaded through pretrained_cfg_overlay, features_only through timm's own wrapper."""

from __future__ import annotations

import pytest
import torch

from helpers import SMALL, import_or_skip

timm = import_or_skip("timm")
import involution_ext.timm as rednet_timm  # noqa: E402
from involution_ext.checkpoint import load_official_checkpoint  # noqa: E402
from involution_ext.convert import convert_paddle_checkpoint  # noqa: E402
from involution_ext.models import rednet, rednet26  # noqa: E402
from official_checkpoints import DEPTHS, write_pdparams  # noqa: E402

TABLE1_PARAMS_M = {26: 9.23, 38: 12.39, 50: 15.54, 101: 25.65, 152: 33.99}


@pytest.mark.parametrize("depth", DEPTHS)
def test_registered_with_default_cfg(depth):
    name = f"rednet{depth}"
    assert name in timm.list_models("rednet*")
    model = timm.create_model(name)
    assert isinstance(model, rednet_timm.TimmRedNet)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(TABLE1_PARAMS_M[depth], abs=0.01)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875 and cfg["num_classes"] == 1000
    assert cfg["first_conv"] == "backbone.stem.0.conv" and cfg["classifier"] == "head.fc"
    assert model.get_submodule(cfg["first_conv"]).in_channels == 3
    assert model.get_submodule(cfg["classifier"]) is model.get_classifier()
    data = timm.data.resolve_data_config({}, model=model)
    assert data["mean"] == pytest.approx((0.485, 0.456, 0.406)) and data["crop_pct"] == 0.875


def test_forward_head_classifier_and_in_chans():
    torch.manual_seed(0)
    model = timm.create_model("rednet26", num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, SMALL, SMALL)
    with torch.no_grad():
        logits = model(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    assert logits.shape == (2, 7) and pooled.shape == (2, 2048)
    torch.testing.assert_close(model.get_classifier()(pooled), logits)
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled)
    model.reset_classifier(3)  # back from no classifier to a new one
    assert model(x).shape == (2, 3) and model.num_classes == 3
    assert timm.create_model("rednet26", num_classes=0)(torch.randn(1, 3, SMALL, SMALL)).shape == (1, 2048)


def test_pretrained_from_converted_checkpoint(tmp_path):
    src, pth = tmp_path / "RedNet26_pretrained.pdparams", tmp_path / "rednet26.pth"
    write_pdparams(src, 26, seed=3)
    convert_paddle_checkpoint(src, pth)
    model = timm.create_model("rednet26", pretrained=True, pretrained_cfg_overlay=dict(file=str(pth))).eval()
    ours = load_official_checkpoint(rednet26(), pth).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ours(x), rtol=0, atol=0)
    # Another class count: timm drops the classifier (named by the config) and loads the rest.
    tuned = timm.create_model("rednet26", pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=str(pth)))
    assert tuned.head.fc.out_features == 5
    assert torch.equal(tuned.backbone.layer3[1].conv2.conv2.conv.bias, ours.backbone.layer3[1].conv2.conv2.conv.bias)


def test_features_only_through_timm_wrapper(tmp_path):
    torch.manual_seed(0)
    features = timm.create_model("rednet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert features.feature_info.channels() == [256, 512, 1024, 2048]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    everything = timm.create_model("rednet26", features_only=True)
    assert everything.feature_info.channels() == [64, 256, 512, 1024, 2048]
    # Same values as our own multi-scale backbone holding the same weights.
    backbone = rednet(50, features_only=True).eval()
    backbone.load_state_dict({k[len("model.backbone."):]: v for k, v in features.state_dict().items()
                              if k.startswith("model.backbone.")})
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        got, want = features(x), backbone(x)
    assert [f.shape[1:] for f in got] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Features up to stage 2 only: the later stages and the head are pruned away.
    early = timm.create_model("rednet26", features_only=True, out_indices=(0, 2))
    assert early.feature_info.channels() == [64, 512]
    assert not list(early.model.backbone.layer4.parameters()) and not list(early.model.head.parameters())
    assert [f.shape[1] for f in early(x)] == [64, 512]


def test_forward_intermediates_and_errors():
    model = timm.create_model("rednet26").eval()
    x = torch.randn(1, 3, SMALL, SMALL)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=2)
        assert [t.shape[1] for t in inter] == [1024, 2048]
        torch.testing.assert_close(final, model.forward_features(x))
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW'"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("rednet26", global_pool="max")
