"""Fit the confidence gate of a trained model on its validation photos and save the result.

    .venv/bin/python tools/calibrate_gate.py RUN_DIR/best.safetensors PHOTOS_DIR OUT.safetensors [--max-photos N] [--fit-on training]

Fits on the validation split of the run by default (seed and val_fraction from the
checkpoint's training config): photos the model never trained on, coloured the way `pikfix fix`
colours them. ``--fit-on training`` fits on the training photos instead, so that the
validation photos stay unseen by the gate too and the benchmark on them is not in-sample.
References per photo: a mirrored crop of itself ("matched"), its best match among the other
*training* photos by retrieval ("retrieved", what a user's folder gives), and a random
training photo ("random").  The criterion keeps matched colour (``pikfix.training.calibration``);
when no gate helps, the model is saved with the gate off.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.training.calibration import IDENTITY, GateSample, apply_gate, fit_gate
from pikfix.checkpoint import load_checkpoint, save_checkpoint
from pikfix.training.data import DataConfig, scan_images, split
from pikfix.imageio import read_image, to_float
from pikfix.pipeline import FixPipeline
from pikfix.retrieval import ReferenceStore, build_or_update
from pikfix.retrieval.store import cache_store_dir

WORK = 512  # pikfix fix's default --work-size: the gate is fitted where it is used


def main(ckpt: Path, photos: Path, out: Path, limit: int | None = None, fit_on: str = "validation") -> None:
    model, header = load_checkpoint(ckpt)
    apply_gate(model, IDENTITY)  # samples are taken before any gate, also when refitting one
    training = header["metadata"]["training"]
    paths, _ = scan_images(photos, DataConfig(crop=64))
    train, val = split(paths, training["data"]["val_fraction"], training["seed"])
    pool = train if fit_on == "training" else val
    fitted = pool if limit is None else pool[:: max(1, len(pool) // limit)][:limit]  # spread over the sorted names
    refs_dir = Path(tempfile.mkdtemp(prefix="pikfix-calibration-refs-"))  # the training photos only
    for p in train:
        link = refs_dir / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    store_dir = cache_store_dir(refs_dir)
    build_or_update(refs_dir, store_dir, device="cpu")
    store = ReferenceStore.open(store_dir, device="cpu")
    pipe = FixPipeline(model, "cpu", work_size=WORK)
    rng = random.Random(0)
    samples: list[GateSample] = []
    for i, path in enumerate(fitted):
        rgb = to_float(read_image(path).pixels)
        photo = pipe.prepare_reference(rgb)  # its normalised L (the grey input) and ab (the target)
        h, w = rgb.shape[:2]
        matched = np.ascontiguousarray(rgb[h // 8 : h - h // 10, w // 5 :][:, ::-1])
        l_lab = ((photo.l[0, 0] + 1.0) * 50.0).numpy()
        # The store holds training photos only; a training photo never gets itself.
        best = next(m for m in store.search(l_lab, k=2) if m.path.resolve() != path.resolve())
        other = rng.choice([p for p in train if p != path])
        for regime, ref_rgb in (("matched", matched), ("retrieved", to_float(read_image(best.path).pixels)),
                                ("random", to_float(read_image(other).pixels))):
            ref = pipe.prepare_reference(ref_rgb)
            with torch.inference_mode():
                ab, conf = model.colorize(photo.l, ref.l, ref.ab)
            conf_up = F.interpolate(conf[0], size=ab.shape[-2:], mode="bilinear", align_corners=False)
            samples.append(GateSample(regime, ab[0], conf_up[0], photo.ab[0]))
        print(f"{i + 1}/{len(fitted)} {path.name}", flush=True)
    fit = fit_gate(samples)
    apply_gate(model, fit)
    metadata = dict(header["metadata"])
    metadata["confidence_gate"] = {"threshold": fit.threshold, "slope": fit.slope, "l1_ab_before": fit.l1_before,
                                   "l1_ab_after": fit.l1_after, "l1_ab_grey": fit.l1_grey, "colour_ratio_matched_before": fit.colour_before,
                                   "colour_ratio_matched_after": fit.colour_after, "photos": len(fitted),
                                   "fitted_on": f"{fit_on} split", "work_size": WORK}
    save_checkpoint(model, out, metadata, half=True)
    print(json.dumps(metadata["confidence_gate"], indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("photos", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-photos", type=int, default=None)
    parser.add_argument("--fit-on", choices=("validation", "training"), default="validation")
    args = parser.parse_args()
    main(args.checkpoint, args.photos, args.out, args.max_photos, args.fit_on)
