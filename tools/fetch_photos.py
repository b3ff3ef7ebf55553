"""Fetch extra colour training photos (people especially) from registry packages into a folder.

    .venv/bin/python tools/fetch_photos.py ~/pikfix-photos            # all sources
    .venv/bin/python tools/fetch_photos.py ~/pikfix-photos --only face_recognition
    pikfix train ../shared/data/photos ~/pikfix-photos --out runs/more

The photos come from packages installed through their ordinary clients (``apt-get download``
for Debian, ``pip download`` for PyPI source archives), are unpacked, filtered (readable,
colour, short side >= --min-side) and copied as ``SOURCE__NAME.ext``, the naming of the
development photos, so that photos seen in both folders are recognised by name. ``SOURCES.md``
in the folder records each photo's package, path inside it, copyright and licence (for Debian
packages read from the package's machine-readable copyright file). The folder must be outside
the repository: training photos are never committed.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pikfix.imageio import ImageReadError, read_image

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Source:
    """A registry package and the photos to take from it."""

    prefix: str  # file-name prefix of its photos
    kind: str  # "deb" or "sdist"
    package: str
    version: str
    patterns: tuple[str, ...]  # globs on paths inside the unpacked package
    licence: str = ""  # sdists: the photos' licence as the package states it (debs: read from copyright)
    note: str = ""  # added to every photo's licence entry


SOURCES = (
    # Real photographs among OpenCV's sample data (logos, drawings and text pages left out).
    Source("opencv", "deb", "opencv-doc", "4.6.0+dfsg-12", tuple(
        f"usr/share/doc/opencv-doc/examples/data/{name}" for name in (
            "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg",
            "butterfly.jpg", "chicky_512.png", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg",
            "left.jpg", "leuvenA.jpg", "leuvenB.jpg", "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg",
            "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "stuff.jpg",
        )
    ), note="the package's licence: OpenCV states no separate licence or source for its sample images"),
    Source("face_recognition", "sdist", "face_recognition", "1.3.0", ("*/tests/test_images/*.jpg",),
           "portraits of US officials: US government works, public domain (package code: MIT)"),
    Source("insightface", "sdist", "insightface", "0.7.3", ("*/insightface/data/images/t1.jpg",),
           "sample image of the package, no separate licence stated (package: MIT); local training use only"),
    Source("lomiri", "deb", "lomiri-wallpapers-16.04", "20.04.0-2", ("usr/share/backgrounds/*.jpg",)),
    Source("lomiri", "deb", "lomiri-wallpapers-20.04", "20.04.0-2", ("usr/share/backgrounds/*.jpg",)),
)


class FetchError(RuntimeError):
    """A package could not be fetched or unpacked; the message names it."""


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"{' '.join(cmd)} failed: {tail[0]}")


def fetch(source: Source, downloads: Path) -> Path:
    """The package archive in ``downloads``, fetched through its registry's client when missing."""
    downloads.mkdir(parents=True, exist_ok=True)
    if source.kind == "deb":
        pattern = f"{source.package}_{source.version.split(':')[-1]}_*.deb"
        if not list(downloads.glob(pattern)):
            _run(["apt-get", "download", f"{source.package}={source.version}"], downloads)
    else:
        pattern = f"{source.package}-{source.version}.tar.gz"
        if not list(downloads.glob(pattern)):
            # Only this package as a source archive; its build tools may come as wheels.
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", source.package,
                  f"{source.package}=={source.version}", "-d", str(downloads)], downloads)
    found = sorted(downloads.glob(pattern))
    if not found:
        raise FetchError(f"{source.package} {source.version}: no archive matching {pattern} after download")
    return found[0]


def unpack(archive: Path, into: Path) -> None:
    if archive.suffix == ".deb":
        _run(["dpkg-deb", "-x", str(archive), str(into)], into)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")


def debian_licences(copyright_file: Path) -> list[tuple[list[str], str, str]]:
    """(file patterns, copyright, licence) stanzas of a machine-readable Debian copyright file."""
    stanzas = []
    for block in re.split(r"\n\s*\n", copyright_file.read_text(errors="replace")):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1].isspace() and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if "Files" in fields and "License" in fields:
            licence = fields["License"].split(" ")[0]
            stanzas.append((fields["Files"].split(), fields.get("Copyright", ""), licence))
    return stanzas


def licence_of(path: str, stanzas: list[tuple[list[str], str, str]]) -> tuple[str, str]:
    """(copyright, licence) of the last stanza matching ``path``, as DEP-5 says.  A stanza naming
    one file also matches by file name, since installed paths differ from the source layout."""
    match = ("", "unknown")
    name = Path(path).name
    for patterns, holder, licence in stanzas:
        if any(fnmatch.fnmatch(path, p) or ("*" not in p and Path(p).name == name) for p in patterns):
            match = (holder, licence)
    return match


def _usable(path: Path, min_side: int) -> str | None:
    """Why a file cannot train (None: it can)."""
    try:
        image = read_image(path)
    except ImageReadError as err:
        return err.reason
    pixels = image.pixels
    if min(pixels.shape[:2]) < min_side:
        return f"shorter side below {min_side} px"
    sample = pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)].astype(np.int32)
    if image.was_grey or float(np.mean(sample.max(axis=2) - sample.min(axis=2) > 8)) < 0.005:
        return "greyscale"
    return None


def collect(source: Source, dest: Path, downloads: Path, min_side: int) -> list[dict[str, str]]:
    """Copy the usable photos of ``source`` into ``dest``; one SOURCES row per photo."""
    archive = fetch(source, downloads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        unpack(archive, root)
        stanzas = []
        if source.kind == "deb":
            copyright_file = root / "usr/share/doc" / source.package / "copyright"
            stanzas = debian_licences(copyright_file) if copyright_file.is_file() else []
        files = sorted({p for pattern in source.patterns for p in root.glob(pattern) if p.is_file()})
        for path in files:
            inner = path.relative_to(root).as_posix()
            reason = _usable(path, min_side)
            if reason:
                print(f"  skip {inner}: {reason}")
                continue
            target = dest / f"{source.prefix}__{path.name}"
            shutil.copyfile(path, target)
            if source.kind == "deb":
                holder, licence = licence_of(inner, stanzas)
            else:
                holder, licence = "", source.licence
            if source.note:
                licence = f"{licence} ({source.note})"
            short = holder if len(holder) <= 80 else holder[:77].rsplit(" ", 1)[0] + " ..."
            rows.append({"file": target.name, "package": f"{source.package} ({source.version}, {source.kind})",
                         "path": inner, "copyright": short, "licence": licence})
    return rows


_COLUMNS = ("file", "package", "path", "copyright", "licence")


def write_sources(dest: Path, rows: list[dict[str, str]]) -> None:
    """SOURCES.md: these rows plus the rows of photos fetched earlier (e.g. with --only)."""
    merged = {row["file"]: row for row in _read_sources(dest / "SOURCES.md")}
    merged.update((row["file"], row) for row in rows)
    lines = [
        "# Training photos fetched by tools/fetch_photos.py", "",
        "Each photo, the registry package it was unpacked from, its path there and its licence as the",
        "package states it. Check the licence before any use beyond local training.", "",
        "| file | package | path in package | copyright | licence |", "|---|---|---|---|---|",
    ]
    for name in sorted(merged):
        lines.append("| " + " | ".join(merged[name][k].replace("|", "/") for k in _COLUMNS) + " |")
    (dest / "SOURCES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _read_sources(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[7:]:  # after the header and table head
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == len(_COLUMNS) and (path.parent / cells[0]).is_file():
            rows.append(dict(zip(_COLUMNS, cells)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="folder for the photos (outside the repository)")
    parser.add_argument("--only", nargs="+", metavar="PREFIX", help="only these sources (opencv, face_recognition, ...)")
    parser.add_argument("--min-side", type=int, default=256, help="skip photos whose shorter side is smaller")
    args = parser.parse_args()

    dest = args.dest.expanduser().resolve()
    if dest == REPO or REPO in dest.parents:
        parser.error(f"{dest}: inside the repository; training photos must stay out of it")
    chosen = [s for s in SOURCES if not args.only or s.prefix in args.only]
    if not chosen:
        parser.error(f"--only {' '.join(args.only)}: choose among {', '.join(sorted({s.prefix for s in SOURCES}))}")
    dest.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    failed = 0
    for source in chosen:
        print(f"{source.package} {source.version}")
        try:
            rows += collect(source, dest, dest / ".downloads", args.min_side)
        except (FetchError, OSError, tarfile.TarError) as err:
            print(f"error: {source.package}: {err}", file=sys.stderr)
            failed += 1
    write_sources(dest, rows)
    print(f"{len(rows)} photos in {dest} (licences in {dest / 'SOURCES.md'})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
