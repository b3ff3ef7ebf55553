"""Speed and memory of the fix pipeline on synthetic photos of fixed sizes.

Each case should run in a fresh process (see ``benchmarks/fix_speed.py`` and ``pikfix bench
--speed``), because peak RSS is a per-process high-water mark.
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.config import DEFAULT_TILE, preset_config
from pikfix.model import build_model
from pikfix.device import resolve_device
from pikfix.imageio import from_float
from pikfix.pipeline import FixPipeline


@dataclass
class SpeedResult:
    preset: str
    megapixels: float
    width: int
    height: int
    device: str
    seconds: float
    megapixels_per_second: float
    peak_rss_mib: float
    cuda_peak_mib: float | None
    threads: int
    torch: str
    cpu: str

    def to_dict(self) -> dict:
        return asdict(self)


def synthetic_photo(megapixels: float, seed: int = 0) -> np.ndarray:
    """A 3:2 greyish photo-like image (smooth shapes + grain), float32 (H, W, 3) in [0, 1]."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    height = int(round(width / 1.5))
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 24, 36, generator=gen)
    img = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    img = (img + 0.03 * torch.randn(height, width, generator=gen)).clamp(0, 1)
    return img.unsqueeze(-1).expand(height, width, 3).numpy()


def describe(result: dict) -> str:
    """One line for a speed case (a ``SpeedResult.to_dict()``, or a failed case with "error")."""
    where = f"{result['preset']:6s} {result['megapixels']:6.2f} MP on {result['device']}"
    if "error" in result:
        return f"{where}: failed ({result['error']})"
    cuda = f", CUDA peak {result['cuda_peak_mib']:.0f} MiB" if result["cuda_peak_mib"] else ""
    return (f"{where}: {result['seconds']:8.2f} s, {result['megapixels_per_second']:.3f} MP/s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB{cuda}")


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def time_fix(preset: str, megapixels: float, device: str = "auto", work_size: int = 512, tile: int = DEFAULT_TILE) -> SpeedResult:
    """Fix one synthetic photo with a freshly initialised model (speed does not depend on the
    weights, except that the tone curve must be one worth applying), given as `pikfix fix` gets
    a photo from a file, 8-bit RGB, and returned as it writes one, 8-bit."""
    dev = resolve_device(device)
    config = preset_config(preset)
    config.similarity.backbone_weights = "none"  # same arithmetic; no pretrained files needed
    model = build_model(config)
    if model.restoration.tone is not None:
        # A fresh tone head's curve is the identity, which the pipeline skips (TONE_DEAD_ZONE);
        # a trained head's curve for a faded photo runs at full resolution: time that.
        torch.nn.init.constant_(model.restoration.tone.mlp[-1].bias, 0.1)
    pipe = FixPipeline(model, dev, work_size=work_size, tile=tile)
    photo = from_float(synthetic_photo(megapixels), np.uint8)
    reference = pipe.prepare_reference(synthetic_photo(0.3, seed=1))
    pipe.fix(photo[:256, :256], reference)  # warm-up (allocator, kernels)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    result = pipe.fix(photo, reference)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    h, w = result.rgb.shape[:2]
    return SpeedResult(
        preset=preset,
        megapixels=round(h * w / 1e6, 2),
        width=w,
        height=h,
        device=str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        seconds=round(seconds, 2),
        megapixels_per_second=round(h * w / 1e6 / seconds, 3),
        peak_rss_mib=round(peak_rss_mib(), 1),
        cuda_peak_mib=round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
    )
