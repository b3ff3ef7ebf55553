"""A reference store: a folder of colour photos, embedded once, searched for every photo fixed.

Layout of a store directory (written by ``pikfix.retrieval.update``)::

    manifest.json          the commit point: format, feature id and the weights used, the
                           block sizes of the vectors, the refs folder, one entry
                           per photo (path relative to the refs folder, sha256, size, mtime,
                           row = FAISS id), the data folder's name and its files' checksums,
                           and a checksum of the manifest itself
    data-<id>/index.faiss  FAISS inner-product index of the descriptor vectors (flat, or
                           IVF-flat for large corpora); both keep the vectors exactly, so an
                           update re-reads them instead of re-embedding
    data-<id>/thumbs.npy   the layout thumbnails used by the re-ranker
    .lock                  held while an update runs, so two updates never interleave

Every file is checked against the manifest when a store is opened, so a damaged or
truncated store is reported instead of giving silently wrong references.

Search is two-stage, as the paper's selection suggests at scale: FAISS finds the
``RERANK_CANDIDATES`` nearest vectors by ``0.5 * texture + 0.5 * structure`` (exactly for a
flat index, approximately for IVF), then the candidates are re-scored exactly, with a bonus
for a strongly correlated layout thumbnail, which lifts the same photo in colour to the top
when the query is damaged (``benchmarks/retrieval_bench.py``, 148 photos: own original top-1
for queries damaged with the training recipe 0.94 -> 0.99; the best related photo unchanged).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from pikfix.cache import cache_root, sha256_file
from pikfix.color import normalize_l
from pikfix.device import resolve_device
from pikfix.retrieval.descriptor import (
    DEFAULT_FEATURES,
    DescriptorExtractor,
    Descriptors,
    match_scores,
    resolve_features,
    shared_extractor,
)

FORMAT = "pikfix-reference-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
THUMBS_FILE = "thumbs.npy"

RERANK_CANDIDATES = 32  # FAISS neighbours re-scored per query (at least k)


class StoreError(RuntimeError):
    """A store that is missing, damaged, built with other features, or cannot be built."""


class StoreCorruptError(StoreError):
    """A store whose files do not match its manifest: damaged, truncated or edited."""


@dataclass(frozen=True)
class Match:
    """One retrieved reference: its file and how similar it is to the query (higher = closer)."""

    path: Path
    score: float  # what the ranking uses; at most 1 + the layout bonus
    texture: float  # mean cosine of channel means over layers, in [-1, 1]
    structure: float  # mean cosine of channel standard deviations over layers, in [-1, 1]
    layout: float  # correlation of the grey 16x16 thumbnails, in [-1, 1]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "score": round(self.score, 4),
            "texture": round(self.texture, 4),
            "structure": round(self.structure, 4),
            "layout": round(self.layout, 4),
        }


def cache_store_dir(refs_dir: str | os.PathLike[str], features: str = DEFAULT_FEATURES) -> Path:
    """The cached store of a refs folder: one per absolute path and feature id, never shared."""
    key = hashlib.sha1(str(Path(refs_dir).resolve()).encode("utf-8")).hexdigest()[:16]
    return cache_root() / "refs" / f"{key}-{resolve_features(features)}"


# --------------------------------------------------------------------------- manifest


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """Checksum of every manifest field but itself, so an edited or mangled manifest is caught."""
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def rebuild_hint(store_dir: Path) -> str:
    return f"rebuild it with `pikfix index REFS_DIR --out {store_dir}`"


def read_manifest(store_dir: Path) -> dict[str, Any]:
    """The verified manifest of ``store_dir``; ``StoreError`` if missing, foreign or damaged."""
    path = store_dir / MANIFEST
    if not path.is_file():
        raise StoreError(f"{store_dir}: no reference store here (build one with `pikfix index REFS_DIR --out DIR`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoreCorruptError(f"{path}: damaged manifest ({err}); {rebuild_hint(store_dir)}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: not a pikfix reference store manifest")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise StoreCorruptError(f"{path}: manifest checksum mismatch (edited or damaged); {rebuild_hint(store_dir)}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{store_dir}: store format version {manifest.get('format_version')} is not the "
            f"{FORMAT_VERSION} this pikfix reads; {rebuild_hint(store_dir)}"
        )
    return manifest


def verify_files(store_dir: Path, manifest: dict[str, Any]) -> Path:
    """Check every data file against the manifest's size and sha256; returns the data folder."""
    data_dir = store_dir / manifest["data_dir"]
    for name, expected in manifest["files"].items():
        path = data_dir / name
        try:
            size = path.stat().st_size
            matches = size == expected["size"] and sha256_file(path) == expected["sha256"]
        except FileNotFoundError as err:
            raise StoreCorruptError(
                f"{path}: missing (the store was deleted or is being updated); {rebuild_hint(store_dir)}"
            ) from err
        if not matches:
            raise StoreCorruptError(f"{path}: checksum mismatch (truncated or damaged); {rebuild_hint(store_dir)}")
    return data_dir


def check_features(store_dir: Path, manifest: dict[str, Any], feature_id: str) -> None:
    if manifest["features"] != feature_id:
        raise StoreError(
            f"{store_dir}: built with features {manifest['features']}, not {feature_id}; "
            "descriptors of different features cannot be mixed (use another store folder)"
        )


def manifest_blocks(manifest: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """The (texture, structure) block sizes of a store's vectors; stores written before the
    VGG19 covariance descriptor only list their layer channels (both blocks that wide)."""
    if "blocks" in manifest:
        return tuple((int(t), int(s)) for t, s in manifest["blocks"])
    return tuple((int(c), int(c)) for c in manifest["layer_channels"])


def _read_index(path: Path, nprobe: int | None) -> faiss.Index:
    index = faiss.read_index(str(path))
    if nprobe is not None:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = nprobe
        ivf.make_direct_map()  # lets reconstruct() fetch the vectors of a search's candidates
    return index


class ReferenceStore:
    """An opened, verified store; ``search`` picks references for grey photos."""

    def __init__(self, store_dir: Path, manifest: dict[str, Any], index: faiss.Index, thumbs: np.ndarray,
                 device: torch.device) -> None:
        """Use ``ReferenceStore.open``; this only wires already verified parts together."""
        self.store_dir = store_dir
        self.features: str = manifest["features"]
        # A relative refs_dir (the store shipped inside pikfix) is relative to the store itself.
        self.refs_dir = (store_dir / manifest["refs_dir"]).resolve()
        self.index_type: str = manifest["index_type"]
        self.blocks = manifest_blocks(manifest)
        self.weights: str = manifest.get("weights", "")
        self.paths = [self.refs_dir / entry["path"] for entry in manifest["entries"]]
        self._index = index
        self._thumbs = thumbs
        self._device = device
        self._extractor: DescriptorExtractor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def open(
        cls,
        store_dir: str | os.PathLike[str],
        expected_features: str | None = None,
        device: str | torch.device = "auto",
    ) -> ReferenceStore:
        """Open and verify a store; ``StoreError`` if it is missing, damaged or of other features.

        ``expected_features`` (an id or alias) guards against searching a store with a query
        embedded differently. ``device`` runs the query network.
        """
        store_dir = Path(store_dir)
        manifest = read_manifest(store_dir)
        if expected_features is not None:
            check_features(store_dir, manifest, resolve_features(expected_features))
        data_dir = verify_files(store_dir, manifest)
        index = _read_index(data_dir / INDEX_FILE, manifest["nprobe"])
        thumbs = np.load(data_dir / THUMBS_FILE, allow_pickle=False)
        rows = len(manifest["entries"])
        if index.ntotal != rows or thumbs.shape[0] != rows or index.d != manifest["dim"]:
            raise StoreCorruptError(f"{store_dir}: index, thumbnails and manifest disagree; {rebuild_hint(store_dir)}")
        return cls(store_dir, manifest, index, thumbs, resolve_device(device) if isinstance(device, str) else device)

    def search(self, l: np.ndarray | torch.Tensor, k: int = 5) -> list[Match]:
        """The ``k`` best references for a grey photo, best first.

        ``l`` is its Lab lightness in [0, 100] (what ``FixPipeline.restore`` returns), shaped
        (H, W), (1, H, W) or (1, 1, H, W), at any size.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        query = self._embed_query(l)
        candidates = min(len(self), max(k, RERANK_CANDIDATES))
        _, ids = self._index.search(query.vectors, candidates)
        rows = ids[0][ids[0] >= 0]  # IVF pads with -1 when its probed lists hold too few vectors
        vectors = self._index.reconstruct_batch(rows)
        score, texture, structure, layout = match_scores(query, vectors, self._thumbs[rows], self.blocks)
        order = np.argsort(-score, kind="stable")[:k]
        return [
            Match(self.paths[rows[i]], float(score[i]), float(texture[i]), float(structure[i]), float(layout[i]))
            for i in order
        ]

    def _embed_query(self, l: np.ndarray | torch.Tensor) -> Descriptors:
        """Check the query's shape and scale, then embed it like the stored photos."""
        t = torch.as_tensor(l, dtype=torch.float32)
        if t.dim() < 2 or t.numel() != t.shape[-1] * t.shape[-2]:
            raise ValueError(f"expected one grey image (H, W), got shape {tuple(t.shape)}")
        if float(t.min()) < -1e-3:
            raise ValueError("expected Lab L in [0, 100], got negative values (normalised L/50 - 1?)")
        if self._extractor is None:
            self._extractor = shared_extractor(self.features, self._device)
            if self._extractor.dim != self._index.d:
                raise StoreError(f"{self.store_dir}: vectors have {self._index.d} dims, {self.features} gives "
                                 f"{self._extractor.dim}; {rebuild_hint(self.store_dir)}")
        return self._extractor.embed_grey(normalize_l(t))

    def descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        """All stored (vectors, thumbnails), in row order: what an update reuses."""
        return self._index.reconstruct_n(0, self._index.ntotal), self._thumbs

