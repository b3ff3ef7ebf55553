"""The confidence gate: neutral by default, and fitted to fade colour where matches are poor."""

import pytest
import torch

from pikfix.training.calibration import GateSample, apply_gate, fit_gate
from pikfix.model import build_model


def _sample(regime: str, confidence: float, correct: bool) -> GateSample:
    target = torch.full((2, 4, 4), 0.3)
    ab = target.clone() if correct else -target
    return GateSample(regime, ab, torch.full((1, 4, 4), confidence), target)


def test_fit_fades_low_confidence_and_keeps_high_confidence():
    samples = [_sample("matched", 0.9, True) for _ in range(3)] + [_sample("random", 0.4, False) for _ in range(3)]
    fit = fit_gate(samples)
    assert 0.4 <= fit.threshold < 0.9
    assert fit.l1_after["random"] < fit.l1_before["random"]
    assert fit.l1_after["matched"] <= fit.l1_before["matched"] + 1e-6
    assert abs(fit.l1_grey["random"] - 0.3) < 1e-6


def test_fit_never_mutes_matched_colour_to_lower_l1():
    # Matched outputs whose b is wrong: L1 falls steadily as the chroma is muted, so an L1-only
    # fit turns them grey.  The colour floor must keep at least 85 % of the true colourfulness.
    target = torch.tensor([0.2, 0.1]).view(2, 1, 1).expand(2, 4, 4)
    wrong_b = torch.tensor([0.2, -0.3]).view(2, 1, 1).expand(2, 4, 4)
    matched = [GateSample("matched", wrong_b, torch.full((1, 4, 4), c), target) for c in (0.5, 0.6, 0.7)]
    fit = fit_gate(matched)
    assert fit.l1_grey["matched"] < fit.l1_before["matched"]  # grey would win on L1 alone
    assert fit.colour_after >= 0.85 - 1e-6 and fit.colour_after < fit.colour_before
    assert fit.l1_after["matched"] < fit.l1_before["matched"]  # still the best gate the floor allows


def test_fit_needs_matched_samples():
    with pytest.raises(ValueError, match="matched"):
        fit_gate([_sample("random", 0.4, False)])


def test_fit_keeps_the_identity_when_gating_cannot_help():
    fit = fit_gate([_sample("matched", 0.2, True), _sample("matched", 0.9, True)])
    assert (fit.threshold, fit.slope) == (-1.0, 1000.0)


def test_default_gate_is_neutral_and_a_fitted_gate_is_used():
    model = build_model("tiny").eval()
    conf = torch.linspace(-0.99, 1.0, 50).view(1, 1, 5, 10)
    assert torch.equal(model.colorization.gate(conf), torch.ones_like(conf))
    fit = fit_gate([_sample("random", 0.4, False), _sample("matched", 0.9, True)])
    assert fit.colour_after == pytest.approx(1.0)
    apply_gate(model, fit)
    gate = model.colorization.gate(conf)
    assert gate.min() == 0 and gate.max() == 1
