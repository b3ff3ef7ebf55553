"""Restoration-only pretraining of the default model (see pikfix.training.restoration).

    python tools/train_restoration.py PHOTOS --out runs/restore-a --base models/pikfix-lite.safetensors \
        --steps 2000 --time-limit 3800 [--resume]
    python tools/train_restoration.py --out runs/restore-a --export models/pikfix-lite.safetensors

``--export`` writes the run's last checkpoint as float16 (half the size), its metadata kept.

The validation photos are the ones `pikfix train` holds out (split by file-name hash, seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning made
# small tensor ops 20x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pikfix.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pikfix.training.data import scan_images, split  # noqa: E402
from pikfix.training.degradation import DegradationConfig  # noqa: E402
from pikfix.training.restoration import RestorationTrainConfig, train_restoration  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, nargs="?")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=None, help="checkpoint whose colour sub-nets are kept")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--time-limit", type=float, default=None, help="seconds")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--val-every", type=int, default=250, help="validate and save every N steps")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--clean-fraction", type=float, default=0.15)
    parser.add_argument("--native-fraction", type=float, default=0.0,
                        help="share of samples scanned no larger than the photo (sharp at the pixel level)")
    parser.add_argument("--detector-weight", type=float, default=0.2)
    parser.add_argument("--pos-weight", type=float, default=4.0, help="cross-entropy weight of damaged pixels")
    parser.add_argument("--detector-only", action="store_true", help="train the damage detector alone")
    parser.add_argument("--repair-only", action="store_true", help="train the repair alone (the detector frozen)")
    parser.add_argument("--mask-weight", type=float, default=4.0, help="extra L1 weight inside the damage mask")
    parser.add_argument("--detector-width", type=int, default=None, help="start with a fresh detector this wide")
    parser.add_argument("--detector-tophat", type=int, default=0, help="the fresh detector also sees top-hats of this size (px)")
    parser.add_argument("--degradation", type=Path, default=None, help="JSON file of DegradationConfig keys")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--export", type=Path, default=None, help="write the run's last checkpoint as float16 here")
    args = parser.parse_args()
    if args.export is not None:
        model, header = load_checkpoint(args.out / "last.safetensors")
        save_checkpoint(model, args.export, metadata=header["metadata"], half=True)
        return
    if args.photos is None:
        parser.error("give the photo folder to train on")
    torch.set_num_threads(args.threads)
    paths, _ = scan_images(args.photos)
    train, val = split(paths, 0.1, 0)
    damage = DegradationConfig.from_dict(json.loads(args.degradation.read_text())) if args.degradation else DegradationConfig()
    config = RestorationTrainConfig(
        steps=args.steps, batch_size=args.batch_size, crop=args.crop, workers=args.workers, val_every=args.val_every,
        lr=args.lr, clean_fraction=args.clean_fraction, native_fraction=args.native_fraction,
        detector_weight=args.detector_weight, degradation=damage, pos_weight=args.pos_weight,
        detector_only=args.detector_only, repair_only=args.repair_only, mask_weight=args.mask_weight,
    )
    train_restoration(
        train, val, args.out, config, base_model=args.base, resume=args.resume, time_limit=args.time_limit,
        detector_width=args.detector_width, detector_tophat=args.detector_tophat,
    )


if __name__ == "__main__":
    main()
