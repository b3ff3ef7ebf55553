"""Building blocks shared by the sub-nets: residual dense blocks and DenseNet blocks."""

from __future__ import annotations

import torch
from torch import nn


class ResidualDenseBlock(nn.Module):
    """RDN's residual dense block: dense 3x3 conv+ReLU units, 1x1 local fusion, residual add.

    No BatchNorm (as in RDN), so the block behaves the same on tiles and whole images.
    """

    def __init__(self, channels: int, growth: int, units: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels + i * growth, growth, 3, padding=1), nn.ReLU(inplace=True))
            for i in range(units)
        )
        self.fuse = nn.Conv2d(channels + units * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for unit in self.units:
            feats.append(unit(torch.cat(feats, dim=1)))
        return x + self.fuse(torch.cat(feats, dim=1))


class DenseBlock(nn.Module):
    """DenseNet block with bottleneck units (1x1 to ``bottleneck*growth``, then 3x3 to ``growth``).

    Output channels: ``in_channels + units * growth``. No BatchNorm, as in the authors' release.
    """

    def __init__(self, in_channels: int, growth: int, units: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels + i * growth, bottleneck * growth, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(bottleneck * growth, growth, 3, padding=1),
                nn.ReLU(inplace=True),
            )
            for i in range(units)
        )
        self.out_channels = in_channels + units * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for unit in self.units:
            feats.append(unit(torch.cat(feats, dim=1)))
        return torch.cat(feats, dim=1)


def conv_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    """Conv (same padding) + ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(inplace=True))
