"""Train the learned denoiser or sharpener (pikfix.nets.denoise) of a model; nothing else changes.

    python tools/train_denoiser.py PHOTOS --model models/pikfix-lite.safetensors --out runs/denoise-b/model.safetensors

A model without a denoiser (or with one of another ``--width`` or ``--depth``) gets a fresh
one; one with a denoiser of that shape, or when neither is given, continues from it. ``--sharpener`` trains the sharpener
the same way, on soft photos (``sharpen_recipe``) as the model's noise step leaves them.
``--keep-blur`` (``noise_recipe``), ``--noise-sigma`` and ``--loss`` change the denoiser's
recipe and loss (tried in the fifteenth session, see the model card; not the shipped one's). The
validation photos are the ones `pikfix train` holds out (split by file-name hash, seed 0). The
checkpoint is written every 500 steps and at the end, with the run's config and its validation
figures in the metadata; ``--time-limit`` (seconds) ends the run early.
"""

from __future__ import annotations

import dataclasses
import json

import head_tool

from pikfix.training.denoise import (
    DenoiseTrainConfig, head_shape, make_pool, noise_recipe, same_shape, sharpener_config, sharpener_noise_step,
    train_denoiser, with_denoiser,
)


def main() -> None:
    parser = head_tool.parser(__doc__, "denoiser", DenoiseTrainConfig.width)
    parser.set_defaults(width=None)
    parser.add_argument("--depth", type=int, default=None, help="3 x 3 convolutions")
    parser.add_argument("--steps", type=int, default=DenoiseTrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=DenoiseTrainConfig.batch_size)
    parser.add_argument("--crop", type=int, default=DenoiseTrainConfig.crop)
    parser.add_argument("--pool", type=int, default=DenoiseTrainConfig.pool, help="training samples drawn once")
    parser.add_argument("--val-samples", type=int, default=DenoiseTrainConfig.val_samples)
    parser.add_argument("--lr", type=float, default=DenoiseTrainConfig.lr)
    parser.add_argument("--sharpener", action="store_true", help="train the sharpener, not the denoiser")
    parser.add_argument("--keep-blur", action="store_true",
                        help="denoiser: noise_recipe, half the samples soft in the target too (the sharpener's job)")
    parser.add_argument("--loss", choices=("l1", "l2"), default=None, help="default: l1, the sharpener l2")
    parser.add_argument("--noise-sigma", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="the recipe's noise std range, on a 0-1 scale")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds of training at most")
    args = parser.parse_args()
    if args.keep_blur and args.sharpener:
        parser.error("--keep-blur is for the denoiser: the sharpener learns to remove blur")
    train_paths, val_paths, model, header = head_tool.start(args)
    head = "sharpener" if args.sharpener else "denoiser"
    width, depth = head_shape(model, head, args.width, args.depth)
    settings = dict(
        width=width, depth=depth, steps=args.steps, batch_size=args.batch_size, crop=args.crop, pool=args.pool,
        val_samples=args.val_samples, lr=args.lr, seed=args.seed,
    )
    if args.loss:
        settings["loss"] = args.loss
    if args.keep_blur:
        settings.update(degradation=noise_recipe(), soft_fraction=0.5)
    config = sharpener_config(**settings) if args.sharpener else DenoiseTrainConfig(**settings)
    if args.noise_sigma:
        noise = dataclasses.replace(config.degradation, noise_sigma=tuple(args.noise_sigma))
        config = dataclasses.replace(config, degradation=noise)
    if not same_shape(model, config.head, config.width, config.depth):
        model = with_denoiser(model, config.width, config.head, config.depth)
    # The sharpener learns on what the noise step leaves, as it runs after it.
    step = sharpener_noise_step(model) if args.sharpener else None
    train = make_pool(train_paths, config, config.pool, config.seed, noise_step=step)
    val = make_pool(val_paths, config, config.val_samples, config.seed + 1, noise_step=step)  # other photos, other damage

    def save(metrics: dict[str, float]) -> None:
        head_tool.write(model, header, args, config.head, config, metrics)

    metrics = train_denoiser(model, train, val, config, time_limit=args.time_limit, save=save)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
