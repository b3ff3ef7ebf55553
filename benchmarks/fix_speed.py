"""Seconds and peak memory to fix 1 and 24 megapixel photos, per preset, one process per case.

    .venv/bin/python benchmarks/fix_speed.py --presets lite paper --megapixels 1 24 --out speed.json

The cases run through ``pikfix.benchmark.run_speed``, as `pikfix bench --speed` does (that
command also writes a Markdown report and a chart, and caches finished cases).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pikfix.bench_data import BenchError
from pikfix.benchmark import run_speed


def _show(result: dict[str, Any]) -> None:
    where = f"{result['preset']:6s} {result['megapixels']:6.2f} MP on {result['device']}"
    if "error" in result:
        print(f"{where}: failed ({result['error']})", flush=True)
        return
    cuda = f", CUDA peak {result['cuda_peak_mib']:.0f} MiB" if result["cuda_peak_mib"] else ""
    print(f"{where}: {result['seconds']:8.2f} s, {result['megapixels_per_second']:.3f} MP/s, "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB{cuda}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--megapixels", nargs="+", type=float, default=[1.0, 24.0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    try:
        results = run_speed(args.presets, args.megapixels, args.device, args.work_size, args.tile, on_case=_show)
    except BenchError as err:
        parser.error(str(err))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
