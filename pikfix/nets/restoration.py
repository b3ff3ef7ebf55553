"""Restoration sub-net (paper 3.1): a multi-level residual dense network on the luminance.

The full-resolution image and 4x / 8x average-pooled copies go through their own RDN
level (shallow conv, residual dense blocks, global feature fusion); the coarse levels see
large defects (cracks, tears), the full level fine ones (grain, blur).  Coarse outputs are
upsampled bilinearly, concatenated and fused by convolutions into a residual on the input L.

Fully convolutional with no normalisation layers, so it can run tile by tile on scans of
any size (see ``pikfix.tiling``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pikfix.config import RestorationConfig
from pikfix.nets.blocks import ResidualDenseBlock


class RDNLevel(nn.Module):
    """One RDN level: shallow features, ``blocks`` RDBs, global feature fusion + skip."""

    def __init__(self, cfg: RestorationConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.shallow = nn.Conv2d(1, c, 3, padding=1)
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


class RestorationNet(nn.Module):
    """Degraded L (B, 1, H, W) in [-1, 1] -> restored L, same shape.

    H and W must be multiples of ``multiple`` (the largest level scale); ``PikFix.restore``
    pads to that.
    """

    def __init__(self, cfg: RestorationConfig) -> None:
        super().__init__()
        self.scales = tuple(cfg.scales)
        self.levels = nn.ModuleList(RDNLevel(cfg) for _ in self.scales)
        c = cfg.channels
        self.fuse = nn.Sequential(
            nn.Conv2d(len(self.scales) * c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, 1, 3, padding=1),
        )
        # Zero-initialised residual: an untrained net returns its input unchanged.
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)

    @property
    def multiple(self) -> int:
        return max(self.scales)

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        h, w = l.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"restoration input {h}x{w} must be a multiple of {self.multiple}")
        feats = []
        for scale, level in zip(self.scales, self.levels):
            x = F.avg_pool2d(l, scale) if scale > 1 else l
            f = level(x)
            if scale > 1:
                f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
            feats.append(f)
        return l + self.fuse(torch.cat(feats, dim=1))
