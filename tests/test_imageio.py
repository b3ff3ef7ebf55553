"""Tests for pikfix.imageio: every image is generated in tmp_path, tiny (13x7) and fast."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pikfix import imageio
from pikfix.imageio import (
    IMAGE_SUFFIXES,
    ImageReadError,
    ImageWriteError,
    find_images,
    from_float,
    read_image,
    read_image_header,
    to_float,
    unit_float,
    write_image,
)

H, W = 7, 13


def noise(seed: int = 0, shape: tuple[int, ...] = (H, W, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(img: Image.Image, path: Path, **options: object) -> Path:
    img.save(path, **options)
    return path


def fake_icc(colour_space: bytes) -> bytes:
    """Enough of an ICC profile for our check: the colour-space field sits at bytes 16-19."""
    return bytes(16) + colour_space + bytes(108)


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header (IHDR) claims another size: a cheap decompression bomb."""
    save(Image.new("1", (1, 1)), path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # chunk type + data
    path.write_bytes(bytes(data))
    return path


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- modes


def test_rgb_is_exact_and_writes_nothing(tmp_path: Path) -> None:
    rgb = noise()
    path = save(Image.fromarray(rgb), tmp_path / "a.png")
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    loaded = read_image(path)

    assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (H, W, 3)
    assert np.array_equal(loaded.pixels, rgb)
    assert (loaded.path, loaded.original_mode, loaded.was_grey) == (path, "RGB", False)
    assert not loaded.pixels.flags.writeable
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_gives_equal_channels(tmp_path: Path, mode: str) -> None:
    grey = Image.fromarray(noise(shape=(H, W))).convert(mode)
    loaded = read_image(save(grey, tmp_path / "g.png"))
    expected = np.asarray(grey.convert("L"))
    assert loaded.was_grey and loaded.original_mode == mode
    for channel in range(3):
        assert np.array_equal(loaded.pixels[:, :, channel], expected)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, :, 3] = 0  # transparent row -> white
    rgba[1, :, 3] = 255  # opaque row -> its colour
    rgba[2, :, 3] = 128  # half -> halfway to white
    loaded = read_image(save(Image.fromarray(rgba), tmp_path / "a.png"))
    assert (loaded.pixels[0] == 255).all()
    assert (loaded.pixels[1] == (10, 20, 30)).all()
    assert np.abs(loaded.pixels[2].astype(int) - (133, 138, 143)).max() <= 1
    assert loaded.original_mode == "RGBA" and not loaded.was_grey


def test_la_is_composited_over_white(tmp_path: Path) -> None:
    la = np.zeros((H, W, 2), np.uint8)
    la[..., 0] = 40
    la[:3, :, 1] = 255
    loaded = read_image(save(Image.fromarray(la, "LA"), tmp_path / "a.png"))
    assert (loaded.pixels[:3] == 40).all() and (loaded.pixels[3:] == 255).all()
    assert loaded.was_grey


@pytest.mark.parametrize("mode", ["P", "PA"])
def test_palette_transparency_becomes_white(tmp_path: Path, mode: str) -> None:
    img = Image.new("P", (W, H), 1)
    img.putpalette([0, 0, 0, 200, 10, 10, 0, 0, 255])
    img.paste(2, (0, 0, W, 2))
    if mode == "P":  # index 2 transparent via the palette's tRNS
        path = save(img, tmp_path / "p.png", transparency=2)
    else:  # separate alpha band, only storable as TIFF
        alpha = np.full((H, W), 255, np.uint8)
        alpha[:2] = 0
        img = img.convert("PA")
        img.putalpha(Image.fromarray(alpha))
        path = save(img, tmp_path / "p.tif")
    loaded = read_image(path)
    assert loaded.original_mode == mode and not loaded.was_grey
    assert (loaded.pixels[:2] == 255).all()
    assert (loaded.pixels[2:] == (200, 10, 10)).all()


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),  # pure red ink mix
        ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),  # BT.601 red, off by one after rounding
    ],
)
def test_other_colour_modes_convert(tmp_path: Path, mode: str, value: tuple[int, ...], expected: tuple[int, ...]) -> None:
    loaded = read_image(save(Image.new(mode, (W, H), value), tmp_path / "c.tif"))
    assert loaded.original_mode == mode and not loaded.was_grey
    assert np.abs(loaded.pixels.astype(int) - expected).max() <= 1


def test_sixteen_bit_png_keeps_uint16(tmp_path: Path) -> None:
    grey = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 701).astype(np.uint16)
    loaded = read_image(save(Image.fromarray(grey), tmp_path / "g16.png"))
    assert loaded.pixels.dtype == np.uint16
    assert loaded.was_grey and loaded.original_mode == "I;16"
    assert all(np.array_equal(loaded.pixels[:, :, c], grey) for c in range(3))


def test_sixteen_bit_big_endian_tiff_and_transparency(tmp_path: Path) -> None:
    grey = np.full((H, W), 1000, np.uint16)
    grey[0] = 5
    big_endian = save(Image.frombytes("I;16B", (W, H), grey.astype(">u2").tobytes()), tmp_path / "g.tif")
    loaded = read_image(big_endian)
    assert loaded.original_mode == "I;16B" and loaded.pixels.dtype == np.uint16
    assert loaded.pixels[0, 0, 0] == 5 and loaded.pixels[1, 0, 2] == 1000

    with_trns = save(Image.fromarray(grey), tmp_path / "t.png", transparency=5)
    pixels = read_image(with_trns).pixels
    assert (pixels[0] == 65535).all() and (pixels[1:] == 1000).all()


def test_int32_and_float_modes(tmp_path: Path) -> None:
    wide = np.array([[-5, 0, 40000, 70000]], np.int32)  # "I": clipped to 16 bits
    pixels = read_image(save(Image.fromarray(wide, "I"), tmp_path / "i.tif")).pixels
    assert pixels.dtype == np.uint16 and pixels[0, :, 0].tolist() == [0, 0, 40000, 65535]

    floats = np.array([[100.4, 300.0, -5.0]], np.float32)  # "F": Pillow's 0..255 scale
    loaded = read_image(save(Image.fromarray(floats, "F"), tmp_path / "f.tif"))
    assert loaded.was_grey and loaded.pixels.dtype == np.uint8
    assert loaded.pixels[0, :, 1].tolist() == [100, 255, 0]


def test_rgb_icc_profile_kept_other_profiles_dropped(tmp_path: Path) -> None:
    rgb_icc, cmyk_icc = fake_icc(b"RGB "), fake_icc(b"CMYK")
    rgb = save(Image.fromarray(noise()), tmp_path / "rgb.png", icc_profile=rgb_icc)
    cmyk = save(Image.new("CMYK", (W, H)), tmp_path / "cmyk.jpg", icc_profile=cmyk_icc)
    assert read_image(rgb).icc_profile == rgb_icc
    assert read_image(cmyk).icc_profile is None
    assert read_image(save(Image.fromarray(noise()), tmp_path / "none.png")).icc_profile is None


# ---------------------------------------------------------------- orientation


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_6_rotates_clockwise(tmp_path: Path, suffix: str) -> None:
    stored = np.zeros((H, W), np.uint8)
    stored[0, 0] = 255  # marks the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(Image.fromarray(stored), tmp_path / f"o{suffix}", exif=exif.tobytes(), quality=100)

    loaded = read_image(path)
    assert loaded.pixels.shape == (W, H, 3)
    assert read_image_header(path) == (H, W)  # (width, height) of the upright image
    assert loaded.pixels[0, -1, 0] > 200  # stored top-left ends up top-right
    assert loaded.pixels[0, 0, 0] < 50


def test_header_without_orientation(tmp_path: Path) -> None:
    assert read_image_header(save(Image.fromarray(noise()), tmp_path / "a.png")) == (W, H)


# ---------------------------------------------------------------- broken inputs


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".webp"])
@pytest.mark.parametrize("size", [(H, W), (64, 64)], ids=["cut-header", "cut-pixels"])
def test_truncated_file_fails_naming_it(tmp_path: Path, suffix: str, size: tuple[int, int]) -> None:
    path = save(Image.fromarray(noise(shape=(*size, 3))), tmp_path / f"cut{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = (path.read_bytes(), path.stat().st_mtime_ns)

    with pytest.raises(ImageReadError) as caught:
        read_image(path)

    assert str(caught.value).startswith(f"{path}: truncated or corrupt image data")
    assert "\n" not in str(caught.value)
    assert caught.value.path == path
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("these are not the pixels you are looking for"), "not an image file"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (lambda p: None, "file not found"),
    ],
    ids=["empty", "text", "folder", "missing"],
)
def test_unusable_inputs(tmp_path: Path, make: Callable[[Path], object], reason: str) -> None:
    path = tmp_path / "photo.jpg"
    make(path)
    for read in (read_image, read_image_header):
        with pytest.raises(ImageReadError, match=f"^{path}: {reason}"):
            read(path)


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageReadError, match="a parent path is a file"):
        read_image(tmp_path / "file" / "a.png")


def test_decompression_bomb_refused_from_header(tmp_path: Path) -> None:
    bomb = png_claiming_size(tmp_path / "bomb.png", 20000, 15000)  # 300 MP, ~70 bytes
    expected = (
        f"{bomb}: too large: 300.0 megapixels exceeds the 200 megapixel limit (decompression-bomb guard)"
    )
    for read in (read_image, read_image_header):
        with pytest.raises(ImageReadError) as caught:
            read(bomb)
        assert str(caught.value) == expected

    # The caller's limit wins over Pillow's default in both directions.
    assert read_image_header(bomb, max_megapixels=301) == (20000, 15000)
    small = png_claiming_size(tmp_path / "small.png", 2000, 1000)
    with pytest.raises(ImageReadError, match="2.0 megapixels exceeds the 1.5 megapixel limit"):
        read_image(small, max_megapixels=1.5)


def test_far_beyond_limit_refused_by_pillow_guard_too(tmp_path: Path) -> None:
    bomb = png_claiming_size(tmp_path / "bomb.png", 30000, 30000)  # 900 MP
    default_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError, match="more than 400 megapixels exceeds the 200 megapixel limit"):
        read_image(bomb)
    assert Image.MAX_IMAGE_PIXELS == default_limit  # Pillow's global is restored


def test_zero_area_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's own readers refuse zero-sized headers, so simulate a plugin that accepts one.
    path = save(Image.fromarray(noise()), tmp_path / "z.png")
    monkeypatch.setattr(imageio.Image, "open", lambda fh: Image.new("L", (0, 12)))
    with pytest.raises(ImageReadError, match=r"zero-area image \(0x12\)"):
        read_image(path)


def test_errors_survive_pickling() -> None:
    for error in (ImageReadError("a.jpg", "empty file"), ImageWriteError("b.png", "permission denied")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error) and copy.path == error.path
    assert str(ImageWriteError("b.png", "permission denied")) == "b.png: cannot write (permission denied)"


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff", ".bmp", ".PNG"])
def test_lossless_write_round_trips(tmp_path: Path, suffix: str) -> None:
    rgb = noise()
    path = tmp_path / "out" / f"a{suffix}"  # missing parent folders are created
    write_image(path, rgb)
    assert np.array_equal(read_image(path).pixels, rgb)
    assert no_temp_files(path.parent)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp"])
def test_lossy_write_is_close(tmp_path: Path, suffix: str) -> None:
    smooth = np.zeros((H, W, 3), np.uint8)
    smooth[...] = (60, 120, 180)
    write_image(tmp_path / f"a{suffix}", smooth, quality=95)
    assert np.abs(read_image(tmp_path / f"a{suffix}").pixels.astype(int) - smooth).max() <= 3


def test_icc_profile_is_written(tmp_path: Path) -> None:
    icc = fake_icc(b"RGB ")
    for suffix in (".jpg", ".png", ".tif", ".webp"):
        write_image(tmp_path / f"a{suffix}", noise(), icc_profile=icc)
        assert read_image(tmp_path / f"a{suffix}").icc_profile == icc


def sixteen_bit_rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 65536, (H, W, 3), dtype=np.uint16)


def test_sixteen_bit_png_written_as_16_bit(tmp_path: Path) -> None:
    pixels, icc = sixteen_bit_rgb(), fake_icc(b"RGB ")
    path = tmp_path / "a.png"
    write_image(path, pixels, icc_profile=icc)

    # Decode by hand: Pillow itself only reads 16-bit colour PNGs as 8-bit.
    data = path.read_bytes()
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour_type) == (W, H, 16, 2)
    idat = b"".join(
        data[i + 8 : i + 8 + struct.unpack(">I", data[i : i + 4])[0]]
        for i in range(8, len(data))
        if data[i + 4 : i + 8] == b"IDAT"
    )
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(H, 1 + W * 6)
    assert (rows[:, 0] == 2).all()  # "Up" filter: undo with a running sum down the rows
    raw = np.cumsum(rows[:, 1:], axis=0, dtype=np.uint8)
    assert np.array_equal(raw.view(">u2").reshape(H, W, 3), pixels)

    loaded = read_image(path)  # and it is a valid PNG to Pillow: top bytes, our profile
    assert np.array_equal(loaded.pixels, (pixels >> 8).astype(np.uint8))
    assert loaded.icc_profile == icc


def test_sixteen_bit_tiff_written_as_16_bit(tmp_path: Path) -> None:
    pixels, icc = sixteen_bit_rgb(), fake_icc(b"RGB ")
    path = tmp_path / "a.tif"
    write_image(path, pixels, icc_profile=icc)

    with Image.open(path) as img:  # Pillow parses the tags; the samples are read raw
        assert img.size == (W, H)
        assert img.tag_v2[258] == (16, 16, 16)
        assert img.info["icc_profile"] == icc
        offset, length = img.tag_v2[273][0], img.tag_v2[279][0]
        img.load()
        assert np.array_equal(np.asarray(img), (pixels >> 8).astype(np.uint8))
    samples = np.frombuffer(path.read_bytes()[offset : offset + length], "<u2")
    assert np.array_equal(samples.reshape(H, W, 3), pixels)


def test_sixteen_bit_to_8_bit_formats_rounds(tmp_path: Path) -> None:
    pixels = np.array([[[0, 128, 129], [257, 32896, 65535]]], np.uint16)
    write_image(tmp_path / "a.bmp", pixels)
    assert read_image(tmp_path / "a.bmp").pixels.tolist() == [[[0, 0, 1], [1, 128, 255]]]


def test_write_replaces_atomically_and_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    write_image(path, noise(seed=1))
    old = path.read_bytes()

    def broken_save(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"half an image")  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageWriteError, match=f"^{path}: cannot write \\(No space left on device\\)$"):
        write_image(path, noise(seed=2))
    with pytest.raises(ImageWriteError):
        write_image(tmp_path / "new.png", noise(seed=2))

    assert path.read_bytes() == old  # the previous output is untouched
    assert not (tmp_path / "new.png").exists()
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


def test_unwritable_destinations(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageWriteError, match="cannot write \\(a parent path is a file"):
        write_image(tmp_path / "file" / "a.png", noise())
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageWriteError, match="cannot write \\(is a folder"):
        write_image(tmp_path / "folder.png", noise())
    with pytest.raises(ImageWriteError, match="unsupported file type '.gif'"):
        write_image(tmp_path / "a.gif", noise())
    with pytest.raises(ImageWriteError, match="WebP limit"):
        write_image(tmp_path / "wide.webp", np.zeros((1, 17000, 3), np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["file", "folder.png"]


def test_bad_pixels_are_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be \\(H, W, 3\\)"):
        write_image(tmp_path / "a.png", np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_image(tmp_path / "a.png", np.zeros((H, W, 3), np.float32))
    with pytest.raises(ValueError, match="quality"):
        write_image(tmp_path / "a.jpg", noise(), quality=0)


# ---------------------------------------------------------------- float conversion


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_float_round_trip_is_exact(dtype: type) -> None:
    every_value = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
    as_float = to_float(every_value)
    assert as_float.dtype == np.float32 and as_float[0] == 0.0 and as_float[-1] == 1.0
    assert np.array_equal(from_float(as_float, dtype), every_value)


def test_from_float_converts_strip_by_strip(monkeypatch: pytest.MonkeyPatch) -> None:
    import pikfix.imageio as imageio

    x = np.random.default_rng(0).uniform(-0.1, 1.1, (70, 9, 3)).astype(np.float32)
    whole = from_float(x, np.uint8)
    monkeypatch.setattr(imageio, "FROM_FLOAT_ROWS", 16)  # 5 strips, the last one short
    strips = from_float(x, np.uint8)
    assert strips.dtype == np.uint8 and strips.shape == x.shape
    np.testing.assert_array_equal(strips, whole)
    np.testing.assert_array_equal(whole, np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))


def test_unit_float_takes_decoded_or_float_pixels() -> None:
    pixels = np.array([[0, 51, 255]], np.uint8)
    np.testing.assert_array_equal(unit_float(pixels), to_float(pixels))
    floats = np.array([[0.25, 0.5]], np.float64)
    out = unit_float(floats)
    assert out.dtype == np.float32 and out.tolist() == [[0.25, 0.5]]


def test_from_float_passes_floats_through_for_a_float_type() -> None:
    x = np.array([[-0.2, 0.5, 1.3]], dtype=np.float32)
    assert from_float(x, np.float32) is x  # what a float photo's result is written as: itself
    assert from_float(x.astype(np.float64), np.float32).dtype == np.float32


def test_from_float_rounds_and_clips() -> None:
    x = np.array([-0.5, 0.0, 0.5, 1.0, 7.0])
    assert from_float(x, np.uint8).tolist() == [0, 0, 128, 255, 255]
    assert from_float(x, np.uint16).tolist() == [0, 0, 32768, 65535, 65535]
    with pytest.raises(ValueError):
        to_float(np.zeros(3, np.float64))


# ---------------------------------------------------------------- finding inputs


def test_find_images_mirrors_tree_and_skips_hidden(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    for name in [
        "b.jpg",
        "a.PNG",
        "notes.txt",
        ".b.x1y2.tmp.jpg",  # an interrupted atomic write
        "1950s/z.tif",
        "1950s/deep/c.webp",
        ".cache/hidden.jpg",
        "empty-dir/.keep",
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    single = tmp_path / "odd.name.raw"
    single.write_bytes(b"")

    found = find_images([root, single])

    assert found == [
        (root / "1950s/deep/c.webp", Path("1950s/deep/c.webp")),
        (root / "1950s/z.tif", Path("1950s/z.tif")),
        (root / "a.PNG", Path("a.PNG")),
        (root / "b.jpg", Path("b.jpg")),
        (single, Path("odd.name.raw")),  # explicit files are kept whatever their suffix
    ]
    assert {".jpg", ".png", ".tif", ".webp"} <= IMAGE_SUFFIXES


def test_find_images_in_hidden_folder_given_explicitly(tmp_path: Path) -> None:
    inbox = tmp_path / ".inbox"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"")
    assert find_images([inbox]) == [(inbox / "a.jpg", Path("a.jpg"))]


def test_find_images_missing_input(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such file or folder"):
        find_images([missing])
