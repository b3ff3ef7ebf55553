"""The whole Pik-Fix model: restoration -> similarity -> colorization (paper Fig. 2).

All tensors use the paper's normalisation (``pikfix.color``): L in [-1, 1], ab / 110.
Any input size works: inputs are padded (replicating the border) to the multiple each
sub-net needs and outputs are cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pikfix.config import ModelConfig, preset_config
from pikfix.nets.colorization import ColorizationNet
from pikfix.nets.restoration import RestorationNet, RestorationOutput
from pikfix.nets.similarity import SimilarityNet
from pikfix.nets.sphist import SPHist

COLOR_MULTIPLE = 32  # the colorization encoder goes down to 1/32


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom/right edges so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


@dataclass
class PikFixOutput:
    """Restored L, predicted ab, the similarity confidences (finest scale first) and the damage
    detector's mask logits (None without a detector)."""

    l: torch.Tensor
    ab: torch.Tensor
    confidence: list[torch.Tensor]
    mask_logits: torch.Tensor | None = None


class PikFix(nn.Module):
    """Restore a degraded grey photo and colorize it from a colour reference."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cc = config.colorization
        if 4 % cc.hist_stride:
            raise ValueError("colorization.hist_stride must divide 4 (1, 2 or 4)")
        self.config = config
        self.restoration = RestorationNet(config.restoration)
        self.similarity = SimilarityNet(config.similarity)
        self.sphist = SPHist(cc.bins, cc.sigma)
        self.colorization = ColorizationNet(cc)

    def restore(self, l: torch.Tensor, mask: torch.Tensor | None = None) -> RestorationOutput:
        """Degraded L (B, 1, H, W) -> restored L and damage mask, any H and W; ``mask`` (same
        size, 1 = damaged) replaces the detector's."""
        h, w = l.shape[-2:]
        multiple = self.restoration.multiple
        padded_mask = None if mask is None else pad_to_multiple(mask, multiple)
        return self.restoration(pad_to_multiple(l, multiple), padded_mask).crop(h, w)

    def tone_curve(self, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Knots (xs, ys) of the tone curve for normalised L (1, 1, H, W), the whole photo seen
        at once (None without a tone head); ``pikfix.nets.tone.apply_curve`` applies them."""
        tone = self.restoration.tone
        return None if tone is None else tone.curve_for(l)

    def reference_histograms(self, ref_ab: torch.Tensor) -> list[torch.Tensor]:
        """SPHist of the reference chroma at the four fusion scales; ``ref_ab`` is padded to 32."""
        stride = self.config.colorization.hist_stride
        ab = F.avg_pool2d(ref_ab, stride) if stride > 1 else ref_ab
        hist = self.sphist(ab)
        # Averaging soft histograms over a window is the histogram of that window.
        return [F.avg_pool2d(hist, s // stride) for s in (4, 8, 16, 32)]

    def colorize(
        self, l: torch.Tensor, ref_l: torch.Tensor | Sequence[torch.Tensor], ref_ab: torch.Tensor | Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(restored L, reference L, reference ab) -> (ab in [-1, 1], confidences), any sizes.

        ``ref_l`` / ``ref_ab`` are one reference or a sequence of K (each of its own size): the
        similarity sub-net then attends over the positions of all K at once.
        """
        refs_l = [ref_l] if isinstance(ref_l, torch.Tensor) else list(ref_l)
        refs_ab = [ref_ab] if isinstance(ref_ab, torch.Tensor) else list(ref_ab)
        if len(refs_l) != len(refs_ab):
            raise ValueError(f"{len(refs_l)} reference L planes but {len(refs_ab)} ab planes")
        h, w = l.shape[-2:]
        lp = pad_to_multiple(l, COLOR_MULTIPLE)
        sizes = ColorizationNet.scale_sizes(*lp.shape[-2:])
        greys = [pad_to_multiple(r, COLOR_MULTIPLE) for r in refs_l]
        hists = [self.reference_histograms(pad_to_multiple(r, COLOR_MULTIPLE)) for r in refs_ab]
        warped, confidence = self.similarity(lp, greys, hists, sizes)
        prior = self.sphist.expectation(warped[0])
        ab = self.colorization(lp, warped, confidence, prior)[..., :h, :w]
        return ab, confidence

    def forward(
        self, l: torch.Tensor, ref_l: torch.Tensor, ref_ab: torch.Tensor, mask: torch.Tensor | None = None
    ) -> PikFixOutput:
        """End to end, as trained: degraded L + reference Lab -> restored L and its ab."""
        restored = self.restore(l, mask)
        ab, confidence = self.colorize(restored.l, ref_l, ref_ab)
        return PikFixOutput(l=restored.l, ab=ab, confidence=confidence, mask_logits=restored.mask_logits)


def build_model(preset: str | ModelConfig = "lite") -> PikFix:
    """A freshly initialised model from a preset name or a config."""
    config = preset if isinstance(preset, ModelConfig) else preset_config(preset)
    return PikFix(config)
