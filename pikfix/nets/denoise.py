"""Denoiser: a small residual CNN that removes noise, grain and JPEG artefacts from restored L.

The repair sub-net returns white noise as it gets it, and an edge-preserving filter with one
strength per photo either leaves the noise of a JPEG-compressed scan (whose flat areas look
clean) or wipes the texture of fur and stone. A CNN sees the local content and the noise's
shape together. This one is DnCNN-like (Zhang et al. 2017) and, as FFDNet does, works on
2 x 2 pixel blocks (pixel unshuffle): four times cheaper than at full resolution, with twice the
receptive field, and, as FFDNet is, it is told the photo's measured noise level as an extra
input plane. It predicts the noise, which is subtracted; its last layer starts at zero, so an
untrained denoiser (as in a fresh ``lite`` model) leaves L as it is, like the tone head and
the repair. Its own training starts that layer at random instead
(``pikfix.training.denoise.with_denoiser``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCK = 2  # px: the net works on BLOCK x BLOCK pixel blocks
DEPTH = 6  # 3 x 3 convolutions, all at 1 / BLOCK resolution (a model's config may name another depth)
SIGMA_SCALE = 10.0  # L units: the noise-level plane holds sigma / SIGMA_SCALE


class Denoiser(nn.Module):
    """L (B, 1, H, W) in [0, 1] (Lab L / 100) and its noise sigma (B,) in L units (``pikfix.denoise.noise_sigma``)
    -> denoised L, same shape (odd sizes padded)."""

    def __init__(self, width: int, depth: int = DEPTH) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be at least 2 convolutions")
        self.halo = 2 * BLOCK * depth  # px of context a strip needs on each side (its receptive field, rounded up)
        c_in = BLOCK * BLOCK
        layers: list[nn.Module] = [nn.Conv2d(c_in + 1, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, c_in, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, l: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h, w = l.shape[-2:]
        x = F.pixel_unshuffle(F.pad(l, (0, w % BLOCK, 0, h % BLOCK), mode="replicate"), BLOCK)
        level = (sigma.to(x.dtype) / SIGMA_SCALE).view(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:])
        noise = F.pixel_shuffle(self.body(torch.cat([x, level], dim=1)), BLOCK)
        return l - noise[..., :h, :w]


class Sharpener(Denoiser):
    """The denoiser's architecture trained on soft L instead
    (``pikfix.training.denoise.sharpen_recipe``): blur, defocus and downscaling with light noise
    and JPEG, and sharp samples kept as they are. It runs after the noise step on grey photos
    (``pikfix.denoise.sharpen``) and is told the noise left on its input, so that it does not
    sharpen grain. A separate net because the denoiser, given a blurred photo, blurs it further
    (validation photos, box blur of 1 px: SSIM 0.821 -> 0.743 at sigma 1)."""
