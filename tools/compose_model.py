"""Compose a model from the colour sub-nets of one checkpoint and the restoration of another.

    python tools/compose_model.py --colour models/pikfix-lite.safetensors \\
        --restoration runs/tone-d/model.safetensors --detector-threshold 0.6 --out models/pikfix-lite.safetensors --half
    python tools/compose_model.py --colour A --restoration A --detector runs/detect-c/last.safetensors --out B

Restoration trains on its own (tools/train_restoration.py, tools/train_tone.py), so the shipped
model is the colour checkpoint with that restoration put in; ``--detector`` also replaces the
restoration's damage detector by another run's (detector-only training). The checkpoints'
metadata are kept: the colour one's at the top level, the restoration's under
``restoration_training``, the detector's under ``detector_training``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pikfix.checkpoint import load_checkpoint, save_checkpoint
from pikfix.training.restoration import with_detector_of, with_restoration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--colour", type=Path, required=True, help="checkpoint whose similarity and colorization are kept")
    parser.add_argument("--restoration", type=Path, required=True, help="checkpoint whose restoration sub-net is used")
    parser.add_argument("--detector", type=Path, default=None, help="checkpoint whose damage detector replaces the restoration's")
    parser.add_argument("--detector-threshold", type=float, default=None, help="sure-mask threshold (0: soft mask)")
    parser.add_argument("--repair-margin", type=int, default=None,
                        help="px around the mask the repair may change (-1: everywhere)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="write float16 weights")
    args = parser.parse_args()
    colour, colour_header = load_checkpoint(args.colour)
    source, source_header = load_checkpoint(args.restoration)
    changes = {k: v for k, v in (("detector_threshold", args.detector_threshold), ("repair_margin", args.repair_margin))
               if v is not None}
    meta = {**colour_header.get("metadata", {}), "restoration_training": source_header.get("metadata", {})}
    if args.detector is not None:
        detector, detector_header = load_checkpoint(args.detector)
        source = with_detector_of(source, detector)
        meta["detector_training"] = detector_header.get("metadata", {})
    model = with_restoration(colour, source, **changes)
    save_checkpoint(model, args.out, metadata=meta, half=args.half)


if __name__ == "__main__":
    main()
