"""The per-user cache: derived data pikfix can always rebuild (reference stores, converted weights)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """Where pikfix caches derived data: ``$PIKFIX_CACHE``, else ``$XDG_CACHE_HOME/pikfix``."""
    if os.environ.get("PIKFIX_CACHE"):
        return Path(os.environ["PIKFIX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pikfix"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so that big scans never sit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
