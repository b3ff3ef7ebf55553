"""Seconds and peak memory to fix 1 and 24 megapixel photos, per preset, one process per case.

    .venv/bin/python benchmarks/fix_speed.py --presets lite paper --megapixels 1 24 --out speed.json

The cases run through ``pikfix.benchmark.run_speed``, as `pikfix bench --speed` does (that
command also writes a Markdown report and a chart, and caches finished cases).
"""

from __future__ import annotations

import argparse
import json

from pikfix.benchmark.data import BenchError
from pikfix.benchmark.runner import run_speed
from pikfix.benchmark.speed import describe
from pikfix.config import DEFAULT_TILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--megapixels", nargs="+", type=float, default=[1.0, 24.0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    try:
        results = run_speed(args.presets, args.megapixels, args.device, args.work_size, args.tile,
                            on_case=lambda result: print(describe(result), flush=True))
    except BenchError as err:
        parser.error(str(err))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
