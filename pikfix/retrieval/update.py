"""Build or refresh a reference store incrementally, never leaving a half-written one.

Only new and changed photos are embedded: a file is unchanged when its size and mtime match
the manifest (as git and rsync decide), or else when its sha256 does. Photos are hashed and
decoded in a background thread while the network embeds the previous batch.

An update writes a complete new ``data-<id>`` folder, then replaces ``manifest.json``
atomically, then deletes the old folder. A run killed at any point therefore leaves the
previous store usable: its manifest still names its own, untouched data folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image

from pikfix import __version__
from pikfix.atomic import write_text_atomic
from pikfix.color import normalize_l, rgb_to_lab
from pikfix.imageio import IMAGE_SUFFIXES, ImageReadError, find_images, read_image
from pikfix.device import resolve_device
from pikfix.retrieval.background import map_in_background
from pikfix.retrieval.descriptor import (
    DEFAULT_FEATURES,
    INPUT_SIZE,
    DescriptorExtractor,
    prepare_grey,
    resolve_features,
)
from pikfix.retrieval.store import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    MANIFEST,
    THUMBS_FILE,
    ReferenceStore,
    StoreCorruptError,
    StoreError,
    check_features,
    manifest_blocks,
    manifest_checksum,
    read_manifest,
    sha256_file,
)

INDEX_TYPES = ("auto", "flat", "ivf")
IVF_MIN_IMAGES = 100_000  # "auto" switches from exact to approximate search here
PRESHRINK_SIDE = 448  # photos are shrunk to this while decoding (2x the descriptor's input size)

Progress = Callable[[int, int], None]

# Names an update creates in a store folder: a folder holding anything else is not a store.
_STORE_NAMES = re.compile(r"manifest\.json|\.lock|(\.tmp-)?data-[0-9a-f]{12}|\.manifest\.\w+\.tmp\.json")


@dataclass
class UpdateReport:
    """What ``build_or_update`` did; paths are relative to the refs folder."""

    store_dir: Path
    refs_dir: Path
    features: str
    index_type: str = ""
    total: int = 0  # photos in the store afterwards
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # content changed: embedded again
    removed: list[str] = field(default_factory=list)  # deleted, or now unreadable
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) not indexed
    rebuilt_reason: str | None = None  # set when a damaged store was replaced from scratch

    def to_json(self) -> dict[str, Any]:
        return {
            "store": str(self.store_dir),
            "refs_dir": str(self.refs_dir),
            "features": self.features,
            "index_type": self.index_type,
            "total": self.total,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "rebuilt_reason": self.rebuilt_reason,
        }


def build_or_update(
    refs_dir: str | os.PathLike[str],
    store_dir: str | os.PathLike[str],
    features: str = DEFAULT_FEATURES,
    device: str | torch.device = "auto",
    index_type: str = "auto",
    batch_size: int = 16,
    progress: Progress | None = None,
) -> UpdateReport:
    """Create or refresh the store of ``refs_dir`` (searched recursively) in ``store_dir``.

    Unreadable photos are skipped and listed in the report. ``progress(done, total)`` follows
    the photos that need reading (new or touched ones). ``index_type`` is "flat" (exact),
    "ivf" (approximate) or "auto" (IVF from ``IVF_MIN_IMAGES`` photos). Raises ``StoreError``
    for a missing or empty refs folder and for a store of other features or of another
    folder; ``WeightsUnavailableError`` when the features' pretrained weights are absent.
    """
    feature_id = resolve_features(features)
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    refs_dir = Path(refs_dir).resolve()
    store_dir = Path(store_dir)
    if not refs_dir.is_dir():
        raise StoreError(f"{refs_dir}: not a folder")
    try:
        found = find_images([refs_dir])
    except OSError as err:
        raise StoreError(f"{refs_dir}: cannot list the folder ({err})") from err
    if not found:
        raise StoreError(f"{refs_dir}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        foreign = any(not _STORE_NAMES.fullmatch(child.name) for child in store_dir.iterdir())
    except OSError as err:
        raise StoreError(f"{store_dir}: cannot create the store folder ({err.strerror or err})") from err
    if foreign:  # never write into (and later clean up) a folder holding someone's files
        raise StoreError(f"{store_dir}: not empty and not a reference store; choose a new or empty folder")
    with _locked(store_dir):
        dev = resolve_device(device) if isinstance(device, str) else device
        return _Update(refs_dir, store_dir, feature_id, dev, index_type, batch_size, progress).run(found)


@contextlib.contextmanager
def _locked(store_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``store_dir`` (released when the file closes, even if killed)."""
    with (store_dir / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def shrink_photo(pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels (H, W, 3) uint8/uint16 -> uint8 RGB of at most PRESHRINK_SIDE px a side.

    All a 224-px descriptor needs, done with Pillow (no torch) so the decoding thread never
    competes with the network for torch's CPU threads; 8 bits are plenty at that size.
    """
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    img = Image.fromarray(pixels)
    img.thumbnail((PRESHRINK_SIDE, PRESHRINK_SIDE), Image.Resampling.BILINEAR)  # antialiased
    return np.asarray(img)


def photo_grey(rgb: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """Small uint8 RGB (from ``shrink_photo``) -> the prepared grey input of ``embed`` at ``size``."""
    t = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1) / 255.0
    return prepare_grey(normalize_l(rgb_to_lab(t)[:1]), size)


def build_index(vectors: np.ndarray, index_type: str) -> tuple[faiss.Index, str, int | None]:
    """A FAISS inner-product index over unit ``vectors``: (index, type, nprobe or None)."""
    n, dim = vectors.shape
    kind = index_type if index_type != "auto" else ("ivf" if n >= IVF_MIN_IMAGES else "flat")
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index, kind, None
    # The usual 4 * sqrt(n) lists, but at least 39 training points per list (FAISS's minimum).
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # below 39 photos there is 1 list: nothing to warn about
    index.train(vectors)
    index.add(vectors)
    return index, kind, min(nlist, max(8, nlist // 16))


@dataclass(frozen=True)
class _Entry:
    path: str  # POSIX path relative to the refs folder
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Job:
    src: Path
    key: str  # the entry path
    size: int
    mtime_ns: int
    previous: _Entry | None


@dataclass(frozen=True, eq=False)
class _Loaded:
    job: _Job
    sha256: str | None = None
    rgb: np.ndarray | None = None  # shrunk photo; None: content unchanged, or unreadable
    error: str | None = None


def _load(job: _Job) -> _Loaded:
    """Hash a new or touched file; decode and shrink it unless its content is unchanged (worker thread)."""
    try:
        digest = sha256_file(job.src)
    except OSError as err:
        return _Loaded(job, error=err.strerror or str(err))
    if job.previous is not None and job.previous.sha256 == digest:
        return _Loaded(job, sha256=digest)
    try:
        image = read_image(job.src)
    except ImageReadError as err:
        return _Loaded(job, sha256=digest, error=err.reason)
    return _Loaded(job, sha256=digest, rgb=shrink_photo(image.pixels))


Row = tuple[_Entry, np.ndarray, np.ndarray]  # entry, descriptor vector, thumbnail


@dataclass(frozen=True, eq=False)
class _Previous:
    """The store being updated: its manifest, entries by path (with their row) and row data."""

    manifest: dict[str, Any]
    entries: dict[str, tuple[int, _Entry]]
    vectors: np.ndarray
    thumbs: np.ndarray

    def row(self, entry: _Entry) -> Row:
        """A row of the new store reusing this store's descriptors for ``entry.path``."""
        row = self.entries[entry.path][0]
        return entry, self.vectors[row], self.thumbs[row]


class _Update:
    """One ``build_or_update`` run, split into steps."""

    def __init__(self, refs_dir: Path, store_dir: Path, feature_id: str, device: torch.device,
                 index_type: str, batch_size: int, progress: Progress | None) -> None:
        self.refs_dir = refs_dir
        self.store_dir = store_dir
        self.feature_id = feature_id
        self.device = device
        self.index_type = index_type
        self.batch_size = batch_size
        self.progress = progress
        self.extractor: DescriptorExtractor | None = None  # built when any photo needs reading
        self.report = UpdateReport(store_dir, refs_dir, feature_id)
        self.rows: dict[str, Row] = {}  # the new store's rows by entry path

    def run(self, found: list[tuple[Path, Path]]) -> UpdateReport:
        previous = self._load_previous()
        old = {} if previous is None else previous.entries
        jobs: list[_Job] = []
        for src, rel in found:
            key = rel.as_posix()
            try:
                stat = src.stat()
            except OSError as err:
                self.report.skipped.append((key, err.strerror or str(err)))
                continue
            entry = old[key][1] if key in old else None
            same_stat = entry is not None and (entry.size, entry.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
            if previous is not None and entry is not None and same_stat:
                self.rows[key] = previous.row(entry)
            else:
                jobs.append(_Job(src, key, stat.st_size, stat.st_mtime_ns, entry))
        if jobs:  # load the network first: missing weights fail before any decoding
            self.extractor = DescriptorExtractor(self.feature_id, self.device)
        touched = False
        for loaded in self._embed(jobs):  # what was not embedded: unreadable, or only touched
            job = loaded.job
            if loaded.error is not None:
                self.report.skipped.append((job.key, loaded.error))
            else:
                assert previous is not None and job.previous is not None  # _load hashed it equal
                self.rows[job.key] = previous.row(_Entry(job.key, job.previous.sha256, job.size, job.mtime_ns))
                touched = True
        if not self.rows:
            raise StoreError(f"{self.refs_dir}: none of the {len(found)} images could be read")
        report = self.report
        report.removed = sorted(set(old) - set(self.rows))
        report.unchanged = len(self.rows) - len(report.added) - len(report.updated)
        report.total = len(self.rows)
        content_changed = bool(report.added or report.updated or report.removed)
        if previous is None or content_changed or touched or self._index_type_changes(previous):
            self._write(previous)
        else:
            report.index_type = previous.manifest["index_type"]
        return report

    def _load_previous(self) -> _Previous | None:
        """The existing store, or None if there is none.

        A damaged store is rebuilt from scratch (and said so in the report); a store of other
        features or of another refs folder is refused rather than overwritten.
        """
        if not (self.store_dir / MANIFEST).exists():
            return None
        try:
            manifest = read_manifest(self.store_dir)
            check_features(self.store_dir, manifest, self.feature_id)
            if Path(manifest["refs_dir"]) != self.refs_dir:
                raise StoreError(
                    f"{self.store_dir}: holds the store of {manifest['refs_dir']}, not {self.refs_dir} "
                    "(use another store folder)"
                )
            store = ReferenceStore.open(self.store_dir)
        except StoreCorruptError as err:  # derived data: rebuilding it loses nothing
            self.report.rebuilt_reason = str(err)
            return None
        entries = {
            e["path"]: (row, _Entry(e["path"], e["sha256"], e["size"], e["mtime_ns"]))
            for row, e in enumerate(manifest["entries"])
        }
        vectors, thumbs = store.descriptors()
        return _Previous(manifest, entries, vectors, thumbs)

    def _index_type_changes(self, previous: _Previous) -> bool:
        """An explicit index type that differs from the store's forces a rewrite."""
        return self.index_type != "auto" and previous.manifest["index_type"] != self.index_type

    def _embed(self, jobs: list[_Job]) -> Iterator[_Loaded]:
        """Decode jobs in the background and embed them in batches; yields what was not embedded."""
        pending: list[_Loaded] = []
        done = 0
        for loaded in map_in_background(_load, jobs):
            if loaded.rgb is None:
                done += 1
                yield loaded
            else:
                pending.append(loaded)
                if len(pending) == self.batch_size:
                    done += self._embed_batch(pending)
            if self.progress is not None:
                self.progress(done, len(jobs))
        if pending:
            done += self._embed_batch(pending)
            if self.progress is not None:
                self.progress(done, len(jobs))

    def _embed_batch(self, pending: list[_Loaded]) -> int:
        """Embed and record ``pending`` (then empty it); returns how many were embedded."""
        assert self.extractor is not None  # built by run() whenever there are jobs
        size = self.extractor.input_size
        batch = torch.stack([photo_grey(loaded.rgb, size) for loaded in pending])  # type: ignore[arg-type]
        descriptors = self.extractor.embed(batch)
        for i, loaded in enumerate(pending):
            job = loaded.job
            entry = _Entry(job.key, loaded.sha256 or "", job.size, job.mtime_ns)
            self.rows[job.key] = (entry, descriptors.vectors[i], descriptors.thumbs[i])
            (self.report.added if job.previous is None else self.report.updated).append(job.key)
        count = len(pending)
        pending.clear()
        return count

    def _write(self, previous: _Previous | None) -> None:
        """Write a new data folder, commit it by replacing the manifest, then drop old data."""
        keys = sorted(self.rows)
        vectors = np.ascontiguousarray(np.stack([self.rows[key][1] for key in keys]), dtype=np.float32)
        thumbs = np.ascontiguousarray(np.stack([self.rows[key][2] for key in keys]), dtype=np.float32)
        index, kind, nprobe = build_index(vectors, self.index_type)
        self.report.index_type = kind
        if self.extractor is not None:
            blocks = [list(b) for b in self.extractor.blocks]
            weights = self.extractor.weights_source
        else:  # nothing read: an update that only removed files
            assert previous is not None
            blocks = [list(b) for b in manifest_blocks(previous.manifest)]
            weights = previous.manifest.get("weights", "")

        data_name = f"data-{uuid.uuid4().hex[:12]}"
        tmp = self.store_dir / f".tmp-{data_name}"
        tmp.mkdir()
        try:
            faiss.write_index(index, str(tmp / INDEX_FILE))
            np.save(tmp / THUMBS_FILE, thumbs, allow_pickle=False)
            files = {
                name: {"sha256": sha256_file(tmp / name), "size": (tmp / name).stat().st_size}
                for name in (INDEX_FILE, THUMBS_FILE)
            }
            os.replace(tmp, self.store_dir / data_name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_by": f"pikfix {__version__}",
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "features": self.feature_id,
            "blocks": blocks,
            "weights": weights,
            "dim": int(vectors.shape[1]),
            "refs_dir": str(self.refs_dir),
            "index_type": kind,
            "nprobe": nprobe,
            "data_dir": data_name,
            "files": files,
            "entries": [
                {"path": e.path, "sha256": e.sha256, "size": e.size, "mtime_ns": e.mtime_ns, "row": row}
                for row, e in enumerate(self.rows[key][0] for key in keys)
            ],
        }
        manifest["checksum"] = manifest_checksum(manifest)
        write_text_atomic(self.store_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        # Committed. Old data folders and leftovers of killed runs are unreferenced now.
        for child in self.store_dir.iterdir():
            if child.name in (data_name, MANIFEST, ".lock") or not _STORE_NAMES.fullmatch(child.name):
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
