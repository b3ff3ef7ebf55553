"""What the head-training tools (train_tone.py, train_colour_tone.py, train_denoiser.py) share:
the arguments each takes, the held-out split, the model a head is added to, and writing the
model back with the run's config and validation figures in its metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pikfix.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pikfix.model import PikFix  # noqa: E402
from pikfix.training.data import scan_images, split  # noqa: E402
from pikfix.training.whole_photo import TensorRecord, cached_samples  # noqa: E402

R = TypeVar("R", bound=TensorRecord)


def parser(doc: str, head: str, width: int) -> argparse.ArgumentParser:
    """The arguments every head tool takes; ``head`` names it in the help."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", type=Path)
    p.add_argument("--model", type=Path, required=True, help=f"checkpoint to add the trained {head} to")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--width", type=int, default=width)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--half", action="store_true", help="write float16 weights")
    return p


def add_whole_photo_arguments(p: argparse.ArgumentParser, samples_per_photo: int) -> None:
    """The arguments of the whole-photo heads (``pikfix.training.whole_photo``)."""
    p.add_argument("--samples-per-photo", type=int, default=samples_per_photo)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--clean-fraction", type=float, default=0.25)
    p.add_argument("--cache", type=Path, default=None, help="folder to keep the samples in between runs")


def start(args: argparse.Namespace) -> tuple[list[Path], list[Path], PikFix, dict[str, Any]]:
    """Threads and seed set, the photos split as `pikfix train` splits them (seed 0), the
    model loaded: (training photos, validation photos, model, its header)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # a fresh head's first weights: the same every run
    paths, _ = scan_images(args.photos)
    train_paths, val_paths = split(paths, 0.1, 0)
    model, header = load_checkpoint(args.model)
    return train_paths, val_paths, model, header


def whole_photo_samples(
    cache: Path | None,
    train_paths: Sequence[Path],
    val_paths: Sequence[Path],
    config: Any,
    make: Callable[[Sequence[Path], Any], R],
    load: Callable[[Path], R],
) -> tuple[R, R]:
    """Training samples, and validation samples drawn with other seeds (other damage, other
    scan sizes), 8 per photo; each made once per ``cache``."""
    train = cached_samples(cache, "train", train_paths, config, make, load)
    val_config = dataclasses.replace(config, seed=config.seed + 1, samples_per_photo=8)
    return train, cached_samples(cache, "val", val_paths, val_config, make, load)


def write(model: PikFix, header: dict[str, Any], args: argparse.Namespace, name: str, config: Any,
          metrics: dict[str, float]) -> None:
    """``args.out``: the model, its metadata plus ``<name>_train_config`` and ``<name>_val``."""
    meta = {**header.get("metadata", {}), f"{name}_train_config": config.to_dict(), f"{name}_val": metrics}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out, metadata=meta, half=args.half)
