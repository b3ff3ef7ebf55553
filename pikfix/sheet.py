"""Labelled side-by-side sheets (input | reference | result ...), for people who would rather look."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

LABEL_HEIGHT = 22
GAP = 6


def _to_image(pixels: np.ndarray, height: int) -> Image.Image:
    """float [0, 1] or uint8/uint16 array (H, W[, 3]) -> RGB PIL image scaled to ``height``."""
    arr = np.asarray(pixels)
    if arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    img = Image.fromarray(arr, "RGB")
    width = max(1, round(img.width * height / img.height))
    return img.resize((width, height), Image.Resampling.LANCZOS)


def side_by_side(panels: Sequence[tuple[str, np.ndarray]], height: int = 384) -> Image.Image:
    """One row of labelled panels, each scaled to ``height`` pixels."""
    images = [(label, _to_image(p, height)) for label, p in panels]
    width = sum(img.width for _, img in images) + GAP * (len(images) + 1)
    sheet = Image.new("RGB", (width, height + LABEL_HEIGHT + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    x = GAP
    for label, img in images:
        draw.text((x + 2, 4), label, fill="black")
        sheet.paste(img, (x, LABEL_HEIGHT))
        x += img.width + GAP
    return sheet


def grid(rows: Sequence[Sequence[tuple[str, np.ndarray]]], height: int = 256) -> Image.Image:
    """Rows of labelled panels stacked vertically (contact sheets)."""
    row_images = [side_by_side(r, height) for r in rows]
    width = max(r.width for r in row_images)
    sheet = Image.new("RGB", (width, sum(r.height for r in row_images)), "white")
    y = 0
    for r in row_images:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet
