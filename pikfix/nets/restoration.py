"""Restoration sub-net (paper 3.1): a multi-level residual dense network on the luminance.

The full-resolution image and 4x / 8x average-pooled copies go through their own RDN
level (shallow conv, residual dense blocks, global feature fusion); the coarse levels see
large defects (cracks, tears), the full level fine ones (grain, blur).  Coarse outputs are
upsampled bilinearly, concatenated and fused by convolutions into a residual on the input L.

A damage detector (the mask head) marks where the picture's content was destroyed
(scratches, cracks, dust, holes); the levels see that mask as a second input channel, so the
repair knows which pixels to replace and which to keep. A user's own mask can stand in for
the detector's (``pikfix fix --mask``). Without a detector (``detector_width = 0``, the
paper's net) the levels see L alone.

Fully convolutional with no normalisation layers, so it can run tile by tile on scans of
any size (see ``pikfix.tiling``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pikfix.config import RestorationConfig
from pikfix.morphology import max_filter
from pikfix.nets.blocks import ResidualDenseBlock
from pikfix.nets.colour_tone import ColourToneHead
from pikfix.nets.denoise import Denoiser, Sharpener
from pikfix.nets.tone import ToneHead


class RDNLevel(nn.Module):
    """One RDN level: shallow features, ``blocks`` RDBs, global feature fusion + skip."""

    def __init__(self, cfg: RestorationConfig, in_channels: int) -> None:
        super().__init__()
        c = cfg.channels
        self.shallow = nn.Conv2d(in_channels, c, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualDenseBlock(c, cfg.growth, cfg.units) for _ in range(cfg.blocks))
        self.global_fuse = nn.Sequential(nn.Conv2d(cfg.blocks * c, c, 1), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.shallow(x)
        h = shallow
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        return shallow + self.global_fuse(torch.cat(outs, dim=1))


def opening(x: torch.Tensor, size: int) -> torch.Tensor:
    """Grey-scale opening (erosion, then dilation) of (B, C, H, W) with a size x size square:
    removes bright structures narrower than ``size``."""
    return max_filter(-max_filter(-x, size), size)


def tophats(x: torch.Tensor, size: int) -> torch.Tensor:
    """White and black top-hats of (B, 1, H, W): the bright and the dark structures narrower
    than ``size`` (scratches, cracks, dust), as (B, 2, H, W)."""
    return torch.cat([x - opening(x, size), -opening(-x, size) - x], dim=1)


class DamageDetector(nn.Module):
    """Mask head: logits (B, 1, H, W) of "this pixel's content was destroyed".

    Works at half resolution with dilated convolutions (a receptive field of about 70 px, wider
    than the widest crack it is trained on), then sharpens the mask at full resolution with the
    image itself; cheap next to the restoration levels. With ``tophat`` (px, odd) it also sees
    the white and black top-hats of L: thin bright and dark lines and specks stand out in them
    whatever their surroundings, so the convolutions only have to tell defects from the
    photo's own fine structures.
    """

    def __init__(self, width: int, tophat: int = 0) -> None:
        super().__init__()
        self.tophat = tophat
        inputs = 3 if tophat else 1
        layers: list[nn.Module] = [nn.Conv2d(inputs, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        for dilation in (1, 2, 4, 8, 1):
            layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Conv2d(width + inputs, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1)
        )

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        x = torch.cat([l, tophats(l, self.tophat)], dim=1) if self.tophat else l
        coarse = F.interpolate(self.body(x), size=l.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([coarse, x], dim=1))


@dataclass
class RestorationOutput:
    """Restored L, the detector's mask logits (None without a detector) and the mask the repair
    used (the caller's, else the detector's probabilities; None without either)."""

    l: torch.Tensor
    mask_logits: torch.Tensor | None
    mask: torch.Tensor | None

    def crop(self, h: int, w: int) -> "RestorationOutput":
        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[..., :h, :w]

        return RestorationOutput(self.l[..., :h, :w], cut(self.mask_logits), cut(self.mask))


class RestorationNet(nn.Module):
    """Degraded L (B, 1, H, W) in [-1, 1] (+ optional damage mask in [0, 1]) -> restored L.

    H and W must be multiples of ``multiple`` (the largest level scale); ``PikFix.restore``
    pads to that.
    """

    def __init__(self, cfg: RestorationConfig) -> None:
        super().__init__()
        self.scales = tuple(cfg.scales)
        self.unshuffle = cfg.unshuffle
        self.detector = DamageDetector(cfg.detector_width, cfg.detector_tophat) if cfg.detector_width > 0 else None
        self.detector_threshold = cfg.detector_threshold
        # Where the mask says "clean", a repair can only lose detail (JPEG blocks smoothed, fine
        # texture taken for dust): with a margin the residual is kept near the mask alone.
        self.repair_margin = cfg.repair_margin
        # Applied by the caller to the whole photo before tiling (it needs the whole histogram).
        self.tone = ToneHead(cfg.tone_width) if cfg.tone_width > 0 else None
        # Also applied by the caller, after the repair, where the photo shows noise (``pikfix.denoise``).
        self.denoiser = Denoiser(cfg.denoiser_width, cfg.denoiser_depth) if cfg.denoiser_width > 0 else None
        # And after the noise step, where a grey photo is soft (``pikfix.denoise.sharpen``).
        self.sharpener = Sharpener(cfg.sharpener_width, cfg.sharpener_depth) if cfg.sharpener_width > 0 else None
        # For photos with their own colour only, applied by the colour path (``pikfix.colour_input``).
        self.colour_tone = ColourToneHead(cfg.colour_tone_width) if cfg.colour_tone_width > 0 else None
        in_channels = 2 if self.detector is not None else 1
        # The finest level sees r x r blocks of pixels as channels (pixel unshuffle), so every
        # level and the fusion run at 1/r resolution: r^2 times cheaper, no detail lost.
        self.levels = nn.ModuleList(
            RDNLevel(cfg, in_channels * (self.unshuffle**2 if scale == 1 else 1)) for scale in self.scales
        )
        c = cfg.channels
        self.fuse = nn.Sequential(
            nn.Conv2d(len(self.scales) * c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, self.unshuffle**2, 3, padding=1),
        )
        # Zero-initialised residual: an untrained net returns its input unchanged.
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    @property
    def multiple(self) -> int:
        return max(*self.scales, self.unshuffle)

    def forward(self, l: torch.Tensor, mask: torch.Tensor | None = None) -> RestorationOutput:
        """``mask`` (B, 1, H, W), 1 = damaged, replaces the detector's as the repair's guide."""
        self._check_size(l)
        if self.detector is None:  # the paper's net takes no mask: none was used
            return RestorationOutput(self.repair(l, None), None, None)
        logits = self.detector(l)
        if mask is None:
            mask = self.detector_mask(logits)
        return RestorationOutput(self.repair(l, mask), logits, mask)

    def detector_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """The mask the repair follows: the detector's probabilities, or, with a threshold, the
        pixels above it grown by 1 px (a sure mask, as a user's; an unsure detector's soft mask
        would make the repair replace clean texture). Detached: the detector learns from the
        mask's cross-entropy alone, not from whatever mask would make the repair's loss smallest."""
        p = torch.sigmoid(logits).detach()
        if self.detector_threshold <= 0:
            return p
        return F.max_pool2d((p > self.detector_threshold).to(p.dtype), 3, stride=1, padding=1)

    def _check_size(self, l: torch.Tensor) -> None:
        h, w = l.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"restoration input {h}x{w} must be a multiple of {self.multiple}")

    def repair(self, l: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The levels alone: restored L from L and the damage mask guiding them (ignored, and
        may be None, without a detector; with ``repair_margin`` >= 0 it also bounds the change)."""
        self._check_size(l)
        bounded = self.repair_margin >= 0 and mask is not None
        if bounded and not self.training and not bool(mask.any()):
            return l  # nothing within the margin of a mask: the residual would be multiplied by 0
        r = self.unshuffle
        size = (l.shape[-2] // r, l.shape[-1] // r)  # where the levels meet and are fused
        x = l if self.detector is None else torch.cat([l, mask.to(l.dtype)], dim=1)
        feats = []
        for scale, level in zip(self.scales, self.levels):
            if scale > 1:
                # Max-pool the mask: a thin defect must stay visible to the coarse levels.
                pooled = F.avg_pool2d(x[:, :1], scale)
                x_s = pooled if x.shape[1] == 1 else torch.cat([pooled, F.max_pool2d(x[:, 1:], scale)], dim=1)
            else:
                x_s = F.pixel_unshuffle(x, r) if r > 1 else x
            f = level(x_s)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            feats.append(f)
        residual = self.fuse(torch.cat(feats, dim=1))
        residual = F.pixel_shuffle(residual, r) if r > 1 else residual
        if bounded:
            m = mask.to(l.dtype)
            if self.repair_margin:
                m = F.max_pool2d(m, 2 * self.repair_margin + 1, stride=1, padding=self.repair_margin)
            residual = residual * m
        return l + residual
