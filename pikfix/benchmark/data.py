"""Test sets and colour references for `pikfix bench` (the runner is ``pikfix.benchmark.runner``).

Test sets:

* RealOld naming (``realold_pairs``), one folder searched recursively. The *old photo* is a
  file whose stem is ``<id>o`` and its *ground truth* a file whose stem is ``<id>t``,
  optionally with one separator (``_``, ``-``, ``.`` or a space) before the ``t`` and any
  text after the ``t`` that starts with a separator. ``<id>`` must end in a digit and is
  compared case-insensitively. So ``12o.jpg`` pairs with ``12t.jpg``, ``12_t.png`` or
  ``12-T_colour.tif``, but not with ``112t.jpg``.
* Generic pairs (``stem_pairs``): ``inputs/x.jpg`` pairs with ``targets/x.png`` (same stem).
* Synthetic (``synthetic_set``): clean colour photos, damaged on the fly with a per-photo seed,
  by default with the evaluation recipe ``eval`` of ``pikfix.benchmark.damage`` (damage no model
  trained on; ``cracks`` also works) or, with ``recipe="training"``, by the training recipe
  ``pikfix.training.degradation``; or only turned grey (colorization only), or faded in colour
  (``fade_colour``: a faded colour print, which should keep its colours).

Files without a partner, or with an ambiguous one, are listed in ``Dataset.skipped``.
``detect_dataset`` tells these kinds apart from a folder's layout (`pikfix bench DIR`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.training.data import DataConfig, DataError, scan_images, split
from pikfix.training.degradation import degrade_seeded, to_grey
from pikfix.imageio import ImageReadError, find_images, read_image, to_float
from pikfix.benchmark.damage import RECIPES, damage
from pikfix.color import lightness_grey, luminance
from pikfix.retrieval.store import sha256_file

REF_MODES = ("file", "auto", "ground-truth-crop", "random-other")
# Damage of synthetic sets ("clean" is --colorization-only); the eval-no-<step> variants leave one step out.
SYNTHETIC_RECIPES = tuple(r for r in RECIPES if r != "clean") + ("training",)
GT_CROP = 0.7  # side share of the central ground-truth crop used as an upper-bound reference

_REALOLD_OLD = re.compile(r"(?P<id>.*?\d)[ _.-]?o", re.IGNORECASE)
_REALOLD_TRUTH = re.compile(r"(?P<id>.*?\d)[ _.-]?t(?:[ _.-].*)?", re.IGNORECASE)

Warn = Callable[[str], None]


class BenchError(ValueError):
    """A benchmark that cannot run as asked; ``str()`` is one line naming the file and the reason."""


def ignore_warning(message: str) -> None:
    """Default warning sink for library callers that do not display warnings."""


# --------------------------------------------------------------------------- test sets


@dataclass(frozen=True)
class Sample:
    """One test photo: its ground truth and where its old input comes from."""

    id: str  # unique and file-name safe: names the cache entries
    truth: Path
    old: Path | None = None  # a real old photo; None: made from ``truth`` (synthetic sets)
    seed: int = 0  # degradation seed of a synthetic sample


@dataclass
class Dataset:
    """The photos of one benchmark and the files that could not be used, with the reason."""

    kind: str  # "realold", "pairs", "synthetic" (damaged), "colorization" (clean grey) or "faded" (colour)
    source: str  # the folder(s), for the report
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seed: int = 0
    recipe: str = "eval"  # damage of a "synthetic" set: one of SYNTHETIC_RECIPES

    def describe(self) -> str:
        """One line for the report."""
        what = {
            "realold": "real old photos with restored ground truth (RealOld naming)",
            "pairs": "old photos paired with ground truth by file stem",
            "synthetic": (
                f"clean colour photos damaged by the training recipe pikfix.training.degradation (seed {self.seed})"
                if self.recipe == "training" else
                f"clean colour photos damaged by the evaluation recipe {self.recipe!r} of pikfix.benchmark.damage, "
                f"never used in training (seed {self.seed})"
            ),
            "colorization": "clean colour photos turned grey without damage (colorization only)",
            "faded": "clean colour photos faded in colour (low contrast, a cast, dull colour): colour inputs",
        }[self.kind]
        return f"{len(self.samples)} images from {self.source}: {what}"

    def require_samples(self) -> None:
        """Raise ``BenchError`` for an empty test set, with a hint from the skipped files."""
        if self.samples:
            return
        hint = ""
        if self.skipped:
            path, reason = self.skipped[0]
            hint = f" ({len(self.skipped)} files skipped, e.g. {path}: {reason})"
        raise BenchError(f"{self.source}: no images to benchmark{hint}")

    def head(self, max_images: int | None) -> Dataset:
        """The first ``max_images`` samples (ids are sorted), for quick runs."""
        if max_images is None:
            return self
        if max_images < 1:
            raise BenchError(f"--max-images must be at least 1, got {max_images}")
        return Dataset(self.kind, self.source, self.samples[:max_images], self.skipped, self.seed, self.recipe)


def safe_id(text: str) -> str:
    """A file-name-safe id: path separators become ``__``, other odd characters ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text.replace("/", "__").replace("\\", "__"))


def _images_in(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise BenchError(f"{folder}: {what} folder not found")
    try:
        return [path for path, _ in find_images([folder])]
    except OSError as err:
        raise BenchError(f"{folder}: cannot list {what} folder ({err})") from None


def _match(
    olds: dict[str, list[Path]], truths: dict[str, list[Path]], kind: str, source: str, skipped: list[tuple[str, str]]
) -> Dataset:
    """Pair old photos and ground truths by key; list what has no partner or is ambiguous."""
    samples = []
    for key in sorted(olds.keys() | truths.keys()):
        old, truth = olds.get(key, []), truths.get(key, [])
        if len(old) == 1 and len(truth) == 1:
            samples.append(Sample(id=safe_id(key), truth=truth[0], old=old[0]))
        elif not truth:
            skipped += [(str(p), "no ground truth with the same id") for p in old]
        elif not old:
            skipped += [(str(p), "no old photo with the same id") for p in truth]
        else:
            names = ", ".join(p.name for p in old + truth)
            skipped += [(str(p), f"ambiguous id {key!r} ({names})") for p in old + truth]
    return Dataset(kind, source, samples, skipped)


def realold_pairs(folder: Path) -> Dataset:
    """Old photos and ground truths named the RealOld way (module docstring), in one folder tree."""
    olds: dict[str, list[Path]] = defaultdict(list)
    truths: dict[str, list[Path]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []
    for path in _images_in(folder, "RealOld"):
        if match := _REALOLD_OLD.fullmatch(path.stem):
            olds[match["id"].lower()].append(path)
        elif match := _REALOLD_TRUTH.fullmatch(path.stem):
            truths[match["id"].lower()].append(path)
        else:
            skipped.append((str(path), "name is neither <id>o (old photo) nor <id>t (ground truth)"))
    return _match(olds, truths, "realold", str(folder), skipped)


def stem_pairs(inputs: Path, targets: Path) -> Dataset:
    """Old photos in ``inputs`` paired with the ground truth of the same file stem in ``targets``."""
    olds: dict[str, list[Path]] = defaultdict(list)
    truths: dict[str, list[Path]] = defaultdict(list)
    for path in _images_in(inputs, "inputs"):
        olds[path.stem].append(path)
    for path in _images_in(targets, "targets"):
        truths[path.stem].append(path)
    return _match(olds, truths, "pairs", f"{inputs} + {targets}", [])


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def detect_dataset(
    folder: Path, colorization_only: bool = False, seed: int = 0, val_split: bool = False, val_fraction: float = 0.1,
    recipe: str = "eval",
) -> Dataset:
    """The test set a folder holds, told by its layout (`pikfix bench DIR`).

    ``inputs/`` + ``targets/`` subfolders: pairs by file stem; every image named ``<id>o`` /
    ``<id>t``: RealOld pairs; other images: clean photos damaged on the fly (synthetic, or
    grey only with ``colorization_only``; damage ``recipe``).  An empty folder, one with only ``inputs/`` or
    ``targets/``, or one that mixes kinds raises ``BenchError`` saying what was found.
    """
    images = _images_in(folder, "test")
    inputs, targets = folder / "inputs", folder / "targets"
    if inputs.is_dir() or targets.is_dir():
        if not (inputs.is_dir() and targets.is_dir()):
            present, missing = ("inputs", "targets") if inputs.is_dir() else ("targets", "inputs")
            raise BenchError(f"{folder}: has {present}/ but no {missing}/ (old photos and their ground truth go together)")
        loose = [p for p in images if not (_inside(p, inputs) or _inside(p, targets))]
        if loose:
            raise BenchError(
                f"{folder}: mixed folder: inputs/ + targets/ and {len(loose)} other image(s), e.g. {loose[0]}; "
                "move them out or bench inputs/ + targets/ with --inputs/--targets"
            )
        return _synthetic_only(stem_pairs(inputs, targets), colorization_only, val_split)
    if not images:
        raise BenchError(
            f"{folder}: no images (expected RealOld pairs <id>o/<id>t, inputs/ + targets/, or clean colour photos)"
        )
    named = [p for p in images if _REALOLD_OLD.fullmatch(p.stem) or _REALOLD_TRUTH.fullmatch(p.stem)]
    if named and len(named) < len(images):
        other = next(p for p in images if p not in set(named))
        raise BenchError(
            f"{folder}: mixed folder: {len(named)} image(s) named like RealOld pairs (e.g. {named[0].name}) and "
            f"{len(images) - len(named)} clean photo(s) (e.g. {other.name}); put each kind in its own folder"
        )
    if named:
        return _synthetic_only(realold_pairs(folder), colorization_only, val_split)
    return synthetic_set(folder, colorization_only, seed, val_split, val_fraction, recipe=recipe)


def _synthetic_only(dataset: Dataset, colorization_only: bool, val_split: bool) -> Dataset:
    if colorization_only or val_split:
        raise BenchError(f"{dataset.source}: --colorization-only and --val-split apply to clean photos, not {dataset.kind} pairs")
    return dataset


def _derived_seed(seed: int, name: str) -> int:
    """A per-photo seed from the run seed and the file name (stable when the folder grows)."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{name}".encode()).digest()[:8], "little")


def fade_colour(rgb: np.ndarray, seed: int) -> np.ndarray:
    """A faded colour print made from a clean photo (H, W, 3), reproducibly for ``seed``.

    Dye layers age unevenly (a per-channel gamma), colour dulls (saturation x 0.45-0.8), the
    print yellows (a cast, blue weakest), contrast drops and blacks lift, and grain is added.
    """
    rng = np.random.default_rng(seed)
    out = rgb ** rng.uniform(0.85, 1.15, 3)
    grey = luminance(out)[..., None] / 100.0
    out = grey + (out - grey) * rng.uniform(0.45, 0.8)
    out = out * np.array([rng.uniform(1.0, 1.1), rng.uniform(0.92, 1.02), rng.uniform(0.75, 0.92)])
    out = 0.5 + (out - 0.5) * rng.uniform(0.65, 0.9) + rng.uniform(0.0, 0.08)
    return np.clip(out + rng.normal(0.0, 0.01, out.shape), 0.0, 1.0).astype(np.float32)


def synthetic_set(
    folder: Path, colorization_only: bool = False, seed: int = 0, val_split: bool = False, val_fraction: float = 0.1,
    faded: bool = False, recipe: str = "eval",
) -> Dataset:
    """Clean colour photos whose old inputs are made on the fly, reproducibly for ``seed``,
    damaged by ``recipe`` (one of ``SYNTHETIC_RECIPES``).

    ``val_split`` keeps only the validation photos of a training run on the same folder with
    the same seed and ``val_fraction`` (and default data settings): the photos are screened
    with ``pikfix.data.scan_images`` and split with ``pikfix.data.split`` exactly as training does.
    """
    if recipe not in SYNTHETIC_RECIPES:
        raise BenchError(f"damage recipe {recipe!r}: choose one of {', '.join(SYNTHETIC_RECIPES)}")
    skipped: list[tuple[str, str]] = []
    if val_split:
        try:
            usable, rejected = scan_images(folder, DataConfig(val_fraction=val_fraction))
            _, paths = split(usable, val_fraction, seed)
        except (DataError, ValueError) as err:
            raise BenchError(f"--val-split: {err}") from None
        skipped = [(str(p), reason) for p, reason in rejected]
    else:
        paths = _images_in(folder, "photo")
    ids: set[str] = set()
    samples = []
    for path in paths:
        rel = path.relative_to(folder)
        sample_id = safe_id(rel.with_suffix("").as_posix())
        if sample_id in ids:  # x.jpg next to x.png
            sample_id = safe_id(rel.as_posix())
        ids.add(sample_id)
        samples.append(Sample(id=sample_id, truth=path, seed=_derived_seed(seed, path.name)))
    if colorization_only and faded:
        raise BenchError("colorization-only (grey input) and faded (colour input) exclude each other")
    kind = "faded" if faded else "colorization" if colorization_only else "synthetic"
    return Dataset(kind, str(folder), sorted(samples, key=lambda s: s.id), skipped, seed, recipe)


@dataclass
class LoadedSample:
    """The arrays of one sample, float32 (H, W, 3) in [0, 1], both at the ground truth's size."""

    old: np.ndarray
    truth: np.ndarray
    ops: list[str]  # synthetic damage applied, in order


def _resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of a float (H, W, 3) image."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
    t = F.interpolate(t, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).clamp(0.0, 1.0).numpy()


def load_sample(dataset: Dataset, sample: Sample, warn: Warn = ignore_warning) -> LoadedSample:
    """Read (and, for synthetic sets, make) the old photo; raises ``ImageReadError``."""
    truth = to_float(read_image(sample.truth).pixels)
    height, width = truth.shape[:2]
    if sample.old is not None:
        old = to_float(read_image(sample.old).pixels)
        if old.shape[:2] != (height, width):
            warn(f"{sample.old}: {old.shape[1]}x{old.shape[0]} differs from its ground truth "
                 f"{width}x{height}; resized to the ground truth")
            old = _resize(old, height, width)
        return LoadedSample(old, truth, [])
    if dataset.kind == "faded":
        return LoadedSample(fade_colour(truth, sample.seed), truth, ["fade_colour"])
    if dataset.kind == "colorization":
        grey, ops = to_grey(truth), []
    elif dataset.recipe == "training":
        damaged = degrade_seeded(truth, sample.seed)
        grey, ops = damaged.grey, damaged.ops
    else:  # the evaluation recipe works on L / 100; its result goes on as the grey with that L
        grey = lightness_grey(damage(luminance(truth) / 100.0, dataset.recipe, sample.seed).grey * 100.0)
        ops = [f"eval recipe {dataset.recipe}"]
    return LoadedSample(np.repeat(grey[..., None], 3, axis=2), truth, ops)


# --------------------------------------------------------------------------- references

class StoreRetriever:
    """Automatic references from a pikfix reference store (``pikfix index``).

    The query is the old input's lightness, before any restoration, so every method gets the
    same reference. A photo's own ground truth (the same file, or a byte-identical copy) is
    never its reference: that would score a retrieval leak, not colorization.
    """

    def __init__(self, store_dir: Path, device: str = "auto") -> None:
        from pikfix.retrieval import ReferenceStore, StoreError  # faiss: loaded only in auto mode

        try:
            self.store = ReferenceStore.open(store_dir, device=device)
        except StoreError as err:
            raise BenchError(str(err)) from None
        if len(self.store) < 2:
            raise BenchError(f"{store_dir}: the reference store holds {len(self.store)} photo(s); need at least 2")
        self.source = str(store_dir)
        self.identity = file_identity(store_dir / "manifest.json")

    @classmethod
    def from_refs_dir(cls, refs_dir: Path, device: str = "auto") -> StoreRetriever:
        """Index ``refs_dir`` into pikfix's cache (only new or changed photos are embedded)."""
        from pikfix.backbones import WeightsUnavailableError
        from pikfix.retrieval import StoreError, build_or_update, cache_store_dir

        store_dir = cache_store_dir(refs_dir)
        try:
            build_or_update(refs_dir, store_dir, device=device)
        except (StoreError, WeightsUnavailableError) as err:
            raise BenchError(f"--refs {refs_dir}: {err}") from None
        retriever = cls(store_dir, device)
        retriever.source = f"{refs_dir} (indexed in {store_dir})"
        return retriever

    def __call__(self, old: np.ndarray, truth: Path, k: int = 1) -> list[tuple[Path, float]]:
        """The ``k`` best reference files other than ``truth``, with their retrieval scores."""
        found = [(m.path, m.score) for m in self.store.search(luminance(old), k=k + 7) if not _same_content(m.path, truth)]
        if not found:
            raise BenchError(f"{truth}: the reference store has no photo other than this image's own ground truth")
        return found[:k]


def _same_content(a: Path, b: Path) -> bool:
    """Same file, or a byte-identical copy (hashed only when the sizes agree)."""
    if a.resolve() == b.resolve():
        return True
    return a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


class References:
    """Picks each photo's colour reference the same way for every method.

    Modes: ``file`` (one photo for all), ``auto`` (retrieved from a reference store),
    ``ground-truth-crop`` (central crop of the ground truth, mirrored: an upper bound) and
    ``random-other`` (another test photo's ground truth, seeded: what a poor reference does).
    """

    def __init__(
        self,
        mode: str,
        dataset: Dataset,
        seed: int = 0,
        ref_file: Path | None = None,
        retriever: StoreRetriever | None = None,
        top_k: int = 1,
    ) -> None:
        if mode not in REF_MODES:
            raise BenchError(f"unknown reference mode {mode!r}; choose one of {', '.join(REF_MODES)}")
        if mode == "random-other" and len(dataset.samples) < 2:
            raise BenchError("--ref-mode random-other needs at least 2 images in the test set")
        self.mode = mode
        self.seed = seed
        self.truths = {s.id: s.truth for s in dataset.samples}
        self.retriever = retriever
        if top_k < 1 or (top_k > 1 and mode != "auto"):
            raise BenchError(f"--top-k {top_k}: several references come from retrieval (--ref-mode auto) only")
        self.top_k = top_k
        self.file: tuple[Path, np.ndarray] | None = None
        if mode == "file":
            if ref_file is None:
                raise BenchError("--ref-mode file needs a reference photo: --ref FILE")
            try:
                self.file = ref_file, to_float(read_image(ref_file).pixels)
            except ImageReadError as err:
                raise BenchError(f"reference {err}") from None
        if mode == "auto" and retriever is None:
            raise BenchError("--ref-mode auto needs --refs DIR or --index STORE")

    def describe(self) -> str:
        """One line for the report."""
        if self.file is not None:
            return f"one reference photo for every image: {self.file[0]}"
        if self.retriever is not None:
            best = "the best match" if self.top_k == 1 else f"the {self.top_k} best matches"
            return f"{best} retrieved automatically from {self.retriever.source} (never the image's own ground truth)"
        if self.mode == "random-other":
            return f"the ground truth of a random other test image (seed {self.seed}): a poor reference"
        return f"central {GT_CROP:.0%} of the ground truth, mirrored: an upper bound"

    def _other(self, sample: Sample) -> Path:
        others = sorted(i for i in self.truths if i != sample.id)
        return self.truths[random.Random(f"{self.seed}\0{sample.id}").choice(others)]

    def source(self, sample: Sample) -> str:
        """What the reference of ``sample`` depends on, known before any image is read (cache keys)."""
        if self.file is not None:
            return f"file:{file_identity(self.file[0])}"
        if self.retriever is not None:
            return f"auto:{self.retriever.identity}:top{self.top_k}"
        if self.mode == "random-other":
            return f"other:{file_identity(self._other(sample))}"
        return f"crop:{GT_CROP}"

    def load(self, sample: Sample, loaded: LoadedSample) -> tuple[list[np.ndarray], str]:
        """(reference RGB floats (H, W, 3), best first; their names for the report); raises ``ImageReadError``."""
        if self.file is not None:
            return [self.file[1]], self.file[0].name
        if self.retriever is not None:
            found = self.retriever(loaded.old, sample.truth, self.top_k)
            names = ", ".join(f"{path.name} (score {score:.3f})" for path, score in found)
            return [to_float(read_image(path).pixels) for path, _ in found], names
        if self.mode == "random-other":
            other = self._other(sample)
            return [to_float(read_image(other).pixels)], other.name
        h, w = loaded.truth.shape[:2]
        ch, cw = max(1, round(h * GT_CROP)), max(1, round(w * GT_CROP))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        crop = loaded.truth[y0 : y0 + ch, x0 : x0 + cw, :][:, ::-1]
        return [np.ascontiguousarray(crop)], "ground-truth crop"


def file_identity(path: Path) -> str:
    """Path, size and modification time: changes whenever the file does, without reading it."""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


