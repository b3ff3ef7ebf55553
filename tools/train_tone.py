"""Train the tone head (pikfix.nets.tone) of a model on whole photos; nothing else changes.

    python tools/train_tone.py PHOTOS --model runs/restore-f/last.safetensors --out runs/tone-a/model.safetensors

A model without a tone head gets a fresh one (``--width``). The validation photos are the ones
`pikfix train` holds out (split by file-name hash, seed 0); the validation L1 before and after
is printed and stored in the checkpoint's metadata with the run's config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pikfix.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pikfix.training.data import scan_images, split  # noqa: E402
from pikfix.training.tone import ToneSamples, ToneTrainConfig, make_samples, train_tone, with_tone  # noqa: E402
from pikfix.training.whole_photo import cached_samples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--model", type=Path, required=True, help="checkpoint to add the trained tone head to")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--samples-per-photo", type=int, default=24)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clean-fraction", type=float, default=0.25)
    parser.add_argument("--natural-fraction", type=float, default=0.0,
                        help="share of the clean samples made bright or dark by nature (kept as they are)")
    parser.add_argument("--fresh", action="store_true", help="start a fresh tone head even if the model has one")
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep the samples in between runs")
    parser.add_argument("--half", action="store_true", help="write float16 weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # a fresh head's first weights: the same every run
    paths, _ = scan_images(args.photos)
    train_paths, val_paths = split(paths, 0.1, 0)
    config = ToneTrainConfig(
        width=args.width, samples_per_photo=args.samples_per_photo, steps=args.steps, seed=args.seed,
        clean_fraction=args.clean_fraction, natural_fraction=args.natural_fraction,
    )
    model, header = load_checkpoint(args.model)
    if model.restoration.tone is None or args.fresh:
        model = with_tone(model, config.width)
    train = cached_samples(args.cache, "train", train_paths, config, make_samples, ToneSamples.load)
    # Validation: other seeds than training's (other damage, other scan sizes).
    val_config = dataclasses.replace(config, seed=config.seed + 1, samples_per_photo=8)
    val = cached_samples(args.cache, "val", val_paths, val_config, make_samples, ToneSamples.load)
    metrics = train_tone(model, train, val, config)
    print(json.dumps(metrics))
    meta = {**header.get("metadata", {}), "tone_train_config": config.to_dict(), "tone_val": metrics}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out, metadata=meta, half=args.half)


if __name__ == "__main__":
    main()
