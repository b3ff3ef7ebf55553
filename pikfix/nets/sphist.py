"""SPHist: the differentiable space-preserving colour histogram (paper 3.3, eq. 3-4).

Each pixel's a (and b) value is softly assigned to K bins with a Gaussian kernel and the
weights are normalised over bins, so the histogram keeps *where* each colour is (H x W x K)
and gradients flow to the learnable bin centres.
"""

from __future__ import annotations

import torch
from torch import nn


class SPHist(nn.Module):
    """ab (B, 2, H, W) in [-1, 1] -> soft histograms (B, 2*K, H, W); a-bins first, then b-bins.

    Bin centres start evenly spread over [-1, 1] (bin midpoints, eq. 4) and are learnable.
    """

    def __init__(self, bins: int, sigma: float = 0.1, v_min: float = -1.0, v_max: float = 1.0) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError("SPHist needs at least 2 bins")
        self.bins = bins
        self.sigma = sigma
        step = (v_max - v_min) / bins
        centres = v_min + step * (torch.arange(bins, dtype=torch.float32) + 0.5)
        self.centres = nn.Parameter(centres.repeat(2, 1))  # (2, K): one set per chroma channel

    def forward(self, ab: torch.Tensor) -> torch.Tensor:
        if ab.dim() != 4 or ab.shape[1] != 2:
            raise ValueError(f"SPHist expects ab shaped (B, 2, H, W), got {tuple(ab.shape)}")
        b, _, h, w = ab.shape
        # (B, 2, 1, H, W) - (1, 2, K, 1, 1): distance of every pixel to every bin centre.
        diff = ab.unsqueeze(2) - self.centres.view(1, 2, self.bins, 1, 1)
        hist = torch.softmax(-(diff * diff) / (2.0 * self.sigma**2), dim=2)
        return hist.reshape(b, 2 * self.bins, h, w)

    def expectation(self, hist: torch.Tensor) -> torch.Tensor:
        """Mean chroma of (warped) histograms (B, 2*K, H, W) -> ab (B, 2, H, W).

        Applied to the warped reference histogram this is a training-free colour transfer,
        which the colorization sub-net refines (see ``ColorizationNet``).
        """
        b, _, h, w = hist.shape
        weights = hist.view(b, 2, self.bins, h, w)
        return (weights * self.centres.view(1, 2, self.bins, 1, 1)).sum(dim=2)

    def pooled(self, ab: torch.Tensor) -> torch.Tensor:
        """Global 1-D histograms (B, 2, K), each summing to 1: for the EMD loss (eq. 7)."""
        hist = self(ab).mean(dim=(2, 3))
        return hist.view(ab.shape[0], 2, self.bins)
