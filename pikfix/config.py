"""Model configuration: JSON-serialisable dataclasses and the named presets.

A checkpoint stores this config next to its weights, so a model can always be rebuilt
exactly, without pickle and without the code that trained it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def reject_unknown_keys(data: Mapping[str, Any], kind: type, what: str) -> None:
    """Raise ValueError naming keys of ``data`` that are not fields of dataclass ``kind``: a typo
    in a config file must be an error, not a setting silently ignored."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
        raise ValueError(f"unknown {what} key(s): {', '.join(unknown)}")


# Restoration tile, px (each with context around it). A 1024 px tile's activations made the
# process grow by 0.67 GB, a 768 px one's by 0.46 GB (24 MP `fix`: peak RSS 1.61-1.62 ->
# 1.42-1.45 GiB); 1 MP takes the same time (2.2 s) and the cracks 2048 bench gives the same
# figures to 0.001 dB. Shared by the pipeline and the CLI, which must not import torch.
DEFAULT_TILE = 768


@dataclass
class RestorationConfig:
    """Multi-level residual dense network (paper 3.1)."""

    channels: int = 64  # feature width of every level
    growth: int = 32  # dense growth rate
    blocks: int = 3  # residual dense blocks per level
    units: int = 4  # dense units per block
    scales: tuple[int, ...] = (1, 4, 8)  # input scale of each level (full, 1/4, 1/8)
    detector_width: int = 0  # width of the damage detector (mask head); 0: none, the paper's net
    unshuffle: int = 1  # the finest level works on r x r pixel blocks (1: at full resolution, as the paper)
    detector_tophat: int = 0  # > 0: the detector also sees L's top-hats with this square (px, odd)
    detector_threshold: float = 0.0  # > 0: the detector's mask is its probability above this, grown 1 px; 0: soft
    repair_margin: int = -1  # >= 0: the repair changes only pixels within this many px of the mask; -1: everywhere
    tone_width: int = 0  # hidden width of the whole-photo tone head (pikfix.nets.tone); 0: none
    denoiser_width: int = 0  # width of the learned denoiser run after the repair (pikfix.nets.denoise); 0: none
    denoiser_depth: int = 6  # its 3 x 3 convolutions
    sharpener_width: int = 0  # width of the sharpener run after the denoiser (pikfix.nets.denoise.Sharpener); 0: none
    sharpener_depth: int = 6  # its 3 x 3 convolutions
    colour_tone_width: int = 0  # hidden width of the colour photos' fade correction (pikfix.nets.colour_tone); 0: none


@dataclass
class SimilarityConfig:
    """Similarity sub-net (paper 3.2, eq. 1-2)."""

    backbone: str = "resnet34"  # resnet34, efficientnet_lite0, vgg19 or convnet (pikfix.backbones)
    backbone_weights: str = "none"  # "none" (train from scratch), "imagenet" or a file path
    backbone_widths: tuple[int, ...] = (32, 48, 64, 96)  # only for the "convnet" backbone
    channels: int = 64  # common width C of the projected features
    temperature: float = 0.01  # softmax temperature over cosine similarities
    max_matrix_elements: int = 1 << 24  # bounds memory: query rows per chunk = this / ref positions


@dataclass
class ColorizationConfig:
    """Dense U-Net colorization sub-net with SPHist fusion (paper 3.3)."""

    stem: int = 64
    growth: int = 32
    bottleneck: int = 4
    block_units: tuple[int, ...] = (6, 12, 24, 16)  # dense units per encoder block (1/4..1/32)
    widths: tuple[int, ...] = (128, 256, 512, 1024)  # encoder widths at 1/4, 1/8, 1/16, 1/32
    fusion_units: int = 6  # dense units in each fusion block
    decoder_units: int = 4  # dense units in each decoder residual dense block
    bins: int = 256  # SPHist bins per chroma channel
    sigma: float = 0.1  # SPHist Gaussian spread (paper: 0.1)
    hist_stride: int = 2  # SPHist computed on reference ab average-pooled by this factor


@dataclass
class ModelConfig:
    """The whole Pik-Fix model."""

    preset: str = "paper"
    restoration: RestorationConfig = field(default_factory=RestorationConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    colorization: ColorizationConfig = field(default_factory=ColorizationConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Rebuild from ``to_dict`` output; unknown keys are an error, not silently dropped."""
        reject_unknown_keys(data, cls, "model config")
        return cls(
            preset=str(data.get("preset", "custom")),
            restoration=_sub(RestorationConfig, data.get("restoration", {}), "restoration"),
            similarity=_sub(SimilarityConfig, data.get("similarity", {}), "similarity"),
            colorization=_sub(ColorizationConfig, data.get("colorization", {}), "colorization"),
        )


def _sub(kind: type, data: dict[str, Any], section: str) -> Any:
    reject_unknown_keys(data, kind, f"model config section {section!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return kind(**values)


def _paper() -> ModelConfig:
    """Close to the paper's sizes (DenseNet 6/12/24/16 encoder, 256 bins), plus the damage
    detector, the tone head, the denoiser and the sharpener. The paper's ImageNet ResNet34 installs nowhere offline, so the similarity sub-net
    uses ImageNet VGG19 (Oxford's, ``make weights``), the correspondence features of He et al.
    (2018), frozen."""
    return ModelConfig(
        preset="paper",
        restoration=RestorationConfig(
            detector_width=32, tone_width=64, denoiser_width=32, sharpener_width=48, sharpener_depth=10
        ),
        similarity=SimilarityConfig(backbone="vgg19", backbone_weights="imagenet"),
    )


def _lite() -> ModelConfig:
    """Small enough for CPU use: narrow sub-nets, 32 bins, the offline ImageNet EfficientNet-lite0
    (it warped references better than VGG19 at a sixth of the time: benchmarks/warp_backbones.py)."""
    return ModelConfig(
        preset="lite",
        restoration=RestorationConfig(
            channels=32, growth=16, blocks=2, units=3, detector_width=32, detector_tophat=17, unshuffle=2, tone_width=64,
            denoiser_width=32, sharpener_width=48, sharpener_depth=10,
        ),
        similarity=SimilarityConfig(
            backbone="efficientnet_lite0", backbone_weights="imagenet", channels=32, temperature=0.05
        ),
        colorization=ColorizationConfig(
            stem=24, growth=12, bottleneck=2, block_units=(2, 3, 4, 3), widths=(32, 64, 96, 128),
            fusion_units=2, decoder_units=2, bins=32, sigma=0.1, hist_stride=2,
        ),
    )


def _tiny() -> ModelConfig:
    """For tests and smoke runs only: smallest widths, a from-scratch backbone, no downloads."""
    return ModelConfig(
        preset="tiny",
        restoration=RestorationConfig(channels=8, growth=4, blocks=1, units=2, detector_width=4, tone_width=8),
        similarity=SimilarityConfig(backbone="convnet", backbone_widths=(8, 12, 16, 16), channels=8),
        colorization=ColorizationConfig(
            stem=8, growth=4, bottleneck=2, block_units=(1, 1, 1, 1), widths=(8, 12, 16, 16),
            fusion_units=1, decoder_units=1, bins=8, sigma=0.2, hist_stride=2,
        ),
    )


PRESETS = {"paper": _paper, "lite": _lite, "tiny": _tiny}


def preset_config(name: str) -> ModelConfig:
    """A fresh config for a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
