"""Detection with real torchvision: the involution FPN keeps torchvision's FPN interface, the
RedNet FPN backbone freezes what it is asked to, and Faster R-CNN / Mask R-CNN / RetinaNet
train (finite losses, a falling loss on a tiny box set) and predict well-formed outputs."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from helpers import import_or_skip

torchvision = import_or_skip("torchvision")
from torchvision.ops import FeaturePyramidNetwork  # noqa: E402

from involution_ext import Involution2d  # noqa: E402
from involution_ext.detection import (InvolutionFPN, fasterrcnn_rednet50_fpn, maskrcnn_rednet50_fpn,  # noqa: E402
                                      rednet_fpn_backbone, retinanet_rednet50_fpn)
from involution_ext.models import rednet26  # noqa: E402

SIZE = dict(min_size=96, max_size=128)  # small images: the whole detector runs in well under a second


def _targets(n, size=96, masks=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for i in range(n):
        images.append(torch.rand(3, size, size + 16 * i, generator=gen))
        xy = torch.randint(0, size // 2, (2, 2), generator=gen).float()
        boxes = torch.cat([xy, xy + torch.randint(16, size // 2, (2, 2), generator=gen)], dim=1)
        target = {"boxes": boxes, "labels": torch.tensor([1, 2])}
        if masks:
            m = torch.zeros(2, size, size + 16 * i, dtype=torch.uint8)
            for j, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
                m[j, y0:y1, x0:x1] = 1
            target["masks"] = m
        targets.append(target)
    return images, targets


def test_involution_fpn_has_torchvision_fpn_interface():
    torch.manual_seed(0)
    features = OrderedDict(feat0=torch.rand(1, 16, 32, 32), feat2=torch.rand(1, 32, 16, 16), feat3=torch.rand(1, 64, 8, 8))
    conv = FeaturePyramidNetwork([16, 32, 64], 32, extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelMaxPool())
    inv = InvolutionFPN([16, 32, 64], 32, extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelMaxPool())
    a, b = conv(features), inv(features)
    assert list(a) == list(b) == ["feat0", "feat2", "feat3", "pool"]
    assert [t.shape for t in a.values()] == [t.shape for t in b.values()]
    assert all(isinstance(m, Involution2d) and m.kernel_size == 7 for m in inv.layer_blocks)
    # Lateral convs unchanged: the same weights give the same top-level inner result.
    inv.inner_blocks.load_state_dict(conv.inner_blocks.state_dict())
    top = inv.get_result_from_inner_blocks(features["feat3"], 2)
    torch.testing.assert_close(top, conv.get_result_from_inner_blocks(features["feat3"], 2))
    # 4 × (3×3 conv 256→256) replaced by 4 × involution(256, 7): the paper's 2.1 M saved.
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    saved = params(FeaturePyramidNetwork([256, 512, 1024, 2048], 256)) - params(InvolutionFPN([256, 512, 1024, 2048], 256))
    assert saved / 1e6 == pytest.approx(2.09, abs=0.02)


def test_rednet_fpn_backbone_freezing_and_norm_eval(tmp_path):
    backbone = rednet_fpn_backbone(26, trainable_layers=3)
    out = backbone(torch.rand(1, 3, 64, 64))
    assert list(out) == ["0", "1", "2", "3", "pool"] and backbone.out_channels == 256
    assert all(t.shape[1] == 256 for t in out.values())
    backbone.train()
    body = backbone.body
    frozen = [body.stem, body.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in (body.layer2, body.layer3, body.layer4) for p in m.parameters())
    assert all(not m.training for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d))  # norm_eval
    assert backbone.fpn.training
    every = rednet_fpn_backbone(26, trainable_layers=5, norm_eval=False, involution_neck=False).train()
    assert all(p.requires_grad for p in every.parameters())
    assert all(m.training for m in every.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert isinstance(every.fpn.layer_blocks[0], torchvision.ops.misc.Conv2dNormActivation)
    # An ImageNet checkpoint in the official layout loads into the body.
    ckpt = tmp_path / "rednet26.pth"
    classifier = rednet26()
    torch.save({"state_dict": classifier.state_dict()}, ckpt)
    loaded = rednet_fpn_backbone(26, checkpoint=str(ckpt))
    assert torch.equal(loaded.body.layer4[0].conv1.weight, classifier.backbone.layer4[0].conv1.weight)
    with pytest.raises(ValueError, match="trainable_layers"):
        rednet_fpn_backbone(26, trainable_layers=6)
    with pytest.raises(ValueError, match="returned_layers"):
        rednet_fpn_backbone(26, returned_layers=[0, 1])


@pytest.mark.parametrize("builder,masks", [(fasterrcnn_rednet50_fpn, False), (maskrcnn_rednet50_fpn, True),
                                           (retinanet_rednet50_fpn, False)])
def test_detectors_train_and_predict(builder, masks):
    torch.manual_seed(0)
    model = builder(num_classes=3, **SIZE)
    images, targets = _targets(2, masks=masks)
    model.train()
    losses = model(images, targets)
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    if masks:
        expected.add("loss_mask")
    if builder is retinanet_rednet50_fpn:
        expected = {"classification", "bbox_regression"}
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.layer4[0].conv2.conv2.conv.weight.grad is not None
    assert model.backbone.body.stem[0].conv.weight.grad is None  # frozen (trainable_backbone_layers=3)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, img in zip(out, images):
        n = o["boxes"].shape[0]
        assert o["boxes"].shape == (n, 4) and o["scores"].shape == (n,) and o["labels"].shape == (n,)
        if n:
            assert (o["boxes"][:, 2:] >= o["boxes"][:, :2]).all() and o["boxes"][:, 2].max() <= img.shape[2]
        if masks:
            assert o["masks"].shape == (n, 1, *img.shape[1:])
    with pytest.raises(ValueError, match="weights=None"):
        builder(weights="COCO_V1")


def test_faster_rcnn_loss_falls_on_tiny_box_set():
    torch.manual_seed(0)
    # Fewer proposals and sampled boxes than COCO's defaults: a step takes a fraction of a second.
    model = fasterrcnn_rednet50_fpn(num_classes=3, **SIZE, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                                    box_batch_size_per_image=64).train()
    images, targets = _targets(2, seed=1)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    history = []
    for _ in range(8):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert (history[-1] + history[-2]) / 2 < 0.6 * history[0], history
