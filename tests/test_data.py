"""Training data: scanning, splitting, config and the (input, target, reference) samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pikfix.color import normalize_ab, normalize_l, rgb_to_lab
from pikfix.training.data import (
    REF_OTHER_IMAGE,
    REF_RETRIEVED,
    REF_SAME_IMAGE,
    DataConfig,
    DataError,
    PairDataset,
    per_kind_metrics,
    reference_neighbours,
    scan_folders,
    scan_images,
    split,
)

CROP = 32
# Distinct solid colours, so the photo a reference came from can be told by its mean chroma.
COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (50, 60, 210), "yellow": (220, 200, 40)}
NO_JITTER = {
    "ref_hue": 0.0, "ref_saturation": (1.0, 1.0), "ref_brightness": (1.0, 1.0),
    "ref_rotation": 0.0, "ref_scale": (1.0, 1.0), "ref_flip": 0.0,
}


def _photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 96), seed: int = 0) -> Path:
    """A solid colour with noise texture, so crops at different places differ."""
    noise = np.random.default_rng(seed).normal(0, 12, (*size, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    return [_photo(folder / f"{name}.png", rgb, seed=i) for i, (name, rgb) in enumerate(COLOURS.items())]


@pytest.fixture
def neighbours(photos: list[Path]) -> dict[Path, list[Path]]:
    """Hand-made retrieval results: each photo's neighbour is the next photo."""
    return {p: [photos[(i + 1) % len(photos)]] for i, p in enumerate(photos)}


def _mean_ab(ab: torch.Tensor) -> torch.Tensor:
    return ab.mean(dim=(-2, -1))


def _colour_ab(rgb: tuple[int, int, int]) -> torch.Tensor:
    pixel = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255
    return normalize_ab(rgb_to_lab(pixel)[1:, 0, 0])


# --------------------------------------------------------------------------- split and config


def test_split_is_deterministic_disjoint_and_complete() -> None:
    paths = [Path(f"data/img{i:02d}.jpg") for i in range(20)]
    train, val = split(paths, 0.1, seed=3)
    assert (train, val) == split(list(reversed(paths)), 0.1, seed=3)
    assert len(val) == 2 and not set(train) & set(val) and set(train) | set(val) == set(paths)
    assert split(paths, 0.1, seed=4)[1] != val  # another seed, another split


def test_split_keeps_one_validation_image_and_one_training_image() -> None:
    assert [len(part) for part in split([Path("a.png"), Path("b.png")], 0.1, seed=0)] == [1, 1]
    assert [len(part) for part in split([Path("a.png"), Path("b.png")], 0.9, seed=0)] == [1, 1]
    assert split([Path("a.png"), Path("b.png")], 0.0, seed=0)[1] == []


def test_split_moves_at_most_one_photo_when_the_folder_grows() -> None:
    paths = [Path(f"img{i:02d}.jpg") for i in range(30)]
    _, val_before = split(paths, 0.2, seed=1)
    train_after, _ = split([*paths, Path("new.jpg")], 0.2, seed=1)
    assert len(set(val_before) & set(train_after)) <= 1


def test_config_round_trips_through_json() -> None:
    config = DataConfig.from_dict({"crop": 64, "ref_scale": [0.95, 1.05], "degradation": {"p_blur": 0.1}})
    assert config.crop == 64 and config.ref_scale == (0.95, 1.05) and config.degradation.p_blur == 0.1
    assert DataConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"crop_size": 64}, "crop_size"),
        ({"crop": True}, "crop"),
        ({"crop": 8}, "crop"),
        ({"reference_mode": "random"}, "reference_mode"),
        ({"ref_probabilities": [0.5, 0.5, 0.5]}, "ref_probabilities"),
        ({"ref_neighbours": 0}, "ref_neighbours"),
        ({"ref_saturation": [1.2, 0.8]}, "ref_saturation"),
        ({"ref_scale": [0.0, 1.0]}, "ref_scale"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"degrade_probability": 1.5}, "degrade_probability"),
        ({"degradation": {"p_nope": 0.5}}, "p_nope"),
        ({"degradation": "heavy"}, "degradation"),
    ],
)
def test_config_rejects_unknown_keys_and_invalid_values(data: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DataConfig.from_dict(data)


# --------------------------------------------------------------------------- scanning a folder


def test_scan_skips_unreadable_and_greyscale_files_with_reasons(photos: list[Path]) -> None:
    folder = photos[0].parent
    (folder / "x.jpg").write_text("not a photo")
    truncated = _photo(folder / "truncated.png", (90, 120, 30), seed=9)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    Image.fromarray(np.full((64, 96), 128, np.uint8), "L").save(folder / "grey.png")
    grey_noise = np.random.default_rng(1).normal(128, 20, (64, 96, 1)).clip(0, 255).astype(np.uint8)
    Image.fromarray(grey_noise.repeat(3, axis=2)).save(folder / "grey_rgb.jpg")  # black-and-white saved as RGB

    usable, skipped = scan_images(folder, DataConfig(crop=CROP))

    assert sorted(usable) == sorted(photos)
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"x.jpg", "truncated.png", "grey.png", "grey_rgb.jpg"}
    assert "not an image" in reasons["x.jpg"]
    assert "truncated" in reasons["truncated.png"]
    assert "greyscale" in reasons["grey.png"] and "greyscale" in reasons["grey_rgb.jpg"]


def test_scan_rejects_a_folder_with_too_few_usable_images(tmp_path: Path) -> None:
    _photo(tmp_path / "only.png", COLOURS["red"])
    (tmp_path / "broken.jpg").write_text("not a photo")
    with pytest.raises(DataError, match=r"found 1 usable image in .*need at least 2 \(1 skipped"):
        scan_images(tmp_path, DataConfig(crop=CROP))


def test_scan_rejects_a_crop_larger_than_every_image(photos: list[Path]) -> None:
    with pytest.raises(DataError, match=r"128 px crop is larger than every photo.*at most 64"):
        scan_images(photos[0].parent, DataConfig(crop=128))


def test_scan_skips_only_the_images_smaller_than_the_crop(photos: list[Path]) -> None:
    folder = photos[0].parent
    big = [_photo(folder / f"big{i}.png", COLOURS["blue"], size=(130, 140), seed=i) for i in range(2)]
    usable, skipped = scan_images(folder, DataConfig(crop=128))
    assert sorted(usable) == sorted(big)
    assert len(skipped) == len(photos) and all("96x64 is smaller than the 128 px crop" in r for _, r in skipped)


# --------------------------------------------------------------------------- samples


def test_item_has_the_documented_keys_shapes_and_ranges(photos: list[Path], neighbours) -> None:
    item = PairDataset(photos, DataConfig(crop=CROP), seed=0, train=True, neighbours=neighbours)[0]
    shapes = {key: tuple(value.shape) for key, value in item.items()}
    assert shapes == {
        "input_l": (1, CROP, CROP), "target_l": (1, CROP, CROP), "target_ab": (2, CROP, CROP),
        "ref_l": (1, CROP, CROP), "ref_ab": (2, CROP, CROP), "mask": (1, CROP, CROP), "ref_kind": (),
    }
    assert item["ref_kind"].dtype == torch.int64 and int(item["ref_kind"]) in (REF_SAME_IMAGE, REF_OTHER_IMAGE, REF_RETRIEVED)
    for key in ("input_l", "target_l", "ref_l"):
        assert item[key].dtype == torch.float32 and -1 - 1e-5 <= item[key].min() and item[key].max() <= 1 + 1e-5
    for key in ("target_ab", "ref_ab"):
        assert item[key].abs().max() <= 1.1 and item[key].abs().max() > 0.1  # coloured photos
    assert 0 <= item["mask"].min() and item["mask"].max() <= 1


def test_item_depends_only_on_seed_epoch_and_index(photos: list[Path], neighbours) -> None:
    config = DataConfig(crop=CROP)
    first = PairDataset(photos, config, seed=7, train=True, neighbours=neighbours)[2]
    again = PairDataset(photos, config, seed=7, train=True, neighbours=neighbours)
    assert all(torch.equal(first[k], again[2][k]) for k in first)
    again.set_epoch(1)
    assert not all(torch.equal(first[k], again[2][k]) for k in first)
    again.set_epoch(0)
    assert all(torch.equal(first[k], again[2][k]) for k in first)


def test_validation_items_are_centre_crops_identical_across_epochs(photos: list[Path], neighbours) -> None:
    config = DataConfig(crop=CROP, degrade_probability=0.0)
    val = PairDataset(photos, config, seed=0, train=False, neighbours=neighbours)
    assert len(val) == 3 * len(photos)  # every photo once per reference kind
    assert sorted(int(val[i]["ref_kind"]) for i in range(3, 6)) == [REF_SAME_IMAGE, REF_OTHER_IMAGE, REF_RETRIEVED]
    item = val[3]  # photo 1, first kind
    val.set_epoch(5)
    assert all(torch.equal(item[k], val[3][k]) for k in item)

    pixels = np.asarray(Image.open(photos[1]), dtype=np.float32) / 255
    top, left = (64 - CROP) // 2, (96 - CROP) // 2
    crop = torch.from_numpy(pixels[top : top + CROP, left : left + CROP]).permute(2, 0, 1)
    lab = rgb_to_lab(crop)
    torch.testing.assert_close(item["target_l"], normalize_l(lab[:1]))
    torch.testing.assert_close(item["target_ab"], normalize_ab(lab[1:]))
    # Undamaged sample: the grey input has the colour photo's L, and nothing is masked.
    torch.testing.assert_close(item["input_l"], item["target_l"], atol=2e-3, rtol=0)
    assert not item["mask"].any()


def test_damaged_input_differs_from_the_clean_target(photos: list[Path], neighbours) -> None:
    data = PairDataset(photos, DataConfig(crop=CROP), seed=0, train=True, neighbours=neighbours)
    errors = [float((item["input_l"] - item["target_l"]).abs().mean()) for item in (data[i] for i in range(4))]
    assert max(errors) > 0.02


def test_same_image_reference_keeps_the_colours_of_the_target(photos: list[Path]) -> None:
    data = PairDataset(photos, DataConfig(crop=CROP, reference_mode="same-image"), seed=0, train=True)
    for index in range(len(photos)):
        item = data[index]
        assert int(item["ref_kind"]) == REF_SAME_IMAGE
        distance = (_mean_ab(item["ref_ab"]) - _mean_ab(item["target_ab"])).norm()
        assert distance < 0.15  # mild jitter only; the photos' colours are >= 0.5 apart
        assert not torch.equal(item["ref_l"], item["target_l"])  # another place, transformed


def test_reference_jitter_is_configurable(photos: list[Path]) -> None:
    same = {"crop": CROP, "reference_mode": "same-image"}
    plain = PairDataset(photos, DataConfig.from_dict({**same, **NO_JITTER}), seed=0, train=True)
    strong = PairDataset(photos, DataConfig.from_dict({**same, "ref_hue": 0.5}), seed=0, train=True)

    def worst(data: PairDataset) -> float:
        items = [data[i] for i in range(4)]
        return max(float((_mean_ab(it["ref_ab"]) - _mean_ab(it["target_ab"])).norm()) for it in items)

    assert worst(plain) < 0.02 < 0.2 < worst(strong)


def test_other_image_reference_comes_from_another_photo(photos: list[Path]) -> None:
    data = PairDataset(photos, DataConfig(crop=CROP, reference_mode="other-image"), seed=0, train=True)
    palette = torch.stack([_colour_ab(rgb) for rgb in COLOURS.values()])
    for epoch in range(3):
        data.set_epoch(epoch)
        for index in range(len(photos)):
            item = data[index]
            assert int(item["ref_kind"]) == REF_OTHER_IMAGE
            source = int((palette - _mean_ab(item["ref_ab"])).norm(dim=1).argmin())
            target = int((palette - _mean_ab(item["target_ab"])).norm(dim=1).argmin())
            assert target == index and source != index


def test_retrieved_reference_comes_from_a_neighbour_never_the_photo(photos: list[Path], neighbours) -> None:
    data = PairDataset(photos, DataConfig(crop=CROP, reference_mode="retrieved"), seed=0, train=True, neighbours=neighbours)
    palette = torch.stack([_colour_ab(rgb) for rgb in COLOURS.values()])
    for epoch in range(2):
        data.set_epoch(epoch)
        for index in range(len(photos)):
            item = data[index]
            assert int(item["ref_kind"]) == REF_RETRIEVED
            source = int((palette - _mean_ab(item["ref_ab"])).norm(dim=1).argmin())
            assert source == (index + 1) % len(photos)


def test_mixed_mode_draws_the_three_kinds_with_their_probabilities(photos: list[Path], neighbours) -> None:
    config = DataConfig(crop=16, degrade_probability=0.0, ref_probabilities=(0.5, 0.3, 0.2))
    data = PairDataset(photos * 50, config, seed=0, train=True, neighbours=neighbours)
    counts = np.bincount([int(data[i]["ref_kind"]) for i in range(len(data))], minlength=3) / len(data)
    expected = np.array([0.5, 0.2, 0.3])  # indexed by REF_SAME_IMAGE, REF_OTHER_IMAGE, REF_RETRIEVED
    assert np.abs(counts - expected).max() < 0.08


def test_retrieved_kind_needs_neighbours(photos: list[Path], neighbours) -> None:
    with pytest.raises(DataError, match="neighbours"):
        PairDataset(photos, DataConfig(crop=CROP), seed=0, train=True)
    with pytest.raises(DataError, match="no retrieved neighbour"):
        PairDataset(photos, DataConfig(crop=CROP), seed=0, train=True, neighbours={**neighbours, photos[2]: []})
    PairDataset(photos, DataConfig(crop=CROP, reference_mode="alternate"), seed=0, train=True)  # none needed


def test_reference_neighbours_finds_similar_photos_but_never_the_photo_itself(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    stripes = (np.sin(xx / 3.0)[..., None] * 80 + 120 + rng.normal(0, 5, (64, 64, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(stripes).save(folder / "stripes.png")
    Image.fromarray(np.ascontiguousarray(stripes[:, ::-1])).save(folder / "stripes-mirrored.png")
    for i in range(3):  # smooth blobs, nothing like stripes
        blob = 120 + 80 * np.exp(-((yy - 20 * i - 10) ** 2 + (xx - 30) ** 2) / 300.0)
        Image.fromarray(np.repeat(blob[..., None], 3, axis=2).astype(np.uint8)).save(folder / f"blob{i}.png")
    pool = sorted(folder.glob("*.png"))
    found = reference_neighbours(pool, pool, tmp_path / "nb", k=2)
    assert set(found) == set(pool)
    for query, matches in found.items():
        assert query not in matches and len(matches) == 2
    assert found[folder / "stripes.png"][0] == folder / "stripes-mirrored.png"


def test_per_kind_metrics_groups_samples_by_reference_kind() -> None:
    kinds = [REF_SAME_IMAGE, REF_RETRIEVED, REF_SAME_IMAGE, REF_OTHER_IMAGE]
    rows = [{"psnr": 30.0}, {"psnr": 20.0}, {"psnr": 26.0}, {"psnr": 15.0}]
    assert per_kind_metrics(kinds, rows) == {
        "same-image": {"n": 2.0, "psnr": 28.0}, "retrieved": {"n": 1.0, "psnr": 20.0}, "random": {"n": 1.0, "psnr": 15.0},
    }
    with pytest.raises(ValueError):
        per_kind_metrics(kinds[:2], rows)


def test_alternate_mode_mixes_both_reference_kinds(photos: list[Path]) -> None:
    data = PairDataset(photos, DataConfig(crop=CROP, degrade_probability=0.0, reference_mode="alternate"), seed=0, train=True)
    kinds = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        kinds |= {int(data[i]["ref_kind"]) for i in range(len(photos))}
    assert kinds == {REF_SAME_IMAGE, REF_OTHER_IMAGE}


def test_other_image_mode_needs_two_images(photos: list[Path]) -> None:
    with pytest.raises(DataError, match="at least 2"):
        PairDataset(photos[:1], DataConfig(crop=CROP, reference_mode="other-image"), seed=0, train=True)


def test_large_photos_are_downscaled_before_cropping(tmp_path: Path) -> None:
    # A red disk on blue; at full size a centre crop sees only red, downscaled it sees both.
    yy, xx = np.mgrid[:400, :400]
    disk = (yy - 200) ** 2 + (xx - 200) ** 2 < 40**2
    pixels = np.where(disk[..., None], np.array(COLOURS["red"]), np.array(COLOURS["blue"])).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "disk.png")

    def red_share(max_short_side: float) -> float:
        config = DataConfig(crop=CROP, max_short_side=max_short_side, degrade_probability=0.0)
        item = PairDataset([tmp_path / "disk.png"], config, seed=0, train=False)[0]
        return float((item["target_ab"][1] > 0).float().mean())  # b > 0: red (the blue has b < 0)

    assert red_share(100.0) == 1.0
    assert 0.05 < red_share(2.0) < 0.6  # 400 px -> 64 px: the disk is 13 px across


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_match_single_item_access(photos: list[Path], neighbours, workers: int) -> None:
    data = PairDataset(photos, DataConfig(crop=CROP), seed=0, train=True, neighbours=neighbours)
    data.set_epoch(2)
    batches = list(DataLoader(data, batch_size=2, num_workers=workers))
    assert len(batches) == 2
    assert batches[0]["ref_ab"].shape == (2, 2, CROP, CROP) and batches[0]["ref_kind"].shape == (2,)
    for key in batches[0]:
        torch.testing.assert_close(batches[1][key][0], data[2][key], rtol=0, atol=0)


def test_scan_folders_joins_folders_and_counts_a_file_name_once(photos: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    extra = _photo(other / "purple.png", (150, 40, 160), seed=7)
    twin = _photo(other / "red.png", COLOURS["red"], seed=8)  # the same name as a photo of the first folder
    usable, skipped = scan_folders([photos[0].parent, other, other], DataConfig(crop=CROP))
    assert sorted(usable) == sorted([*photos, extra])
    assert [(p, r.split(":")[0]) for p, r in skipped] == [(twin, f"same file name as {photos[0]}")] * 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found 0 usable images in .*empty"):
        scan_folders([photos[0].parent, tmp_path / "empty"], DataConfig(crop=CROP))
