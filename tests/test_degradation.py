"""Synthetic old-photo damage: reproducible, each operation does what it claims, config checks, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pikfix.training import degradation as D
from pikfix.color import rgb_to_lab
from pikfix.training.degradation import DegradationConfig
from pikfix_cli.app import app

DEFECT_OPS = [
    D.add_scratches, D.add_cracks, D.add_crack_network, D.add_crazing, D.add_noise_cracks, D.add_dust,
    D.add_tears, D.add_holes, D.add_flaking, D.add_paper_mask, D.add_creases, D.add_folds,
]
IMAGE_OPS = [
    D.film_grain, D.gaussian_blur, D.defocus_blur, D.motion_blur, D.gaussian_noise, D.speckle_noise,
    D.salt_and_pepper, D.low_resolution, D.jpeg, D.halftone, D.water_stain, D.mould, D.silvering,
    D.fade, D.colour_cast, D.vignette, D.paper_texture,
]
AGEING = ["water_stain", "mould", "silvering", "fade", "colour_cast", "vignette", "paper_texture"]
NO_OPS = {name: 0.0 for name in DegradationConfig().to_dict() if name.startswith("p_")}


def photo(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """A colourful test photo: smooth gradients, hard edges and fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([x, y, 0.5 + 0.4 * np.sin(12 * x + 7 * y)], axis=-1)
    base[h // 3 : h // 2, w // 4 : w // 2] = (0.9, 0.2, 0.1)
    return np.clip(base + 0.05 * rng.standard_normal((h, w, 3)), 0.0, 1.0).astype(np.float32)


def flat(value: float = 0.5, h: int = 64, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.float32)


def run(
    op: Callable, img: np.ndarray, seed: int, cfg: DegradationConfig = D.DEFAULT_CONFIG
) -> tuple[np.ndarray, np.ndarray | None]:
    """(image, mask or None) from any operation, so tests can treat all alike."""
    result = op(img, np.random.default_rng(seed), cfg)
    return result if isinstance(result, tuple) else (result, None)


def gradient_energy(img: np.ndarray) -> float:
    return float(np.abs(np.diff(img, axis=0)).mean() + np.abs(np.diff(img, axis=1)).mean())


# --------------------------------------------------------------------------- every operation


@pytest.mark.parametrize("op", DEFECT_OPS + IMAGE_OPS, ids=lambda op: op.__name__)
def test_op_is_deterministic_per_seed_and_keeps_format(op: Callable) -> None:
    img = photo()
    before = img.copy()
    out, mask = run(op, img, 7)
    again, mask_again = run(op, img, 7)
    assert np.array_equal(out, again)
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    if mask is not None:
        assert np.array_equal(mask, mask_again)
        assert mask.shape == img.shape[:2] and mask.dtype == np.float32
    # Different seeds give different damage (checked over a few seeds: two may coincide by chance).
    others = [run(op, img, seed)[0] for seed in range(4)]
    assert any(not np.array_equal(out, other) for other in others)
    assert np.array_equal(img, before), "the input must not be modified"


@pytest.mark.parametrize("op", [D.add_scratches, D.add_cracks, D.add_dust], ids=lambda op: op.__name__)
@pytest.mark.parametrize("dark", [False, True])
def test_strokes_mark_the_mask_and_change_only_those_pixels(op: Callable, dark: bool) -> None:
    # Strokes at least a pixel wide on a 256 px scan (thinner ones are drawn fainter, by design).
    cfg = DegradationConfig(
        defect_dark_fraction=1.0 if dark else 0.0, defect_opacity=(1.0, 1.0), dust_count=(40, 40),
        scratch_width=(1.5, 2.5), crack_width=(1.5, 2.0), dust_radius=(1.0, 2.0),
    )
    img = flat(0.5, 256, 256)
    out, mask = run(op, img, 3, cfg)
    hit = mask > 0
    assert hit.sum() > 20
    if dark:
        assert out[hit].max() <= cfg.defect_dark_level[1] + 1e-6
    else:
        assert out[hit].min() >= cfg.defect_bright_level[0] - 1e-6
    assert np.array_equal(out[~hit], img[~hit])


def test_cracks_branch() -> None:
    # Side branches add length, so over many cracks the mean damaged area grows.
    def mean_area(branch_prob: float) -> float:
        cfg = DegradationConfig(crack_count=(1, 1), crack_branch_prob=branch_prob)
        return float(np.mean([run(D.add_cracks, flat(), seed, cfg)[1].sum() for seed in range(20)]))

    assert mean_area(1.0) > 1.2 * mean_area(0.0)


@pytest.mark.parametrize("protect", [0.6, 0.9])
@pytest.mark.parametrize("seed", range(6))
def test_tears_are_white_at_the_border_small_and_spare_the_centre(seed: int, protect: float) -> None:
    cfg = DegradationConfig(tear_count=(3, 3), tear_protect_centre=protect)
    h, w = 60, 80
    out, mask = run(D.add_tears, photo(h, w), seed, cfg)
    torn = mask > 0
    assert torn.any()
    assert np.all(out[torn] == 1.0)
    assert torn.sum() < h * w / 20
    band = (1 - protect) / 2
    assert not torn[round(band * h) : round((1 - band) * h), round(band * w) : round((1 - band) * w)].any()
    assert torn[0].any() or torn[-1].any() or torn[:, 0].any() or torn[:, -1].any()


def test_creases_add_a_light_and_a_dark_edge() -> None:
    cfg = DegradationConfig(crease_count=(1, 1), crease_strength=(0.2, 0.2))
    img = flat()
    out, mask = run(D.add_creases, img, 2, cfg)
    assert mask.sum() > 64  # a line crossing the whole photo
    assert out.max() > 0.55 and out.min() < 0.45
    change = np.abs(out - img).mean(axis=2)
    assert change[mask > 0].mean() > 10 * change[mask == 0].mean()


@pytest.mark.parametrize(
    "op, cfg",
    [
        (D.gaussian_blur, DegradationConfig(blur_sigma=(1.0, 2.0))),
        (D.defocus_blur, D.DEFAULT_CONFIG),
        (D.motion_blur, D.DEFAULT_CONFIG),
        (D.low_resolution, DegradationConfig(lowres_scale=(0.5, 0.6))),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_blurs_lower_gradient_energy(op: Callable, cfg: DegradationConfig) -> None:
    img = photo()
    out, _ = run(op, img, 1, cfg)
    assert gradient_energy(out) < 0.8 * gradient_energy(img)


@pytest.mark.parametrize(
    "op, cfg",
    [
        (D.gaussian_noise, D.DEFAULT_CONFIG),
        (D.speckle_noise, D.DEFAULT_CONFIG),
        (D.salt_and_pepper, DegradationConfig(salt_pepper_amount=(0.005, 0.01))),
        (D.film_grain, D.DEFAULT_CONFIG),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_noise_raises_variance_of_a_flat_image(op: Callable, cfg: DegradationConfig) -> None:
    out, _ = run(op, flat(), 1, cfg)
    assert out.std() > 0.005


def test_film_grain_is_strongest_in_mid_tones() -> None:
    dark = run(D.film_grain, flat(0.05), 1)[0].std()
    mid = run(D.film_grain, flat(0.5), 1)[0].std()
    assert mid > 1.5 * dark


@pytest.mark.parametrize(
    "op, cfg",
    [
        (D.jpeg, DegradationConfig(jpeg_quality=(40, 40))),
        (D.low_resolution, DegradationConfig(lowres_scale=(0.5, 0.5))),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_jpeg_and_downscaling_change_pixels_but_keep_the_mean(op: Callable, cfg: DegradationConfig) -> None:
    img = photo()
    out, _ = run(op, img, 1, cfg)
    assert np.abs(out - img).mean() > 0.005
    assert abs(out.mean() - img.mean()) < 0.02


def test_fade_lowers_contrast() -> None:
    cfg = DegradationConfig(fade_black=(0.1, 0.2), fade_white=(0.8, 0.9))
    img = photo()
    out, _ = run(D.fade, img, 1, cfg)
    assert out.std() < 0.8 * img.std()
    assert out.min() >= 0.1 - 1e-6 and out.max() <= 0.9 + 1e-6


def test_colour_cast_is_warm_on_grey() -> None:
    out, _ = run(D.colour_cast, flat(0.5), 1)
    r, g, b = out[..., 0], out[..., 1], out[..., 2]
    assert np.all(r > g) and np.all(g > b)


def test_vignette_darkens_corners_more_than_the_centre() -> None:
    cfg = DegradationConfig(vignette_strength=(0.3, 0.5))
    out, _ = run(D.vignette, flat(0.8), 1, cfg)
    corners = np.mean([out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]])
    assert corners < out[32, 32].mean() - 0.1


def test_paper_texture_varies_brightness_smoothly_around_the_same_mean() -> None:
    img = flat()
    out, _ = run(D.paper_texture, img, 1, DegradationConfig(paper_strength=(0.05, 0.05)))
    assert out.std() > 0.01
    assert abs(out.mean() - 0.5) < 0.02
    # Low-frequency: white noise of this spread would have about 2.3 x std of gradient energy.
    assert gradient_energy(out) < 0.5 * out.std()


# --------------------------------------------------------------------------- the whole pipeline


def test_degrade_returns_a_grey_photo_of_the_input_size() -> None:
    img = photo(48, 72)
    before = img.copy()
    result = D.degrade(img, np.random.default_rng(0))
    assert result.grey.shape == (48, 72) and result.grey.dtype == np.float32
    assert result.mask.shape == (48, 72) and result.mask.dtype == np.float32
    assert 0.0 <= result.grey.min() and result.grey.max() <= 1.0
    assert 0.0 <= result.mask.min() and result.mask.max() <= 1.0
    assert np.array_equal(img, before)
    with pytest.raises(ValueError, match="H x W x 3"):
        D.degrade(img[..., 0], np.random.default_rng(0))


def test_degrade_is_reproducible_and_varies_with_the_seed() -> None:
    img = photo()
    a = D.degrade_seeded(img, 11)
    b = D.degrade(img, np.random.default_rng(11))
    assert np.array_equal(a.grey, b.grey) and np.array_equal(a.mask, b.mask) and a.ops == b.ops
    assert not np.array_equal(a.grey, D.degrade_seeded(img, 12).grey)


def test_without_damage_the_grey_has_the_photos_cie_lightness() -> None:
    img = photo()
    result = D.degrade_seeded(img, 0, DegradationConfig.from_dict(NO_OPS))
    assert result.ops == [] and not result.mask.any()
    lab = rgb_to_lab(torch.from_numpy(img).permute(2, 0, 1).double())
    grey_lab = rgb_to_lab(torch.from_numpy(np.repeat(result.grey[None], 3, axis=0)).double())
    assert torch.allclose(grey_lab[0], lab[0], atol=0.05)  # L in [0, 100]
    assert grey_lab[1:].abs().max() < 0.05  # and the grey is neutral


def test_every_operation_can_run_and_ageing_comes_last_in_fixed_order() -> None:
    always = DegradationConfig.from_dict({name: 1.0 for name in NO_OPS})
    orders = [D.degrade_seeded(photo(), seed, always).ops for seed in range(3)]
    names = {op.__name__ for op in DEFECT_OPS + IMAGE_OPS}
    for ops in orders:
        assert ops[-len(AGEING):] == AGEING
        assert len(ops) == len(set(ops)) == len(names) - 2  # one of the three noise kinds
        assert set(ops) <= names
    assert len({tuple(ops[: -len(AGEING)]) for ops in orders}) > 1, "defects should run in a random order"
    result = D.degrade_seeded(photo(), 0, always)
    assert result.mask.any()


# --------------------------------------------------------------------------- configuration


def test_config_round_trips_through_json() -> None:
    cfg = DegradationConfig(p_blur=0.25, jpeg_quality=(50, 60))
    assert DegradationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    partial = DegradationConfig.from_dict({"p_blur": 0.1})
    assert partial.p_blur == 0.1 and partial.p_jpeg == DegradationConfig().p_jpeg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"p_blurr": 0.5, "zzz": 1}, "p_blurr, zzz"),
        ({"p_blur": 1.5}, "p_blur"),
        ({"p_noise": True}, "p_noise"),
        ({"blur_sigma": [3.0, 1.0]}, "blur_sigma: lo > hi"),
        ({"blur_sigma": [1.0]}, "blur_sigma"),
        ({"jpeg_quality": [40.5, 90]}, "jpeg_quality"),
        ({"jpeg_quality": [0, 90]}, "jpeg_quality"),
        ({"tear_max_area": 2.0}, "tear_max_area"),
    ],
)
def test_from_dict_rejects_bad_configs(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DegradationConfig.from_dict(data)


# --------------------------------------------------------------------------- command line


def test_cli_writes_examples_and_reports_a_corrupt_file(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray((photo(30, 40) * 255).astype(np.uint8)).save(src / "sub" / "good.png")
    (src / "bad.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    args = ["degrade", str(src), "-o", str(out), "--count", "2", "--save-mask", "--seed", "3"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.jpg" in errors[0]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["sub/good_d0.png", "sub/good_d0_mask.png", "sub/good_d1.png", "sub/good_d1_mask.png"]
    with Image.open(out / "sub" / "good_d0.png") as first, Image.open(out / "sub" / "good_d1.png") as second:
        assert first.mode == "L" and first.size == (40, 30)
        assert not np.array_equal(np.asarray(first), np.asarray(second))

    # A rerun skips finished outputs; with --overwrite the same seed reproduces them byte for byte.
    before = (out / "sub" / "good_d1.png").read_bytes()
    (out / "sub" / "good_d1.png").write_bytes(b"placeholder")
    assert "wrote 0, skipped 2" in CliRunner().invoke(app, args).output
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 1
    assert (out / "sub" / "good_d1.png").read_bytes() == before


def test_cli_applies_exif_orientation_and_rejects_a_bad_config(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated by 90 degrees
    Image.fromarray((photo(30, 40) * 255).astype(np.uint8)).save(tmp_path / "side.jpg", exif=exif)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"p_blur": 0.0}))
    args = ["degrade", str(tmp_path / "side.jpg"), "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "o" / "side_d0.png") as upright:
        assert upright.size == (30, 40)

    config.write_text(json.dumps({"p_blur": 0.0, "scratchez": 1}))
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "scratchez" in result.output


# --------------------------------------------------------------------------- scan scale and masks


def _photo_window(scan_long: float, seed: int = 0) -> tuple[np.ndarray, D.Window]:
    img = photo(300, 400, seed)
    return D.scan_crop(img, 96, np.random.default_rng(seed), long_side=(scan_long, scan_long))


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2r+1)^2 square: what survives is at least that wide."""
    out = mask > 0
    padded = np.pad(out, radius)
    h, w = out.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out = out & padded[dy : dy + h, dx : dx + w]
    return out


@pytest.mark.parametrize("op", [D.add_cracks, D.add_scratches, D.add_dust], ids=lambda op: op.__name__)
def test_defect_sizes_follow_the_scan_not_the_crop(op: Callable) -> None:
    """The same 96 px window shows thin defects on a small scan and wide ones on a large scan:
    on a 512 px scan little survives an erosion to 3 px width, on a 4000 px scan most does."""
    cfg = DegradationConfig(defect_opacity=(1.0, 1.0), dust_count=(30, 30))

    def wide_share(scan_long: float) -> float:
        wide = total = 0
        for seed in range(6):
            _, win = _photo_window(scan_long, seed)
            _, mask = op(flat(0.5, 96, 96), np.random.default_rng(seed), cfg, win)
            wide, total = wide + _erode(mask, 1).sum(), total + (mask > 0).sum()
        return wide / max(total, 1)

    small, large = wide_share(512), wide_share(4000)
    assert large > 0.5 and large > 2.5 * small


def test_scan_crop_places_the_window_in_the_scan() -> None:
    img = photo(300, 400)
    window, win = D.scan_crop(img, 64, np.random.default_rng(3), long_side=(2000, 2000))
    assert window.shape == (64, 64, 3) and window.dtype == np.float32
    assert max(win.scan_h, win.scan_w) == 2000 and win.scan_h == 1500
    assert 0 <= win.top <= win.scan_h - 64 and 0 <= win.left <= win.scan_w - 64
    assert win.scale == pytest.approx(1500 / 256)
    # A scan of the photo's own size is a plain crop of it.
    same, win = D.scan_crop(img, 64, np.random.default_rng(3), long_side=(400, 400))
    top, left = int(win.top), int(win.left)
    assert np.abs(same - img[top : top + 64, left : left + 64]).max() < 1e-5


@pytest.mark.parametrize("op", DEFECT_OPS, ids=lambda op: op.__name__)
def test_masks_match_the_pixels_defects_changed(op: Callable) -> None:
    img = photo(128, 128)
    out, mask = run(op, img, 5)
    changed = np.abs(out - img).max(axis=-1) > 0.02
    if op in (D.add_creases, D.add_folds):
        # Creases mark their drawn edge lines (softened by a blur), folds their broken emulsion
        # (beside a tone step that destroys nothing): the marked pixels did change.
        assert mask.sum() == 0 or (changed & (mask > 0)).sum() > 0.5 * mask.sum()
        return
    if op is D.add_tears:  # white fill: a pixel that was already white is torn but unchanged
        assert np.all(out[mask > 0] == 1.0)
        return
    assert np.array_equal(mask > 0, changed), f"{op.__name__}: mask and changed pixels differ"


def test_colour_cast_keeps_luminance_so_grey_inputs_are_not_relit() -> None:
    img = photo(64, 64)
    out, _ = run(D.colour_cast, img, 2)
    assert np.abs(D.to_grey(out) - D.to_grey(img)).max() < 2e-3
    assert (out[..., 0] - out[..., 2]).mean() > (img[..., 0] - img[..., 2]).mean()  # but warmer


@pytest.mark.parametrize("kind", sorted(D.KINDS))
def test_every_kind_runs_on_a_window_of_a_large_scan(kind: str) -> None:
    window, win = _photo_window(4000)
    out, mask = D.apply_kind(kind, window, np.random.default_rng(0), D.DEFAULT_CONFIG, win)
    assert out.shape == window.shape and mask.shape == window.shape[:2]
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
