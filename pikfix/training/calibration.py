"""Fitting the colorizer's confidence gate after training.

A reference that matches the photo poorly makes any colour transfer worse than grey (see the
reference facts).  The similarity confidence says where the match is poor, and the gate
``clamp((confidence - threshold) * slope, 0, 1)`` fades the chroma there.  Its two numbers
are chosen here by grid search on *training* photos, each coloured with several kinds of
reference (a view of itself, the best retrieved other photo, a random other photo), to
minimise the mean L1 error of ab over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pikfix.model import PikFix

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(0, 20))
SLOPES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@dataclass
class GateSample:
    """One photo coloured with one reference, before the gate (all at the working size)."""

    regime: str
    ab: torch.Tensor  # (2, h, w) predicted, normalised
    confidence: torch.Tensor  # (1, h, w) finest-scale confidence, upsampled
    target_ab: torch.Tensor  # (2, h, w) ground truth, normalised


@dataclass
class GateFit:
    threshold: float
    slope: float
    l1_before: dict[str, float]  # mean L1(ab) per regime without the gate
    l1_after: dict[str, float]  # ... with the fitted gate
    l1_grey: dict[str, float]  # ... with no colour at all (a = b = 0), for scale


def _gate(confidence: torch.Tensor, threshold: float, slope: float) -> torch.Tensor:
    return ((confidence - threshold) * slope).clamp(0.0, 1.0)


def _l1_by_regime(samples: list[GateSample], threshold: float, slope: float) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for s in samples:
        err = (s.ab * _gate(s.confidence, threshold, slope) - s.target_ab).abs().mean()
        sums.setdefault(s.regime, []).append(float(err))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def fit_gate(samples: list[GateSample]) -> GateFit:
    """Grid-search threshold and slope minimising the mean (over regimes) L1 error of ab."""
    if not samples:
        raise ValueError("no calibration samples")
    identity = (-1.0, 1000.0)
    best, best_loss = identity, float("inf")
    for threshold in THRESHOLDS:
        for slope in SLOPES:
            per_regime = _l1_by_regime(samples, threshold, slope)
            loss = sum(per_regime.values()) / len(per_regime)
            if loss < best_loss:
                best, best_loss = (threshold, slope), loss
    before = _l1_by_regime(samples, *identity)
    if sum(before.values()) / len(before) <= best_loss:
        best = identity  # gating does not help: keep the colour everywhere
    grey = _l1_by_regime(samples, 2.0, 1.0)  # confidence never exceeds 1: the gate is always 0
    return GateFit(best[0], best[1], before, _l1_by_regime(samples, *best), grey)


def apply_gate(model: PikFix, fit: GateFit) -> None:
    """Store the fitted gate in the model (it is saved with the checkpoint)."""
    model.colorization.gate_threshold.fill_(fit.threshold)
    model.colorization.gate_slope.fill_(fit.slope)
