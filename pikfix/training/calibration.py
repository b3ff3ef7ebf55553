"""Fitting the colorizer's confidence gate after training.

A reference that matches the photo poorly makes any colour transfer worse than grey (see the
reference facts).  The similarity confidence says where the match is poor, and the gate
``clamp((confidence - threshold) * slope, 0, 1)`` fades the chroma there.  Its two numbers
are chosen by grid search on *validation* photos (the ones the run never trained on), each
coloured with several kinds of reference (a view of itself, the best retrieved training
photo, a random other photo), to minimise the mean L1 error of ab over the kinds.

L1 alone rewards grey: muting every colour a little lowers it (the first fitted gate cut the
chroma of matched references from 18.5 to 14.5 and cost 1.1 dB).  So a gate is only eligible
when, with matched references, the colourfulness (mean chroma) stays within
``MIN_COLOUR_RATIO`` of the ground truth's *or* of the ungated output's, whichever is lower
(a model that under-colours already is not made worse); and no gate at all is always a
candidate, so the net's own use of the confidence wins whenever the gate does not help.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pikfix.model import PikFix

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(0, 20))
SLOPES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
IDENTITY = (-1.0, 1000.0)  # no gate: confidence is always above -1
MIN_COLOUR_RATIO = 0.85  # with matched references, keep colourfulness within 15 %
MATCHED = "matched"


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
    colour_before: float  # matched references: output chroma / ground-truth chroma, no gate
    colour_after: float  # ... with the fitted gate


def _gate(confidence: torch.Tensor, threshold: float, slope: float) -> torch.Tensor:
    return ((confidence - threshold) * slope).clamp(0.0, 1.0)


def _l1_by_regime(samples: list[GateSample], threshold: float, slope: float) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for s in samples:
        err = (s.ab * _gate(s.confidence, threshold, slope) - s.target_ab).abs().mean()
        sums.setdefault(s.regime, []).append(float(err))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _colour_ratio(samples: list[GateSample], threshold: float, slope: float) -> float:
    """Mean output chroma over mean ground-truth chroma, on matched-reference samples."""
    out = sum(float((s.ab * _gate(s.confidence, threshold, slope)).norm(dim=0).mean()) for s in samples)
    truth = sum(float(s.target_ab.norm(dim=0).mean()) for s in samples)
    return out / max(truth, 1e-8)


def fit_gate(samples: list[GateSample]) -> GateFit:
    """Grid-search threshold and slope minimising the mean (over regimes) L1 error of ab,
    among gates that keep matched-reference colour (see the module docstring)."""
    if not samples:
        raise ValueError("no calibration samples")
    matched = [s for s in samples if s.regime == MATCHED]
    if not matched:
        raise ValueError(f"calibration needs {MATCHED!r} samples to check that the gate keeps good colour")
    colour_before = _colour_ratio(matched, *IDENTITY)
    floor = MIN_COLOUR_RATIO * min(1.0, colour_before)

    def mean_l1(gate: tuple[float, float]) -> float:
        per_regime = _l1_by_regime(samples, *gate)
        return sum(per_regime.values()) / len(per_regime)

    best, best_loss = IDENTITY, mean_l1(IDENTITY)
    for threshold in THRESHOLDS:
        for slope in SLOPES:
            loss = mean_l1((threshold, slope))
            if loss < best_loss and _colour_ratio(matched, threshold, slope) >= floor:
                best, best_loss = (threshold, slope), loss
    grey = _l1_by_regime(samples, 2.0, 1.0)  # confidence never exceeds 1: the gate is always 0
    return GateFit(best[0], best[1], _l1_by_regime(samples, *IDENTITY), _l1_by_regime(samples, *best), grey,
                   colour_before, _colour_ratio(matched, *best))


def apply_gate(model: PikFix, gate: GateFit | tuple[float, float]) -> None:
    """Store a fitted gate, or a (threshold, slope) pair such as ``IDENTITY``, in the model
    (it is saved with the checkpoint)."""
    threshold, slope = (gate.threshold, gate.slope) if isinstance(gate, GateFit) else gate
    model.colorization.gate_threshold.fill_(threshold)
    model.colorization.gate_slope.fill_(slope)
