"""Train the colour tone head (pikfix.nets.colour_tone) of a model on whole colour photos; nothing else changes.

    python tools/train_colour_tone.py PHOTOS --model models/pikfix-lite.safetensors --out runs/ctone-a/model.safetensors

A model without the head gets a fresh one (``--width``). The validation photos are the ones
`pikfix train` holds out (split by file-name hash, seed 0); the validation L1 before and after
is printed and stored in the checkpoint's metadata with the run's config.
"""

from __future__ import annotations

import json

import head_tool

from pikfix.training.colour_tone import (
    ColourSamples, ColourToneTrainConfig, make_samples, train_colour_tone, with_colour_tone,
)


def main() -> None:
    parser = head_tool.parser(__doc__, "head", 64)
    head_tool.add_whole_photo_arguments(parser, samples_per_photo=32)
    args = parser.parse_args()
    train_paths, val_paths, model, header = head_tool.start(args)
    config = ColourToneTrainConfig(
        width=args.width, samples_per_photo=args.samples_per_photo, steps=args.steps, seed=args.seed,
        clean_fraction=args.clean_fraction,
    )
    if model.restoration.colour_tone is None:
        model = with_colour_tone(model, config.width)
    train, val = head_tool.whole_photo_samples(args.cache, train_paths, val_paths, config, make_samples,
                                               ColourSamples.load)
    metrics = train_colour_tone(model, train, val, config)
    print(json.dumps(metrics))
    head_tool.write(model, header, args, "colour_tone", config, metrics)


if __name__ == "__main__":
    main()
