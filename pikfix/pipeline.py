"""The inference pipeline shared by `pikfix fix`, the benchmark and the Python API.

Restoration runs on the luminance: first the tone head (when the model has one) restores the
whole photo's tone curve, then the repair runs tile by tile, at full resolution up to
``restore_size`` (2048 px long side by default, the scan sizes it was trained on). A larger
scan is repaired at that size, where its defects look as in training; the repair is then put
on the full-resolution L: inside the damage mask the repaired pixels replace the scan's,
elsewhere only the repair's smooth corrections (tone, stains) are added, so fine detail stays
the scan's own. Each repaired pixel is kept within the range of the intact pixels around it
(``pikfix.fill_bounds``: the net's fill of a white crack overshoots into a dark line on real
scans). Then, where the photo shows noise, the learned denoiser (or an edge-preserving
filter) reduces noise and grain at full resolution, and last, where the photo seen at 512 px
is soft, the learned sharpener restores detail (both ``pikfix.denoise``). Colour is predicted at a
bounded working size (the similarity matrices grow with the square of the pixel count) and
the predicted chroma, averaged down to a quarter of that size, is upsampled onto the
full-resolution restored luminance by a guided filter, so colour edges follow the luminance's
edges (``lab_image``). A photo with its own colour
(``restore_colour_photo``) keeps it, corrected by the colour tone head. Colour conversions run
in row strips so that peak memory stays a small multiple of the photo's own size even for 24+
megapixel scans.

Example::

    from pikfix.pipeline import FixPipeline
    pipe = FixPipeline.from_checkpoint("models/pikfix-lite.safetensors")
    result = pipe.fix(old_rgb, pipe.prepare_reference(ref_rgb))   # float32 HxWx3 in [0, 1] (uint8 in: uint8 out)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from pikfix.backbones import WeightsUnavailableError
from pikfix.checkpoint import load_checkpoint
from pikfix.color import (
    area_downscale, area_downscale_image, denormalize_ab, lab_to_rgb, luminance, normalize_ab, normalize_l,
    own_chroma_on, rgb_to_lab, strip_rows,
)
from pikfix.colour_input import restore_own_colour
from pikfix.config import DEFAULT_TILE
from pikfix.denoise import SHARPEN_SIDE, denoise, sharpen
from pikfix.device import resolve_device
from pikfix.fill_bounds import bound_fill
from pikfix.imageio import from_float, unit_float
from pikfix.model import PikFix
from pikfix.nets.colour_tone import correct_photo
from pikfix.nets.denoise import Sharpener
from pikfix.nets.tone import FEATURE_SIDE, apply_curve, apply_curve_numpy, dead_zone_weight
from pikfix.retrieval.descriptor import (
    DEFAULT_FEATURES, DescriptorExtractor, Descriptors, match_scores, shared_extractor,
)
from pikfix.tiling import restore_tiled

# Chroma goes on the full-resolution L at 1 / CHROMA_SCALE of the resolution it was made at (the
# working size for predicted chroma, the photo's for its own): colour needs little resolution and
# this drops the net's blotches and grain's false colour. Validation photos with matched
# references, training damage recipe: 18.27 dB / 0.624 SSIM at 1, 18.32 / 0.630 at 4, 18.37 /
# 0.635 at 8, which bleeds colour across edges; evaluation recipe: 20.03 / 0.684 -> 20.10 / 0.690 at 4.
CHROMA_SCALE = 4

# The chroma is put on the full-resolution L by a guided filter (``lab_image``): where a colour
# edge lies on an L edge it stays there, instead of bleeding across it as bilinear chroma does.
# Radius in chroma pixels (8 px at the working size); EPS in (L / 100)^2: L steps much smaller
# than 0.1 (10 L units) do not steer the colour. Validation photos, bilinear -> guided, PSNR /
# SSIM: clean grey matched 28.15 / 0.959 -> 28.38 / 0.964, random other 20.45 / 0.929 -> 20.72 /
# 0.937, evaluation damage with auto references (k 3) 18.25 / 0.682 -> 18.40 / 0.691, faded
# colour prints 22.86 / 0.901 -> 23.65 / 0.898 (runs/s20, model card "Guided chroma").
GUIDE_RADIUS = 2
GUIDE_EPS = 1e-2

# A reference that matches the photo poorly gives colour that is often wrong, and wrong colour
# costs more than too little. Its chroma is scaled by how well the best of the references
# matches the photo, scored as the reference store ranks (``match_scores``): in full from
# MATCH_GATE[1], down to MATCH_GATE[2] at MATCH_GATE[0] and below. Fitted on 33 training
# photos (clean grey, chroma scales 0-1; runs/s22/gatecal.py, gatefit.py): random references
# score 0.61-0.90 and gain 20.12 / 0.913 -> 20.71 / 0.928 (grey: 19.84 / 0.926), the auto top 3
# 0.83-0.93 and stay 22.50 / 0.936 -> 22.50 / 0.937, crops of the photo itself 0.92-1.00 and are
# untouched. The floor keeps a poor reference's colour visible: with 0.6 the validation photos'
# colourfulness with random references fell to 14.9, below issue 10's 15.
MATCH_GATE = (0.82, 0.88, 0.65)

# The tone head's curve fades in with the mean change it makes to the photo (L units): none
# below the first number, all of it above the second. A clean photo's curve is a small wobble
# that only costs fidelity; a faded photo's is far larger (on the head's validation samples a
# hard gate at 0.5 L leaves 81 % of the clean ones untouched, at 1 L 93 %, and the damaged
# ones' error rises by 0.1 %: runs/diag/tone_gate.py).
TONE_DEAD_ZONE = (0.5, 1.0)
# The same for the colour tone head, in mean absolute RGB change x 100 (``correct_photo``): on
# its validation samples, 73 % of the clean photos are left untouched and the faded ones' error
# is unchanged (6.763 -> 6.764; runs/diag/ctone_gate.py).
COLOUR_TONE_DEAD_ZONE = (1.0, 2.0)


def match_gate(score: float | None) -> float:
    """Chroma multiplier for a reference's match score (``MATCH_GATE``; None: 1)."""
    if score is None:
        return 1.0
    lo, hi, floor = MATCH_GATE
    return float(np.clip(floor + (1.0 - floor) * (score - lo) / (hi - lo), floor, 1.0))


def _chroma_side(h: int, w: int) -> int:
    """The long side chroma is kept at for a photo of (h, w): 1 / ``CHROMA_SCALE`` of it."""
    return max(1, -(-max(h, w) // CHROMA_SCALE))


def working_size(h: int, w: int, limit: int) -> tuple[int, int]:
    """(h, w) scaled down so the longer side is at most ``limit`` (never scaled up)."""
    scale = min(1.0, limit / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resample_rows(small: torch.Tensor, h: int, w: int, y0: int, y1: int) -> torch.Tensor:
    """Rows y0:y1 of ``small`` (1, C, h', w') bilinearly resized to (h, w), as (1, C, y1 - y0, w):
    strip by strip, the full-size array never exists in memory at once."""
    sy, sx = small.shape[-2] / h, small.shape[-1] / w
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * sx - 0.5
    gx = xs / max(small.shape[-1] - 1, 1) * 2 - 1 if small.shape[-1] > 1 else torch.zeros(w)
    ys = (torch.arange(y0, y1, dtype=torch.float32) + 0.5) * sy - 0.5
    gy = ys / max(small.shape[-2] - 1, 1) * 2 - 1 if small.shape[-2] > 1 else torch.zeros(y1 - y0)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).unsqueeze(0)
    return F.grid_sample(small, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2 radius + 1) square window, borders replicated; same size out."""
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), 2 * radius + 1, stride=1)


def guide_coefficients(l: np.ndarray, ab: torch.Tensor) -> torch.Tensor:
    """The guided filter's local linear model of the chroma on the lightness, at the chroma's
    resolution: full-res L (H, W) in [0, 100] + ab (1, 2, h, w) -> (1, 4, h, w), the slopes
    (a, b channels) then the offsets, so that ab ~ slope x L / 100 + offset near each pixel.

    This is the fast guided filter (He and Sun 2015; He et al. 2013): L is area-averaged to the
    chroma's size, the model is fitted in windows of ``GUIDE_RADIUS`` and averaged over them.
    """
    guide = _downscale(l, tuple(ab.shape[-2:])) / 100.0
    mean_l, mean_ab = _box(guide, GUIDE_RADIUS), _box(ab, GUIDE_RADIUS)
    covariance = _box(guide * ab, GUIDE_RADIUS) - mean_l * mean_ab
    variance = _box(guide * guide, GUIDE_RADIUS) - mean_l * mean_l
    slope = covariance / (variance + GUIDE_EPS)
    return torch.cat([_box(slope, GUIDE_RADIUS), _box(mean_ab - slope * mean_l, GUIDE_RADIUS)], dim=1)


def lab_image(l: np.ndarray, ab: torch.Tensor, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """Full-res L (H, W) in [0, 100] + normalised ab (1, 2, h, w) at any size -> sRGB (H, W, 3),
    float32 in [0, 1] or, with ``dtype`` uint8/uint16, as a file stores it (converted strip by
    strip: a 24 MP float32 photo is 288 MB, as uint8 72 MB).

    The chroma goes on L through the guided filter's coefficients (``guide_coefficients``),
    upsampled bilinearly strip by strip, so the full-resolution ab never exists in memory at
    once and colour edges sit on L's edges instead of bleeding across them.
    """
    h, w = l.shape
    coefficients = guide_coefficients(l, ab.float().cpu())
    out = np.empty((h, w, 3), dtype=dtype)
    rows = strip_rows(w)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        c = _resample_rows(coefficients, h, w, y0, y1)[0]
        l_strip = torch.from_numpy(l[y0:y1])
        ab_strip = c[:2].mul_(l_strip / 100.0).add_(c[2:]).clamp_(-1.0, 1.0)  # in place: one strip's memory
        lab = torch.cat([l_strip.unsqueeze(0), denormalize_ab(ab_strip)], dim=0)
        out[y0:y1] = from_float(lab_to_rgb(lab).permute(1, 2, 0).numpy(), out.dtype)
    return out


def _downscale(plane: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) float array -> (1, 1, h, w) area-averaged tensor."""
    t = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32)).view(1, 1, *plane.shape)
    return F.interpolate(t, size=size, mode="area")


def _put_repair_on_full(
    l: np.ndarray, l_small: torch.Tensor, repaired: torch.Tensor, mask: torch.Tensor | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Full-res L (H, W) in [0, 100] + its repair at a smaller size (normalised L before and
    after, and the mask; None for a net without one) -> (repaired full-res L, full-res mask),
    in row strips.

    Inside the mask the upsampled repair replaces the scan's pixels (a defect's sharp edges
    at full resolution would survive adding a difference); outside it the difference is
    added, which carries the smooth corrections and keeps the scan's fine detail.
    """
    h, w = l.shape
    out = np.empty_like(l)
    out_mask = None if mask is None else np.empty((h, w), dtype=np.float32)
    difference, rows = (repaired - l_small) * 50.0, strip_rows(w)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        added = torch.from_numpy(l[y0:y1]) + _resample_rows(difference, h, w, y0, y1)[0, 0]
        if mask is not None:
            m = _resample_rows(mask, h, w, y0, y1)[0, 0]
            replaced = (_resample_rows(repaired, h, w, y0, y1)[0, 0] + 1.0) * 50.0
            added = m * replaced + (1 - m) * added
            out_mask[y0:y1] = m.numpy()
        out[y0:y1] = added.clamp(0.0, 100.0).numpy()
    return out, out_mask


def _add_resampled(l: np.ndarray, difference: torch.Tensor) -> None:
    """Add ``difference`` (1, 1, h, w), bilinearly resized to L's size, to L (H, W) in [0, 100]
    in place, in row strips."""
    h, w = l.shape
    rows = strip_rows(w)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        added = torch.from_numpy(l[y0:y1]) + _resample_rows(difference, h, w, y0, y1)[0, 0]
        l[y0:y1] = added.clamp(0.0, 100.0).numpy()


def sharpen_at_viewing_size(l: np.ndarray, net: Sharpener, sigma: float | None = None) -> float:
    """``pikfix.denoise.sharpen`` of L (H, W) in [0, 100], in place, with the photo's long side
    at most ``SHARPEN_SIDE``: a larger photo is sharpened at that size and the change resized
    back onto it; returns the share of the sharpening applied. ``sigma`` (the noise left on L,
    measured when None) is used only at the photo's own size."""
    h, w = l.shape
    size = working_size(h, w, SHARPEN_SIDE)
    if size == (h, w):
        return sharpen(l, net, sigma)[1]
    small = _downscale(l, size)
    before = small.clone()
    weight = sharpen(small[0, 0].numpy(), net)[1]  # in place, through the tensor's memory
    if weight > 0.0:
        _add_resampled(l, small - before)
    return weight


@dataclass
class Reference:
    """A colour reference prepared for the model at the working size."""

    l: torch.Tensor  # (1, 1, h, w) normalised
    ab: torch.Tensor  # (1, 2, h, w) normalised
    descriptor: Descriptors | None = None  # for ``MATCH_GATE``; None: the reference is trusted


@dataclass
class FixResult:
    """The repaired photo and what a report needs about it."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1], full resolution
    restored_l: np.ndarray  # (H, W) float32 Lab L in [0, 100]
    confidence: float  # mean similarity confidence at the finest scale, in [-1, 1]
    mask: np.ndarray | None = None  # (H, W) damage mask in [0, 1] the repair used (None: no detector)


@dataclass
class Restored:
    """Restored full-resolution L and the damage mask the repair used (None without a detector
    and without a user mask)."""

    l: np.ndarray  # (H, W) float32 Lab L in [0, 100]
    mask: np.ndarray | None  # (H, W) float32 in [0, 1], 1 = damaged
    noise: float | None = None  # noise measured after the repair (sigma, L units); None: not measured
    denoised: bool = False  # whether the noise filter ran (``pikfix.denoise``)
    sharpened: float = 0.0  # share of the sharpener's change applied (``pikfix.denoise.sharpen``; 0: none)


class FixPipeline:
    """Restore + colorize photos with one model on one device."""

    def __init__(
        self,
        model: PikFix,
        device: str | torch.device = "auto",
        work_size: int = 512,
        tile: int = DEFAULT_TILE,
        tile_overlap: int = 48,
        restore_size: int = 2048,
        keep_tone: bool = False,
        denoise: bool = True,
        sharpen: bool = True,
    ) -> None:
        """``keep_tone`` skips the tone head: for a photo whose low contrast is its own (fog, a
        bright beach), which the head cannot tell from fading. ``denoise`` False keeps the
        photo's noise and grain. ``sharpen`` runs the model's sharpener on grey photos that are
        soft with their long side at ``pikfix.denoise.SHARPEN_SIDE`` (a large scan is soft at
        the pixel level by nature and is not sharpened for it)."""
        if work_size < 32:
            raise ValueError("work_size must be at least 32 pixels")
        if restore_size < 64:
            raise ValueError("restore_size must be at least 64 pixels")
        self.device = resolve_device(device) if isinstance(device, str) else device
        # channels_last makes the convolutions ~1.5x faster on CPU (oneDNN) and on GPUs.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.work_size = work_size
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.restore_size = restore_size
        self.keep_tone = keep_tone
        self.denoise = denoise
        self.sharpen = sharpen

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kwargs: int | bool) -> "FixPipeline":
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
        l = normalize_l(lab[:, :1])
        return Reference(l=l, ab=normalize_ab(lab[:, 1:]), descriptor=self._describe(l))

    def _describer(self) -> DescriptorExtractor | None:
        """The reference store's descriptor network (shared); None where its weights are not
        installed (then no reference is gated)."""
        try:
            return shared_extractor(DEFAULT_FEATURES, self.device)
        except WeightsUnavailableError:
            return None

    def _describe(self, l_norm: torch.Tensor) -> Descriptors | None:
        """Retrieval descriptors of normalised L (..., H, W), as the reference store's."""
        extractor = self._describer()
        return None if extractor is None else extractor.embed_grey(l_norm)

    def reference_match(self, l_norm: torch.Tensor, refs: Sequence[Reference]) -> float | None:
        """The best match score of the references for the photo's normalised L (None when a
        reference has no descriptor: hand-built, or no descriptor network)."""
        described = [r.descriptor for r in refs if r.descriptor is not None]
        extractor = self._describer()
        if len(described) < len(refs) or extractor is None:
            return None
        query = extractor.embed_grey(l_norm)
        vectors = np.concatenate([d.vectors for d in described])
        thumbs = np.concatenate([d.thumbs for d in described])
        return float(match_scores(query, vectors, thumbs, extractor.blocks)[0].max())

    def restore(
        self, rgb: np.ndarray, progress: Callable[[int, int], None] | None = None, mask: np.ndarray | None = None
    ) -> Restored:
        """Restore an old photo (H, W, 3), float in [0, 1] or uint8/uint16: full-resolution Lab L
        in [0, 100] and the damage mask.

        ``mask`` (any size, values in [0, 1], 1 = damaged) replaces the detector's: the net
        repairs those pixels. Scans larger than ``restore_size`` are repaired at that size.
        """
        # The L is ours: the tone curve may overwrite it (one full-size array fewer at 24 MP).
        return self._restore_l(luminance(rgb), progress, mask, own_l=True)

    def restore_colour_photo(
        self, rgb: np.ndarray, progress: Callable[[int, int], None] | None = None, mask: np.ndarray | None = None,
        dtype: npt.DTypeLike = np.float32,
    ) -> tuple[np.ndarray, Restored]:
        """A photo with its own colour (``pikfix.colour_input.classify``), float in [0, 1] or
        uint8/uint16 as decoded -> (the photo with its own colours restored (H, W, 3), float32 or
        ``dtype`` uint8/uint16 as ``lab_image`` writes it, its restoration).

        With a colour tone head (``pikfix.nets.colour_tone``) the fading is first undone in
        colour, per dye and in chroma (unless ``keep_tone``). The L of that is repaired without
        the grey tone head (the fade is undone already) and with the edge-preserving filter,
        not the learned denoiser, which smooths a faded print's texture (faded validation
        photos, SSIM 0.913 against 0.859). The chroma goes on the repaired L at a quarter of the
        resolution, which drops grain's false colour (SSIM 0.855 -> 0.905, delta ab 12.4 -> 11.8),
        except for a photo the head leaves as it is (``COLOUR_TONE_DEAD_ZONE``) and that needs no
        noise filter: a clean colour photo keeps its own chroma at full resolution.
        A model without the head restores L as for grey photos and corrects colour by
        ``pikfix.colour_input``'s rules.
        """
        head = self.model.restoration.colour_tone
        if head is None:
            restored = self.restore(rgb, progress, mask)
            return from_float(restore_own_colour(unit_float(rgb), restored.l), dtype), restored
        corrected = rgb if self.keep_tone else correct_photo(head, rgb, COLOUR_TONE_DEAD_ZONE)
        small = area_downscale_image(corrected, _chroma_side(*corrected.shape[:2]))
        ab = normalize_ab(rgb_to_lab(small.clamp(0.0, 1.0))[:, 1:])
        untouched = corrected is rgb
        l = luminance(corrected)
        del corrected  # the full-size corrected photo is not kept through the repair
        restored = self._restore_l(l, progress, mask, own_l=True, tone=False, learned_denoiser=False)
        if untouched and not restored.denoised:
            return own_chroma_on(restored.l, rgb, dtype), restored
        return lab_image(restored.l, ab, dtype), restored

    def restore_l(
        self, l: np.ndarray, progress: Callable[[int, int], None] | None = None, mask: np.ndarray | None = None
    ) -> Restored:
        """``restore`` for a photo given as its Lab L (H, W) in [0, 100] (left unchanged)."""
        return self._restore_l(l, progress, mask, own_l=False)

    def _restore_l(
        self, l: np.ndarray, progress: Callable[[int, int], None] | None, mask: np.ndarray | None, own_l: bool,
        tone: bool = True, learned_denoiser: bool = True,
    ) -> Restored:
        """``restore_l``; ``own_l``: ``l`` is the pipeline's own and may be overwritten; ``tone``
        False skips the tone head, ``learned_denoiser`` False uses the edge-preserving filter and
        no sharpener (the colour tone head's path). The sharpener runs with ``self.sharpen``, and
        not without ``self.denoise``: it learned on denoised photos and would sharpen grain."""
        h, w = l.shape
        if tone:
            l = self._restore_tone(l, in_place=own_l)
        size = working_size(h, w, self.restore_size)
        l_in = torch.from_numpy(l).view(1, 1, h, w) if size == (h, w) else _downscale(l, size)
        given = None
        if mask is not None:
            given = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).view(1, 1, *mask.shape)
            given = (F.interpolate(given, size=size, mode="bilinear", align_corners=False) > 0.5).float()
        l_norm = normalize_l(l_in)
        restored, used_mask = restore_tiled(
            self.model, l_norm, self.tile, self.tile_overlap, self.device, progress, mask=given
        )
        restored = restored.clamp(-1.0, 1.0)
        if size == (h, w):
            out = ((restored[0, 0] + 1.0) * 50.0).numpy()
            full_mask = None if used_mask is None else used_mask[0, 0].numpy()
        else:  # without a detector (no mask) the whole repair is a difference to add
            out, full_mask = _put_repair_on_full(l, l_norm, restored, used_mask)
        if full_mask is not None:
            bound_fill(out, l, full_mask)
        del l, l_in, l_norm, restored  # not needed past here; the L, when ours, is 96 MB at 24 MP
        if not self.denoise:
            return Restored(out, full_mask)
        net = self.model.restoration.denoiser if learned_denoiser else None
        noise, denoised = denoise(out, net=net)  # in place: ``out`` is a new array
        sharpener = self.model.restoration.sharpener if learned_denoiser and self.sharpen else None
        sharpened = 0.0
        if sharpener is not None:
            sharpened = sharpen_at_viewing_size(out, sharpener, None if denoised else noise)
        return Restored(out, full_mask, noise, denoised, sharpened)

    def _restore_tone(self, l: np.ndarray, in_place: bool = False) -> np.ndarray:
        """The tone head's whole-photo curve on full-resolution L (unchanged without a head, with
        ``keep_tone`` or where the curve would barely change the photo: ``TONE_DEAD_ZONE``)."""
        if self.keep_tone or self.model.restoration.tone is None:
            return l
        small = normalize_l(_downscale(l, working_size(*l.shape, FEATURE_SIDE)))  # no full-size copy
        with torch.no_grad():
            xs, ys = self.model.tone_curve(small)
            change = float((apply_curve(small, xs, ys) - small).abs().mean()) * 50.0
        weight = dead_zone_weight(change, TONE_DEAD_ZONE)
        if weight == 0.0:
            return l
        return apply_curve_numpy(l, xs, xs + weight * (ys - xs), out=l if in_place else None)

    def colorize(
        self, restored_l: np.ndarray, reference: Reference | Sequence[Reference], dtype: npt.DTypeLike = np.float32
    ) -> tuple[np.ndarray, float]:
        """Predict chroma at the working size and put it on the full-resolution L (at a quarter
        of the working size, ``CHROMA_SCALE``); the photo comes back as ``lab_image`` makes it
        (float32 in [0, 1], or ``dtype`` uint8/uint16).

        Several references are attended over together (``PikFix.colorize``). The chroma is
        scaled down where the best reference matches the photo poorly (``MATCH_GATE``).
        """
        refs = [reference] if isinstance(reference, Reference) else list(reference)
        l_work = normalize_l(self._to_work_tensor(restored_l))
        with torch.inference_mode():
            ab, confidence = self.model.colorize(l_work, [r.l for r in refs], [r.ab for r in refs])
        ab = ab.float() * match_gate(self.reference_match(l_work, refs))
        ab = area_downscale(ab, _chroma_side(*ab.shape[-2:]))
        return lab_image(restored_l, ab, dtype), float(confidence[0].mean())

    def fix(
        self,
        rgb: np.ndarray,
        reference: Reference | Sequence[Reference],
        progress: Callable[[int, int], None] | None = None,
        mask: np.ndarray | None = None,
    ) -> FixResult:
        """Old photo (H, W, 3) float in [0, 1], or uint8/uint16 as decoded -> restored, colorized
        photo of the same size and type (no full-size float copy of an integer photo is made)."""
        restored = self.restore(rgb, progress, mask)
        out_type = np.float32 if np.issubdtype(rgb.dtype, np.floating) else rgb.dtype
        out, confidence = self.colorize(restored.l, reference, out_type)
        return FixResult(rgb=out, restored_l=restored.l, confidence=confidence, mask=restored.mask)
