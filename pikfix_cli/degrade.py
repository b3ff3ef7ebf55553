"""`pikfix degrade`: write synthetic old-photo versions of clean photos, to look at the damage.

The training data loaders use the same `pikfix.training.degradation` recipe, so this command shows a
person exactly what the restoration sub-net learns to undo, and lets them try a config file.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape

from pikfix_cli.common import console, fail

if TYPE_CHECKING:  # keep `pikfix --help` light: numpy and Pillow load only when the command runs
    import numpy as np

    from pikfix.training.degradation import DegradationConfig


def _load_config(path: Optional[Path]) -> "DegradationConfig":
    """The default recipe, or the one in a JSON file (partial: missing keys keep their defaults)."""
    from pikfix.training.degradation import DegradationConfig

    if path is None:
        return DegradationConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(f"--config {path}: {err}") from None
    if not isinstance(data, dict):
        raise fail(f"--config {path}: expected a JSON object of DegradationConfig keys")
    try:
        return DegradationConfig.from_dict(data)
    except ValueError as err:
        raise fail(f"--config {path}: {err}") from None


def degrade(
    inputs: list[Path] = typer.Argument(..., help="Clean colour photos or folders (searched recursively)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder; mirrors the input folders."),
    seed: int = typer.Option(0, "--seed", min=0, help="Base seed; the same seed gives the same damage."),
    count: int = typer.Option(1, "--count", min=1, help="Damaged examples per input photo."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of DegradationConfig keys."),
    save_mask: bool = typer.Option(False, "--save-mask", help="Also write <name>_d<k>_mask.png (white = defect)."),
    kind: list[str] = typer.Option(
        [], "--kind", help="Apply only this kind of damage (repeatable), e.g. add_crack_network; an unknown name lists the kinds."
    ),
    scan_size: Optional[int] = typer.Option(
        None, "--scan-size", min=64, help="Resize each photo to this long side (px) first: damage is sized to the scan."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
) -> None:
    """Write damaged grey versions <name>_d<k>.png of photos, as used to train restoration."""
    import numpy as np

    from pikfix import imageio
    from pikfix.training.degradation import KINDS, apply_kind, to_grey
    from pikfix.training.degradation import degrade as degrade_photo

    unknown = [k for k in kind if k not in KINDS]
    if unknown:
        raise fail(f"--kind {unknown[0]}: unknown; choose from {', '.join(sorted(KINDS))}")
    cfg = _load_config(config)
    try:
        jobs = imageio.find_images(inputs)
    except OSError as err:  # a missing input or an unreadable folder: a usage error
        raise fail(str(err)) from None
    if not jobs:
        raise fail("no images found in the given inputs")

    written = skipped = failed = 0
    for src, rel in jobs:
        folder = out / rel.parent
        targets = [(k, folder / f"{rel.stem}_d{k}.png", folder / f"{rel.stem}_d{k}_mask.png") for k in range(count)]
        todo = [t for t in targets if overwrite or not (t[1].exists() and (t[2].exists() or not save_mask))]
        skipped += len(targets) - len(todo)
        if not todo:
            continue
        try:
            rgb = imageio.to_float(imageio.read_image(src).pixels)
            if scan_size is not None:
                rgb = _resize_long_side(rgb, scan_size)
            for k, image_path, mask_path in todo:
                # Seeded by (seed, file, k), not by position in the batch: adding files or
                # resuming a run leaves every other output unchanged.
                rng = np.random.default_rng([seed, zlib.crc32(rel.as_posix().encode()), k])
                if kind:
                    img, mask = rgb, np.zeros(rgb.shape[:2], dtype=np.float32)
                    for name in kind:
                        img, kind_mask = apply_kind(name, img, rng, cfg)
                        mask = np.maximum(mask, kind_mask)
                    grey = to_grey(img)
                else:
                    result = degrade_photo(rgb, rng, cfg)
                    grey, mask = result.grey, result.mask
                imageio.write_mask(image_path, grey)  # one-channel PNG: what the restoration net sees
                if save_mask:
                    imageio.write_mask(mask_path, mask)
                written += 1
        except (imageio.ImageReadError, imageio.ImageWriteError) as err:  # str(err) is "<path>: <reason>"
            # soft_wrap: one line even for long paths; escape: '[' in a file name is not markup.
            console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
            failed += 1

    console.print(f"wrote {written}, skipped {skipped} existing, failed {failed}; output in {out}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _resize_long_side(rgb: "np.ndarray", long_side: int) -> "np.ndarray":
    """Bicubic resize of a float (H, W, 3) image so its long side is ``long_side`` px."""
    import numpy as np
    from PIL import Image

    from pikfix.training.degradation.common import resize_channels

    h, w = rgb.shape[:2]
    size = (max(1, round(w * long_side / max(h, w))), max(1, round(h * long_side / max(h, w))))
    return np.clip(resize_channels(rgb, size, Image.Resampling.BICUBIC), 0.0, 1.0)
