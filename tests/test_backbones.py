"""Backbones: shapes at strides 4..32, and the pretrained-weights loading paths (no network)."""

import pytest
import torch
from torchvision.models import ResNet34_Weights, resnet34

from pikfix.backbones import WeightsUnavailableError, build_backbone, hub_cache_file


@pytest.mark.parametrize("name,weights", [("convnet", "none"), ("resnet34", "none"), ("efficientnet_lite0", "imagenet")])
def test_feature_pyramid_shapes(name, weights):
    bb = build_backbone(name, weights).eval()
    feats = bb(torch.rand(2, 1, 64, 96) * 2 - 1)
    assert len(feats) == 4
    for f, ch, stride in zip(feats, bb.channels, bb.strides):
        assert f.shape == (2, ch, 64 // stride, 96 // stride)


def test_missing_imagenet_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="never downloads"):
        build_backbone("resnet34", "imagenet")


def test_imagenet_weights_are_read_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = resnet34()
    path = hub_cache_file(ResNet34_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    bb = build_backbone("resnet34", "imagenet")
    assert bb.frozen and "ImageNet" in bb.weights_source
    assert torch.equal(bb.layers[0][0].conv1.weight, reference.layer1[0].conv1.weight)


def test_explicit_weights_file(tmp_path):
    reference = resnet34()
    path = tmp_path / "r34.pth"
    torch.save(reference.state_dict(), path)
    bb = build_backbone("resnet34", str(path))
    assert torch.equal(bb.stem[0].weight, reference.conv1.weight)
    with pytest.raises(WeightsUnavailableError, match="not found"):
        build_backbone("resnet34", str(tmp_path / "missing.pth"))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vit", "none")
