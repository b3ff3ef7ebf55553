"""Similarity sub-net (paper 3.2, eq. 1-2) and the warp of reference histograms.

Features of the grey input and grey reference come from a backbone at four levels; each
level is projected to C channels; for each of the four target scales i, eq. 1 mixes the four
levels with learnable per-scale coefficients A_i, aligns them to scale i and fuses them with
one shared convolution W.  Eq. 2: cosine similarity of the mean-centred features, then a
softmax over reference positions.  The softmax rows warp the reference SPHist onto the input
grid; the best cosine per input position is the confidence the colorizer uses to know when
the reference does not match.

Several references (``pikfix fix --top-k``) are one pool: the positions of all K references
are concatenated, so each input position attends over every reference at once and takes its
colour from whichever matches it best (as MROPM argues).  Each reference is mean-centred on
its own, so with K = 1 this is exactly eq. 2.

The similarity matrix has (H_i W_i) x (sum_k H'_k,i W'_k,i) entries, so it is evaluated in
chunks of input rows sized by ``max_matrix_elements``: memory stays bounded at any working
size and any number of references.  Chunks are also kept to ``CACHE_ELEMENTS``: a chunk's
similarities, softmax and weighted sum then stay in the CPU's caches, which halves the time of
the finest scale at 512 px with one reference (same values: each row is computed alike).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pikfix.backbones import Backbone, build_backbone, resize_like
from pikfix.config import SimilarityConfig

NUM_SCALES = 4
CACHE_ELEMENTS = 1 << 22  # similarity entries per chunk at most (16 MiB of float32)


class SimilarityNet(nn.Module):
    """Multi-scale similarity between a grey input and a grey reference."""

    def __init__(self, cfg: SimilarityConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone: Backbone = build_backbone(cfg.backbone, cfg.backbone_weights, cfg.backbone_widths)
        c = cfg.channels
        self.project = nn.ModuleList(nn.Conv2d(ch, c, 1) for ch in self.backbone.channels)
        # A_i in eq. 1: one weight per (target scale, feature level), initialised to 1.
        self.level_weights = nn.Parameter(torch.ones(NUM_SCALES, len(self.backbone.channels)))
        # W in eq. 1: shared across scales.
        self.mix = nn.Conv2d(len(self.backbone.channels) * c, c, 3, padding=1)

    def embed(self, grey: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """M_i of eq. 1 for each target size: (B, C, H_i, W_i)."""
        levels = [proj(f) for proj, f in zip(self.project, self.backbone(grey))]
        out = []
        for i, size in enumerate(sizes):
            aligned = [resize_like(self.level_weights[i, j] * f, size) for j, f in enumerate(levels)]
            out.append(self.mix(torch.cat(aligned, dim=1)))
        return out

    def forward(
        self,
        grey: torch.Tensor,
        ref_greys: Sequence[torch.Tensor],
        ref_hists: Sequence[Sequence[torch.Tensor]],
        sizes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Warp the histograms of K references onto ``sizes``; reference k has ``ref_greys[k]``
        (B, 1, H'_k, W'_k) and ``ref_hists[k][i]`` (B, K2, H'_k,i, W'_k,i) at scale i.

        Returns (warped histograms (B, K2, H_i, W_i), confidences (B, 1, H_i, W_i) in [-1, 1]).
        """
        if not ref_greys or len(ref_greys) != len(ref_hists):
            raise ValueError("give one or more references, each with its histograms")
        feats = self.embed(grey, sizes)
        ref_feats = [
            self.embed(g, [tuple(h.shape[-2:]) for h in hists])  # type: ignore[misc]
            for g, hists in zip(ref_greys, ref_hists)
        ]
        warped, confidence = [], []
        for i, f in enumerate(feats):
            w, c = warp(f, [rf[i] for rf in ref_feats], [h[i] for h in ref_hists], self.cfg.temperature,
                        self.cfg.max_matrix_elements)
            warped.append(w)
            confidence.append(c)
        return warped, confidence


def _centre_normalise(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, HW, C): subtract the mean feature vector, unit length per position."""
    flat = f.flatten(2).transpose(1, 2)
    flat = flat - flat.mean(dim=1, keepdim=True)
    return F.normalize(flat, dim=2, eps=1e-6)


def similarity_rows(query: torch.Tensor, ref: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 for a block of query positions: (B, Q, C) x (B, R, C) -> softmax rows (B, Q, R), max cosine (B, Q).

    Always float32, also under bf16 autocast: a sharp softmax over bf16 cosines warps 2-5 % off.
    """
    with torch.autocast(query.device.type, enabled=False):
        cos = torch.bmm(query.float(), ref.float().transpose(1, 2))
        return torch.softmax(cos / temperature, dim=2), cos.amax(dim=2)


def warp(
    feat: torch.Tensor,
    ref_feats: Sequence[torch.Tensor],
    ref_hists: Sequence[torch.Tensor],
    temperature: float,
    max_elements: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-weighted average of reference histograms for every input position, in chunks.

    The positions of all references form one pool of R = sum_k H'_k W'_k keys.
    """
    b, _, h, w = feat.shape
    query = _centre_normalise(feat)
    ref = torch.cat([_centre_normalise(rf) for rf in ref_feats], dim=1)  # (B, R, C)
    hist = torch.cat([rh.flatten(2).transpose(1, 2) for rh in ref_hists], dim=1)  # (B, R, K2)
    rows = max(1, min(max_elements, CACHE_ELEMENTS) // max(1, ref.shape[1] * b))
    hist = hist.float()
    # Each chunk's result is copied into place and freed at once: small results kept alive between
    # the chunks' large temporaries fragment the heap (a 512 px photo grew the process by 0.75 GB).
    warped = torch.empty(b, query.shape[1], hist.shape[2], dtype=torch.float32, device=feat.device)
    conf = torch.empty(b, query.shape[1], dtype=torch.float32, device=feat.device)
    for start in range(0, query.shape[1], rows):
        attn, best = similarity_rows(query[:, start : start + rows], ref, temperature)
        with torch.autocast(attn.device.type, enabled=False):
            warped[:, start : start + rows] = torch.bmm(attn, hist)
        conf[:, start : start + rows] = best
    return warped.transpose(1, 2).reshape(b, -1, h, w), conf.reshape(b, 1, h, w)
