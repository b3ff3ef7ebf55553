"""Grey-image descriptors for picking a colour reference (paper 3.5).

The paper compares a grey input with colour candidates through deep-feature statistics, as
DISTS does: per-channel *means* of feature maps measure texture similarity and their
*spread* measures structure similarity; a weighted sum of the two ranks the candidates.
The query is grey, so candidates are embedded grey too (as Gray-Image-Retrieval does).

One image gives two arrays:

- ``vectors``: for each tapped layer, the channel means and the channel standard deviations,
  each block L2-normalised and scaled by ``1/sqrt(2 * layers)``. The inner product of two
  vectors is therefore ``0.5 * texture + 0.5 * structure``, where ``texture`` (``structure``)
  is the mean over layers of the cosine between channel means (standard deviations). That
  is what FAISS searches, and ``similarity`` splits it back into the two terms.
- ``thumbs``: a 16x16 grey thumbnail, mean-removed and L2-normalised. Feature statistics
  ignore where things are; the thumbnail's correlation is a layout cue that finds
  near-duplicates (the same photo in colour) even when the query is badly damaged.

Choices, measured on 148 colour photos with damaged grey queries (own original found at rank 1;
P@1 = the best other photo shares the query's category; ``benchmarks/retrieval_bench.py``
reports the shipped configuration): ImageNet EfficientNet-lite0 statistics beat random-weight
VGG19 (P@1 0.81 vs 0.46) at a twelfth of the cost, so they are the offline default. A Gaussian
blur (sigma 1 px at 224 px) before the network keeps grain and JPEG noise from shifting the
statistics (harshly damaged queries: own original 0.45 -> 0.53, P@1 0.62 -> 0.70; lightly
damaged: 1.00 either way, P@1 0.84 -> 0.85). The thumbnail inside the FAISS vector cost P@1,
so it only enters the re-ranking, and only when strongly correlated (``pikfix.retrieval.store``).

A feature id names everything that changes the numbers (network, weights, taps, input size,
blur, statistics); stores record it so descriptors of different kinds are never compared.
Bump the ``-vN`` suffix whenever any of it changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from pikfix.backbones import VGG19Features, build_backbone

INPUT_SIZE = 224  # the networks' ImageNet training size; EfficientNet-lite expects exactly this
BLUR_SIGMA = 1.0  # px at INPUT_SIZE: suppresses grain/JPEG noise that shifts early-layer statistics
THUMB_SIZE = 16

EFFNET_FEATURES = "effnet-lite0-stats-v1"
VGG19_FEATURES = "vgg19-stats-v1"
DEFAULT_FEATURES = EFFNET_FEATURES
FEATURE_ALIASES = {"effnet-lite0": EFFNET_FEATURES, "vgg19": VGG19_FEATURES}
FEATURE_IDS = (EFFNET_FEATURES, VGG19_FEATURES)


def resolve_features(name: str) -> str:
    """A feature id from an id or its short alias ("effnet-lite0", "vgg19")."""
    feature_id = FEATURE_ALIASES.get(name, name)
    if feature_id not in FEATURE_IDS:
        known = ", ".join([*FEATURE_ALIASES, *FEATURE_IDS])
        raise ValueError(f"unknown features {name!r}; choose one of {known}")
    return feature_id


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class Descriptors:
    """Descriptors of a batch of images (see the module docstring)."""

    vectors: np.ndarray  # (B, D) float32, unit norm
    thumbs: np.ndarray  # (B, THUMB_SIZE**2) float32, zero mean, unit norm (or all zero if flat)


# relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 of torchvision's ``vgg19().features`` (the paper's 3.5).
VGG19_RETRIEVAL_TAPS = (3, 8, 17, 26, 35)
VGG19_RETRIEVAL_CHANNELS = (64, 128, 256, 512, 512)


def _build_network(feature_id: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The frozen network of a feature id and its tapped channel counts."""
    if feature_id == EFFNET_FEATURES:
        backbone = build_backbone("efficientnet_lite0", weights="imagenet")
        return backbone, tuple(backbone.channels)
    return VGG19Features(VGG19_RETRIEVAL_TAPS, "imagenet"), VGG19_RETRIEVAL_CHANNELS


def prepare_grey(l: torch.Tensor) -> torch.Tensor:
    """Normalised L (..., H, W) at any size -> (1, INPUT_SIZE, INPUT_SIZE), ready for ``embed``.

    Cheap enough for a CPU decoding thread, so batches reaching the network are already small.
    The image is squeezed to a square: query and reference photos are usually of similar shape,
    and the statistics barely depend on the aspect ratio.
    """
    x = l.reshape(1, 1, *l.shape[-2:]).float()
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    kernel = 2 * int(np.ceil(3 * BLUR_SIGMA)) + 1
    return TF.gaussian_blur(x, [kernel, kernel], [BLUR_SIGMA, BLUR_SIGMA])[0]


class DescriptorExtractor:
    """Embeds batches of prepared grey images with one frozen network on one device."""

    def __init__(self, features: str = DEFAULT_FEATURES, device: torch.device | str = "cpu") -> None:
        """Raises ``WeightsUnavailableError`` when the network's pretrained weights are missing."""
        self.feature_id = resolve_features(features)
        self.device = torch.device(device)
        network, channels = _build_network(self.feature_id)
        self.network = network.to(self.device)
        self.layer_channels: tuple[int, ...] = channels
        self.dim = 2 * sum(channels)

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> Descriptors:
        """(B, 1, INPUT_SIZE, INPUT_SIZE) from ``prepare_grey`` -> descriptors on the CPU."""
        x = batch.to(self.device, torch.float32)
        scale = (2 * len(self.layer_channels)) ** -0.5
        blocks = []
        for fmap in self.network(x):
            flat = fmap.float().flatten(2)
            blocks.append(F.normalize(flat.mean(dim=2), dim=1) * scale)
            blocks.append(F.normalize(flat.std(dim=2), dim=1) * scale)
        thumbs = F.adaptive_avg_pool2d(x, THUMB_SIZE).flatten(1)
        thumbs = F.normalize(thumbs - thumbs.mean(dim=1, keepdim=True), dim=1)
        return Descriptors(
            vectors=torch.cat(blocks, dim=1).cpu().numpy(),
            thumbs=thumbs.cpu().numpy(),
        )


def similarity(
    query: np.ndarray, candidates: np.ndarray, layer_channels: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(texture, structure) similarities of one query vector (D,) to candidate vectors (N, D).

    Undoes the block scaling of ``embed``: each block's dot product, times ``2 * layers``,
    is that layer's cosine; texture averages the mean-blocks, structure the std-blocks.
    """
    layers = len(layer_channels)
    cosines = []
    start = 0
    for c in layer_channels:
        for _ in ("mean", "std"):
            cosines.append(candidates[:, start : start + c] @ query[start : start + c] * (2 * layers))
            start += c
    per_block = np.stack(cosines, axis=1)  # (N, 2 * layers): mean, std, mean, std, ...
    return per_block[:, 0::2].mean(axis=1), per_block[:, 1::2].mean(axis=1)
