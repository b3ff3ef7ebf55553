"""`pikfix fix`: restore and colorize photos, files or whole folders, at full resolution."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pikfix.config import DEFAULT_TILE
from pikfix_cli.common import console, error, fail, progress_bar, warn

if TYPE_CHECKING:  # torch-heavy imports stay out of `pikfix --help`
    from pikfix.pipeline import FixPipeline
    from pikfix.references import ReferenceSource

OUTPUT_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"}


@dataclass
class FileReport:
    """One line of the summary / one object of the --json output."""

    input: str
    output: str
    status: str  # "ok", "skipped" or "failed"
    error: Optional[str] = None
    path: Optional[str] = None  # "colorized" or "restored-colour" (a colour photo keeps its own)
    photo_kind: Optional[str] = None  # "grey", "toned" or "colour", as detected
    reference: Optional[str] = None  # the best reference (None on the restored-colour path)
    reference_score: Optional[float] = None
    references: list[dict[str, Any]] = field(default_factory=list)  # all K used: path, score
    confidence: Optional[float] = None
    megapixels: Optional[float] = None
    seconds: Optional[float] = None
    compare: Optional[str] = None
    mask: Optional[str] = None  # the user's mask file, or "detected"
    mask_output: Optional[str] = None  # <name>.mask.png written by --save-mask
    noise: Optional[float] = None  # noise measured after the repair (sigma, L units); None with --no-denoise
    denoised: Optional[bool] = None  # whether noise and grain were reduced
    sharpened: Optional[float] = None  # share of the sharpener's change applied (grey photos; 0: none)


def _output_path(out_dir: Path, rel: Path, ext: Optional[str]) -> Path:
    suffix = ext if ext else rel.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        suffix = ".png"  # e.g. .gif or .jp2 inputs: write a lossless common format
    return out_dir / rel.with_suffix(suffix)


def _mask_path(dst: Path) -> Path:
    return dst.with_name(dst.stem + ".mask.png")


def _user_mask(mask: Optional[Path], rel: Path) -> Optional[Path]:
    """The user's mask for input ``rel``: the file itself, or in a folder the file at the same
    relative path with any image extension, or named ``<stem>.mask.png``; None if there is none."""
    if mask is None or mask.is_file():
        return mask
    folder = mask / rel.parent
    for candidate in [folder / f"{rel.stem}.mask.png", *(folder / (rel.stem + s) for s in sorted(OUTPUT_SUFFIXES))]:
        if candidate.is_file():
            return candidate
    return None


def fix(
    inputs: list[Path] = typer.Argument(..., help="Photos or folders (searched recursively)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Colour reference photo used for every input."),
    refs: Optional[Path] = typer.Option(None, "--refs", help="Folder of colour photos: the best reference is picked per photo."),
    index: Optional[Path] = typer.Option(None, "--index", help="Reference store made by `pikfix index` (instead of --refs)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="References retrieved per photo; colour comes from whichever matches each region."),
    recolor: bool = typer.Option(False, "--recolor", help="Colorize colour photos too, instead of restoring their own colours."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint (.safetensors); default: the shipped model."),
    out: Path = typer.Option(Path("pikfix-out"), "-o", "--out", help="Output folder; mirrors the input tree."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    work_size: int = typer.Option(512, "--work-size", help="Longest side (px) at which colour is predicted."),
    tile: int = typer.Option(DEFAULT_TILE, "--tile", help="Restoration tile size (px); lower it if memory is short."),
    tile_overlap: int = typer.Option(48, "--tile-overlap", help="Context around each tile (px)."),
    ext: Optional[str] = typer.Option(None, "--ext", help="Output format (png, jpg, tif...); default: the input's."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    compare: bool = typer.Option(False, "--compare", help="Also write <name>.compare.jpg: input | reference | result."),
    save_mask: bool = typer.Option(False, "--save-mask", help="Also write <name>.mask.png: where damage was repaired (white)."),
    mask: Optional[Path] = typer.Option(
        None, "--mask", help="Your own damage mask (white = damaged, any size), or a folder of them named like the inputs."
    ),
    restore_size: int = typer.Option(
        2048, "--restore-size", help="Longest side (px) at which damage is repaired; larger scans are repaired at this size."
    ),
    keep_tone: bool = typer.Option(
        False, "--keep-tone", help="Keep each photo's tone curve and colour balance (no fading correction): for photos low in contrast by nature."
    ),
    no_denoise: bool = typer.Option(
        False, "--no-denoise", help="Keep the photo's noise and grain (by default reduced where the photo shows noise)."
    ),
    sharpen: bool = typer.Option(
        True, "--sharpen/--no-sharpen", help="Sharpen grey photos that, seen at 512 px, are blurred (--no-sharpen keeps them soft)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON report on stdout (for scripts)."),
) -> None:
    """Restore damaged old photos and colorize them from colour references.

    Without --ref, --refs or --index the references come from the small set built into pikfix.
    Photos that already have colour (faded prints, autochromes) keep their own colours.
    """
    from pikfix import imageio
    from pikfix.checkpoint import CheckpointError, default_model_path
    from pikfix.pipeline import FixPipeline

    if sum(x is not None for x in (ref, refs, index)) > 1:
        raise fail("give at most one of --ref FILE, --refs DIR or --index STORE")
    if mask is not None and not mask.exists():
        raise fail(f"--mask {mask}: no such file or folder")
    if ext is not None:
        ext = "." + ext.lower().lstrip(".")
        if ext not in OUTPUT_SUFFIXES:
            raise fail(f"--ext {ext}: unsupported output format (use one of {', '.join(sorted(OUTPUT_SUFFIXES))})")
    model_path = model or default_model_path()
    if model_path is None:
        raise fail("no model given and none is installed with pikfix; pass --model PATH")
    try:
        jobs = imageio.find_images(inputs)
    except FileNotFoundError as err:
        raise fail(str(err)) from None
    if not jobs:
        raise fail("no images found in the given inputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise fail(f"{out}: cannot create output folder ({err.strerror or err})") from None
    try:
        pipe = FixPipeline.from_checkpoint(
            model_path, device, work_size=work_size, tile=tile, tile_overlap=tile_overlap, restore_size=restore_size,
            keep_tone=keep_tone, denoise=not no_denoise, sharpen=sharpen,
        )
    except (CheckpointError, ValueError) as err:
        raise fail(str(err)) from None
    if keep_tone and pipe.model.restoration.tone is None and pipe.model.restoration.colour_tone is None:
        warn(f"{model_path.name} has no tone head: --keep-tone has no effect with it")
    if (mask is not None or save_mask) and pipe.model.restoration.detector is None:
        warn(f"{model_path.name} has no damage detector: --mask and --save-mask have no effect with it")
    show_progress = not (json_out and not sys.stderr.isatty())
    source = _reference_source(pipe, ref, refs, index, device, top_k, show_progress)

    reports: list[FileReport] = []
    with progress_bar(disable=not show_progress) as bar:
        task = bar.add_task("fixing", total=len(jobs))
        for src, rel in jobs:
            dst = _output_path(out, rel, ext)
            report = FileReport(input=str(src), output=str(dst), status="ok")
            bar.update(task, description=str(rel))
            if dst.exists() and not overwrite and (not save_mask or _mask_path(dst).exists()):
                report.status = "skipped"
            else:
                _fix_one(pipe, src, dst, source, compare, recolor, report, _user_mask(mask, rel), save_mask)
            if report.status == "failed":
                error(report.error or "")
            reports.append(report)
            bar.advance(task)

    _summarise(reports, json_out)
    if any(r.status == "failed" for r in reports):
        raise typer.Exit(1)


def _reference_source(
    pipe: "FixPipeline", ref: Optional[Path], refs: Optional[Path], index: Optional[Path], device: str, top_k: int,
    show_progress: bool,
) -> "ReferenceSource":
    """The manual reference, a retrieval store (built or refreshed for --refs), or the built-in set."""
    from pikfix.imageio import ImageReadError
    from pikfix.references import FixedReference, RetrievedReference, default_reference_store, open_reference_store
    from pikfix.retrieval import StoreError

    if ref is not None:
        try:
            return FixedReference(pipe, ref)
        except ImageReadError as err:
            raise fail(f"reference {err}") from None
    try:
        if refs is None and index is None:
            return RetrievedReference(pipe, default_reference_store(device), top_k)
        with progress_bar(disable=not show_progress) as bar:
            task = bar.add_task(f"indexing {refs}", total=None)
            store, skipped = open_reference_store(
                refs, index, device, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    except (StoreError, ValueError, OSError) as err:
        raise fail(str(err)) from None
    for path, reason in skipped:
        warn(f"{path}: reference skipped ({reason})")
    return RetrievedReference(pipe, store, top_k)


def _fix_one(
    pipe: "FixPipeline",
    src: Path,
    dst: Path,
    source: "ReferenceSource",
    compare: bool,
    recolor: bool,
    report: FileReport,
    user_mask: Optional[Path] = None,
    save_mask: bool = False,
) -> None:
    """Fix one file into ``report``; expected failures become a one-line error, not a traceback."""
    import numpy as np
    import torch

    from pikfix import imageio
    from pikfix.colour_input import classify
    from pikfix.sheet import side_by_side

    start = time.perf_counter()
    try:
        image = imageio.read_image(src)
        given = None if user_mask is None else imageio.read_mask(user_mask)
        # Photos go through as decoded: no float copy of a whole photo (288 MB at 24 MP) is made
        # up front (a colour photo the tone head corrects gets one while its L is taken).
        pixels = image.pixels
        verdict = classify(pixels)
        report.photo_kind = verdict.kind
        own_colour = verdict.has_own_colour and not recolor
        if own_colour:
            out_rgb, restored = pipe.restore_colour_photo(pixels, mask=given, dtype=pixels.dtype)
        else:
            restored = pipe.restore(pixels, mask=given)
        restored_l = restored.l
        if restored.mask is not None:
            report.mask = str(user_mask) if user_mask is not None else "detected"
        if restored.noise is not None:
            report.noise, report.denoised = round(restored.noise, 2), restored.denoised
        report.sharpened = round(restored.sharpened, 2)
        report.path = "restored-colour" if own_colour else "colorized"
        ref_panels: list[tuple[str, np.ndarray]] = []
        confidence: Optional[float] = None
        if not own_colour:
            choices = source.choose(restored_l)
            report.references = [
                {"path": str(c.path), "score": None if c.score is None else round(c.score, 4)} for c in choices
            ]
            report.reference, report.reference_score = report.references[0]["path"], report.references[0]["score"]
            out_rgb, confidence = pipe.colorize(restored_l, [c.prepared for c in choices], pixels.dtype)
            ref_panels = [(f"reference {_scored(c.path.name, c.score)}", c.rgb) for c in choices]
        imageio.write_image(dst, out_rgb)
        if save_mask and restored.mask is not None:
            mask_file = _mask_path(dst)
            imageio.write_mask(mask_file, restored.mask)
            report.mask_output = str(mask_file)
        if compare:
            sheet = dst.with_name(dst.stem + ".compare.jpg")
            result_label = "result (own colours restored)" if report.path == "restored-colour" else "result"
            panels = [("input", image.pixels), *ref_panels, (result_label, out_rgb)]
            imageio.write_image(sheet, np.asarray(side_by_side(panels)))
            report.compare = str(sheet)
    except (imageio.ImageReadError, imageio.ImageWriteError) as err:
        report.status, report.error = "failed", str(err)
        return
    except torch.OutOfMemoryError:
        report.status = "failed"
        report.error = f"{src}: out of memory; try a smaller --tile or --work-size, or --device cpu"
        return
    report.megapixels = round(image.pixels.shape[0] * image.pixels.shape[1] / 1e6, 3)
    report.confidence = None if confidence is None else round(confidence, 4)
    report.seconds = round(time.perf_counter() - start, 3)


def _scored(name: str, score: Optional[float]) -> str:
    """A reference's name with its retrieval score, as the summary and the compare sheet show it."""
    return name if score is None else f"{name} ({score:.2f})"


def _summarise(reports: list[FileReport], json_out: bool) -> None:
    from rich.table import Table

    counts = {s: sum(r.status == s for r in reports) for s in ("ok", "skipped", "failed")}
    if json_out:
        payload = {"summary": counts, "files": [asdict(r) for r in reports]}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    table = Table(title="pikfix fix")
    for col in ("input", "status", "output / error", "path", "references", "s"):
        table.add_column(col)
    for r in reports:
        detail = r.error if r.status == "failed" else r.output
        references = ", ".join(_scored(Path(x["path"]).name, x["score"]) for x in r.references)
        path = "" if r.path is None else f"{r.path} ({r.photo_kind})"
        table.add_row(r.input, r.status, detail, path, references, f"{r.seconds:.1f}" if r.seconds else "")
    console.print(table)
    console.print(f"{counts['ok']} fixed, {counts['skipped']} skipped (already done), {counts['failed']} failed")
