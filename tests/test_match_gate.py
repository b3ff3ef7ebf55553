"""The chroma gate on how well the references match the photo (``pikfix.pipeline.MATCH_GATE``):
its curve, the score of a reference that is the photo itself against an unrelated one, and the
scaling of the predicted chroma."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pikfix import pipeline as P
from pikfix.color import rgb_to_lab
from pikfix.model import build_model


def test_the_gate_is_one_for_good_matches_and_the_floor_for_poor_ones() -> None:
    lo, hi, floor = P.MATCH_GATE
    assert P.match_gate(None) == 1.0 and P.match_gate(hi) == 1.0 and P.match_gate(1.0) == 1.0
    assert P.match_gate(lo) == pytest.approx(floor) and P.match_gate(0.0) == pytest.approx(floor)
    assert P.match_gate((lo + hi) / 2) == pytest.approx((1 + floor) / 2)


def _scene(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 16.0
    base = 0.5 + 0.3 * np.sin(x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(0.5, 2))
    return np.clip(base[..., None] * rng.uniform(0.5, 1.0, 3), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def pipe() -> P.FixPipeline:
    return P.FixPipeline(build_model("tiny").eval(), "cpu", tile=64, tile_overlap=16)


def test_the_photo_itself_matches_better_than_an_unrelated_photo(pipe: P.FixPipeline) -> None:
    photo = _scene(0)
    checker = np.kron((np.indices((6, 8)).sum(0) % 2), np.ones((16, 16)))[..., None] * np.array([0.9, 0.2, 0.1])
    l_norm = pipe.prepare_reference(photo).l
    itself = pipe.reference_match(l_norm, [pipe.prepare_reference(photo)])
    other = pipe.reference_match(l_norm, [pipe.prepare_reference(checker.astype(np.float32))])
    assert itself is not None and other is not None
    assert itself > P.MATCH_GATE[1] and other < itself - 0.1
    # Several references: the best one counts; a hand-built one (no descriptor) is trusted.
    both = pipe.reference_match(l_norm, [pipe.prepare_reference(checker.astype(np.float32)), pipe.prepare_reference(photo)])
    assert both == pytest.approx(itself, abs=1e-5)
    trusted = dataclasses.replace(pipe.prepare_reference(photo), descriptor=None)
    assert pipe.reference_match(l_norm, [trusted]) is None


def test_a_poor_match_scales_the_chroma(pipe: P.FixPipeline, monkeypatch) -> None:
    photo, ref = _scene(1), _scene(2)
    l = rgb_to_lab(torch.from_numpy(photo).permute(2, 0, 1)[None])[0, 0].numpy()
    reference = pipe.prepare_reference(ref)
    trusted = dataclasses.replace(reference, descriptor=None)

    def chroma(rgb: np.ndarray) -> np.ndarray:
        return rgb_to_lab(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None])[0, 1:].numpy()

    monkeypatch.setattr(P, "MATCH_GATE", (2.0, 3.0, 0.5))  # every score is poor: half the chroma
    full = chroma(pipe.colorize(l, trusted)[0])
    halved = chroma(pipe.colorize(l, reference)[0])
    assert np.abs(full).mean() > 1.0
    np.testing.assert_allclose(halved, 0.5 * full, atol=0.6)
