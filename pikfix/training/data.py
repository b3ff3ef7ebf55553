"""Training data: a folder of colour photos -> (damaged grey input, clean target, reference) crops.

Pik-Fix learns from synthetic pairs (paper 4.1): a random crop of a colour photo is the target,
the same crop damaged by ``pikfix.training.degradation`` and turned grey is the input, and a colour
reference is one of three kinds, drawn per sample with ``DataConfig.ref_probabilities``:

* same-image: another crop of the same photo at a different location (the location change is
  the translation), slightly rotated, scaled and maybe mirrored, with *mild* colour jitter;
* retrieved: a crop of one of the photo's top-k neighbours among the *training* photos, found
  with ``pikfix.retrieval`` exactly as `pikfix fix` finds references (never the photo itself):
  the "similar but different" reference that the model meets at run time;
* random: a random crop of a random other photo, so the model learns to distrust a poor match.

The paper alternates same-image and random references once per epoch (``reference_mode``
"alternate" keeps that, per sample). Each item records its kind (``ref_kind``); validation scores
every photo with every kind, so quality is reported per kind (``per_kind_metrics``). Colour
jitter stays mild by default because references that are heavily hue-shifted teach the model to
ignore good references.

Every sample is a pure function of (seed, epoch, index): ``__getitem__`` seeds its own
``np.random.Generator`` from those three numbers. A resumed run therefore sees exactly the
samples it would have seen, DataLoader workers and DDP ranks differ only by the indices they
are given, and no global random state is involved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset

from pikfix.color import normalize_ab, normalize_l, rgb_to_lab, rgb_to_luminance
from pikfix.config import reject_unknown_keys
from pikfix.training.degradation import DegradationConfig, Window, degrade, to_grey
from pikfix.imageio import ImageReadError, find_images, read_image, to_float

REFERENCE_MODES = ("mixed", "alternate", "same-image", "retrieved", "other-image")
REF_SAME_IMAGE = 0  # value of ``ref_kind`` for a same-image reference
REF_OTHER_IMAGE = 1  # value of ``ref_kind`` for a random other-image reference
REF_RETRIEVED = 2  # value of ``ref_kind`` for a retrieved neighbour
KIND_NAMES = {REF_SAME_IMAGE: "same-image", REF_OTHER_IMAGE: "random", REF_RETRIEVED: "retrieved"}

# Decoded photos kept per dataset copy (one copy per DataLoader worker). A cached photo has its
# shorter side at most max_short_side * crop, so this bounds memory to a few tens of MB.
_CACHE_SIZE = 4
# A photo counts as colourless (nothing for the colorizer to learn) when fewer than this share
# of its pixels have channels that differ by more than _COLOUR_SPREAD 8-bit levels; the
# tolerance absorbs the chroma noise of JPEG-compressed greyscale pictures.
_COLOUR_SPREAD = 8
_MIN_COLOUR_FRACTION = 0.005


class DataError(ValueError):
    """The training data cannot be used as given; the message says what to change."""


# --------------------------------------------------------------------------- configuration


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # `true` in JSON is a mistake


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name}: must be {rule}, got {value!r}")


def _check_pair(name: str, value: Any, positive: bool) -> None:
    """A (lo, hi) range of numbers with 0 <= lo <= hi, or 0 < lo when ``positive``."""
    is_pair = isinstance(value, tuple) and len(value) == 2 and all(_is_number(v) for v in value)
    _require(is_pair, name, "a pair [lo, hi] of numbers", value)
    lo, hi = value
    low_ok = lo > 0 if positive else lo >= 0
    _require(low_ok and lo <= hi, name, f"a range with {'0 <' if positive else '0 <='} lo <= hi", value)


@dataclass(frozen=True)
class DataConfig:
    """How training samples are cut, damaged and given references; validated on construction."""

    crop: int = 256  # side of the square training crop, px (paper: 256)
    val_fraction: float = 0.1  # share of photos held out for validation (at least 1 when >= 2 photos)
    min_images: int = 2  # fewer usable photos than this is an error
    # "mixed" draws the kind per sample with ref_probabilities; "alternate" is the paper's
    # same-image / random half and half; the others use one kind only ("other-image" = random).
    reference_mode: str = "mixed"
    ref_probabilities: tuple[float, float, float] = (0.4, 0.4, 0.2)  # same-image, retrieved, random
    ref_neighbours: int = 5  # a retrieved reference is one of the photo's this many best matches
    # Same-image reference: mild colour jitter, then a small affine transform.
    ref_hue: float = 0.02  # hue shift up to +- this, in turns
    ref_saturation: tuple[float, float] = (0.8, 1.2)  # saturation factor range
    ref_brightness: tuple[float, float] = (0.9, 1.1)  # brightness factor range
    ref_rotation: float = 10.0  # rotation up to +- this, degrees
    ref_scale: tuple[float, float] = (0.9, 1.1)  # zoom factor range
    ref_flip: float = 0.5  # probability of a horizontal mirror
    # Large photos are downscaled so the shorter side is at most this many crops, so that a crop
    # shows whole objects rather than a patch of texture.
    max_short_side: float = 2.0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    degrade_probability: float = 1.0  # share of samples damaged; the rest are clean grey (colorization only)

    def __post_init__(self) -> None:
        def number_in(value: Any, lo: float, hi: float) -> bool:
            return _is_number(value) and lo <= value <= hi

        _require(_is_int(self.crop) and self.crop >= 16, "crop", "an integer >= 16", self.crop)
        val_ok = number_in(self.val_fraction, 0, 1) and self.val_fraction < 1
        _require(val_ok, "val_fraction", "a number in [0, 1)", self.val_fraction)
        _require(_is_int(self.min_images) and self.min_images >= 1, "min_images", "an integer >= 1", self.min_images)
        modes = ", ".join(REFERENCE_MODES)
        _require(self.reference_mode in REFERENCE_MODES, "reference_mode", f"one of {modes}", self.reference_mode)
        probs = self.ref_probabilities
        probs_ok = isinstance(probs, tuple) and len(probs) == 3 and all(number_in(p, 0, 1) for p in probs)
        _require(probs_ok and abs(sum(probs) - 1) < 1e-6, "ref_probabilities",
                 "three probabilities [same-image, retrieved, random] summing to 1", probs)
        _require(_is_int(self.ref_neighbours) and self.ref_neighbours >= 1, "ref_neighbours", "an integer >= 1",
                 self.ref_neighbours)
        _require(number_in(self.ref_hue, 0, 0.5), "ref_hue", "a number in [0, 0.5]", self.ref_hue)
        _check_pair("ref_saturation", self.ref_saturation, positive=False)
        _check_pair("ref_brightness", self.ref_brightness, positive=True)
        _require(number_in(self.ref_rotation, 0, 180), "ref_rotation", "degrees in [0, 180]", self.ref_rotation)
        _check_pair("ref_scale", self.ref_scale, positive=True)
        _require(number_in(self.ref_flip, 0, 1), "ref_flip", "a probability in [0, 1]", self.ref_flip)
        short_ok = number_in(self.max_short_side, 1, math.inf)
        _require(short_ok, "max_short_side", "a number >= 1 (in crops)", self.max_short_side)
        is_config = isinstance(self.degradation, DegradationConfig)
        _require(is_config, "degradation", "a DegradationConfig", self.degradation)
        probability = self.degrade_probability
        _require(number_in(probability, 0, 1), "degrade_probability", "a probability in [0, 1]", probability)

    def kind_probabilities(self) -> dict[int, float]:
        """Probability of each reference kind (``REF_*``) under ``reference_mode``."""
        same, retrieved, random_other = {
            "mixed": self.ref_probabilities,
            "alternate": (0.5, 0.0, 0.5),
            "same-image": (1.0, 0.0, 0.0),
            "retrieved": (0.0, 1.0, 0.0),
            "other-image": (0.0, 0.0, 1.0),
        }[self.reference_mode]
        return {REF_SAME_IMAGE: same, REF_RETRIEVED: retrieved, REF_OTHER_IMAGE: random_other}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (pairs become lists), e.g. for a checkpoint."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, DegradationConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        """Build from a (partial) dict such as parsed JSON; unknown keys are an error, not ignored."""
        reject_unknown_keys(data, cls, "data config")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if "degradation" in data:
            nested = data["degradation"]
            _require(isinstance(nested, Mapping), "degradation", "a mapping of degradation settings", nested)
            values["degradation"] = DegradationConfig.from_dict(nested)
        return cls(**values)


# --------------------------------------------------------------------------- finding and splitting photos


def scan_images(
    data_dir: str | os.PathLike[str], config: DataConfig | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Find the photos in ``data_dir`` (recursively) that can train, and why the others cannot.

    Each file is decoded once here, so a damaged file is reported now instead of crashing a
    DataLoader worker hours into training. Skipped (not fatal): unreadable files, greyscale
    photos (no colour to learn) and photos smaller than the crop; the caller reports them.
    Raises ``DataError`` when the crop is larger than every photo, or when fewer than
    ``config.min_images`` usable photos remain.
    """
    config = config or DataConfig()
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    usable: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    largest_small = 0  # shorter side of the largest photo skipped only for its size
    for path, _relative in find_images([folder]):
        try:
            image = read_image(path)
        except ImageReadError as exc:
            skipped.append((path, exc.reason))
            continue
        height, width = image.pixels.shape[:2]
        if image.was_grey or _is_colourless(image.pixels):
            skipped.append((path, "greyscale photo: no colour to learn from"))
        elif min(height, width) < config.crop:
            skipped.append((path, f"{width}x{height} is smaller than the {config.crop} px crop"))
            largest_small = max(largest_small, min(height, width))
        else:
            usable.append(path)

    if not usable and largest_small:
        raise DataError(
            f"the {config.crop} px crop is larger than every photo in {folder} "
            f"(the largest has a shorter side of {largest_small} px); use a crop of at most {largest_small}"
        )
    if len(usable) < config.min_images:
        noun = "image" if len(usable) == 1 else "images"
        note = f" ({len(skipped)} skipped, e.g. {skipped[0][0].name}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"found {len(usable)} usable {noun} in {folder}, need at least {config.min_images}{note}")
    return usable, skipped


def scan_folders(
    folders: Sequence[str | os.PathLike[str]], config: DataConfig | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``scan_images`` over several folders: each must hold a usable photo, together
    ``config.min_images``.  Photos are told apart by file name, as ``split`` does: a name seen
    in an earlier folder (the same photo fetched twice) is skipped, so it cannot train and
    validate at once."""
    config = config or DataConfig()
    if not folders:
        raise DataError("no photo folder given")
    usable: dict[str, Path] = {}  # file name -> path
    skipped: list[tuple[Path, str]] = []
    for folder in folders:
        found, rejected = scan_images(folder, dataclasses.replace(config, min_images=1))
        for path in found:
            if path.name in usable:
                if usable[path.name].resolve() != path.resolve():
                    skipped.append((path, f"same file name as {usable[path.name]}: counted once"))
            else:
                usable[path.name] = path
        skipped += rejected
    if len(usable) < config.min_images:
        names = ", ".join(str(f) for f in folders)
        raise DataError(f"found {len(usable)} usable images in {names}, need at least {config.min_images}")
    return list(usable.values()), skipped


def _is_colourless(pixels: np.ndarray) -> bool:
    """True for an RGB-encoded greyscale picture (e.g. a scanned black-and-white print saved as JPEG)."""
    step = max(1, math.isqrt(pixels.shape[0] * pixels.shape[1] // 250_000))  # ~250k samples suffice
    sample = pixels[::step, ::step].astype(np.int32)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return float(np.mean(spread > _COLOUR_SPREAD)) < _MIN_COLOUR_FRACTION


def split(paths: Sequence[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split photos into (train, val), deterministically for ``seed``.

    Photos are ranked by a hash of (seed, file name) and the lowest-ranked ones validate.
    Unlike a shuffled list, adding a photo to the folder moves at most one existing photo
    between the sets, so validation photos do not leak into training when a folder grows.
    With two or more photos and ``val_fraction > 0`` at least one photo validates and at
    least one trains. Both lists come back sorted.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: must be in [0, 1), got {val_fraction}")

    def rank(path: Path) -> str:
        # The file name only: the split must not change when the folder is moved or cloned.
        return hashlib.sha256(f"{seed}\0{path.name}".encode()).hexdigest()

    ordered = sorted(paths, key=rank)
    n_val = 0
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = min(max(1, round(len(ordered) * val_fraction)), len(ordered) - 1)
    return sorted(ordered[n_val:]), sorted(ordered[:n_val])


# --------------------------------------------------------------------------- the dataset


class PairDataset(Dataset[dict[str, torch.Tensor]]):
    """Training or validation samples: damaged grey input, clean Lab target, colour reference.

    Each item is a dict of float32 tensors for a crop of side C (``config.crop``):
    ``input_l`` (1, C, C) normalised L of the damaged grey crop, ``target_l`` (1, C, C) and
    ``target_ab`` (2, C, C) the clean crop (L/50 - 1, ab/110), ``ref_l`` / ``ref_ab`` the
    reference likewise, ``mask`` (1, C, C) where local damage destroyed pixels, and
    ``ref_kind`` (int64 scalar) ``REF_SAME_IMAGE``, ``REF_RETRIEVED`` or ``REF_OTHER_IMAGE``.

    ``neighbours`` maps each photo to its retrieved candidates (``reference_neighbours``); it
    is needed when retrieved references have a non-zero probability.

    Training (``train=True``) crops at random, draws the reference kind per sample and changes
    with ``set_epoch``. Validation crops at the centre, ignores the epoch and holds every photo
    once per reference kind in use, so every epoch is scored on identical samples and each kind
    on the same photos.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        config: DataConfig,
        seed: int,
        train: bool,
        neighbours: Mapping[Path, Sequence[Path]] | None = None,
    ) -> None:
        if not paths:
            raise DataError("no images to build a dataset from")
        self.probabilities = config.kind_probabilities()
        if len(paths) == 1:  # a one-photo set can only use its own photo
            self.probabilities = {**{k: 0.0 for k in self.probabilities}, REF_SAME_IMAGE: 1.0}
            if config.reference_mode == "other-image":
                raise DataError("reference_mode 'other-image' needs at least 2 images in the set")
        if self.probabilities[REF_RETRIEVED] > 0:
            if neighbours is None:
                raise DataError("retrieved references need the photos' neighbours: pass "
                                "neighbours=reference_neighbours(...) or set reference_mode / ref_probabilities")
            lacking = [p for p in paths if not neighbours.get(p)]
            if lacking:
                raise DataError(f"{lacking[0]}: no retrieved neighbour to use as reference")
        _require(_is_int(seed) and seed >= 0, "seed", "a non-negative integer", seed)
        self.paths = list(paths)
        self.neighbours = {p: list(v) for p, v in (neighbours or {}).items()}
        self.config = config
        self.seed = seed
        self.train = train
        self.epoch = 0
        kinds = [k for k, prob in self.probabilities.items() if prob > 0]
        self._val_items = [(i, kind) for i in range(len(self.paths)) for kind in kinds]
        self._cache: OrderedDict[Path, torch.Tensor] = OrderedDict()
        self._cache_size: int | None = _CACHE_SIZE  # None: keep every photo (``preload``)

    def __len__(self) -> int:
        return len(self.paths) if self.train else len(self._val_items)

    def set_epoch(self, epoch: int) -> None:
        """Select the randomness of training epoch ``epoch`` (no effect on validation).

        Call it before iterating a DataLoader: workers copy the dataset when an iteration
        starts, so with ``persistent_workers=True`` they would keep the old epoch.
        """
        _require(_is_int(epoch) and epoch >= 0, "epoch", "a non-negative integer", epoch)
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        epoch = self.epoch if self.train else 0
        rng = np.random.default_rng([self.seed, epoch, index])
        crop = self.config.crop
        photo = index if self.train else self._val_items[index][0]
        image = self._load(self.paths[photo])
        if self.train:
            top, left = _random_position(image, crop, rng)
        else:
            top, left = (image.shape[1] - crop) // 2, (image.shape[2] - crop) // 2
        target = image[:, top : top + crop, left : left + crop]

        kind = self._reference_kind(rng) if self.train else self._val_items[index][1]
        if kind == REF_SAME_IMAGE:
            reference = self._same_image_reference(image, rng)
        else:
            if kind == REF_RETRIEVED:
                candidates = self.neighbours[self.paths[photo]]
                other = self._load(candidates[int(rng.integers(len(candidates)))])
            else:
                # Any other photo of the set, uniformly: draw among n - 1 and skip over ``photo``.
                partner = int(rng.integers(len(self.paths) - 1))
                other = self._load(self.paths[partner + (partner >= photo)])
            ref_top, ref_left = _random_position(other, crop, rng)
            reference = other[:, ref_top : ref_top + crop, ref_left : ref_left + crop]

        if rng.random() < self.config.degrade_probability:
            # Damage is drawn as on the whole photo, so defect sizes follow it, not the crop.
            window = Window(image.shape[1], image.shape[2], float(top), float(left))
            damaged = degrade(target.permute(1, 2, 0).numpy(), rng, self.config.degradation, window)
            grey, mask = torch.from_numpy(damaged.grey), torch.from_numpy(damaged.mask)
        else:
            grey = torch.from_numpy(to_grey(target.permute(1, 2, 0).numpy()))
            mask = torch.zeros(crop, crop)

        target_lab = rgb_to_lab(target)
        ref_lab = rgb_to_lab(reference)
        return {
            "input_l": normalize_l(rgb_to_luminance(grey.expand(3, -1, -1))),
            "target_l": normalize_l(target_lab[:1]),
            "target_ab": normalize_ab(target_lab[1:]),
            "ref_l": normalize_l(ref_lab[:1]),
            "ref_ab": normalize_ab(ref_lab[1:]),
            "mask": mask[None],
            "ref_kind": torch.tensor(kind, dtype=torch.int64),
        }

    def _reference_kind(self, rng: np.random.Generator) -> int:
        """Which reference kind this training sample uses, drawn with the recorded probabilities."""
        kinds = list(self.probabilities)
        return kinds[int(rng.choice(len(kinds), p=[self.probabilities[k] for k in kinds]))]

    def _same_image_reference(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Another crop of ``image``: new location, small rotation/zoom/mirror, mild colour jitter.

        The transform is one bilinear resampling around the new crop's centre; where it reaches
        past the photo's edge the photo is mirrored, so the reference has no blank corners.
        """
        cfg = self.config
        crop = cfg.crop
        top, left = _random_position(image, crop, rng)
        angle = math.radians(rng.uniform(-cfg.ref_rotation, cfg.ref_rotation))
        scale = rng.uniform(*cfg.ref_scale)
        mirror = -1.0 if rng.random() < cfg.ref_flip else 1.0

        # Offsets of output pixels from the crop centre, mapped into the photo.
        offsets = torch.arange(crop, dtype=torch.float32) - (crop - 1) / 2
        v, u = torch.meshgrid(offsets, offsets, indexing="ij")
        u = u * mirror
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        x = left + (crop - 1) / 2 + cos * u - sin * v
        y = top + (crop - 1) / 2 + sin * u + cos * v
        height, width = image.shape[1:]
        grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)  # align_corners=False
        reference = F.grid_sample(
            image[None], grid[None], mode="bilinear", padding_mode="reflection", align_corners=False
        )[0]

        reference = TF.adjust_brightness(reference, rng.uniform(*cfg.ref_brightness))
        reference = TF.adjust_saturation(reference, rng.uniform(*cfg.ref_saturation))
        return TF.adjust_hue(reference, rng.uniform(-cfg.ref_hue, cfg.ref_hue))

    def preload(self) -> None:
        """Decode and resize every photo now and keep them all (not only the last few).

        Called before DataLoader workers start, the workers share these tensors (fork) instead
        of each decoding a full-size photo for nearly every sample. About 1 MB per photo at
        a 128 px crop (4 MB at 256 px); samples are identical to those of the lazy cache.
        """
        if self._cache_size is None:
            return
        self._cache_size = None
        for path in self.paths:
            self._load(path)

    def _load(self, path: Path) -> torch.Tensor:
        """Photo ``path`` as float32 (3, H, W) in [0, 1], large photos downscaled; LRU-cached."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        image = torch.from_numpy(to_float(read_image(path).pixels)).permute(2, 0, 1)
        height, width = image.shape[1:]
        crop = self.config.crop
        if min(height, width) < crop:
            raise DataError(f"{path}: {width}x{height} is smaller than the {crop} px crop")
        limit = self.config.max_short_side * crop
        if min(height, width) > limit:
            factor = limit / min(height, width)
            size = (max(crop, round(height * factor)), max(crop, round(width * factor)))
            image = F.interpolate(image[None], size, mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.contiguous()
        self._cache[path] = image
        if self._cache_size is not None and len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image


def _random_position(image: torch.Tensor, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a uniformly random crop inside a (3, H, W) image."""
    top = int(rng.integers(image.shape[1] - crop + 1))
    left = int(rng.integers(image.shape[2] - crop + 1))
    return top, left


# --------------------------------------------------------------------------- retrieved references


def reference_neighbours(
    queries: Sequence[Path], pool: Sequence[Path], store_dir: Path, k: int, device: str = "cpu"
) -> dict[Path, list[Path]]:
    """Each query photo's ``k`` best matches among ``pool``, never itself, by ``pikfix.retrieval``.

    The pool (the *training* photos, also for validation queries) is indexed into ``store_dir``
    through a folder of links, and only new or changed photos are embedded again, so a resumed
    run reuses the store. Queries are searched with their grey lightness, as `pikfix fix` does.
    """
    from pikfix.color import luminance
    from pikfix.retrieval import ReferenceStore, build_or_update

    links = store_dir / "photos"
    links.mkdir(parents=True, exist_ok=True)
    by_name = {}
    for i, path in enumerate(sorted(pool)):
        link = links / f"{i:05d}-{path.name}"  # unique even when two folders hold the same name
        try:
            link.symlink_to(path.resolve())
        except FileExistsError:  # a resumed run, or another DDP rank made it first
            pass
        by_name[link.name] = path
    build_or_update(links, store_dir / "store", device=device)
    store = ReferenceStore.open(store_dir / "store", device=device)
    out: dict[Path, list[Path]] = {}
    for query in queries:
        grey = luminance(to_float(read_image(query).pixels))
        matches = [by_name[m.path.name] for m in store.search(grey, k=k + 1) if m.path.name in by_name]
        out[query] = [p for p in matches if p.resolve() != query.resolve()][:k]
    return out


def per_kind_metrics(kinds: Sequence[int], values: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean of each per-sample validation metric, per reference kind (named as in ``KIND_NAMES``).

    ``kinds[i]`` is sample i's ``ref_kind`` and ``values[i]`` its metrics, e.g. {"psnr": ...};
    every kind also gets ``n``, its number of samples.
    """
    if len(kinds) != len(values):
        raise ValueError(f"{len(kinds)} kinds for {len(values)} samples")
    grouped: dict[str, list[Mapping[str, float]]] = {}
    for kind, row in zip(kinds, values):
        grouped.setdefault(KIND_NAMES[int(kind)], []).append(row)
    return {
        name: {"n": float(len(rows)), **{m: sum(r[m] for r in rows) / len(rows) for m in rows[0]}}
        for name, rows in grouped.items()
    }
