"""The inference pipeline shared by `pikfix fix`, the benchmark and the Python API.

Restoration runs on the luminance at full resolution, tile by tile.  Colour is predicted at a
bounded working size (the similarity matrices grow with the square of the pixel count) and
the predicted chroma is upsampled onto the full-resolution restored luminance, as DDColor and
DeOldify do.  Colour conversions run in row strips so that peak memory stays a small multiple
of the photo's own size even for 24+ megapixel scans.

Example::

    from pikfix.pipeline import FixPipeline
    pipe = FixPipeline.from_checkpoint("models/pikfix-lite.safetensors")
    result = pipe.fix(old_rgb, pipe.prepare_reference(ref_rgb))   # float32 HxWx3 in [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.checkpoint import load_checkpoint
from pikfix.color import STRIP_ROWS, denormalize_ab, lab_to_rgb, luminance, normalize_ab, normalize_l, rgb_to_lab
from pikfix.device import resolve_device
from pikfix.model import PikFix
from pikfix.tiling import restore_tiled

def working_size(h: int, w: int, limit: int) -> tuple[int, int]:
    """(h, w) scaled down so the longer side is at most ``limit`` (never scaled up)."""
    scale = min(1.0, limit / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def lab_image(l: np.ndarray, ab: torch.Tensor) -> np.ndarray:
    """Full-res L (H, W) in [0, 100] + normalised ab (1, 2, h, w) at any size -> sRGB (H, W, 3).

    The chroma is upsampled bilinearly strip by strip, so the full-resolution ab never exists
    in memory at once.
    """
    h, w = l.shape
    ab = ab.float().cpu()
    out = np.empty((h, w, 3), dtype=np.float32)
    sy, sx = ab.shape[-2] / h, ab.shape[-1] / w
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * sx - 0.5
    gx = xs / max(ab.shape[-1] - 1, 1) * 2 - 1 if ab.shape[-1] > 1 else torch.zeros(w)
    for y0 in range(0, h, STRIP_ROWS):
        y1 = min(h, y0 + STRIP_ROWS)
        ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) * sy - 0.5
        gy = ys / max(ab.shape[-2] - 1, 1) * 2 - 1 if ab.shape[-2] > 1 else torch.zeros(y1 - y0)
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).unsqueeze(0)
        ab_strip = F.grid_sample(ab, grid, mode="bilinear", padding_mode="border", align_corners=True)
        lab = torch.cat([torch.from_numpy(l[y0:y1]).unsqueeze(0), denormalize_ab(ab_strip[0])], dim=0)
        out[y0:y1] = lab_to_rgb(lab).permute(1, 2, 0).numpy()
    return out


@dataclass
class Reference:
    """A colour reference prepared for the model at the working size."""

    l: torch.Tensor  # (1, 1, h, w) normalised
    ab: torch.Tensor  # (1, 2, h, w) normalised


@dataclass
class FixResult:
    """The repaired photo and what a report needs about it."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1], full resolution
    restored_l: np.ndarray  # (H, W) float32 Lab L in [0, 100]
    confidence: float  # mean similarity confidence at the finest scale, in [-1, 1]


class FixPipeline:
    """Restore + colorize photos with one model on one device."""

    def __init__(
        self,
        model: PikFix,
        device: str | torch.device = "auto",
        work_size: int = 512,
        tile: int = 512,
        tile_overlap: int = 48,
    ) -> None:
        if work_size < 32:
            raise ValueError("work_size must be at least 32 pixels")
        self.device = resolve_device(device) if isinstance(device, str) else device
        # channels_last makes the convolutions ~1.5x faster on CPU (oneDNN) and on GPUs.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.work_size = work_size
        self.tile = tile
        self.tile_overlap = tile_overlap

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kwargs: int) -> "FixPipeline":
        """Load a checkpoint (see ``pikfix.checkpoint``) and wrap it."""
        dev = resolve_device(device)
        model, _ = load_checkpoint(path, device=dev)
        return cls(model, dev, **kwargs)

    def _to_work_tensor(self, plane: np.ndarray) -> torch.Tensor:
        """(H, W) or (H, W, C) float array -> (1, C, h, w) tensor at the working size on device."""
        t = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32))
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        size = working_size(t.shape[-2], t.shape[-1], self.work_size)
        t = t.unsqueeze(0)
        if size != tuple(t.shape[-2:]):
            t = F.interpolate(t, size=size, mode="area")
        return t.to(self.device)

    def prepare_reference(self, rgb: np.ndarray) -> Reference:
        """Colour reference (H, W, 3) float in [0, 1] -> normalised Lab at the working size."""
        lab = rgb_to_lab(self._to_work_tensor(rgb))
        return Reference(l=normalize_l(lab[:, :1]), ab=normalize_ab(lab[:, 1:]))

    def restore(self, rgb: np.ndarray, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Restored full-resolution Lab L (H, W) in [0, 100] of an old photo (H, W, 3)."""
        l = torch.from_numpy(luminance(rgb)).view(1, 1, *rgb.shape[:2])
        restored = restore_tiled(self.model, normalize_l(l), self.tile, self.tile_overlap, self.device, progress)
        return ((restored[0, 0].clamp(-1.0, 1.0) + 1.0) * 50.0).numpy()

    def colorize(self, restored_l: np.ndarray, reference: Reference | Sequence[Reference]) -> tuple[np.ndarray, float]:
        """Predict chroma at the working size and put it on the full-resolution L.

        Several references are attended over together (``PikFix.colorize``).
        """
        refs = [reference] if isinstance(reference, Reference) else list(reference)
        l_work = normalize_l(self._to_work_tensor(restored_l))
        with torch.inference_mode():
            ab, confidence = self.model.colorize(l_work, [r.l for r in refs], [r.ab for r in refs])
        return lab_image(restored_l, ab), float(confidence[0].mean())

    def fix(
        self,
        rgb: np.ndarray,
        reference: Reference | Sequence[Reference],
        progress: Callable[[int, int], None] | None = None,
    ) -> FixResult:
        """Old photo (H, W, 3) float in [0, 1] -> restored, colorized photo of the same size."""
        restored_l = self.restore(rgb, progress)
        out, confidence = self.colorize(restored_l, reference)
        return FixResult(rgb=out, restored_l=restored_l, confidence=confidence)
