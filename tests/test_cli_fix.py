"""`pikfix fix` end to end on files and folders, and on every kind of bad input."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pikfix.checkpoint import save_checkpoint
from pikfix.model import build_model
from pikfix_cli.app import app

runner = CliRunner()


def _photo(path: Path, size: tuple[int, int], mode: str = "L", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 255, w)[None, :] * np.ones((h, 1))
    arr = np.clip(base + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "L")
    if mode != "L":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims another size (decompression bomb / zero area)."""
    Image.new("1", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(build_model("tiny"), path)
    return path


@pytest.fixture()
def ref(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    arr = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
    path = tmp_path / "refs" / "ref.jpg"
    path.parent.mkdir()
    Image.fromarray(arr).save(path)
    return path


def _fix(*args: str):
    return runner.invoke(app, ["fix", *args])


def test_fixes_a_file_at_full_size(tmp_path, model_path, ref):
    src = _photo(tmp_path / "old.png", (129, 67))
    before = (src.read_bytes(), os.stat(src).st_mtime_ns)
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "out" / "old.png")
    assert out.size == (129, 67) and out.mode == "RGB"
    assert (src.read_bytes(), os.stat(src).st_mtime_ns) == before  # input untouched


@pytest.mark.parametrize("bits", [8, 16])
def test_the_file_written_is_the_float_photos_result_at_the_files_depth(tmp_path, model_path, ref, bits):
    """`fix` hands a grey photo to the pipeline as decoded (no float copy of it is made) and
    gets it back at its own depth: the same pixels as the float photo's result, rounded."""
    from pikfix.imageio import from_float, read_image, to_float, write_image
    from pikfix.pipeline import FixPipeline

    src = _photo(tmp_path / "old.png", (70, 45))
    if bits == 16:
        Image.fromarray(np.asarray(Image.open(src)).astype(np.uint16) * 257).save(src)
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    pixels = read_image(src).pixels
    assert pixels.dtype == (np.uint8 if bits == 8 else np.uint16)
    pipe = FixPipeline.from_checkpoint(model_path, "cpu")
    reference = pipe.prepare_reference(to_float(read_image(ref).pixels))
    from_decoded = pipe.fix(pixels, reference).rgb
    assert from_decoded.dtype == pixels.dtype
    np.testing.assert_array_equal(from_decoded, from_float(pipe.fix(to_float(pixels), reference).rgb, pixels.dtype))
    write_image(tmp_path / "expected.png", from_decoded)  # as `fix` writes it (PNG: 8-bit RGB)
    written = read_image(tmp_path / "out" / "old.png").pixels
    np.testing.assert_array_equal(written, read_image(tmp_path / "expected.png").pixels)


def test_folder_is_mirrored_and_reruns_skip(tmp_path, model_path, ref):
    _photo(tmp_path / "in" / "a.jpg", (40, 30))
    _photo(tmp_path / "in" / "deeper" / "b.png", (33, 45), mode="RGB")
    out = tmp_path / "out"
    res = _fix(str(tmp_path / "in"), "--ref", str(ref), "--model", str(model_path), "-o", str(out), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["summary"] == {"ok": 2, "skipped": 0, "failed": 0}
    assert (out / "a.jpg").is_file() and (out / "deeper" / "b.png").is_file()
    assert Image.open(out / "deeper" / "b.png").size == (33, 45)
    assert all(f["reference"] == str(ref) and f["confidence"] is not None for f in report["files"])

    stamp = os.stat(out / "a.jpg").st_mtime_ns
    res = _fix(str(tmp_path / "in"), "--ref", str(ref), "--model", str(model_path), "-o", str(out), "--json")
    assert json.loads(res.stdout)["summary"]["skipped"] == 2
    assert os.stat(out / "a.jpg").st_mtime_ns == stamp
    res = _fix(str(tmp_path / "in"), "--ref", str(ref), "--model", str(model_path), "-o", str(out), "--json", "--overwrite")
    assert json.loads(res.stdout)["summary"]["ok"] == 2


def test_compare_sheet(tmp_path, model_path, ref):
    _photo(tmp_path / "old.png", (50, 40))
    res = _fix(str(tmp_path / "old.png"), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "o"), "--compare")
    assert res.exit_code == 0, res.output
    sheet = Image.open(tmp_path / "o" / "old.compare.jpg")
    assert sheet.width > 3 * 40  # three panels side by side


def _bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = _photo(folder / "good.png", (30, 20))
    truncated = folder / "truncated.jpg"
    _photo(truncated, (64, 64))
    truncated.write_bytes(truncated.read_bytes()[:300])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("not a photo")
    return {
        "good": good,
        "truncated": truncated,
        "empty": empty,
        "text": text,
        "bomb": _png_claiming(folder / "bomb.png", 20000, 15000),
        "zero": _png_claiming(folder / "zero.png", 0, 12),
    }


def test_bad_inputs_fail_one_line_each_and_the_batch_goes_on(tmp_path, model_path, ref):
    files = _bad_inputs(tmp_path / "in")
    out = tmp_path / "out"
    res = _fix(str(tmp_path / "in"), "--ref", str(ref), "--model", str(model_path), "-o", str(out), "--json")
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    report = {Path(f["input"]).name: f for f in json.loads(res.stdout)["files"]}
    assert report["good.png"]["status"] == "ok"
    for name in ("truncated", "empty", "text", "bomb", "zero"):
        entry = report[files[name].name]
        assert entry["status"] == "failed", name
        assert str(files[name]) in entry["error"] and "\n" not in entry["error"]
        assert entry["error"] in res.stderr
    assert sorted(p.name for p in out.rglob("*")) == ["good.png"]  # no partial outputs, no temp files


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_bad_reference_is_one_clear_error(tmp_path, model_path, problem):
    src = _photo(tmp_path / "old.png", (30, 20))
    bad_ref = tmp_path / "ref.jpg"
    if problem == "corrupt":
        bad_ref.write_bytes(b"\xff\xd8\xff garbage")
    res = _fix(str(src), "--ref", str(bad_ref), "--model", str(model_path), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "Traceback" not in res.output and str(bad_ref) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("problem", ["missing", "corrupt", "foreign"])
def test_bad_checkpoint_is_one_clear_error(tmp_path, ref, problem):
    src = _photo(tmp_path / "old.png", (30, 20))
    ckpt = tmp_path / "model.safetensors"
    if problem == "corrupt":
        ckpt.write_bytes(os.urandom(200))
    elif problem == "foreign":
        from safetensors.torch import save_file
        import torch

        save_file({"w": torch.zeros(3)}, str(ckpt))
    res = _fix(str(src), "--ref", str(ref), "--model", str(ckpt), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "Traceback" not in res.output and str(ckpt) in res.stderr


def test_unwritable_output_folder(tmp_path, model_path, ref):
    src = _photo(tmp_path / "old.png", (30, 20))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(blocker / "out"))
    assert res.exit_code == 2
    assert "Traceback" not in res.output and str(blocker / "out") in res.stderr


def test_missing_input(tmp_path, model_path, ref):
    res = _fix(str(tmp_path / "nothing.jpg"), "--ref", str(ref), "--model", str(model_path))
    assert res.exit_code == 2 and "nothing.jpg" in res.stderr



def _colour_scene(path: Path, seed: int, size: tuple[int, int] = (72, 56)) -> np.ndarray:
    """A distinct colourful picture: a smooth colour field with a few coloured boxes."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = rng.random(3) * xx[..., None] + rng.random(3) * (1 - yy[..., None])
    for _ in range(4):
        y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
        img[y : y + int(rng.integers(6, 12)), x : x + int(rng.integers(6, 12))] = rng.random(3)
    arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture()
def scenes(tmp_path) -> tuple[Path, Path]:
    """refs/ with 4 colour scenes; old/ with the grey (slightly blurred) version of scene 2."""
    arrays = [_colour_scene(tmp_path / "refs" / f"scene{i}.png", seed=10 + i) for i in range(4)]
    from PIL import ImageFilter

    grey = Image.fromarray(arrays[2]).convert("L").filter(ImageFilter.GaussianBlur(0.8))
    (tmp_path / "old").mkdir()
    grey.save(tmp_path / "old" / "photo.png")
    return tmp_path / "refs", tmp_path / "old"


def test_refs_picks_and_records_the_matching_reference(tmp_path, model_path, scenes, monkeypatch):
    monkeypatch.setenv("PIKFIX_CACHE", str(tmp_path / "cache"))
    refs, old = scenes
    res = _fix(str(old), "--refs", str(refs), "--model", str(model_path), "-o", str(tmp_path / "o"), "--json", "--compare")
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout)["files"][0]
    assert Path(entry["reference"]).name == "scene2.png"
    assert isinstance(entry["reference_score"], float)
    assert Path(entry["compare"]).is_file()
    # The store was cached: a second run (other output folder) reuses it and picks the same.
    res = _fix(str(old), "--refs", str(refs), "--model", str(model_path), "-o", str(tmp_path / "o2"), "--json")
    assert Path(json.loads(res.stdout)["files"][0]["reference"]).name == "scene2.png"


def test_index_store_is_used_and_a_damaged_store_is_refused(tmp_path, model_path, scenes):
    refs, old = scenes
    store = tmp_path / "store"
    assert runner.invoke(app, ["index", str(refs), "--out", str(store)]).exit_code == 0
    res = _fix(str(old), "--index", str(store), "--model", str(model_path), "-o", str(tmp_path / "o"), "--json")
    assert res.exit_code == 0, res.output
    assert Path(json.loads(res.stdout)["files"][0]["reference"]).name == "scene2.png"
    manifest = store / "manifest.json"
    manifest.write_text(manifest.read_text().replace("scene1", "sceneX"))
    res = _fix(str(old), "--index", str(store), "--model", str(model_path), "-o", str(tmp_path / "o3"))
    assert res.exit_code == 2 and "Traceback" not in res.output and str(store) in res.stderr


def test_reference_options_are_exclusive(tmp_path, model_path, scenes):
    refs, old = scenes
    res = _fix(str(old), "--ref", str(refs / "scene0.png"), "--refs", str(refs), "--model", str(model_path))
    assert res.exit_code == 2 and "at most one" in res.stderr


def test_no_reference_option_uses_the_built_in_set_with_top_k(tmp_path, model_path):
    src = _photo(tmp_path / "old.png", (70, 50))
    res = _fix(str(src), "--model", str(model_path), "-o", str(tmp_path / "o"), "--json", "--compare")
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout)["files"][0]
    assert entry["path"] == "colorized" and entry["photo_kind"] == "grey"
    from pikfix.references import DEFAULT_REFS_DIR

    used = [Path(r["path"]) for r in entry["references"]]
    assert len(used) == 3 and len(set(used)) == 3  # --top-k defaults to 3 distinct photos
    assert all(p.parent == DEFAULT_REFS_DIR / "photos" for p in used)
    assert Path(entry["reference"]) == used[0]
    scores = [r["score"] for r in entry["references"]]
    assert scores == sorted(scores, reverse=True)
    one = Image.open(tmp_path / "o" / "old.compare.jpg").width
    res = _fix(str(src), "--model", str(model_path), "-o", str(tmp_path / "o1"), "--json", "--compare", "--top-k", "1")
    assert len(json.loads(res.stdout)["files"][0]["references"]) == 1
    assert Image.open(tmp_path / "o1" / "old.compare.jpg").width < one  # one reference panel, not three


def test_own_references_win_over_the_built_in_set(tmp_path, model_path, scenes):
    refs, old = scenes
    res = _fix(str(old), "--index", str(_index(refs, tmp_path / "store")), "--model", str(model_path),
               "-o", str(tmp_path / "o"), "--json", "--top-k", "2")
    assert res.exit_code == 0, res.output
    used = [Path(r["path"]) for r in json.loads(res.stdout)["files"][0]["references"]]
    assert used[0].name == "scene2.png" and len(used) == 2 and all(p.parent == refs.resolve() for p in used)


def _index(refs: Path, store: Path) -> Path:
    assert runner.invoke(app, ["index", str(refs), "--out", str(store)]).exit_code == 0
    return store


@pytest.mark.parametrize("problem", ["missing", "damaged"])
def test_bad_built_in_reference_set_is_one_clear_error(tmp_path, model_path, monkeypatch, problem):
    import shutil

    import pikfix.references as references

    copy = tmp_path / "default_refs"
    shutil.copytree(references.DEFAULT_REFS_DIR, copy)
    if problem == "missing":
        shutil.rmtree(copy / "store")
    else:
        next((copy / "store").glob("data-*/index.faiss")).write_bytes(b"garbage")
    monkeypatch.setattr(references, "DEFAULT_REFS_DIR", copy)
    src = _photo(tmp_path / "old.png", (30, 20))
    res = _fix(str(src), "--model", str(model_path), "-o", str(tmp_path / "o"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "built-in reference set" in lines[0] and "--refs" in lines[0]


def _faded_colour_photo(path: Path) -> Path:
    """Four patches of clearly different hues, faded: low contrast, a yellow cast, dull colour."""
    rng = np.random.default_rng(3)
    img = np.zeros((48, 64, 3))
    img[:24, :32], img[:24, 32:], img[24:, :32], img[24:, 32:] = (0.8, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.3, 0.8), (0.9, 0.8, 0.3)
    img = img * np.linspace(0.5, 1.0, 64)[None, :, None]
    faded = 0.35 + 0.5 * (0.5 * img + 0.5 * img.mean(axis=2, keepdims=True)) * (1.0, 0.95, 0.8)
    arr = np.clip((faded + rng.normal(0, 0.01, faded.shape)) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def test_colour_photo_keeps_its_colours_and_recolor_forces_colorization(tmp_path, model_path, ref):
    src = _faded_colour_photo(tmp_path / "faded.png")
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "o"), "--json", "--compare")
    assert res.exit_code == 0, res.output
    entry = json.loads(res.stdout)["files"][0]
    assert entry["path"] == "restored-colour" and entry["photo_kind"] == "colour"
    assert entry["references"] == [] and entry["reference"] is None
    out = np.asarray(Image.open(entry["output"]), dtype=np.float64)
    before = np.asarray(Image.open(src), dtype=np.float64)
    assert out.std() > before.std()  # the fade was lifted: more contrast
    for y, x in ((10, 10), (10, 50), (36, 10), (36, 50)):  # each patch keeps its own hue
        assert np.argmax(out[y, x] - out[y, x].mean()) == np.argmax(before[y, x] - before[y, x].mean())
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "o2"), "--json", "--recolor")
    entry = json.loads(res.stdout)["files"][0]
    assert entry["path"] == "colorized" and entry["photo_kind"] == "colour"
    assert Path(entry["reference"]) == ref


# --------------------------------------------------------------------------- damage masks


def test_save_mask_writes_a_one_channel_mask_of_the_photo_size(tmp_path, model_path, ref):
    src = _photo(tmp_path / "in" / "old.png", (77, 53))
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "out"), "--save-mask", "--json")
    assert res.exit_code == 0, res.output
    mask_file = tmp_path / "out" / "old.mask.png"
    with Image.open(mask_file) as mask:
        assert mask.mode == "L" and mask.size == (77, 53)
    report = json.loads(res.stdout)["files"][0]
    assert report["mask"] == "detected" and report["mask_output"] == str(mask_file)
    # A saved mask is accepted back as --mask (edit it, rerun).
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "again"),
               "--mask", str(mask_file))
    assert res.exit_code == 0, res.output


def test_user_mask_steers_the_repair_and_is_scaled(tmp_path, model_path, ref):
    src = _photo(tmp_path / "old.png", (80, 60))
    # Half-size mask: the top half is damaged; it is scaled to the photo.
    half = np.zeros((30, 40), dtype=np.uint8)
    half[:15] = 255
    Image.fromarray(half).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(out), "--mask",
               str(tmp_path / "mask.png"), "--save-mask", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["files"][0]["mask"] == str(tmp_path / "mask.png")
    used = np.asarray(Image.open(out / "old.mask.png"))
    assert used.shape == (60, 80)
    assert used[:28].min() == 255 and used[32:].max() == 0


def test_mask_folder_matches_inputs_by_name_and_a_bad_mask_fails_only_its_photo(tmp_path, model_path, ref):
    _photo(tmp_path / "in" / "a.png", (40, 30))
    _photo(tmp_path / "in" / "b.png", (40, 30), seed=1)
    _photo(tmp_path / "in" / "c.png", (40, 30), seed=2)
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.zeros((30, 40), dtype=np.uint8)).save(masks / "a.png")  # good, one channel
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(masks / "b.png")  # RGB: not a mask
    (masks / "c.mask.png").write_bytes(b"not an image")  # unreadable
    res = _fix(str(tmp_path / "in"), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "out"),
               "--mask", str(masks), "--json")
    assert res.exit_code == 1
    files = {Path(f["input"]).name: f for f in json.loads(res.stdout)["files"]}
    assert files["a.png"]["status"] == "ok" and files["a.png"]["mask"] == str(masks / "a.png")
    assert files["b.png"]["status"] == "failed" and "one channel" in files["b.png"]["error"]
    assert str(masks / "b.png") in files["b.png"]["error"]
    assert files["c.png"]["status"] == "failed" and str(masks / "c.mask.png") in files["c.png"]["error"]
    assert (tmp_path / "out" / "a.png").exists() and not (tmp_path / "out" / "b.png").exists()
    assert "Traceback" not in res.output


def test_missing_mask_path_is_a_usage_error(tmp_path, model_path, ref):
    src = _photo(tmp_path / "old.png", (40, 30))
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "--mask", str(tmp_path / "nope.png"))
    assert res.exit_code == 2 and "nope.png" in res.output


def test_a_model_without_detector_says_masks_have_no_effect(tmp_path, ref):
    import dataclasses

    from pikfix.config import preset_config
    from pikfix.model import PikFix

    config = preset_config("tiny")
    config.restoration = dataclasses.replace(config.restoration, detector_width=0)  # the paper's net
    model = tmp_path / "no-detector.safetensors"
    save_checkpoint(PikFix(config), model)
    src = _photo(tmp_path / "old.png", (40, 30))
    res = _fix(str(src), "--ref", str(ref), "--model", str(model), "-o", str(tmp_path / "out"), "--save-mask", "--json")
    assert res.exit_code == 0, res.output
    assert "has no damage detector" in res.stderr
    assert json.loads(res.stdout)["files"][0]["mask"] is None
    assert not (tmp_path / "out" / "old.mask.png").exists()


def test_keep_tone_keeps_the_tone_and_warns_for_a_model_without_a_tone_head(tmp_path, ref):
    import dataclasses

    from pikfix.config import preset_config
    from pikfix.model import PikFix

    src = _photo(tmp_path / "old.png", (40, 30))
    toned = PikFix(preset_config("tiny"))
    torch.nn.init.constant_(toned.restoration.tone.mlp[-1].bias, 0.3)  # a strong brightening curve
    with_head = tmp_path / "tone.safetensors"
    save_checkpoint(toned, with_head)
    results = {}
    for name, extra in (("toned", []), ("kept", ["--keep-tone"])):
        res = _fix(str(src), "--ref", str(ref), "--model", str(with_head), "-o", str(tmp_path / name), *extra)
        assert res.exit_code == 0, res.output
        results[name] = np.asarray(Image.open(tmp_path / name / "old.png").convert("L"), dtype=np.float32)
    assert results["toned"].mean() > results["kept"].mean() + 5
    config = preset_config("tiny")
    config.restoration = dataclasses.replace(config.restoration, tone_width=0)
    without = tmp_path / "no-tone.safetensors"
    save_checkpoint(PikFix(config), without)
    res = _fix(str(src), "--ref", str(ref), "--model", str(without), "-o", str(tmp_path / "n"), "--keep-tone")
    assert res.exit_code == 0 and "has no tone head" in res.stderr


def test_no_denoise_keeps_the_photos_noise(tmp_path, model_path, ref):
    src = _photo(tmp_path / "old.png", (64, 48))  # a gradient with strong noise
    grey = {}
    reported = {}
    for name, extra in (("default", []), ("kept", ["--no-denoise"])):
        res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / name), "--json", *extra)
        assert res.exit_code == 0, res.output
        reported[name] = json.loads(res.stdout)["files"][0]
        grey[name] = np.asarray(Image.open(tmp_path / name / "old.png").convert("L"), dtype=np.float32)
    assert reported["default"]["denoised"] is True and reported["default"]["noise"] > 1
    assert reported["kept"]["denoised"] is None and reported["kept"]["noise"] is None
    roughness = {k: float(np.abs(np.diff(v, axis=0)).mean()) for k, v in grey.items()}
    assert roughness["default"] < 0.6 * roughness["kept"]


def test_sharpening_is_on_by_default_off_on_request_and_reported(tmp_path, model_path, ref):
    from pikfix.training.denoise import with_denoiser

    model = with_denoiser(build_model("tiny"), 4, "sharpener")
    with torch.no_grad():  # a sharpener that darkens by 2 L everywhere: a change worth applying
        model.restoration.sharpener.body[-1].weight.zero_()
        model.restoration.sharpener.body[-1].bias.fill_(0.02)
    sharpening = tmp_path / "sharpener.safetensors"
    save_checkpoint(model, sharpening)
    src = _photo(tmp_path / "old.png", (64, 48))
    reported = {}
    for name, extra in (("default", []), ("asked", ["--sharpen"]), ("kept", ["--no-sharpen"])):
        res = _fix(str(src), "--ref", str(ref), "--model", str(sharpening), "-o", str(tmp_path / name), "--json", *extra)
        assert res.exit_code == 0, res.output
        reported[name] = json.loads(res.stdout)["files"][0]["sharpened"]
    assert reported == {"default": 1.0, "asked": 1.0, "kept": 0.0}
    res = _fix(str(src), "--ref", str(ref), "--model", str(model_path), "-o", str(tmp_path / "n"), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["files"][0]["sharpened"] == 0.0  # a model without one
