"""Training throughput (crops/s) of `pikfix train` for a few steps, on a real photo folder.

    .venv/bin/python benchmarks/train_speed.py PHOTOS --config configs/lite-cpu.json --steps 30 --threads 2

Builds the same ``Trainer`` that `pikfix train` builds (config file, then the overrides given
here), runs ``--warmup`` steps untimed (worker start-up, first allocations), then times
``--steps`` more and prints crops/s = steps x batch / seconds. The run directory is a
temporary folder unless ``--out`` is given. Measure before/after back to back on an idle
machine with the same ``--threads``: the figure is wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# As `pikfix train` does, before torch is imported: idle OpenMP threads sleep instead of spinning.
# `--omp-wait default` leaves the OpenMP default (what `pikfix train` did before it set this).
if "--omp-wait" not in sys.argv or sys.argv[sys.argv.index("--omp-wait") + 1] != "default":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pikfix.device import resolve_device  # noqa: E402
from pikfix.training.trainer import TrainConfig, Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, help="folder of colour photos")
    parser.add_argument("--config", type=Path, help="JSON training config (as for pikfix train --config)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--crop", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="top-level config override, e.g. --set stage='\"restoration\"'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--omp-wait", choices=["passive", "default"], default="passive",
                        help="OMP_WAIT_POLICY=PASSIVE as pikfix train sets it, or the OpenMP default")
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary folder)")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")

    torch.set_num_threads(args.threads)
    raw = json.loads(args.config.read_text()) if args.config else {}
    for item in args.set:
        key, _, value = item.partition("=")
        raw[key] = json.loads(value)
    raw["max_steps"] = args.warmup + args.steps
    raw["log_every"] = raw["checkpoint_every"] = 10**9  # no periodic checkpoints in the timing
    if args.batch_size:
        raw["batch_size"] = args.batch_size
    if args.workers is not None:
        raw["num_workers"] = args.workers
    if args.crop:
        raw["data"] = {**raw.get("data", {}), "crop": args.crop}
    config = TrainConfig.from_dict(raw)

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.out or Path(tmp) / "run"
        trainer = Trainer(args.photos, run_dir, config, resolve_device(args.device), log=lambda line: None)
        marks: dict[int, float] = {}
        trainer.fit(lambda step, total, terms: marks.setdefault(step, time.perf_counter()))
    first, last = args.warmup, args.warmup + args.steps
    seconds = marks[last] - marks[first]
    crops = (last - first) * config.batch_size
    print(json.dumps({
        "crops_per_s": round(crops / seconds, 3), "seconds": round(seconds, 2), "timed_steps": last - first,
        "batch_size": config.batch_size, "crop": config.data.crop, "threads": args.threads,
        "workers": config.num_workers, "omp_wait": os.environ.get("OMP_WAIT_POLICY", "default"), "device": args.device, "preset": config.preset,
        "config": str(args.config) if args.config else None, "overrides": args.set,
    }))


if __name__ == "__main__":
    main()
