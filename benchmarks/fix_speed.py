"""Seconds and peak memory to fix 1 and 24 megapixel photos, per preset, one process per case.

    .venv/bin/python benchmarks/fix_speed.py --presets lite paper --megapixels 1 24 --out speed.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--megapixels", nargs="+", type=float, default=[1.0, 24.0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()

    if args.one:
        from pikfix.speed import time_fix

        result = time_fix(args.presets[0], args.megapixels[0], args.device, args.work_size, args.tile)
        print(json.dumps(result.to_dict()))
        return

    results = []
    for preset in args.presets:
        for mp in args.megapixels:
            cmd = [sys.executable, __file__, "--one", "--presets", preset, "--megapixels", str(mp),
                   "--device", args.device, "--work-size", str(args.work_size), "--tile", str(args.tile)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"{preset:6s} {result['megapixels']:6.2f} MP on {result['device']}: "
                  f"{result['seconds']:8.2f} s, {result['megapixels_per_second']:.3f} MP/s, "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB"
                  + (f", CUDA peak {result['cuda_peak_mib']:.0f} MiB" if result["cuda_peak_mib"] else ""), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
