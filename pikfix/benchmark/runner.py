"""The benchmark behind `pikfix bench`: methods, the cached quality runner, and speed cases.

A quality run scores every method on the same photos with the same references
(``pikfix.benchmark.data``): the models given as checkpoints and two training-free baselines
(``pikfix.benchmark.baselines``). Each (method, photo) result is written to
``OUT/cache/<method-slug>/<image-id>.json`` the moment it exists, together with a fingerprint
of everything that changes its numbers, so an interrupted run resumes where it stopped and a
run with other settings never reuses stale numbers. Photos are processed one at a time at
full resolution, so memory is bounded by the largest photo, not by the size of the test set.
Report files are written by ``pikfix.benchmark.report``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pikfix.atomic import write_text_atomic
from pikfix.benchmark.baselines import classical_baseline, grey_baseline
from pikfix.benchmark.data import (
    BenchError,
    Dataset,
    References,
    Sample,
    Warn,
    file_identity,
    ignore_warning,
    load_sample,
    safe_id,
)
from pikfix.checkpoint import CheckpointError, read_header
from pikfix.config import DEFAULT_TILE, preset_config
from pikfix.imageio import ImageReadError, from_float, write_image
from pikfix.colour_input import classify
from pikfix.metrics import LPIPSMetric, colorfulness, delta_ab, lpips_status, psnr, ssim
from pikfix.device import resolve_device
from pikfix.pipeline import FixPipeline
from pikfix.retrieval.store import sha256_file
from pikfix.benchmark.speed import peak_rss_mib

THUMB_HEIGHT = 160  # px; cached thumbnails for the contact sheets


# --------------------------------------------------------------------------- methods


class Method(ABC):
    """Something that turns an old photo + a reference into a colour photo of the same size."""

    name: str = ""  # in tables and the JSON
    label: str = ""  # short form for contact-sheet captions
    kind: str = "baseline"
    device: torch.device = torch.device("cpu")  # where it runs: CUDA memory is measured there

    @property
    def slug(self) -> str:
        """File-name form of the name (cache folder)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def details(self) -> dict[str, Any]:
        """What the report records about the method (and what its cache entries depend on)."""
        return {"name": self.name, "kind": self.kind}

    @abstractmethod
    def run(self, old: np.ndarray, refs: list[np.ndarray]) -> tuple[np.ndarray, float | None]:
        """(result RGB float (H, W, 3), model confidence or None); ``refs``: best reference first."""


class GreyInput(Method):
    """The input itself, as neutral grey: the floor every colorizer must beat."""

    name = "input (grey)"
    label = "grey"

    def run(self, old: np.ndarray, refs: list[np.ndarray]) -> tuple[np.ndarray, float | None]:
        return grey_baseline(old), None


class InputAsIs(Method):
    """The old photo unchanged: the floor for colour inputs (faded prints), which keep their colour."""

    name = "input (as is)"
    label = "input"

    def run(self, old: np.ndarray, refs: list[np.ndarray]) -> tuple[np.ndarray, float | None]:
        return old, None


class Classical(Method):
    """Median + scratch inpainting, then Reinhard colour transfer from the same reference."""

    name = "classical (median+inpaint, Reinhard)"
    label = "classical"

    def run(self, old: np.ndarray, refs: list[np.ndarray]) -> tuple[np.ndarray, float | None]:
        return classical_baseline(old, refs[0]), None


class ModelMethod(Method):
    """A pikfix checkpoint run through the same pipeline as `pikfix fix`: all references are
    attended over together, and a photo with its own colour is restored, not recolorized."""

    kind = "model"

    def __init__(self, path: Path, name: str, pipe: FixPipeline, header: dict[str, Any]) -> None:
        self.path = path
        self.name = name
        self.label = path.stem
        self.pipe = pipe
        self.device = pipe.device
        self.header = header
        self.sha256 = sha256_file(path)

    def details(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "checkpoint": str(self.path),
            "sha256": self.sha256,
            "preset": self.header["config"].get("preset"),
            "metadata": self.header.get("metadata", {}),
            "device": str(self.device),
            "work_size": self.pipe.work_size,
            "tile": self.pipe.tile,
            "tile_overlap": self.pipe.tile_overlap,
        }

    def run(self, old: np.ndarray, refs: list[np.ndarray]) -> tuple[np.ndarray, float | None]:
        if classify(old).has_own_colour:
            return self.pipe.restore_colour_photo(old)[0], None
        result = self.pipe.fix(old, [self.pipe.prepare_reference(r) for r in refs])
        return result.rgb, result.confidence


def load_models(
    paths: Sequence[Path], device: str = "auto", work_size: int = 512, tile: int = DEFAULT_TILE, tile_overlap: int = 48
) -> list[ModelMethod]:
    """Load every checkpoint up front, so a wrong path fails before any photo is processed.

    A model is named by its file name and preset, e.g. ``pikfix-lite.safetensors (lite)``;
    when two files share a name, their folder is added to tell them apart.
    """
    try:
        dev = resolve_device(device)
    except (RuntimeError, ValueError) as err:
        raise BenchError(f"--device {device}: {err}") from None
    names = [p.name for p in paths]
    models = []
    for path in paths:
        label = f"{path.parent.name}/{path.name}" if names.count(path.name) > 1 else path.name
        try:
            header = read_header(path)
            pipe = FixPipeline.from_checkpoint(path, str(dev), work_size=work_size, tile=tile,
                                               tile_overlap=tile_overlap)
        except CheckpointError as err:
            raise BenchError(str(err)) from None
        except ValueError as err:  # e.g. a work size below the pipeline's minimum
            raise BenchError(f"{path}: {err}") from None
        preset = header["config"].get("preset", "custom")
        models.append(ModelMethod(path, f"{label} ({preset})", pipe, header))
    if len({m.name for m in models}) < len(models):
        raise BenchError("the same checkpoint was given twice with --model")
    return models


# --------------------------------------------------------------------------- measuring


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _current_peak_rss_mib() -> float:
    """Peak RSS since the last reset (Linux VmHWM); else the process's lifetime peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass  # not Linux: the lifetime peak below is the best there is
    return peak_rss_mib()


def _timed(method: Method, old: np.ndarray, refs: list[np.ndarray]) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    """Run ``method`` and measure wall time, peak RSS and (on a GPU) peak CUDA memory."""
    cuda = method.device.type == "cuda"
    per_call = _reset_peak_rss()
    if cuda:
        torch.cuda.synchronize(method.device)
        torch.cuda.reset_peak_memory_stats(method.device)
    start = time.perf_counter()
    rgb, confidence = method.run(old, refs)
    if cuda:
        torch.cuda.synchronize(method.device)
    seconds = time.perf_counter() - start
    megapixels = old.shape[0] * old.shape[1] / 1e6
    timing = {
        "seconds": round(seconds, 4),
        "megapixels_per_second": round(megapixels / seconds, 4) if seconds > 0 else None,
        "peak_rss_mib": round(_current_peak_rss_mib(), 1),
        "peak_rss_scope": "this call" if per_call else "process lifetime",
        "cuda_peak_mib": round(torch.cuda.max_memory_allocated(method.device) / 2**20, 1) if cuda else None,
    }
    return rgb, confidence, timing


def _finite_or_str(value: float) -> float | str:
    """JSON has no infinity: PSNR of identical images is stored as the string "inf"."""
    return value if math.isfinite(value) else "inf"


def score(result: np.ndarray, truth: np.ndarray, lpips_metric: LPIPSMetric | None) -> dict[str, float | str | None]:
    """PSNR, SSIM (8-bit RGB), LPIPS (None when unavailable), colourfulness of the result and
    its mean chroma distance to the truth (delta ab in CIELAB units, colour alone)."""
    return {
        "psnr": _finite_or_str(psnr(result, truth)),
        "ssim": ssim(result, truth),
        "lpips": lpips_metric(result, truth) if lpips_metric is not None else None,
        "colorfulness": colorfulness(result),
        "delta_ab": delta_ab(result, truth),
    }


# --------------------------------------------------------------------------- the cached runner


class ResultCache:
    """JSON records and thumbnails under ``root/<group>/<item>``, valid only for their fingerprint."""

    def __init__(self, root: Path, fresh: bool = False) -> None:
        self.root = root
        self.fresh = fresh

    def record_path(self, group: str, item: str) -> Path:
        return self.root / group / f"{item}.json"

    def thumb_path(self, group: str, item: str, part: str = "") -> Path:
        return self.root / group / (f"{item}.{part}.png" if part else f"{item}.png")

    def get(self, group: str, item: str, fingerprint: str, thumbs: Sequence[str] = ()) -> dict[str, Any] | None:
        """The cached record, or None when absent, from other settings, unreadable, missing one
        of its ``thumbs`` (parts, "" for the main one) or when the cache is ``fresh``."""
        path = self.record_path(group, item)
        if self.fresh or not path.is_file() or not all(self.thumb_path(group, item, t).is_file() for t in thumbs):
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # recomputed and rewritten below
        return record if record.get("fingerprint") == fingerprint else None

    def put(
        self, group: str, item: str, fingerprint: str, record: dict[str, Any], thumbs: dict[str, np.ndarray]
    ) -> None:
        """Write the thumbnails (part -> image) first, so a record on disk always has them."""
        for part, pixels in thumbs.items():
            write_image(self.thumb_path(group, item, part), thumbnail(pixels))
        text = json.dumps({**record, "fingerprint": fingerprint}, indent=1, allow_nan=False)
        write_text_atomic(self.record_path(group, item), text)


def thumbnail(rgb: np.ndarray, height: int = THUMB_HEIGHT) -> np.ndarray:
    """A uint8 (h, w, 3) copy ``height`` pixels high (never enlarged)."""
    image = Image.fromarray(from_float(rgb, np.uint8))
    if image.height > height:
        image = image.resize((max(1, round(image.width * height / image.height)), height), Image.Resampling.LANCZOS)
    return np.asarray(image)


def _fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class QualityRun:
    """Everything a quality report needs: per-image records, methods, skipped files."""

    dataset: Dataset
    methods: list[Method]
    references: References
    cache: ResultCache
    lpips: tuple[bool, str]
    images: list[dict[str, Any]] = field(default_factory=list)  # one per benchmarked photo
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (photo, method)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    from_cache: int = 0  # how many (photo, method) results were reused


def run_quality(
    dataset: Dataset,
    methods: Sequence[Method],
    references: References,
    out: Path,
    fresh: bool = False,
    on_image: Callable[[int, Sample], None] | None = None,
    warn: Warn = ignore_warning,
) -> QualityRun:
    """Score every method on every photo, reusing cached results; one photo in memory at a time.

    ``on_image(done, sample)`` is called before each photo, ``warn`` for each problem that
    does not stop the run (a resized input, an unreadable photo, which is then skipped).
    """
    dataset.require_samples()
    if not methods:
        raise BenchError("no methods to compare: give --model and/or keep the baselines")
    lpips = lpips_status()
    metric_device = next((m.device for m in methods if m.device.type == "cuda"), torch.device("cpu"))
    lpips_metric = LPIPSMetric(device=metric_device) if lpips[0] else None
    run = QualityRun(dataset, list(methods), references, ResultCache(out / "cache", fresh), lpips,
                     skipped=list(dataset.skipped))
    for done, sample in enumerate(dataset.samples):
        if on_image is not None:
            on_image(done, sample)
        try:
            _run_sample(run, sample, lpips_metric, warn)
        except ImageReadError as err:
            warn(f"{err}; skipped")
            run.skipped.append((str(err.path), err.reason))
        except torch.OutOfMemoryError:
            raise BenchError(f"{sample.truth}: out of memory; try a smaller --tile or --work-size, "
                             "or --device cpu (finished images are cached)") from None
    if not run.images:
        raise BenchError(f"{dataset.source}: none of the {len(dataset.samples)} images could be read")
    return run


_SAMPLE_THUMBS = ("input", "reference", "truth")


def _run_sample(run: QualityRun, sample: Sample, lpips_metric: LPIPSMetric | None, warn: Warn) -> None:
    """Fill ``run`` with one photo's records, computing only what the cache lacks."""
    cache = run.cache
    sample_key = _fingerprint({
        "kind": run.dataset.kind, "recipe": run.dataset.recipe, "truth": file_identity(sample.truth),
        "old": file_identity(sample.old) if sample.old else None, "seed": sample.seed,
        "reference": run.references.source(sample),
    })
    keys = {m.slug: _fingerprint({"sample": sample_key, "method": m.details(), "lpips": run.lpips[0]})
            for m in run.methods}
    info = cache.get("sample", sample.id, sample_key, _SAMPLE_THUMBS)
    records = {}
    for method in run.methods:
        record = cache.get(method.slug, sample.id, keys[method.slug], ("",))
        if record is not None:
            records[method.slug] = record
    run.from_cache += len(records)
    if info is None or len(records) < len(run.methods):
        loaded = load_sample(run.dataset, sample, warn)
        refs, ref_name = run.references.load(sample, loaded)
        height, width = loaded.truth.shape[:2]
        info = {
            "image": sample.id, "truth": str(sample.truth), "old": str(sample.old) if sample.old else None,
            "width": width, "height": height, "megapixels": round(width * height / 1e6, 4),
            "reference": ref_name, "damage": loaded.ops, "colorfulness_truth": colorfulness(loaded.truth),
        }
        cache.put("sample", sample.id, sample_key, info, dict(zip(_SAMPLE_THUMBS, (loaded.old, refs[0], loaded.truth))))
        for method in run.methods:
            if method.slug not in records:
                rgb, confidence, timing = _timed(method, loaded.old, refs)
                record = {"image": sample.id, "method": method.name, **score(rgb, loaded.truth, lpips_metric),
                          "confidence": confidence, **timing}
                cache.put(method.slug, sample.id, keys[method.slug], record, {"": rgb})
                records[method.slug] = record
    run.images.append({k: v for k, v in info.items() if k != "fingerprint"})
    for method in run.methods:
        run.rows.append({k: v for k, v in records[method.slug].items() if k != "fingerprint"})


# --------------------------------------------------------------------------- speed

# Each case runs in a fresh interpreter: peak RSS is a per-process high-water mark.
_SPEED_CHILD = (
    "import json, sys\n"
    "from pikfix.benchmark.speed import time_fix\n"
    "print(json.dumps(time_fix(**json.loads(sys.argv[1])).to_dict()))\n"
)


def run_speed(
    presets: Sequence[str],
    sizes: Sequence[float],
    device: str = "auto",
    work_size: int = 512,
    tile: int = DEFAULT_TILE,
    cache_dir: Path | None = None,
    fresh: bool = False,
    on_case: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Time ``pikfix.speed.time_fix`` for every (preset, megapixels), one subprocess per case.

    A case that fails (e.g. killed for memory) is recorded with its ``error`` and the others
    still run. With ``cache_dir``, finished cases are stored there and reused by a rerun.
    """
    for preset in presets:
        try:
            preset_config(preset)
        except ValueError as err:
            raise BenchError(f"--presets: {err}") from None
    if not sizes or any(not (size > 0) for size in sizes):
        raise BenchError(f"--sizes must be positive megapixel counts, got {list(sizes)}")
    try:
        dev = resolve_device(device)
    except (RuntimeError, ValueError) as err:
        raise BenchError(f"--device {device}: {err}") from None
    cache = ResultCache(cache_dir, fresh) if cache_dir is not None else None
    results = []
    for preset in presets:
        for size in sizes:
            args = {"preset": preset, "megapixels": size, "device": str(dev), "work_size": work_size, "tile": tile}
            item = safe_id(f"{preset}-{size:g}mp-{dev}-w{work_size}-t{tile}")
            key = _fingerprint(args)
            result = cache.get("speed", item, key) if cache is not None else None
            if result is None:
                result = _speed_case(args)
                if cache is not None and "error" not in result:
                    cache.put("speed", item, key, result, {})
            result = {k: v for k, v in result.items() if k != "fingerprint"}
            results.append(result)
            if on_case is not None:
                on_case(result)
    return results


def _speed_case(args: dict[str, Any]) -> dict[str, Any]:
    """One case in a child process; a failure becomes an ``error`` entry, not an exception."""
    proc = subprocess.run([sys.executable, "-c", _SPEED_CHILD, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    if proc.returncode < 0:
        reason = f"killed by signal {-proc.returncode} (out of memory?)"
    else:
        lines = proc.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
    return {"preset": args["preset"], "megapixels": args["megapixels"], "device": args["device"], "error": reason}
