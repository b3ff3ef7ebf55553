"""Reference retrieval (paper 3.5): index a folder of colour photos, find the best for a grey one.

Typical use::

    from pikfix.retrieval import ReferenceStore, build_or_update, cache_store_dir

    store_dir = cache_store_dir(refs_dir)
    build_or_update(refs_dir, store_dir)                       # embeds only new/changed photos
    store = ReferenceStore.open(store_dir)
    best = store.search(restored_l, k=5)[0]                    # Lab L (H, W) in [0, 100]
    print(best.path, best.score)
"""

from pikfix.retrieval.descriptor import (
    DEFAULT_FEATURES,
    FEATURE_ALIASES,
    FEATURE_IDS,
    DescriptorExtractor,
    Descriptors,
    resolve_features,
)
from pikfix.retrieval.store import Match, ReferenceStore, StoreCorruptError, StoreError, cache_store_dir
from pikfix.retrieval.update import UpdateReport, build_or_update

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURE_ALIASES",
    "FEATURE_IDS",
    "DescriptorExtractor",
    "Descriptors",
    "Match",
    "ReferenceStore",
    "StoreCorruptError",
    "StoreError",
    "UpdateReport",
    "build_or_update",
    "cache_store_dir",
    "resolve_features",
]
