"""Where a photo's colour reference comes from: a file the user chose, or automatic retrieval.

Both give the same ``Choice`` for a restored luminance, so `pikfix fix` and the Python API
treat a hand-picked reference and a retrieved one alike.  Decoded and prepared references
are cached, because a batch of photos often shares its best reference.
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

CACHE_SIZE = 8


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

    def choose(self, restored_l: np.ndarray) -> Choice:
        """The reference for a photo whose restored Lab L (H, W) in [0, 100] is given."""
        raise NotImplementedError


class FixedReference(ReferenceSource):
    """One reference file for every photo (``--ref``)."""

    def __init__(self, pipe: FixPipeline, path: Path) -> None:
        super().__init__(pipe)
        self.path = Path(path)
        self._load(self.path)  # fail now, before the batch, if it is unreadable

    def choose(self, restored_l: np.ndarray) -> Choice:
        rgb, prepared = self._load(self.path)
        return Choice(self.path, None, rgb, prepared)


class RetrievedReference(ReferenceSource):
    """The most similar photo of a reference store (``--refs DIR`` / ``--index STORE``).

    Queried with the *restored* luminance, so damage does not steer the search.  A reference
    that cannot be read any more is skipped in favour of the next match.
    """

    def __init__(self, pipe: FixPipeline, store: "ReferenceStore", k: int = 5) -> None:
        super().__init__(pipe)
        self.store = store
        self.k = k

    def choose(self, restored_l: np.ndarray) -> Choice:
        problems = []
        for match in self.store.search(restored_l, k=self.k):
            try:
                rgb, prepared = self._load(match.path)
            except ImageReadError as err:
                problems.append(str(err))
                continue
            return Choice(match.path, match.score, rgb, prepared)
        raise ImageReadError(self.store.refs_dir, "no readable reference among the best matches: " + "; ".join(problems))


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
