"""Restoration: the damage detector and mask input, the working-scale pipeline, the restoration
pretraining stage, the evaluation damage recipes and the restoration benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pikfix.benchmark import damage as E
from pikfix.benchmark.baselines import median3, tophat_inpaint
from pikfix.benchmark.restoration import classical_methods, model_method, run_restoration_bench
from pikfix.checkpoint import load_checkpoint, save_checkpoint
from pikfix.model import PikFix, build_model
from pikfix.pipeline import FixPipeline
from pikfix.training.degradation import DegradationConfig
from pikfix.training.restoration import (
    RestorationTrainConfig,
    ScanWindowDataset,
    restoration_loss,
    train_restoration,
)
from pikfix.nets.restoration import RestorationOutput


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth grey test picture (L / 100) with edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = 0.5 + 0.3 * np.sin(9 * x + 4 * y) * np.cos(5 * y)
    img[h // 4 : h // 2, w // 3 : w // 2] = 0.2
    return np.clip(img + 0.01 * rng.standard_normal((h, w)), 0, 1).astype(np.float32)


def _photos(folder: Path, n: int = 3, size: tuple[int, int] = (96, 72)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        base = np.stack([_texture(size[1], size[0], i)] * 3, -1) * rng.uniform(0.6, 1.0, 3)
        path = folder / f"p{i}.png"
        Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- evaluation damage


@pytest.mark.parametrize("recipe", E.RECIPES)
def test_eval_recipes_are_seeded_and_their_masks_mark_local_defects(recipe: str) -> None:
    clean = _texture(128, 160)
    a, b = E.damage(clean, recipe, 3), E.damage(clean, recipe, 3)
    assert np.array_equal(a.grey, b.grey) and np.array_equal(a.mask, b.mask)
    assert a.grey.shape == clean.shape and a.mask.dtype == bool
    if recipe == "clean":
        assert np.array_equal(a.grey, clean) and not a.mask.any()
    else:
        assert not np.array_equal(a.grey, clean)
    if recipe == "cracks":  # cracks only: every changed pixel is in the mask
        assert a.mask.any()
        assert np.array_equal(np.abs(a.grey - clean) > E.MASK_CHANGE, a.mask)


def test_an_eval_step_left_out_changes_that_step_alone(monkeypatch) -> None:
    """``eval-no-<step>``: the same mask and the same random draws as ``eval`` (the generator
    ends in the same state), that step's damage absent, and the other steps as drawn."""
    clean = _texture(96, 128)
    calls: dict[str, list[int]] = {"_box_blur": [], "_jpeg": []}  # each call's radius or quality

    def recording(name: str):
        original = getattr(E, name)

        def step(img: np.ndarray, arg: int) -> np.ndarray:
            calls[name].append(arg)
            return original(img, arg)

        return step

    for name in calls:
        monkeypatch.setattr(E, name, recording(name))

    def run(seed: int, leave_out: str | None) -> tuple[E.Damaged, np.random.Generator, dict[str, list[int]]]:
        for made in calls.values():
            made.clear()
        rng = np.random.default_rng(seed)
        return E._eval_recipe(clean, rng, leave_out), rng, {name: list(args) for name, args in calls.items()}

    differs = dict.fromkeys(E.EVAL_STEPS, False)
    for seed in range(8):
        full, full_rng, drawn = run(seed, None)
        for step in E.EVAL_STEPS:
            part, rng, made = run(seed, step)
            assert rng.bit_generator.state == full_rng.bit_generator.state
            assert np.array_equal(part.mask, full.mask)
            assert made["_box_blur"] == ([] if step == "blur" else drawn["_box_blur"])
            assert made["_jpeg"] == ([] if step == "noise" else drawn["_jpeg"])
            differs[step] |= not np.array_equal(part.grey, full.grey)
    assert all(differs.values())
    assert np.array_equal(E.damage(clean, "eval-no-fade", 5).grey, run(5, "fade")[0].grey)
    with pytest.raises(ValueError, match="unknown damage recipe"):
        E.damage(clean, "eval-no-colour", 0)


def test_crack_recipe_widths_follow_the_photo_size() -> None:
    widths = {}
    for side in (512, 2048):
        clean = np.full((side // 2, side), 0.5, dtype=np.float32)
        masks = [E.damage(clean, "cracks", s).mask for s in range(3)]
        # Area over length: length ~ number of columns or rows the cracks cross.
        widths[side] = np.mean([m.sum() / max(1, max(m.any(0).sum(), m.any(1).sum())) for m in masks])
    assert widths[2048] > 2.5 * widths[512]


def test_classical_restorers_remove_a_thin_line_and_keep_flat_areas() -> None:
    clean = np.full((64, 64), 0.4, dtype=np.float32)
    damaged = clean.copy()
    damaged[30:32, :] = 1.0
    for restorer in (tophat_inpaint,):
        out = restorer(damaged)
        assert np.abs(out - clean)[30:32].mean() < 0.05
        assert np.abs(out - clean)[:20].max() < 1e-6
    specks = clean.copy()
    specks[10, 10] = specks[40, 50] = 1.0
    assert np.abs(median3(specks) - clean).max() < 1e-6


def test_restoration_bench_reports_every_method(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", 2)
    model = tmp_path / "tiny.safetensors"
    save_checkpoint(build_model("tiny"), model)
    pipe = FixPipeline.from_checkpoint(model, "cpu", tile=64, tile_overlap=16)
    methods = [*classical_methods(), model_method("tiny", pipe)]
    report = run_restoration_bench(photos, methods, "cracks", 128, tmp_path / "out", seed=1)
    assert set(report["summary"]) == {"input", "median 3x3", "top-hat + inpaint", "tiny"}
    assert report["summary"]["input"]["removed_in"]["mean"] == pytest.approx(0.0)
    assert report["summary"]["top-hat + inpaint"]["removed_in"]["mean"] > 0.3
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["recipe"] == "cracks" and len(saved["per_photo"]) == 2
    assert "| tiny |" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "sheet.jpg").is_file()


# --------------------------------------------------------------------------- pipeline


def test_large_scans_are_repaired_at_the_restore_size_and_keep_their_detail() -> None:
    """Above restore_size the repair runs on a smaller copy: outside the mask only the repair's
    smooth change is added, so an identity net returns the scan exactly (the noise filter, which
    would smooth this noisy texture, is off)."""
    model = build_model("tiny").eval()  # zero-initialised residual: the identity
    pipe = FixPipeline(model, "cpu", tile=64, tile_overlap=16, restore_size=64, denoise=False)
    l = _texture(150, 200) * 100
    restored = pipe.restore_l(l)
    assert restored.l.shape == l.shape and restored.mask.shape == l.shape
    assert 0.0 <= float(restored.mask.min()) and float(restored.mask.max()) <= 1.0
    given = np.zeros((10, 10), dtype=np.float32)  # a user mask of any size: nothing damaged
    restored = pipe.restore_l(l, mask=given)
    assert np.abs(restored.l - l).max() < 1e-3
    assert not restored.mask.any()


def test_user_mask_replaces_the_detectors_at_full_and_at_working_size() -> None:
    model = build_model("tiny").eval()
    torch.nn.init.normal_(model.restoration.fuse[-1].weight, std=0.05)
    l = _texture(90, 120) * 100
    mask = np.zeros((45, 60), dtype=np.float32)
    mask[10:20] = 1.0
    for restore_size in (2048, 64):
        pipe = FixPipeline(model, "cpu", tile=64, tile_overlap=16, restore_size=restore_size)
        restored = pipe.restore_l(l, mask=mask)
        assert restored.mask[25:35].min() > 0.99 and restored.mask[50:].max() < 0.01


# --------------------------------------------------------------------------- training stage


def test_scan_window_samples_have_matching_masks_and_clean_ones_pass_through(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", 2, size=(160, 120))
    cfg = RestorationTrainConfig(crop=32, batch_size=4, steps=2, scan_long_side=(160, 640))
    train = ScanWindowDataset(photos, cfg, train=True)
    a, b = train[3], train[3]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["input_l"].shape == a["target_l"].shape == a["mask"].shape == (1, 32, 32)
    val = ScanWindowDataset(photos, cfg, train=False)
    assert len(val) == 8
    clean = val[3]  # every fourth validation sample is clean
    assert torch.equal(clean["input_l"], clean["target_l"]) and not clean["mask"].any()


def test_native_samples_are_scanned_no_larger_than_the_photo(tmp_path: Path) -> None:
    # A 1 px checkerboard: sharp at the photo's own size, smooth once upscaled.
    board = (np.indices((120, 160)).sum(0) % 2 * 255).astype(np.uint8)
    path = tmp_path / "board.png"
    Image.fromarray(np.stack([board] * 3, -1)).save(path)

    def sharpness(native: float) -> float:
        cfg = RestorationTrainConfig(crop=32, batch_size=4, steps=2, clean_fraction=1.0, scan_long_side=(480, 960),
                                     native_fraction=native)
        windows = [ScanWindowDataset([path], cfg)[i]["target_l"] for i in range(8)]
        return float(torch.stack([(w[..., 1:] - w[..., :-1]).abs().mean() for w in windows]).mean())

    assert sharpness(1.0) > 4 * sharpness(0.0)


def test_restoration_loss_weights_the_mask_and_trains_the_detector() -> None:
    target = torch.zeros(1, 1, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :2, :] = 1.0
    cfg = RestorationTrainConfig(mask_weight=4.0)
    error_inside = RestorationOutput(target + mask * 0.5, torch.zeros_like(mask), None)
    error_outside = RestorationOutput(target + (1 - mask) * 0.5 * (16 / 48), torch.zeros_like(mask), None)
    # The same total absolute error costs more inside the mask.
    _, terms_in = restoration_loss(error_inside, target, mask, cfg)
    assert terms_in["l1"] > 2 * restoration_loss(error_outside, target, mask, cfg)[1]["l1"]
    good = RestorationOutput(target, (mask * 2 - 1) * 10, None)
    assert restoration_loss(good, target, mask, cfg)[1]["bce"] < 0.01 < terms_in["bce"]


def test_restoration_stage_trains_only_restoration_and_resumes(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos", 3, size=(80, 64))
    base = build_model("tiny")
    base_path = tmp_path / "base.safetensors"
    save_checkpoint(base, base_path)
    cfg = RestorationTrainConfig(crop=32, batch_size=2, steps=2, val_every=1, workers=0,
                                 scan_long_side=(80, 160), degradation=DegradationConfig())
    out = tmp_path / "run"
    ckpt = train_restoration(photos[:2], photos[2:], out, cfg, base_model=base_path, log=lambda s: None)
    trained, header = load_checkpoint(ckpt)
    assert header["metadata"]["stage"] == "restoration" and header["metadata"]["step"] == 2
    before, after = base.state_dict(), trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("restoration."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("restoration.levels"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2]
    # Resuming with more steps continues from step 2, not from scratch.
    more = RestorationTrainConfig(**{**cfg.__dict__, "steps": 3})
    train_restoration(photos[:2], photos[2:], out, more, base_model=base_path, resume=True, log=lambda s: None)
    assert load_checkpoint(ckpt)[1]["metadata"]["step"] == 3


def test_a_net_without_detector_reports_no_mask_even_when_given_one() -> None:
    """The paper's net takes no mask, so none was used: full size and working scale alike."""
    import dataclasses

    from pikfix.config import preset_config
    from pikfix.model import PikFix

    config = preset_config("tiny")
    config.restoration = dataclasses.replace(config.restoration, detector_width=0)
    l = _texture(90, 120) * 100
    for restore_size in (2048, 64):
        pipe = FixPipeline(PikFix(config).eval(), "cpu", tile=64, tile_overlap=16, restore_size=restore_size)
        restored = pipe.restore_l(l, mask=np.ones((10, 10), dtype=np.float32))
        assert restored.mask is None and restored.l.shape == l.shape


def _train_from_tiny(tmp_path: Path, detector_width: int | None = None, **config: Any) -> tuple[PikFix, PikFix, dict]:
    """Two restoration steps from a saved tiny model on three small photos: (base, trained,
    the trained checkpoint's header)."""
    photos = _photos(tmp_path / "photos", 3)
    base = build_model("tiny")
    base_path = tmp_path / "base.safetensors"
    save_checkpoint(base, base_path)
    cfg = RestorationTrainConfig(crop=32, batch_size=2, steps=2, val_every=2, workers=0, scan_long_side=(80, 160),
                                 lr=1e-2, **config)
    ckpt = train_restoration(photos[:2], photos[2:], tmp_path / "run", cfg, base_model=base_path,
                             detector_width=detector_width, log=lambda s: None)
    return (base, *load_checkpoint(ckpt))


def test_detector_only_training_changes_only_a_fresh_detector_and_reports_detection(tmp_path: Path) -> None:
    base, trained, header = _train_from_tiny(tmp_path, detector_width=6, detector_only=True, pos_weight=2.0)
    assert trained.config.restoration.detector_width == 6
    before, after = base.state_dict(), trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("restoration.detector."))
    val = header["metadata"]["val"]
    assert 0.0 <= val["recall@0.5"] <= 1.0 and 0.0 <= val["clean_flagged@0.9"] <= val["clean_flagged@0.5"] <= 1.0


def test_repair_only_training_keeps_the_detector_and_changes_the_repair(tmp_path: Path) -> None:
    base, trained, _ = _train_from_tiny(tmp_path, repair_only=True)
    before, after = base.state_dict(), trained.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("restoration.levels.", "restoration.fuse.")) for k in changed)
    with pytest.raises(ValueError, match="exclude"):
        RestorationTrainConfig(detector_only=True, repair_only=True)


def test_a_detector_threshold_gives_a_sure_mask_grown_by_a_pixel() -> None:
    import dataclasses

    from pikfix.config import preset_config
    from pikfix.model import PikFix

    config = preset_config("tiny")
    config.restoration = dataclasses.replace(config.restoration, detector_threshold=0.8)
    net = PikFix(config).restoration
    logits = torch.full((1, 1, 16, 16), -5.0)
    logits[0, 0, 8, 3:12] = 3.0  # p = 0.95 on one row
    logits[0, 0, 2, 2] = 1.0  # p = 0.73: below the threshold
    mask = net.detector_mask(logits)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask[0, 0, 7:10, 3:12].min() == 1.0 and mask[0, 0, 2, 2] == 0.0 and mask[0, 0, :6].max() == 0.0
    soft = PikFix(preset_config("tiny")).restoration.detector_mask(logits)
    assert torch.allclose(soft, torch.sigmoid(logits))


@pytest.mark.parametrize("margin", [0, 2])
def test_a_repair_margin_leaves_every_pixel_away_from_the_mask_exactly_as_it_was(margin: int) -> None:
    import dataclasses

    from pikfix.config import preset_config

    config = preset_config("tiny")
    restoration = dataclasses.replace(config.restoration, repair_margin=margin)
    bounded = PikFix(dataclasses.replace(config, restoration=restoration))
    torch.manual_seed(0)
    torch.nn.init.normal_(bounded.restoration.fuse[-1].weight, std=0.1)  # a trained net's residual is not zero
    free = PikFix(config)
    free.load_state_dict(bounded.state_dict())
    l = torch.rand(1, 1, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, 10:14, 5:20] = 1.0
    with torch.no_grad():
        out, everywhere = bounded.restoration.repair(l, mask), free.restoration.repair(l, mask)
    near = torch.zeros(32, 32, dtype=torch.bool)
    near[10 - margin : 14 + margin, 5 - margin : 20 + margin] = True
    assert torch.equal(out[0, 0][~near], l[0, 0][~near])
    assert torch.allclose(out[0, 0][near], everywhere[0, 0][near])
    assert (everywhere[0, 0][~near] - l[0, 0][~near]).abs().max() > 1e-3  # without a margin it changes them
    assert (out[0, 0][near] - l[0, 0][near]).abs().max() > 1e-3


def test_composed_model_takes_restoration_from_one_and_colour_from_the_other() -> None:
    from pikfix.training.restoration import fresh_detector, with_restoration

    colour, restoration = build_model("tiny"), fresh_detector(build_model("tiny"), 6)
    composed = with_restoration(colour, restoration, detector_threshold=0.7, repair_margin=2)
    assert composed.config.restoration.detector_width == 6 and composed.restoration.detector_threshold == 0.7
    assert composed.restoration.repair_margin == 2
    for key, value in composed.state_dict().items():
        source = restoration if key.startswith("restoration.") else colour
        assert torch.equal(value, source.state_dict()[key]), key


def test_a_detector_from_another_run_replaces_only_the_detector() -> None:
    from pikfix.training.restoration import fresh_detector, with_detector_of

    base = build_model("tiny")
    other = fresh_detector(build_model("tiny"), 6, tophat=5)
    swapped = with_detector_of(base, other)
    assert swapped.config.restoration.detector_width == 6 and swapped.config.restoration.detector_tophat == 5
    for key, value in swapped.state_dict().items():
        source = other if key.startswith("restoration.detector.") else base
        assert torch.equal(value, source.state_dict()[key]), key


def test_tophats_find_thin_lines_and_the_detector_sees_them() -> None:
    from pikfix.nets.restoration import DamageDetector, tophats

    x = torch.full((1, 1, 40, 40), 0.5)
    x[0, 0, :, 20:23] = 0.9  # a 3 px bright line
    x[0, 0, 5:8, 5:8] = 0.1  # a dark speck
    x[0, 0, 25:, :12] = 0.2  # a wide dark area: not thin, not a defect
    th = tophats(x, 7)
    assert th.shape == (1, 2, 40, 40) and float(th.min()) >= -1e-6
    assert torch.allclose(th[0, 0, :, 20:23], torch.tensor(0.4)) and float(th[0, 0, :, :15].max()) < 1e-6
    assert torch.allclose(th[0, 1, 5:8, 5:8], torch.tensor(0.4)) and float(th[0, 1, 25:, 2:10].max()) < 1e-6
    detector = DamageDetector(4, tophat=7)
    assert detector.body[0].in_channels == 3 and detector(x).shape == (1, 1, 40, 40)


def test_a_bounded_repair_skips_an_empty_mask_with_the_same_result() -> None:
    import dataclasses

    from pikfix.config import preset_config

    config = preset_config("tiny")
    model = PikFix(dataclasses.replace(config, restoration=dataclasses.replace(config.restoration, repair_margin=2)))
    torch.manual_seed(0)
    torch.nn.init.normal_(model.restoration.fuse[-1].weight, std=0.1)
    l = torch.rand(1, 1, 32, 32) * 2 - 1
    empty, marked = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    marked[0, 0, 8:12, 8:12] = 1.0
    with torch.no_grad():
        computed = {name: model.restoration.repair(l, m) for name, m in (("empty", empty), ("marked", marked))}
        model.eval()  # inference skips the levels where the mask is empty
        for name, m in (("empty", empty), ("marked", marked)):
            assert torch.equal(model.restoration.repair(l, m), computed[name]), name
    assert torch.equal(computed["empty"], l) and not torch.equal(computed["marked"], l)


@pytest.mark.parametrize("size", [1, 2, 3, 8, 17, 31])
def test_the_max_filter_equals_a_max_pooling_of_the_same_window(size: int) -> None:
    import torch.nn.functional as F

    from pikfix.morphology import max_filter

    x = torch.randn(2, 2, 23, 41)
    pad = size // 2
    rows = F.max_pool2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), (1, size), stride=1)
    expected = F.max_pool2d(F.pad(rows, (0, 0, pad, pad), mode="replicate"), (size, 1), stride=1)
    assert torch.equal(max_filter(x, size), expected)


@pytest.mark.parametrize("size", [3, 13, 97])
def test_the_max_filter_with_a_constant_border_ignores_what_lies_beyond(size: int) -> None:
    import torch.nn.functional as F

    from pikfix.morphology import max_filter

    x = torch.randn(1, 1, 30, 120)
    pad = size // 2
    padded = F.pad(x, (pad, pad, pad, pad), value=-torch.inf)
    expected = F.max_pool2d(padded, size, stride=1)
    assert torch.equal(max_filter(x, size, border=-torch.inf), expected)
