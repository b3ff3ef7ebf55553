"""Train the learned denoiser (pikfix.nets.denoise) of a model; nothing else changes.

    python tools/train_denoiser.py PHOTOS --model models/pikfix-lite.safetensors --out runs/denoise-b/model.safetensors

A model without a denoiser gets a fresh one (``--width``); one with a denoiser continues from
it. The validation photos are the ones `pikfix train` holds out (split by file-name hash,
seed 0). The checkpoint is written every 500 steps and at the end, with the run's config and
its validation figures in the metadata; ``--time-limit`` (seconds) ends the run early.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pikfix.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pikfix.training.data import scan_images, split  # noqa: E402
from pikfix.training.denoise import DenoiseTrainConfig, make_pool, train_denoiser, with_denoiser  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path)
    parser.add_argument("--model", type=Path, required=True, help="checkpoint to add the trained denoiser to")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--width", type=int, default=DenoiseTrainConfig.width)
    parser.add_argument("--steps", type=int, default=DenoiseTrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=DenoiseTrainConfig.batch_size)
    parser.add_argument("--crop", type=int, default=DenoiseTrainConfig.crop)
    parser.add_argument("--pool", type=int, default=DenoiseTrainConfig.pool, help="training samples drawn once")
    parser.add_argument("--val-samples", type=int, default=DenoiseTrainConfig.val_samples)
    parser.add_argument("--lr", type=float, default=DenoiseTrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=None, help="seconds of training at most")
    parser.add_argument("--half", action="store_true", help="write float16 weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # a fresh head's first weights: the same every run
    paths, _ = scan_images(args.photos)
    train_paths, val_paths = split(paths, 0.1, 0)
    config = DenoiseTrainConfig(
        width=args.width, steps=args.steps, batch_size=args.batch_size, crop=args.crop, pool=args.pool,
        val_samples=args.val_samples, lr=args.lr, seed=args.seed,
    )
    model, header = load_checkpoint(args.model)
    if model.restoration.denoiser is None:
        model = with_denoiser(model, config.width)
    train = make_pool(train_paths, config, config.pool, config.seed)
    val = make_pool(val_paths, config, config.val_samples, config.seed + 1)  # other photos, other damage
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(metrics: dict[str, float]) -> None:
        meta = {**header.get("metadata", {}), "denoiser_train_config": config.to_dict(), "denoiser_val": metrics}
        save_checkpoint(model, args.out, metadata=meta, half=args.half)

    metrics = train_denoiser(model, train, val, config, time_limit=args.time_limit, save=save)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
