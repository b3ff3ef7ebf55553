"""Report files of `pikfix bench`: report.json, a CSV, report.md, contact sheets and a bar chart.

Everything is computed from the per-image records of ``pikfix.benchmark.runner``, so a report can be
rewritten from the cache at any time. JSON has no infinity, so a PSNR of identical images is
written as the string ``"inf"``; summaries average the finite values and count the others.
The chart is drawn with Pillow alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw, ImageFont

from pikfix import __version__
from pikfix.atomic import write_text_atomic
from pikfix.benchmark.runner import THUMB_HEIGHT, QualityRun
from pikfix.imageio import read_image, write_image
from pikfix.metrics import Summary, summarize
from pikfix.sheet import grid

# (key, markdown column title, decimals); the arrows say which way is better.
QUALITY_METRICS = (("psnr", "PSNR ↑ (dB)", 2), ("ssim", "SSIM ↑", 3), ("lpips", "LPIPS ↓", 3),
                   ("colorfulness", "colourfulness", 1), ("delta_ab", "Δab ↓", 2))
# Chart titles in ASCII: Pillow's built-in font has no arrow glyphs.
CHART_TITLES = {"psnr": "PSNR dB (higher = better)", "ssim": "SSIM (higher = better)",
                "lpips": "LPIPS (lower = better)", "colorfulness": "colourfulness",
                "delta_ab": "mean delta ab to the truth (lower = better)"}
CONVENTIONS = (
    "PSNR and SSIM: full-resolution result vs ground truth, RGB, both rounded to 8 bits, peak 255, "
    "no border crop; SSIM as Wang et al. 2004 / scikit-image (11x11 Gaussian window, sigma 1.5, "
    "K1 0.01, K2 0.03, mean over the valid region and the 3 channels). LPIPS (AlexNet, lower is "
    "better) on the same 8-bit images. Colourfulness: Hasler & Suesstrunk 2003 on 0..255 RGB. "
    "Means with a two-sided 95 % Student t confidence interval over images."
)
# Pik-Fix's own numbers (paper Tables 1-2: other photos and other damage, so a scale, not a
# like-for-like comparison). The third column is unlabelled in two of the paper's table
# headers; its values are LPIPS-like.
PAPER_ROWS = {
    "colorization": [("DIV2K w/o degradation (Table 1)", 23.95, 0.925, 0.120),
                     ("Pascal VOC w/o degradation (Table 1)", 24.01, 0.940, 0.100)],
    "synthetic": [("Pascal VOC w/ degradation (Table 1)", 22.22, 0.828, 0.186)],
    "realold": [("RealOld (Table 2)", 17.20, 0.758, 0.258)],
    "pairs": [("RealOld (Table 2)", 17.20, 0.758, 0.258)],
}
SHEET_ROWS = 6  # photos per contact sheet
CHART_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


# --------------------------------------------------------------------------- shared


def environment(devices: Sequence[torch.device] = ()) -> dict[str, Any]:
    """Versions and hardware: what a reader needs to reproduce or compare the numbers."""
    gpus = sorted({torch.cuda.get_device_name(d) for d in devices if d.type == "cuda"})
    return {
        "pikfix": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "devices": sorted({str(d) for d in devices}) or ["cpu"],
        "gpus": gpus,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _jsonable(value: Any) -> Any:
    """Replace non-finite floats with strings, recursively, so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    write_text_atomic(path, buffer.getvalue())


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# --------------------------------------------------------------------------- quality report


def _summary_dict(summary: Summary) -> dict[str, Any]:
    return {"mean": summary.mean, "ci95": [summary.low, summary.high], "n": summary.n, "n_inf": summary.n_inf}


def summarize_run(run: QualityRun) -> dict[str, dict[str, Any]]:
    """Per method: each metric's mean and 95 % CI, plus speed and memory over its images."""
    out: dict[str, dict[str, Any]] = {}
    megapixels = {info["image"]: info["megapixels"] for info in run.images}
    for method in run.methods:
        rows = [r for r in run.rows if r["method"] == method.name]
        entry: dict[str, Any] = {}
        for key, _, _ in QUALITY_METRICS:
            values = [float(r[key]) for r in rows if r[key] is not None]
            entry[key] = _summary_dict(summarize(values)) if values else None
        entry["seconds_per_image"] = _summary_dict(summarize([r["seconds"] for r in rows]))
        total_seconds = sum(r["seconds"] for r in rows)
        total_mp = sum(megapixels[r["image"]] for r in rows)
        entry["megapixels_per_second"] = total_mp / total_seconds if total_seconds > 0 else None
        entry["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rows)
        cuda = [r["cuda_peak_mib"] for r in rows if r["cuda_peak_mib"] is not None]
        entry["cuda_peak_mib"] = max(cuda) if cuda else None
        out[method.name] = entry
    return out


def _fmt(summary: dict[str, Any] | None, decimals: int) -> str:
    """'mean [low, high]' for markdown; 'n/a' when the metric was not computed."""
    if summary is None:
        return "n/a"
    mean, (low, high) = summary["mean"], summary["ci95"]
    if not math.isfinite(mean):
        return "inf (identical)"
    text = f"{mean:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"
    return text + (f" (+{summary['n_inf']} inf)" if summary["n_inf"] else "")


def write_quality_report(out: Path, run: QualityRun, config: dict[str, Any]) -> list[Path]:
    """Write every report file of a quality run into ``out``; returns their paths."""
    summary = summarize_run(run)
    truth_colour = summarize([info["colorfulness_truth"] for info in run.images])
    methods = [m.details() for m in run.methods]
    payload = {
        "report": "pikfix bench (quality)",
        "config": config,
        "environment": environment([m.device for m in run.methods]),
        "dataset": {"kind": run.dataset.kind, "source": run.dataset.source, "description": run.dataset.describe(),
                    "images": len(run.images), "skipped": [{"path": p, "reason": r} for p, r in run.skipped]},
        "reference": {"mode": run.references.mode, "description": run.references.describe()},
        "conventions": CONVENTIONS,
        "lpips": {"available": run.lpips[0], "detail": run.lpips[1]},
        "methods": methods,
        "summary": summary,
        "ground_truth": {"colorfulness": _summary_dict(truth_colour)},
        "results_from_cache": run.from_cache,
        "images": run.images,
        "results": run.rows,
    }
    paths = [out / "report.json", out / "images.csv", out / "report.md", out / "metrics.png"]
    _write_json(paths[0], payload)
    truth = {info["image"]: info for info in run.images}
    rows = [{**row, **{k: truth[row["image"]][k] for k in ("width", "height", "megapixels", "colorfulness_truth",
                                                          "reference")}} for row in run.rows]
    _write_csv(paths[1], ["image", "method", "psnr", "ssim", "lpips", "colorfulness", "delta_ab", "colorfulness_truth",
                          "width", "height", "megapixels", "seconds", "megapixels_per_second", "peak_rss_mib",
                          "cuda_peak_mib", "confidence", "reference"], rows)
    sheets = write_contact_sheets(out / "sheets", run)
    write_text_atomic(paths[2], _quality_markdown(run, summary, truth_colour, sheets, out))
    write_image(paths[3], np.asarray(_quality_chart(run, summary, truth_colour)))
    return paths + sheets


def _quality_markdown(
    run: QualityRun, summary: dict[str, dict[str, Any]], truth_colour: Summary, sheets: list[Path], out: Path
) -> str:
    lpips_note = "" if run.lpips[0] else f" LPIPS is n/a: {run.lpips[1]}."
    lines = [
        "# pikfix bench report", "",
        f"- Test set: {run.dataset.describe()}",
        f"- Reference: {run.references.describe()}",
        f"- Environment: {_environment_line([m.device for m in run.methods])}",
        f"- Metrics: {CONVENTIONS}{lpips_note}",
        "", "## Quality", "",
    ]
    any_cuda = any(s["cuda_peak_mib"] is not None for s in summary.values())
    header = ["method", *(title for _, title, _ in QUALITY_METRICS), "s / image", "MP/s", "peak RSS (MiB)"]
    table = []
    for name, entry in summary.items():
        row = [name, *(_fmt(entry[key], d) for key, _, d in QUALITY_METRICS),
               f"{entry['seconds_per_image']['mean']:.3f}", _num(entry["megapixels_per_second"], 2),
               f"{entry['peak_rss_mib']:.0f}"]
        table.append(row + ([_num(entry["cuda_peak_mib"], 0)] if any_cuda else []))
    table.append(["ground truth", "", "", "", _fmt(_summary_dict(truth_colour), 1), "", "", ""]
                 + ([""] if any_cuda else []))
    lines += _markdown_table(header + (["CUDA peak (MiB)"] if any_cuda else []), table)
    lines += ["", f"{len(run.images)} images; {run.from_cache} of {len(run.rows)} results reused from the cache. "
              "Peak RSS is the process's resident-memory high-water mark during the method's call "
              "(models, photo and reference included)."]
    paper_rows = PAPER_ROWS.get(run.dataset.kind)  # the paper has no faded-colour setting
    if paper_rows:
        lines += ["", "## Pik-Fix paper, for scale", "",
                  "Other photos, other damage and other references: a scale, not a like-for-like comparison.", ""]
        lines += _markdown_table(["paper setting", "PSNR ↑", "SSIM ↑", "LPIPS ↓"],
                                 [[n, f"{p:.2f}", f"{s:.3f}", f"{lp:.3f}"] for n, p, s, lp in paper_rows])
    if run.skipped:
        lines += ["", f"## Skipped ({len(run.skipped)})", ""] + [f"- `{p}`: {r}" for p, r in run.skipped]
    lines += ["", "## Files", "", "- `report.json`: every figure, the configuration, versions and device",
              "- `images.csv`: one row per image and method", "- `metrics.png`: the means with 95 % CIs"]
    lines += [f"- `{p.relative_to(out)}`: input | reference | result per method | ground truth" for p in sheets]
    return "\n".join(lines) + "\n"


def _num(value: float | None, decimals: int) -> str:
    return "n/a" if value is None else f"{value:.{decimals}f}"


def _environment_line(devices: Sequence[torch.device]) -> str:
    env = environment(devices)
    where = ", ".join(env["gpus"]) or f"CPU {env['cpu']}, {env['torch_threads']} threads"
    return f"pikfix {env['pikfix']}, torch {env['torch']}, Python {env['python']}; {where}"


def write_contact_sheets(folder: Path, run: QualityRun) -> list[Path]:
    """PNG sheets of ``SHEET_ROWS`` photos each, from the cached thumbnails."""
    cache = run.cache
    psnrs = {(r["image"], r["method"]): r["psnr"] for r in run.rows}
    rows = []
    for info in run.images:
        image = info["image"]
        row = [(f"input: {image}", _thumb(cache.thumb_path("sample", image, "input"))),
               ("reference", _thumb(cache.thumb_path("sample", image, "reference")))]
        for method in run.methods:
            value = float(psnrs[(image, method.name)])
            row.append((f"{method.label} {value:.1f} dB", _thumb(cache.thumb_path(method.slug, image))))
        rows.append([*row, ("ground truth", _thumb(cache.thumb_path("sample", image, "truth")))])
    paths = []
    for start in range(0, len(rows), SHEET_ROWS):
        path = folder / f"contact-{start // SHEET_ROWS + 1:02d}.png"
        write_image(path, np.asarray(grid(rows[start : start + SHEET_ROWS], height=THUMB_HEIGHT)))
        paths.append(path)
    for stale in set(folder.glob("contact-[0-9][0-9].png")) - set(paths):  # from an earlier, larger run
        stale.unlink()
    return paths


def _thumb(path: Path) -> np.ndarray:
    return np.asarray(read_image(path).pixels)


# --------------------------------------------------------------------------- bar chart


@dataclass
class Bar:
    """One bar: a mean and, optionally, its confidence interval."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None


def bar_chart(panels: Sequence[tuple[str, Sequence[Bar]]], panel_size: tuple[int, int] = (300, 240)) -> Image.Image:
    """Side-by-side bar panels with CI whiskers and a shared colour legend (one colour per label)."""
    labels = list(dict.fromkeys(bar.label for _, bars in panels for bar in bars))
    colour = {label: CHART_COLOURS[i % len(CHART_COLOURS)] for i, label in enumerate(labels)}
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=11)
    pw, ph = panel_size
    legend_h = 20 * len(labels) + 16
    image = Image.new("RGB", (max(1, len(panels)) * pw + 20, ph + legend_h + 10), "white")
    draw = ImageDraw.Draw(image)
    for index, (title, bars) in enumerate(panels):
        _draw_panel(draw, (10 + index * pw, 10, pw - 10, ph - 10), title, bars, colour, font, small)
    y = ph + 10
    for label in labels:
        draw.rectangle((14, y + 3, 26, y + 15), fill=colour[label])
        draw.text((34, y + 2), label, fill="black", font=small)
        y += 20
    return image


def _draw_panel(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, bars: Sequence[Bar],
    colour: dict[str, str], font: ImageFont.FreeTypeFont, small: ImageFont.FreeTypeFont,
) -> None:
    """One panel: title, axis from 0, bars, whiskers and value labels; infinite values say so."""
    x0, y0, width, height = box
    draw.text((x0 + 4, y0), title, fill="black", font=font)
    top, bottom = y0 + 40, y0 + height - 4
    finite = [v for b in bars for v in (b.value, b.high) if v is not None and math.isfinite(v)]
    scale_max = max(finite, default=1.0) * 1.08 or 1.0
    draw.line((x0, bottom, x0 + width, bottom), fill="#444444")
    slot = width / max(1, len(bars))

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * max(v, 0.0) / scale_max

    for i, bar in enumerate(bars):
        left, right = x0 + i * slot + slot * 0.15, x0 + (i + 1) * slot - slot * 0.15
        centre = (left + right) / 2
        if not math.isfinite(bar.value):
            draw.text((left, bottom - 16), "inf", fill="black", font=small)
            continue
        draw.rectangle((left, y_of(bar.value), right, bottom), fill=colour[bar.label])
        if bar.low is not None and bar.high is not None and math.isfinite(bar.high):
            draw.line((centre, y_of(bar.low), centre, y_of(bar.high)), fill="black", width=2)
            for v in (bar.low, bar.high):
                draw.line((centre - 5, y_of(v), centre + 5, y_of(v)), fill="black", width=2)
        text = f"{bar.value:.3f}" if abs(bar.value) < 10 else f"{bar.value:.1f}"
        label_y = y_of(bar.high if bar.high is not None and math.isfinite(bar.high) else bar.value) - 15
        draw.text((left, max(y0 + 22, label_y)), text, fill="black", font=small)


def _quality_chart(run: QualityRun, summary: dict[str, dict[str, Any]], truth_colour: Summary) -> Image.Image:
    panels = []
    for key, _, _ in QUALITY_METRICS:
        bars = [Bar(name, e[key]["mean"], *e[key]["ci95"]) for name, e in summary.items() if e[key] is not None]
        if key == "colorfulness":
            bars.append(Bar("ground truth", truth_colour.mean, truth_colour.low, truth_colour.high))
        if bars:
            panels.append((CHART_TITLES[key], bars))
    return bar_chart(panels)


# --------------------------------------------------------------------------- speed report

SPEED_COLUMNS = ("preset", "megapixels", "width", "height", "device", "seconds", "megapixels_per_second",
                 "peak_rss_mib", "cuda_peak_mib", "threads", "torch", "cpu", "error")


def write_speed_report(
    out: Path, results: Sequence[dict[str, Any]], config: dict[str, Any], device: torch.device
) -> list[Path]:
    """report.json, speed.csv, report.md and speed.png for ``pikfix bench --speed``."""
    paths = [out / "report.json", out / "speed.csv", out / "report.md", out / "speed.png"]
    _write_json(paths[0], {"report": "pikfix bench (speed)", "config": config, "environment": environment([device]),
                           "speed": list(results)})
    _write_csv(paths[1], SPEED_COLUMNS, results)
    rows = []
    for r in results:
        size = f"{r['width']}x{r['height']}" if "width" in r else ""
        rows.append([r["preset"], f"{r['megapixels']:g}", size, r["device"], _num(r.get("seconds"), 2),
                     _num(r.get("megapixels_per_second"), 3), _num(r.get("peak_rss_mib"), 0),
                     _num(r.get("cuda_peak_mib"), 0), r.get("error", "")])
    lines = ["# pikfix bench report: speed", "",
             f"- Environment: {_environment_line([device])}",
             "- Each case fixes one synthetic photo with a freshly initialised model (speed does not depend "
             "on the weights) in its own process, after a 256 px warm-up; peak RSS is that process's "
             f"high-water mark. Work size {config.get('work_size')} px, tile {config.get('tile')} px.", ""]
    lines += _markdown_table(["preset", "MP", "size", "device", "seconds", "MP/s", "peak RSS (MiB)",
                              "CUDA peak (MiB)", "error"], rows)
    write_text_atomic(paths[2], "\n".join(lines) + "\n")
    presets = list(dict.fromkeys(r["preset"] for r in results))
    panels = [(f"{p}: MP/s", [Bar(f"{r['megapixels']:g} MP", r["megapixels_per_second"])
                              for r in results if r["preset"] == p and "error" not in r]) for p in presets]
    write_image(paths[3], np.asarray(bar_chart(panels)))
    return paths
