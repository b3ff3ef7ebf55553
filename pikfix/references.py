"""Where a photo's colour references come from: a file the user chose, or automatic retrieval.

Both give a list of ``Choice`` for a restored luminance (one for a chosen file, the K best
matches of a store), so `pikfix fix` and the Python API treat a hand-picked reference and
retrieved ones alike.  Without any reference option, retrieval uses the small reference set
built into pikfix (``default_reference_store``); a user's own references always win.
Decoded and prepared references are cached, because a batch of photos often shares them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pikfix.imageio import ImageReadError, read_image, to_float
from pikfix.pipeline import FixPipeline, Reference

if TYPE_CHECKING:
    from pikfix.retrieval import ReferenceStore

CACHE_SIZE = 16  # enough for the K references of a few photos
SPARE_MATCHES = 4  # extra matches searched, to replace references that cannot be read
# The built-in reference set: downscaled photos and their prebuilt store (package data; see
# tools/build_default_refs.py and the CREDITS.md next to the photos).
DEFAULT_REFS_DIR = Path(__file__).resolve().parent / "default_refs"
_RECOVER = "reinstall pikfix, or give your own references with --ref FILE, --refs DIR or --index STORE"


@dataclass
class Choice:
    """The reference picked for one photo."""

    path: Path
    score: float | None  # retrieval score (None for a hand-picked file)
    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1], for comparison sheets
    prepared: Reference  # at the pipeline's working size


class ReferenceSource:
    """Base: loads and caches references; subclasses decide which one a photo gets."""

    def __init__(self, pipe: FixPipeline) -> None:
        self.pipe = pipe
        self._cache: OrderedDict[Path, tuple[np.ndarray, Reference]] = OrderedDict()

    def _load(self, path: Path) -> tuple[np.ndarray, Reference]:
        """Read (raises ``ImageReadError``) and prepare a reference, through a small LRU cache."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        rgb = to_float(read_image(path).pixels)
        entry = (rgb, self.pipe.prepare_reference(rgb))
        self._cache[path] = entry
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry

    def choose(self, restored_l: np.ndarray) -> list[Choice]:
        """The references (best first) for a photo whose restored Lab L (H, W) in [0, 100] is given."""
        raise NotImplementedError


class FixedReference(ReferenceSource):
    """One reference file for every photo (``--ref``)."""

    def __init__(self, pipe: FixPipeline, path: Path) -> None:
        super().__init__(pipe)
        self.path = Path(path)
        self._load(self.path)  # fail now, before the batch, if it is unreadable

    def choose(self, restored_l: np.ndarray) -> list[Choice]:
        rgb, prepared = self._load(self.path)
        return [Choice(self.path, None, rgb, prepared)]


class RetrievedReference(ReferenceSource):
    """The ``top_k`` most similar photos of a reference store (``--refs DIR`` / ``--index STORE``).

    Queried with the *restored* luminance, so damage does not steer the search.  A reference
    that cannot be read any more is skipped in favour of the next match.
    """

    def __init__(self, pipe: FixPipeline, store: "ReferenceStore", top_k: int = 3) -> None:
        super().__init__(pipe)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.store = store
        self.top_k = top_k

    def choose(self, restored_l: np.ndarray) -> list[Choice]:
        problems, chosen = [], []
        for match in self.store.search(restored_l, k=self.top_k + SPARE_MATCHES):
            try:
                rgb, prepared = self._load(match.path)
            except ImageReadError as err:
                problems.append(str(err))
                continue
            chosen.append(Choice(match.path, match.score, rgb, prepared))
            if len(chosen) == self.top_k:
                break
        if not chosen:
            raise ImageReadError(self.store.refs_dir, "no readable reference among the best matches: " + "; ".join(problems))
        return chosen


def default_reference_store(device: str) -> "ReferenceStore":
    """The store of the built-in reference set; ``StoreError`` saying how to recover if it is unusable."""
    from pikfix.retrieval import ReferenceStore, StoreError

    store_dir = DEFAULT_REFS_DIR / "store"
    try:
        store = ReferenceStore.open(store_dir, device=device)
    except StoreError as err:
        raise StoreError(f"the built-in reference set is unusable ({err}); {_RECOVER}") from None
    missing = [p for p in store.paths if not p.is_file()]
    if missing:
        raise StoreError(f"the built-in reference set is incomplete ({missing[0]} is missing); {_RECOVER}")
    return store


def open_reference_store(
    refs_dir: Path | None,
    index_dir: Path | None,
    device: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple["ReferenceStore", list[tuple[Path, str]]]:
    """Open ``index_dir``, or build/refresh the cached store of ``refs_dir`` first.

    Returns the store and the reference files skipped as unreadable.
    """
    from pikfix.retrieval import ReferenceStore, build_or_update, cache_store_dir

    if index_dir is not None:
        return ReferenceStore.open(index_dir, device=device), []
    assert refs_dir is not None
    store_dir = cache_store_dir(refs_dir)
    report = build_or_update(refs_dir, store_dir, device=device, progress=progress)
    return ReferenceStore.open(store_dir, device=device), list(report.skipped)
