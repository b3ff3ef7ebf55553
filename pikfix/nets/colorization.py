"""Colorization sub-net (paper 3.3): a dense U-Net fed with warped reference histograms.

Encoder: a stem to 1/4 scale, then four DenseNet blocks at 1/4, 1/8, 1/16, 1/32.  After each
block a fusion module takes [features, similarity confidence, warped SPHist], mixes them with
a 3x3 convolution and a residual dense block, and becomes that scale's skip connection; the
reference colour therefore enters at every scale rather than only at the input.  Decoder:
bilinear x2, residual dense block, concatenation with the skip, two 3x3 convolutions; at full
resolution the restored L, the warped reference chroma (the mean of the finest warped SPHist)
and the similarity confidence are concatenated before the final convolution, which predicts a
correction of that warped chroma.  This direct path is our addition to the paper's design: an
untrained model is already a training-free colour transfer (about 30 dB with a matched
reference, see the reference facts), and training learns where to correct or mute it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pikfix.config import ColorizationConfig
from pikfix.nets.blocks import DenseBlock, ResidualDenseBlock, conv_relu


class Fusion(nn.Module):
    """concat[features, confidence, warped SPHist] -> 3x3 conv -> residual dense block."""

    def __init__(self, in_channels: int, hist_channels: int, out_channels: int, growth: int, units: int) -> None:
        super().__init__()
        self.conv = conv_relu(in_channels + 1 + hist_channels, out_channels)
        self.rdb = ResidualDenseBlock(out_channels, growth, units)

    def forward(self, feat: torch.Tensor, confidence: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        return self.rdb(self.conv(torch.cat([feat, confidence, hist], dim=1)))


class UpBlock(nn.Module):
    """Decoder step: bilinear x2 -> 1x1 width change -> RDB -> concat skip -> two 3x3 convs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, growth: int, units: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, 1)
        self.rdb = ResidualDenseBlock(out_channels, growth, units)
        self.merge = nn.Sequential(conv_relu(out_channels + skip_channels, out_channels), conv_relu(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.rdb(self.reduce(x))
        return self.merge(torch.cat([x, skip], dim=1))


class ColorizationNet(nn.Module):
    """(restored L, per-scale warped SPHists and confidences) -> ab in [-1, 1].

    Input H, W must be multiples of 32 (``PikFix`` pads); scales are 1/4, 1/8, 1/16, 1/32.
    """

    def __init__(self, cfg: ColorizationConfig) -> None:
        super().__init__()
        hist_ch = 2 * cfg.bins
        self.stem = nn.Sequential(
            nn.Conv2d(1, cfg.stem, 7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.blocks = nn.ModuleList()
        self.fusions = nn.ModuleList()
        c_in = cfg.stem
        for units, width in zip(cfg.block_units, cfg.widths):
            block = DenseBlock(c_in, cfg.growth, units, cfg.bottleneck)
            self.blocks.append(block)
            self.fusions.append(Fusion(block.out_channels, hist_ch, width, cfg.growth, cfg.fusion_units))
            c_in = width
        widths = list(cfg.widths)
        self.ups = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], widths[i], cfg.growth, cfg.decoder_units) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Sequential(conv_relu(widths[0], cfg.stem), conv_relu(cfg.stem, cfg.stem))
        # Output: a correction of the warped reference colour, from [features, L, warped ab,
        # confidence]. Zero-initialised, so an untrained model starts as a plain colour transfer.
        self.out = nn.Sequential(conv_relu(cfg.stem + 4, cfg.stem), nn.Conv2d(cfg.stem, 2, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        # Confidence gate: chroma is scaled by clamp((confidence - threshold) * slope, 0, 1), so
        # where the reference matches poorly the colour fades to grey instead of going wrong.
        # Fitted after training (``pikfix.training.calibration``); the defaults let everything through.
        self.register_buffer("gate_threshold", torch.tensor(-1.0))
        self.register_buffer("gate_slope", torch.tensor(1000.0))

    def forward(
        self, l: torch.Tensor, hists: list[torch.Tensor], confidences: list[torch.Tensor], prior_ab: torch.Tensor
    ) -> torch.Tensor:
        """``prior_ab``: the warped reference chroma (B, 2, h, w) at any size, e.g. 1/4 scale."""
        x = self.stem(l)
        skips = []
        for i, (block, fusion) in enumerate(zip(self.blocks, self.fusions)):
            if i > 0:
                x = F.avg_pool2d(x, 2)
            x = fusion(block(x), confidences[i], hists[i])
            skips.append(x)
        x = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(x, skip)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.head(x)
        size = l.shape[-2:]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        prior = F.interpolate(prior_ab, size=size, mode="bilinear", align_corners=False)
        conf = F.interpolate(confidences[0], size=size, mode="bilinear", align_corners=False)
        ab = (prior + self.out(torch.cat([x, l, prior, conf], dim=1))).clamp(-1.0, 1.0)
        return ab * self.gate(conf)

    def gate(self, confidence: torch.Tensor) -> torch.Tensor:
        """Chroma multiplier in [0, 1] for a similarity confidence map."""
        return ((confidence - self.gate_threshold) * self.gate_slope).clamp(0.0, 1.0)

    @staticmethod
    def scale_sizes(h: int, w: int) -> list[tuple[int, int]]:
        """Spatial sizes of the four fusion scales for an (H, W) input (multiples of 32)."""
        return [(h // s, w // s) for s in (4, 8, 16, 32)]
