"""Restoration benchmark: luminance only, on damage the model was not trained with.

Clean colour photos are turned into their Lab lightness (L / 100), resized so the long side is
``long_side`` px, damaged by an evaluation recipe (``pikfix.benchmark.damage``) and restored
by each method: the damaged input itself, a 3x3 median, top-hat detection + diffusion
inpainting, and the models. Scores against the clean lightness: PSNR and SSIM (8-bit, as the
colour benchmark), mean absolute error inside and outside the damage mask, and the share of
the input's in-mask error each method removed. ``report.json`` and ``report.md`` hold means
with 95 % confidence intervals, ``sheet.jpg`` the first photos side by side.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pikfix.atomic import write_text_atomic
from pikfix.benchmark.baselines import median3, tophat_inpaint
from pikfix.benchmark.damage import Damaged, damage
from pikfix.color import luminance
from pikfix.imageio import read_image, to_float, write_image
from pikfix.metrics import psnr, ssim, summarize
from pikfix.pipeline import FixPipeline
from pikfix.sheet import grid

Restorer = Callable[[np.ndarray], np.ndarray]  # lightness (H, W) in [0, 1] -> restored
SHEET_PHOTOS = 4
METRICS = ("psnr", "ssim", "mae_in", "mae_out", "removed_in")


@dataclass
class RestorationMethod:
    name: str
    run: Restorer


def classical_methods(restorers: bool = True) -> list[RestorationMethod]:
    """The input unchanged (always: the in-mask error is measured against it) and, with
    ``restorers``, the two classical restorers."""
    methods = [RestorationMethod("input", lambda g: g)]
    if restorers:
        methods += [RestorationMethod("median 3x3", median3), RestorationMethod("top-hat + inpaint", tophat_inpaint)]
    return methods


def model_method(name: str, pipe: FixPipeline) -> RestorationMethod:
    """A model's restoration sub-net as the pipeline runs it (tiles, working scale, detector)."""
    return RestorationMethod(name, lambda g: pipe.restore_l(g * 100.0).l / 100.0)


def clean_lightness(path: Path, long_side: int) -> np.ndarray:
    """The photo's Lab L / 100, resized (bicubic) so its long side is ``long_side`` px."""
    l = luminance(to_float(read_image(path).pixels)) / 100.0
    h, w = l.shape
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.clip(np.asarray(Image.fromarray(l).resize(size, Image.Resampling.BICUBIC)), 0.0, 1.0)


def _scores(out: np.ndarray, clean: np.ndarray, damaged: Damaged) -> dict[str, float]:
    def rgb(g: np.ndarray) -> np.ndarray:
        return np.repeat(np.clip(g, 0, 1)[..., None], 3, axis=-1)

    error = np.abs(out - clean)
    input_in = float(np.abs(damaged.grey - clean)[damaged.mask].mean()) if damaged.mask.any() else math.nan
    mae_in = float(error[damaged.mask].mean()) if damaged.mask.any() else math.nan
    return {
        "psnr": psnr(rgb(out), rgb(clean)),
        "ssim": ssim(rgb(out), rgb(clean)),
        "mae_in": mae_in,
        "mae_out": float(error[~damaged.mask].mean()),
        "removed_in": 1.0 - mae_in / input_in if damaged.mask.any() and input_in > 0 else math.nan,
    }


def run_restoration_bench(
    photos: Sequence[Path],
    methods: Sequence[RestorationMethod],
    recipe: str,
    long_side: int,
    out_dir: Path,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score every method on every photo; writes report.json, report.md and sheet.jpg."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_photo: list[dict[str, Any]] = []
    sheet_rows = []
    for i, path in enumerate(photos):
        clean = clean_lightness(path, long_side)
        damaged = damage(clean, recipe, seed * 1_000_003 + zlib.crc32(path.name.encode()))
        row: dict[str, Any] = {"photo": path.name, "mask_share": float(damaged.mask.mean()), "methods": {}}
        panels = [("clean", clean), ("damaged", damaged.grey)]
        for method in methods:
            start = time.perf_counter()
            out = method.run(damaged.grey)
            seconds = time.perf_counter() - start
            row["methods"][method.name] = {**_scores(out, clean, damaged), "seconds": seconds}
            if method.name != "input":
                panels.append((method.name, out))
        per_photo.append(row)
        if i < SHEET_PHOTOS:
            sheet_rows.append([(name, (np.repeat(p[..., None], 3, -1) * 255).astype(np.uint8)) for name, p in panels])
        if progress is not None:
            progress(path.name)
    summary = {
        m.name: {
            key: summarize([r["methods"][m.name][key] for r in per_photo if not math.isnan(r["methods"][m.name][key])])._asdict()
            for key in (*METRICS, "seconds")
            if any(not math.isnan(r["methods"][m.name][key]) for r in per_photo)
        }
        for m in methods
    }
    report = {"recipe": recipe, "long_side": long_side, "seed": seed, "photos": len(per_photo),
              "summary": summary, "per_photo": per_photo}
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2, default=float))
    write_text_atomic(out_dir / "report.md", _markdown(report))
    if sheet_rows:
        write_image(out_dir / "sheet.jpg", np.asarray(grid(sheet_rows, height=256)))
    return report


def _fmt(stat: dict[str, Any] | None, digits: int, percent: bool = False) -> str:
    if stat is None:
        return "n/a"
    scale = 100.0 if percent else 1.0
    mean, low, high = (stat[k] * scale for k in ("mean", "low", "high"))
    if math.isinf(mean):
        return "identical"
    suffix = " %" if percent else ""
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]{suffix}"


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Restoration benchmark: recipe `{report['recipe']}`, {report['long_side']} px, {report['photos']} photos",
        "",
        "Luminance (Lab L / 100) against the clean photo; means with 95 % confidence intervals.",
        "MAE in 0-1 units; `removed` = share of the input's in-mask error removed.",
        "",
        "| method | PSNR (dB) | SSIM | MAE in mask | MAE outside | removed in mask | s / photo |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in report["summary"].items():
        lines.append(
            f"| {name} | {_fmt(s.get('psnr'), 2)} | {_fmt(s.get('ssim'), 3)} | {_fmt(s.get('mae_in'), 4)} | "
            f"{_fmt(s.get('mae_out'), 4)} | {_fmt(s.get('removed_in'), 1, percent=True)} | {s['seconds']['mean']:.2f} |"
        )
    return "\n".join(lines) + "\n"
