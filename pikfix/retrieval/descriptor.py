"""Grey-image descriptors for picking a colour reference (paper 3.5).

The paper compares a grey input with colour candidates through deep-feature statistics, as
DISTS does: per-channel *means* of feature maps measure texture similarity and their
*spread* measures structure similarity; a weighted sum of the two ranks the candidates.
The query is grey, so candidates are embedded grey too (as Gray-Image-Retrieval does).

One image gives two arrays:

- ``vectors``: for each tapped layer a texture block (the channel means) and a structure
  block, each L2-normalised and scaled by ``1/sqrt(2 * layers)``. The inner product of two
  vectors is therefore ``0.5 * texture + 0.5 * structure``, where ``texture`` (``structure``)
  is the mean over layers of the cosine between texture (structure) blocks. That is what
  FAISS searches, and ``similarity`` splits it back into the two terms. Structure is:
  - EfficientNet-lite0 (``effnet-lite0``): the channel standard deviations of four stages;
  - VGG19 (``vgg19``, the paper's): the covariance of relu1_1..relu5_1's channels, compressed
    to a fixed length by a fixed seeded random projection of the channels to
    ``STRUCTURE_RANK`` dimensions (``structure_projection``) and flattened as the weighted
    upper triangle, so the block's dot product is the covariances' Frobenius inner product.
    No fitting: a store's vectors never depend on the other photos in it.
- ``thumbs``: a 16x16 grey thumbnail, mean-removed and L2-normalised. Feature statistics
  ignore where things are; the thumbnail's correlation is a layout cue that finds
  near-duplicates (the same photo in colour) even when the query is badly damaged.

Choices, measured on 148 colour photos with damaged grey queries (own original found at rank 1;
P@1 = the best other photo shares the query's category; ``benchmarks/retrieval_bench.py``
compares the descriptors): ImageNet EfficientNet-lite0 statistics beat the Oxford VGG19
Gram/mean statistics (P@1 0.87 vs 0.72 for lightly damaged queries, 0.75 vs 0.67 with the
training damage) at half the indexing cost, so they are the default; VGG19 is the paper's,
for those who want it. VGG19 is fed 192 px (not 224) to index at 3.2 images/s on 2 busy CPU
cores. A Gaussian
blur (sigma 1 px at 224 px) before the network keeps grain and JPEG noise from shifting the
statistics (harshly damaged queries: own original 0.45 -> 0.53, P@1 0.62 -> 0.70; lightly
damaged: 1.00 either way, P@1 0.84 -> 0.85). The thumbnail inside the FAISS vector cost P@1,
so it only enters the re-ranking, and only when strongly correlated (``pikfix.retrieval.store``).

A feature id names everything that changes the numbers (network, weights, taps, input size,
blur, statistics, projection); stores record it (and the weights' source) so descriptors of
different kinds are never compared.
Bump the ``-vN`` suffix whenever any of it changes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from pikfix.backbones import VGG19Features, build_backbone

INPUT_SIZE = 224  # EfficientNet-lite0's ImageNet training size
# VGG19 costs 20x more per pixel: 192 px (0.73x the pixels of 224) keeps indexing above
# 2.5 images/s on 2 busy CPU cores (``benchmarks/retrieval_bench.py``).
VGG19_INPUT_SIZE = 192
BLUR_SIGMA = 1.0  # px at the input size: suppresses grain/JPEG noise that shifts early-layer statistics
THUMB_SIZE = 16
STRUCTURE_RANK = 32  # VGG19 covariances are taken of channels projected to this many dimensions
PROJECTION_SEED = 0

EFFNET_FEATURES = "effnet-lite0-stats-v1"
VGG19_FEATURES = "vgg19-gram-v1"  # Oxford ImageNet weights (the paper's)
VGG19_TORCHVISION_FEATURES = "vgg19-torchvision-gram-v1"  # torchvision's weights from the hub cache
DEFAULT_FEATURES = EFFNET_FEATURES
FEATURE_ALIASES = {
    "effnet-lite0": EFFNET_FEATURES, "vgg19": VGG19_FEATURES, "vgg19-torchvision": VGG19_TORCHVISION_FEATURES,
}
FEATURE_IDS = (EFFNET_FEATURES, VGG19_FEATURES, VGG19_TORCHVISION_FEATURES)


def resolve_features(name: str) -> str:
    """A feature id from an id or its short alias ("effnet-lite0", "vgg19", "vgg19-torchvision")."""
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


# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of ``vgg19().features``: the layers whose Gram
# matrices Gatys et al. use as texture statistics; the trunk stops at relu5_1.
VGG19_RETRIEVAL_TAPS = (1, 6, 11, 20, 29)
VGG19_RETRIEVAL_CHANNELS = (64, 128, 256, 512, 512)


def _build_network(feature_id: str) -> tuple[nn.Module, tuple[int, ...], str]:
    """The frozen network of a feature id, its tapped channel counts and its weights' source."""
    if feature_id == EFFNET_FEATURES:
        backbone = build_backbone("efficientnet_lite0", weights="imagenet")
        return backbone, tuple(backbone.channels), backbone.weights_source
    weights = "imagenet" if feature_id == VGG19_FEATURES else "torchvision"
    trunk = VGG19Features(VGG19_RETRIEVAL_TAPS, weights)
    return trunk, VGG19_RETRIEVAL_CHANNELS, trunk.weights_source


def structure_projection(channels: int, layer: int) -> torch.Tensor:
    """The fixed random projection (channels, STRUCTURE_RANK) of one layer's channels.

    Seeded per layer (numpy's PCG64, stable across platforms), Gaussian with variance
    1/channels: a Johnson-Lindenstrauss sketch, so covariances of the projected channels keep
    the geometry of the full C x C covariances at a fraction of their C^2 / 2 numbers.
    """
    rng = np.random.default_rng([PROJECTION_SEED, layer])
    return torch.from_numpy((rng.standard_normal((channels, STRUCTURE_RANK)) / np.sqrt(channels)).astype(np.float32))


def _upper_triangle(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a symmetric matrix's upper triangle and weights (1 on, sqrt 2 off the diagonal)
    that make the dot product of two flattened triangles their Frobenius inner product."""
    rows, cols = torch.triu_indices(rank, rank)
    return rows * rank + cols, torch.where(rows == cols, 1.0, 2.0**0.5)


def input_size(feature_id: str) -> int:
    """The square side images are squeezed to before the network of a feature id."""
    return INPUT_SIZE if feature_id == EFFNET_FEATURES else VGG19_INPUT_SIZE


def prepare_grey(l: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Normalised L (..., H, W) at any size -> (1, size, size), ready for ``embed``.

    Cheap enough for a CPU decoding thread, so batches reaching the network are already small.
    The image is squeezed to a square: query and reference photos are usually of similar shape,
    and the statistics barely depend on the aspect ratio.
    """
    x = l.reshape(1, 1, *l.shape[-2:]).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    kernel = 2 * int(np.ceil(3 * BLUR_SIGMA)) + 1
    return TF.gaussian_blur(x, [kernel, kernel], [BLUR_SIGMA, BLUR_SIGMA])[0]


class DescriptorExtractor:
    """Embeds batches of prepared grey images with one frozen network on one device."""

    def __init__(self, features: str = DEFAULT_FEATURES, device: torch.device | str = "cpu") -> None:
        """Raises ``WeightsUnavailableError`` when the network's pretrained weights are missing."""
        self.feature_id = resolve_features(features)
        self.device = torch.device(device)
        self.input_size = input_size(self.feature_id)
        network, channels, self.weights_source = _build_network(self.feature_id)
        self.network = network.to(self.device)
        self.covariance = self.feature_id != EFFNET_FEATURES
        if self.covariance:
            self._projections = [structure_projection(c, i).to(self.device) for i, c in enumerate(channels)]
            self._triangle = tuple(t.to(self.device) for t in _upper_triangle(STRUCTURE_RANK))
            structure = STRUCTURE_RANK * (STRUCTURE_RANK + 1) // 2
            self.blocks: tuple[tuple[int, int], ...] = tuple((c, structure) for c in channels)
        else:
            self.blocks = tuple((c, c) for c in channels)
        self.dim = sum(t + s for t, s in self.blocks)

    def embed_grey(self, l_norm: torch.Tensor) -> Descriptors:
        """Descriptors of one photo's normalised L (..., H, W) at any size, prepared as the
        stored photos are (``prepare_grey``)."""
        return self.embed(prepare_grey(l_norm.float().cpu(), self.input_size).unsqueeze(0))

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> Descriptors:
        """(B, 1, S, S) from ``prepare_grey(l, self.input_size)`` -> descriptors on the CPU."""
        x = batch.to(self.device, torch.float32)
        scale = (2 * len(self.blocks)) ** -0.5
        blocks = []
        for i, fmap in enumerate(self.network(x)):
            flat = fmap.float().flatten(2)  # (B, C, N)
            blocks.append(F.normalize(flat.mean(dim=2), dim=1) * scale)
            blocks.append(F.normalize(self._structure(flat, i), dim=1) * scale)
        thumbs = F.adaptive_avg_pool2d(x, THUMB_SIZE).flatten(1)
        thumbs = F.normalize(thumbs - thumbs.mean(dim=1, keepdim=True), dim=1)
        return Descriptors(
            vectors=torch.cat(blocks, dim=1).cpu().numpy(),
            thumbs=thumbs.cpu().numpy(),
        )

    def _structure(self, flat: torch.Tensor, layer: int) -> torch.Tensor:
        """Structure statistics of one layer (B, C, N): channel standard deviations (EfficientNet),
        or the covariance of the projected channels as its weighted upper triangle (VGG19)."""
        if not self.covariance:
            return flat.std(dim=2)
        z = torch.einsum("cr,bcn->brn", self._projections[layer], flat)
        z = z - z.mean(dim=2, keepdim=True)
        cov = torch.bmm(z, z.transpose(1, 2)) / z.shape[2]
        index, weight = self._triangle
        return cov.flatten(1)[:, index] * weight


def shared_extractor(features: str = DEFAULT_FEATURES, device: torch.device | str = "cpu") -> DescriptorExtractor:
    """One extractor per feature id and device for the whole process: the reference store's
    queries and the pipeline's match gate (``pikfix.pipeline.MATCH_GATE``) embed with the same
    network instead of each building and holding its own. Raises ``WeightsUnavailableError``
    (not cached) when the weights are missing."""
    return _extractor(resolve_features(features), torch.device(device))


@functools.lru_cache(maxsize=4)
def _extractor(feature_id: str, device: torch.device) -> DescriptorExtractor:
    return DescriptorExtractor(feature_id, device)


TEXTURE_WEIGHT = 0.5  # score = w * texture + (1 - w) * structure + layout bonus
LAYOUT_THRESHOLD = 0.7  # thumbnail correlations above this are near-duplicate evidence ...
LAYOUT_WEIGHT = 0.5  # ... and add this much per unit above it


def match_scores(
    query: Descriptors, vectors: np.ndarray, thumbs: np.ndarray, blocks: tuple[tuple[int, int], ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(score, texture, structure, layout) of one photo's descriptors against N candidates'
    (``vectors`` (N, D), ``thumbs`` (N, T)): how the reference store ranks, and how the pipeline
    judges a reference it is given (``pikfix.pipeline.MATCH_GATE``)."""
    texture, structure = similarity(query.vectors[0], vectors, blocks)
    layout = thumbs @ query.thumbs[0]
    score = (
        TEXTURE_WEIGHT * texture
        + (1.0 - TEXTURE_WEIGHT) * structure
        + LAYOUT_WEIGHT * np.maximum(layout - LAYOUT_THRESHOLD, 0.0)
    )
    return score, texture, structure, layout


def similarity(
    query: np.ndarray, candidates: np.ndarray, blocks: tuple[tuple[int, int], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(texture, structure) similarities of one query vector (D,) to candidate vectors (N, D).

    ``blocks`` is the (texture, structure) size of each layer (``DescriptorExtractor.blocks``).
    Undoes the block scaling of ``embed``: each block's dot product, times ``2 * layers``, is
    that layer's cosine; texture averages the texture blocks, structure the structure blocks.
    """
    layers = len(blocks)
    cosines = []
    start = 0
    for sizes in blocks:
        for size in sizes:
            cosines.append(candidates[:, start : start + size] @ query[start : start + size] * (2 * layers))
            start += size
    per_block = np.stack(cosines, axis=1)  # (N, 2 * layers): texture, structure, texture, ...
    return per_block[:, 0::2].mean(axis=1), per_block[:, 1::2].mean(axis=1)
