"""Reading and writing photographs for every pikfix command.

Reading fails early and clearly: a file is fully decoded inside ``read_image``, so a
truncated scan is reported there (naming the file) instead of surfacing as an odd error
deep in the pipeline, and oversized files are refused from their header before any
pixel memory is allocated. Writing is atomic (``pikfix.atomic``), so an interrupted run
never leaves a half-written output. 16-bit greyscale scans keep their precision end to
end: they load as uint16, and uint16 results are written as 16-bit PNG/TIFF.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from pikfix.atomic import atomic_path

# Output format per suffix; also the suffixes picked up when scanning a folder.
_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".bmp": "BMP",
}
IMAGE_SUFFIXES: frozenset[str] = frozenset(_FORMATS)

# Pillow modes holding one 16-bit-or-wider grey channel. "I" is 32-bit, but in practice it
# holds 16-bit grey data (how some readers deliver 16-bit TIFF/PNG); wider values are clipped.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})

# What Pillow and the OS raise for a damaged file. Pillow has no common base class for
# these: plugins raise SyntaxError, EOFError or struct.error besides OSError/ValueError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)

# EXIF orientations that turn the image by 90 degrees, so width and height swap.
_SWAPS_AXES = frozenset({5, 6, 7, 8})


class ImageReadError(ValueError):
    """An input that cannot be used as an image; ``str()`` is one line: ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[Path, str]]:
        # Default pickling would call __init__ with the message only; process pools need this.
        return type(self), (self.path, self.reason)


class ImageWriteError(OSError):
    """An output that cannot be written; ``str()`` is one line: ``"<path>: cannot write (<reason>)"``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: cannot write ({reason})")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageWriteError], tuple[Path, str]]:
        # Default pickling would call __init__ with the message only; process pools need this.
        return type(self), (self.path, self.reason)


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class LoadedImage:
    """A decoded, upright photograph plus what is needed to write the result back faithfully.

    ``pixels`` is (H, W, 3) uint8, or uint16 for 16-bit grey inputs. It is read-only so that
    a loaded image can be passed around without defensive copies; copy before editing in place.
    ``icc_profile`` is kept only when it describes RGB data, because it is attached to the
    RGB output: a CMYK or grey profile there would make viewers show wrong colours.
    """

    pixels: np.ndarray
    path: Path
    original_mode: str
    was_grey: bool
    icc_profile: bytes | None


def read_image(path: str | os.PathLike[str], max_megapixels: float = 200.0) -> LoadedImage:
    """Decode ``path`` completely into upright RGB pixels, or raise ``ImageReadError``.

    Files over ``max_megapixels`` are refused from their header, before any decoding.
    EXIF orientation is applied; transparency is composited over white (old photos are
    prints on paper, and dropping alpha would expose arbitrary hidden colours). 16-bit
    colour PNG/TIFF arrive as 8-bit, because that is how Pillow decodes them.
    """
    path = Path(path)
    with _open_checked(path, max_megapixels) as img:
        mode = img.mode
        try:
            img.load()  # decode everything now, so damaged data fails here
            ImageOps.exif_transpose(img, in_place=True)  # in memory only, never the file
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, _beyond_pillow_guard(max_megapixels)) from exc
        except _DECODE_ERRORS as exc:
            raise ImageReadError(path, _corrupt(exc)) from exc
        pixels = _to_rgb_array(img)
        icc_profile = img.info.get("icc_profile")
    pixels.flags.writeable = False
    return LoadedImage(
        pixels=pixels,
        path=path,
        original_mode=mode,
        was_grey=Image.getmodebase(mode) == "L",
        icc_profile=icc_profile if _describes_rgb(icc_profile) else None,
    )


_MASK_MODES = {"1": 1.0, "L": 255.0, "I;16": 65535.0, "I": 65535.0, "F": 1.0}  # mode -> white value


def read_mask(path: str | os.PathLike[str], max_megapixels: float = 200.0) -> np.ndarray:
    """A damage mask (H, W) float32 in [0, 1], white = damaged, or ``ImageReadError``.

    A mask must be one channel (greyscale or black-and-white): an RGB or palette file is more
    likely a photo given by mistake than a mask, so it is refused rather than guessed at.
    EXIF orientation is applied, as for the photo it belongs to.
    """
    path = Path(path)
    with _open_checked(path, max_megapixels) as img:
        if img.mode not in _MASK_MODES:
            raise ImageReadError(path, f"a mask must be one channel (greyscale, white = damaged), got mode {img.mode}")
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, _beyond_pillow_guard(max_megapixels)) from exc
        except _DECODE_ERRORS as exc:
            raise ImageReadError(path, _corrupt(exc)) from exc
        white = _MASK_MODES[img.mode]
        return np.clip(np.asarray(upright, dtype=np.float32) / white, 0.0, 1.0)


def read_image_header(path: str | os.PathLike[str], max_megapixels: float = 200.0) -> tuple[int, int]:
    """Return the upright (width, height) of ``path`` without decoding pixels, for memory planning.

    Rejects the same files as ``read_image`` would from their header alone.
    """
    path = Path(path)
    with _open_checked(path, max_megapixels) as img:
        try:
            # The base-class getexif reads the EXIF found in the header. PngImageFile's own
            # version decodes the whole image to also look for EXIF stored after the pixels.
            orientation = Image.Image.getexif(img).get(ExifTags.Base.Orientation, 1)
        except _DECODE_ERRORS as exc:
            raise ImageReadError(path, f"corrupt EXIF metadata ({exc})") from exc
        width, height = img.size
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    icc_profile: bytes | None = None,
    quality: int = 95,
) -> None:
    """Write (H, W, 3) uint8/uint16 ``pixels`` atomically, in the format named by the suffix.

    uint16 is written as 16-bit for PNG and TIFF and rounded to 8-bit for the other
    formats. ``quality`` applies to JPEG and WebP. Raises ``ImageWriteError`` when the
    file cannot be written, and ``ValueError`` for malformed ``pixels`` or ``quality``.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ImageWriteError(path, f"unsupported file type {path.suffix!r}; use one of {known}")
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be (H, W, 3) uint8 or uint16, got {pixels.shape} {pixels.dtype}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    try:
        with atomic_path(path) as tmp:
            if pixels.dtype == np.uint16 and fmt in ("PNG", "TIFF"):
                # Pillow has no 16-bit RGB mode, so these two are encoded here.
                encode = _write_png16 if fmt == "PNG" else _write_tiff16
                with tmp.open("wb") as fh:
                    encode(fh, pixels, icc_profile)
            else:
                _save_with_pillow(tmp, fmt, _to_8bit(pixels), icc_profile, quality)
    except (OSError, ValueError) as exc:  # ValueError: encoder limits, e.g. WebP's 16383 px
        raise ImageWriteError(path, _describe_error(exc)) from exc


def write_mask(path: str | os.PathLike[str], mask: np.ndarray) -> None:
    """Write a damage mask (H, W) in [0, 1] atomically as an 8-bit one-channel PNG (white =
    damaged), the form ``read_mask`` takes back, so a saved mask can be edited and reused."""
    path = Path(path)
    pixels = np.round(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8)
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
    except OSError as exc:
        raise ImageWriteError(path, exc.strerror or str(exc)) from exc


FROM_FLOAT_ROWS = 256  # rows per ``from_float`` strip


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Scale uint8/uint16 pixels to float32 in [0, 1], so one pipeline serves both depths."""
    scale = _max_value(pixels.dtype)
    out = pixels.astype(np.float32)
    out /= scale
    return out


def unit_float(pixels: np.ndarray) -> np.ndarray:
    """``to_float`` for uint8/uint16 pixels; float pixels, taken as already in [0, 1], as float32.

    For code that takes a photo either as decoded (integers) or as floats, one strip at a time:
    a 24 MP photo decoded as uint8 is 72 MB, its float32 copy 288 MB."""
    if np.issubdtype(pixels.dtype, np.floating):
        return np.ascontiguousarray(pixels, dtype=np.float32)
    return to_float(pixels)


def from_float(x: np.ndarray, dtype: npt.DTypeLike) -> np.ndarray:
    """Inverse of ``unit_float``: round and clip [0, 1] floats to ``dtype`` (uint8 or uint16),
    ``FROM_FLOAT_ROWS`` rows at a time, so the float temporary is a strip, not a photo; for a
    float ``dtype`` the floats are returned as float32 (no copy of float32 ones), unclipped."""
    if np.issubdtype(np.dtype(dtype), np.floating):
        return np.asarray(x, dtype=np.float32)
    scale = _max_value(np.dtype(dtype))
    out = np.empty(x.shape, dtype=dtype)
    for y in range(0, x.shape[0], FROM_FLOAT_ROWS):
        strip = np.multiply(x[y : y + FROM_FLOAT_ROWS], scale, dtype=np.float32)
        np.rint(strip, out=strip)
        np.clip(strip, 0, scale, out=strip)
        out[y : y + FROM_FLOAT_ROWS] = strip
    return out


def find_images(inputs: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (source, relative output path) pairs.

    Folders are searched recursively and the relative path mirrors the tree below them;
    a file's relative path is its name. Inside folders, hidden names (including the
    ``.name.*.tmp`` files of interrupted atomic writes) and non-image suffixes are skipped,
    but a file named explicitly is always returned so that reading it reports the problem.
    An unreadable subfolder raises ``OSError`` rather than silently dropping its photos.
    """
    found: list[tuple[Path, Path]] = []
    for given in map(Path, inputs):
        if given.is_dir():
            relative = sorted(_walk_images(given))
            found.extend((given / rel, rel) for rel in relative)
        elif given.exists():
            found.append((given, Path(given.name)))
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
    return found


# ---------------------------------------------------------------- reading helpers


@contextlib.contextmanager
def _open_checked(path: Path, max_megapixels: float) -> Iterator[ImageFile.ImageFile]:
    """Open ``path`` lazily (header only) and reject files not worth decoding.

    The caller decodes inside the ``with`` block, still under ``_pillow_pixel_limit``.
    """
    if max_megapixels <= 0:
        raise ValueError(f"max_megapixels must be positive, got {max_megapixels}")
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ImageReadError(path, _describe_error(exc)) from exc
    with fh, _pillow_pixel_limit(round(max_megapixels * 1e6)):
        if os.fstat(fh.fileno()).st_size == 0:
            raise ImageReadError(path, "empty file")
        try:
            img = Image.open(fh)
        except UnidentifiedImageError as exc:
            raise ImageReadError(path, "not an image file (unknown format or damaged header)") from exc
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, _beyond_pillow_guard(max_megapixels)) from exc
        except _DECODE_ERRORS as exc:
            raise ImageReadError(path, _corrupt(exc)) from exc
        with img:
            width, height = img.size
            if width == 0 or height == 0:
                raise ImageReadError(path, f"zero-area image ({width}x{height})")
            megapixels = width * height / 1e6
            if megapixels > max_megapixels:
                raise ImageReadError(
                    path,
                    f"too large: {megapixels:.1f} megapixels exceeds the {max_megapixels:g} "
                    "megapixel limit (decompression-bomb guard)",
                )
            yield img


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make Pillow's own decompression-bomb guard follow our limit while one file is read.

    Pillow keeps its limit in a module global (warns above ~89 MP, refuses above ~179 MP)
    that would otherwise override the caller's in both directions. Pillow still refuses
    beyond twice our limit while parsing the header, which protects formats that allocate
    memory there (WebP); its warning is silenced because ``_open_checked`` reports the exact
    size instead. The lock stops concurrent reads from restoring each other's value, at the
    cost of decoding one file at a time (cheap next to inference).
    """
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _beyond_pillow_guard(max_megapixels: float) -> str:
    """Reason for a file Pillow refused before its exact size was known (over twice the limit)."""
    return (
        f"too large: more than {2 * max_megapixels:g} megapixels exceeds the {max_megapixels:g} "
        "megapixel limit (decompression-bomb guard)"
    )


def _corrupt(exc: Exception) -> str:
    """Reason for a file Pillow recognised but could not parse, whether in the header or the pixels."""
    return f"truncated or corrupt image data ({exc})"


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an (H, W, 3) array, uint16 for wide grey modes."""
    if img.mode in _WIDE_GREY_MODES:
        raw = np.asarray(img)
        grey = np.clip(raw, 0, 65535).astype(np.uint16)
        transparent = img.info.get("transparency")  # a single grey value marked transparent
        if transparent is not None:
            grey[raw == transparent] = 65535
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    if img.has_transparency_data:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img.convert("RGBA"))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def _describes_rgb(icc_profile: bytes | None) -> bool:
    """True if an ICC profile's header declares RGB data (colour-space field, bytes 16-19)."""
    return icc_profile is not None and icc_profile[16:20] == b"RGB "


def _describe_error(exc: OSError | ValueError) -> str:
    """A short reason for an OS or encoder error, worded for someone who only sees the CLI."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    # NotADirectoryError: a parent is a file when reading; FileExistsError: the same when
    # atomic_path creates the output's parent folders.
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        return "a parent path is a file, not a folder"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _walk_images(folder: Path) -> Iterator[Path]:
    """Yield image paths below ``folder``, relative to it, skipping hidden names."""

    def fail(exc: OSError) -> None:
        raise exc

    for root, dirs, files in os.walk(folder, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # os.walk then skips them
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root, name).relative_to(folder)


# ---------------------------------------------------------------- writing helpers


def _max_value(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise ValueError(f"expected uint8 or uint16 pixels, got {dtype}")


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Round uint16 to uint8 exactly (65535 = 255 * 257); uint8 passes through."""
    if pixels.dtype == np.uint8:
        return pixels
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _save_with_pillow(tmp: Path, fmt: str, pixels: np.ndarray, icc_profile: bytes | None, quality: int) -> None:
    """Encode 8-bit RGB with Pillow, passing each format only the options it understands."""
    options: dict[str, object] = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if icc_profile is not None:
        options["icc_profile"] = icc_profile  # formats without ICC support (BMP) ignore it
    Image.fromarray(pixels, "RGB").save(tmp, format=fmt, **options)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MAX_CHUNK = 1 << 30  # the format allows up to 2**31 - 1 bytes of data per chunk


def _png_chunk(kind: bytes, data: bytes | memoryview) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + bytes(data) + struct.pack(">I", crc)


def _write_png16(fh: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None) -> None:
    """Encode a 16-bit RGB PNG.

    Every row uses the "Up" filter (difference to the row above, modulo 256), which
    compresses photographs well and is a single numpy subtraction.
    """
    height, width, _ = pixels.shape
    rows = pixels.astype(">u2").view(np.uint8).reshape(height, width * 6)
    scanlines = np.empty((height, width * 6 + 1), np.uint8)
    scanlines[:, 0] = 2  # filter type "Up"
    scanlines[:, 1:] = rows
    scanlines[1:, 1:] -= rows[:-1]  # uint8 arithmetic wraps, as the filter requires
    compressed = memoryview(zlib.compress(scanlines, 6))

    fh.write(_PNG_SIGNATURE)
    # 16 bits per sample, colour type 2 (RGB), default compression/filtering, no interlace.
    fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)))
    if icc_profile is not None:
        fh.write(_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    for start in range(0, len(compressed), _PNG_MAX_CHUNK):
        fh.write(_png_chunk(b"IDAT", compressed[start : start + _PNG_MAX_CHUNK]))
    fh.write(_png_chunk(b"IEND", b""))


# TIFF field types used below.
_SHORT, _LONG, _UNDEFINED = 3, 4, 7


def _write_tiff16(fh: BinaryIO, pixels: np.ndarray, icc_profile: bytes | None) -> None:
    """Encode an uncompressed 16-bit RGB baseline TIFF (little-endian, one strip).

    Layout: header, the directory of tags, values too long to sit in a tag, pixel data.
    Uncompressed because every TIFF reader supports it.
    """
    height, width, _ = pixels.shape
    data = pixels.astype("<u2").tobytes()
    icc = icc_profile or b""
    n_tags = 10 if icc_profile is None else 11
    bits_offset = 8 + 2 + 12 * n_tags + 4
    icc_offset = bits_offset + 6
    data_offset = icc_offset + len(icc) + len(icc) % 2  # values start on even offsets
    if data_offset + len(data) > 0xFFFFFFFF:
        raise ValueError("too large for a TIFF file (4 GiB limit)")

    tags = [  # (tag, type, count, value or offset), sorted by tag as TIFF requires
        (256, _LONG, 1, width),
        (257, _LONG, 1, height),
        (258, _SHORT, 3, bits_offset),  # BitsPerSample: 16, 16, 16
        (259, _SHORT, 1, 1),  # Compression: none
        (262, _SHORT, 1, 2),  # PhotometricInterpretation: RGB
        (273, _LONG, 1, data_offset),  # StripOffsets
        (277, _SHORT, 1, 3),  # SamplesPerPixel
        (278, _LONG, 1, height),  # RowsPerStrip: one strip
        (279, _LONG, 1, len(data)),  # StripByteCounts
        (284, _SHORT, 1, 1),  # PlanarConfiguration: RGBRGB...
    ]
    if icc_profile is not None:
        tags.append((34675, _UNDEFINED, len(icc), icc_offset))  # ICC profile

    fh.write(b"II" + struct.pack("<HI", 42, 8))  # byte order, magic, directory offset
    fh.write(struct.pack("<H", len(tags)))
    for tag, kind, count, value in tags:
        # A single SHORT sits left-justified in the 4-byte value field; the rest are LONGs.
        packed = struct.pack("<HH", value, 0) if kind == _SHORT and count == 1 else struct.pack("<I", value)
        fh.write(struct.pack("<HHI", tag, kind, count) + packed)
    fh.write(struct.pack("<I", 0))  # no further directories
    fh.write(struct.pack("<3H", 16, 16, 16))
    fh.write(icc + b"\0" * (len(icc) % 2))
    fh.write(data)
