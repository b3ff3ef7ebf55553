"""Train the tone head (pikfix.nets.tone) of a model on whole photos; nothing else changes.

    python tools/train_tone.py PHOTOS --model runs/restore-f/last.safetensors --out runs/tone-a/model.safetensors

A model without a tone head gets a fresh one (``--width``). The validation photos are the ones
`pikfix train` holds out (split by file-name hash, seed 0); the validation L1 before and after
is printed and stored in the checkpoint's metadata with the run's config.
"""

from __future__ import annotations

import json

import head_tool

from pikfix.training.tone import ToneSamples, ToneTrainConfig, make_samples, train_tone, with_tone


def main() -> None:
    parser = head_tool.parser(__doc__, "tone head", 64)
    head_tool.add_whole_photo_arguments(parser, samples_per_photo=24)
    parser.add_argument("--natural-fraction", type=float, default=0.0,
                        help="share of the clean samples made bright or dark by nature (kept as they are)")
    parser.add_argument("--fresh", action="store_true", help="start a fresh tone head even if the model has one")
    args = parser.parse_args()
    train_paths, val_paths, model, header = head_tool.start(args)
    config = ToneTrainConfig(
        width=args.width, samples_per_photo=args.samples_per_photo, steps=args.steps, seed=args.seed,
        clean_fraction=args.clean_fraction, natural_fraction=args.natural_fraction,
    )
    if model.restoration.tone is None or args.fresh:
        model = with_tone(model, config.width)
    train, val = head_tool.whole_photo_samples(args.cache, train_paths, val_paths, config, make_samples, ToneSamples.load)
    metrics = train_tone(model, train, val, config)
    print(json.dumps(metrics))
    head_tool.write(model, header, args, "tone", config, metrics)


if __name__ == "__main__":
    main()
