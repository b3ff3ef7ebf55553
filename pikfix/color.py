"""sRGB <-> CIE Lab (D65) in torch, batched, plus the paper's network normalisation.

All functions take tensors shaped (..., 3, H, W) (or (..., 1, H, W) for L) so the same
code serves single images, batches and image strips.  sRGB values are in [0, 1].
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from pikfix.imageio import from_float, unit_float

# sRGB primaries -> CIE XYZ (D65), IEC 61966-2-1.
_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)
# D65 reference white, normalised to Y = 1.
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPS = 216.0 / 24389.0  # CIE epsilon (6/29)^3
_KAPPA = 24389.0 / 27.0  # CIE kappa

# Network normalisation (paper / authors' release): L/50 - 1 in [-1, 1], ab/110.
L_SCALE = 50.0
AB_SCALE = 110.0


def _mix(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix over the channel dimension (-3)."""
    m = matrix.to(device=x.device, dtype=x.dtype)
    return torch.einsum("ij,...jhw->...ihw", m, x)


def _check_rgb(x: torch.Tensor, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must be shaped (..., 3, H, W), got {tuple(x.shape)}")


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """Undo the sRGB transfer curve."""
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0.0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    """Apply the sRGB transfer curve (input clamped to >= 0 so the power is defined)."""
    lin = lin.clamp(min=0.0)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1.0 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> Lab (L in [0, 100], a/b roughly in [-128, 127])."""
    _check_rgb(rgb, "rgb")
    xyz = _mix(srgb_to_linear(rgb), _RGB_TO_XYZ)
    xyz = xyz / _WHITE.to(device=rgb.device, dtype=rgb.dtype).view(3, 1, 1)
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1.0 / 3.0), (_KAPPA * xyz + 16.0) / 116.0)
    fx, fy, fz = f.unbind(dim=-3)
    lab = torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-3)
    return lab


def lab_to_rgb(lab: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Lab -> sRGB in [0, 1]; out-of-gamut colours are clipped when ``clamp``."""
    _check_rgb(lab, "lab")
    l, a, b = lab.unbind(dim=-3)
    fy = (l + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = fy - b / 200.0
    f = torch.stack([fx, fy, fz], dim=-3)
    f3 = f**3
    xyz = torch.where(f3 > _EPS, f3, (116.0 * f - 16.0) / _KAPPA)
    xyz = xyz * _WHITE.to(device=lab.device, dtype=lab.dtype).view(3, 1, 1)
    rgb = linear_to_srgb(_mix(xyz, _XYZ_TO_RGB))
    return rgb.clamp(0.0, 1.0) if clamp else rgb


def rgb_to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Lab L channel (0..100) of an sRGB image, shaped (..., 1, H, W)."""
    return rgb_to_lab(rgb)[..., :1, :, :]


def normalize_l(l: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] -> network range [-1, 1]."""
    return l / L_SCALE - 1.0


def denormalize_l(l_norm: torch.Tensor) -> torch.Tensor:
    """Network L in [-1, 1] -> [0, 100]."""
    return (l_norm + 1.0) * L_SCALE


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    """ab in Lab units -> network range (about [-1, 1])."""
    return ab / AB_SCALE


def denormalize_ab(ab_norm: torch.Tensor) -> torch.Tensor:
    """Network ab -> Lab units, clamped to [-1, 1] first so no chroma overflows the Lab range."""
    return ab_norm.clamp(-1.0, 1.0) * AB_SCALE


def grey_to_rgb(l_norm: torch.Tensor) -> torch.Tensor:
    """Normalised L (B, 1, H, W) -> neutral sRGB (B, 3, H, W) in [0, 1] (a = b = 0)."""
    l = denormalize_l(l_norm)
    lab = torch.cat([l, torch.zeros_like(l), torch.zeros_like(l)], dim=-3)
    return lab_to_rgb(lab)


STRIP_ROWS = 256  # rows per strip of full-size single-plane filters: bounds their memory
# Pixels per strip of full-size colour conversions, whose formulas make a dozen temporaries of
# the strip: in 256-row strips `lab_image` of a 24 MP photo grew the process by 0.45-0.49 GB, in
# strips of this size (43 rows) by 0.16 GB, its 72 MB output included.
STRIP_PIXELS = 1 << 18


def strip_rows(width: int, pixels: int = STRIP_PIXELS) -> int:
    """Rows per strip of about ``pixels`` px (a full-size colour conversion's by default) of a
    photo ``width`` px wide."""
    return max(1, pixels // max(1, width))


def area_downscale(t: torch.Tensor, long_side: int) -> torch.Tensor:
    """(B, C, H, W) area-averaged so the longer side is at most ``long_side`` px (never scaled up):
    the small copy that photo-wide statistics (tone quantiles, chroma, colour fits) are taken on."""
    h, w = t.shape[-2:]
    scale = long_side / max(h, w)
    if scale >= 1:
        return t
    return F.interpolate(t, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")


def area_downscale_image(rgb: np.ndarray, long_side: int) -> torch.Tensor:
    """``area_downscale`` of a photo (H, W, C) as decoded (uint8/uint16) or float in [0, 1] ->
    (1, C, h, w) float32, without a full-size float copy: area averaging is separable, so each
    row strip is averaged across its width first and the narrow result down its height."""
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1:
        return torch.from_numpy(unit_float(rgb)).permute(2, 0, 1)[None]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    strips, rows = [], strip_rows(w)
    for y in range(0, h, rows):
        strip = torch.from_numpy(unit_float(rgb[y : y + rows])).permute(2, 0, 1)[None]
        strips.append(F.adaptive_avg_pool2d(strip, (strip.shape[-2], size[1])))
    return F.adaptive_avg_pool2d(torch.cat(strips, dim=2), size)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Lab L (H, W) float32 in [0, 100] of an sRGB image (H, W, 3), as decoded (uint8/uint16) or
    float in [0, 1], in row strips."""
    out, rows = np.empty(rgb.shape[:2], dtype=np.float32), strip_rows(rgb.shape[1])
    for y in range(0, rgb.shape[0], rows):
        strip = torch.from_numpy(unit_float(rgb[y : y + rows]))
        out[y : y + rows] = rgb_to_lab(strip.permute(2, 0, 1))[0].numpy()
    return out


def own_chroma_on(l: np.ndarray, rgb: np.ndarray, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """A photo's own chroma (H, W, 3; float in [0, 1] or uint8/uint16 as decoded) at full
    resolution on another L (H, W) in [0, 100] -> sRGB (H, W, 3), float32 in [0, 1] or, with
    ``dtype`` uint8/uint16, as a file stores it; in row strips (no full-size Lab copy, nor a
    float one of an integer photo or result)."""
    out, rows = np.empty(rgb.shape, dtype=dtype), strip_rows(rgb.shape[1])
    for y in range(0, l.shape[0], rows):
        strip = torch.from_numpy(unit_float(rgb[y : y + rows])).permute(2, 0, 1)
        lab = rgb_to_lab(strip.clamp(0.0, 1.0))
        lab[0] = torch.from_numpy(np.ascontiguousarray(l[y : y + rows], dtype=np.float32))
        out[y : y + rows] = from_float(lab_to_rgb(lab).permute(1, 2, 0).numpy(), out.dtype)
    return out


def grey_lightness(grey: np.ndarray) -> np.ndarray:
    """Lab L in [0, 100] of an sRGB grey image (H, W) in [0, 1], in numpy.

    For a grey pixel Y is its linear value, so L needs no colour matrix: cheap enough for
    data-loader workers, where small torch ops cost more in threading than in arithmetic.
    """
    g = np.clip(grey, 0.0, 1.0).astype(np.float32)
    y = np.where(g <= 0.04045, g / 12.92, ((g + 0.055) / 1.055) ** 2.4)
    f = np.where(y > _EPS, np.cbrt(np.maximum(y, _EPS)), (_KAPPA * y + 16.0) / 116.0)
    return (116.0 * f - 16.0).astype(np.float32)


def lightness_grey(l: np.ndarray) -> np.ndarray:
    """The sRGB grey image (H, W) in [0, 1] whose Lab L is ``l`` (H, W) in [0, 100]; the inverse
    of ``grey_lightness``, so damage drawn on L can be handed on as a grey photo."""
    f = (np.clip(l, 0.0, 100.0).astype(np.float32) + 16.0) / 116.0
    y = np.clip(np.where(f**3 > _EPS, f**3, (116.0 * f - 16.0) / _KAPPA), 0.0, 1.0)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055).astype(np.float32)
