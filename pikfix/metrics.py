"""Image-quality metrics for the benchmark: PSNR, SSIM, colourfulness, LPIPS, confidence intervals.

Conventions are fixed here so every table the project prints is comparable with the papers'
numbers and with scikit-image:

* PSNR and SSIM are computed on RGB after rounding both images to 8 bits, because what a user
  gets (and what the papers scored) are 8-bit files.
* SSIM follows Wang et al. 2004 exactly as scikit-image computes it with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``.

Images are float tensors shaped (3, H, W) or (B, 3, H, W) with values in [0, 1] (on any
device), or numpy arrays shaped (H, W, 3): uint8, or float in [0, 1]. For a batch, each metric
returns the mean of the per-image values.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F

from pikfix.color import rgb_to_lab

ImageLike = torch.Tensor | np.ndarray

# SSIM constants (Wang et al. 2004) on the 8-bit scale.
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
# Output rows of the SSIM map computed at once: bounds memory on 24-megapixel scans.
_SSIM_STRIP_ROWS = 256


def _hwc_to_bchw(image: np.ndarray) -> torch.Tensor:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"numpy images must be shaped (H, W, 3), got {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)


def to_tensor(image: ImageLike) -> torch.Tensor:
    """Bring any accepted image form to a float (B, 3, H, W) tensor; uint8 arrays are scaled to [0, 1]."""
    if isinstance(image, np.ndarray):
        tensor = _hwc_to_bchw(image)
        return tensor.float() / 255.0 if image.dtype == np.uint8 else tensor.float()
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image tensors must be shaped (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    return image


def _to_8bit(image: ImageLike, data_range: float = 1.0) -> torch.Tensor:
    """Round to 8-bit values, (B, 3, H, W) uint8; uint8 arrays pass through unchanged."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return _hwc_to_bchw(image)
    tensor = to_tensor(image)
    return (tensor.clamp(0.0, data_range) * (255.0 / data_range)).round().to(torch.uint8)


def _pair_8bit(pred: ImageLike, target: ImageLike, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _to_8bit(pred, data_range), _to_8bit(target, data_range)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def psnr(pred: ImageLike, target: ImageLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB on 8-bit RGB.

    Both images (float values in [0, ``data_range``]) are rounded to 8 bits; the MSE runs over
    all pixels and the 3 RGB channels, with no border crop; peak = 255. uint8 numpy arrays are
    used as they are (``data_range`` does not apply). Identical images give ``math.inf``.
    """
    x, y = _pair_8bit(pred, target, data_range)
    values = []
    for i in range(x.shape[0]):
        # Exact integer squared error, one channel at a time to bound memory on large scans.
        sse = sum(int(((x[i, c].int() - y[i, c].int()) ** 2).sum(dtype=torch.int64)) for c in range(3))
        mse = sse / x[i].numel()
        values.append(math.inf if sse == 0 else 10.0 * math.log10(255.0**2 / mse))
    return sum(values) / len(values)


def _gaussian_taps(size: int, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian (sigma 1.5) with ``size`` taps, float64."""
    radius = size // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    taps = torch.exp(-(x * x) / (2.0 * _SSIM_SIGMA**2))
    return taps / taps.sum()


def _ssim_map_sum(x: torch.Tensor, y: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Sum of the SSIM map over the valid region of one channel strip; x, y are (B, 1, h, W) float64.

    The five local statistics go through one grouped, separable convolution.
    """
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    size = taps.numel()
    stats = F.conv2d(stats, taps.view(1, 1, size, 1).expand(5, 1, size, 1), groups=5)
    stats = F.conv2d(stats, taps.view(1, 1, 1, size).expand(5, 1, 1, size), groups=5)
    mu_x, mu_y, xx, yy, xy = stats.unbind(dim=1)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return (num / den).sum(dim=(1, 2))


def ssim(pred: ImageLike, target: ImageLike, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al. 2004) on 8-bit RGB, averaged over the 3 channels.

    11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, population covariances.
    The SSIM map is averaged over the *valid* region only (pixels whose whole window lies inside
    the image), which equals scikit-image's result: it filters with reflect padding and then
    crops the 5-pixel border before averaging. Images smaller than 11 px use the largest odd
    window that fits, with the same sigma truncated to it. Computed channel by channel in row
    strips so memory stays small on large scans.
    """
    x8, y8 = _pair_8bit(pred, target, data_range)
    batch, _, height, width = x8.shape
    size = min(_SSIM_WINDOW, height, width)
    size -= 1 - size % 2  # odd, so the window has a centre pixel
    taps = _gaussian_taps(size, x8.device)
    out_h, out_w = height - size + 1, width - size + 1
    total = torch.zeros(batch, dtype=torch.float64, device=x8.device)
    for c in range(3):
        for r0 in range(0, out_h, _SSIM_STRIP_ROWS):
            r1 = min(r0 + _SSIM_STRIP_ROWS, out_h)
            rows = slice(r0, r1 + size - 1)
            xs = x8[:, c : c + 1, rows].double()
            ys = y8[:, c : c + 1, rows].double()
            total += _ssim_map_sum(xs, ys, taps)
    per_image = total / (3 * out_h * out_w)
    return float(per_image.mean())


def colorfulness(rgb: ImageLike) -> float:
    """Hasler & Suesstrunk (2003) colourfulness on 0..255 RGB; 0 for any grey image.

    rg = R - G, yb = (R + G) / 2 - B; M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2),
    with population standard deviations over all pixels. Float images are scaled by 255 without
    rounding.
    """
    if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8:
        tensor = _hwc_to_bchw(rgb).double()
    else:
        tensor = to_tensor(rgb).double() * 255.0
    r, g, b = tensor.unbind(dim=1)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    spread = torch.sqrt(rg.var(dim=1, correction=0) + yb.var(dim=1, correction=0))
    offset = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return float((spread + 0.3 * offset).mean())


def delta_ab(pred: ImageLike, target: ImageLike) -> float:
    """Mean Euclidean distance of the CIELAB chroma (a, b) of two images: colour error alone."""
    p, t = to_tensor(pred).float().clamp(0, 1), to_tensor(target).float().clamp(0, 1)
    if p.shape != t.shape:
        raise ValueError(f"delta_ab: shapes {tuple(p.shape)} and {tuple(t.shape)} differ")
    return float((rgb_to_lab(p)[:, 1:] - rgb_to_lab(t)[:, 1:]).norm(dim=1).mean())


# ---------------------------------------------------------------------------------------------
# LPIPS (Zhang et al. 2018): optional, needs the `lpips` package and ImageNet backbone weights.

_LPIPS_NETS = ("alex", "vgg")


def _backbone_checkpoint(net: str) -> Path:
    """Where torchvision looks for (and would download) the LPIPS backbone's ImageNet weights."""
    from torchvision import models

    if net not in _LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {_LPIPS_NETS}, got {net!r}")
    weights = models.AlexNet_Weights.IMAGENET1K_V1 if net == "alex" else models.VGG16_Weights.IMAGENET1K_V1
    file_name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def lpips_status(net: str = "alex") -> tuple[bool, str]:
    """Whether LPIPS can run offline, and why not: (available, description or reason).

    Checks only that the `lpips` package is importable and that torchvision's cached backbone
    weights exist; nothing is imported from `lpips` and nothing is downloaded.
    """
    checkpoint = _backbone_checkpoint(net)
    problems = []
    if importlib.util.find_spec("lpips") is None:
        problems.append("the `lpips` package is not installed (pip install lpips)")
    if not checkpoint.is_file():
        problems.append(f"ImageNet {net} backbone weights {checkpoint.name} are missing (expected at {checkpoint})")
    if problems:
        return False, "; ".join(problems)
    return True, f"lpips ({net}) with backbone weights {checkpoint}"


class LPIPSMetric:
    """LPIPS distance (lower is more similar) through the `lpips` package, loaded once.

    Inputs are rounded to 8 bits like PSNR/SSIM, then mapped to [-1, 1] as LPIPS expects.
    Raises ``RuntimeError`` with ``lpips_status``'s reason when the weights are not available,
    instead of letting torchvision try a download.
    """

    def __init__(self, net: str = "alex", device: str | torch.device = "cpu") -> None:
        available, reason = lpips_status(net)
        if not available:
            raise RuntimeError(f"LPIPS is unavailable: {reason}")
        import lpips  # optional dependency, imported only when the weights are there

        self.device = torch.device(device)
        self.model = lpips.LPIPS(net=net, verbose=False).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, pred: ImageLike, target: ImageLike) -> float:
        x, y = _pair_8bit(pred, target, 1.0)
        x = x.to(self.device).float() / 127.5 - 1.0
        y = y.to(self.device).float() / 127.5 - 1.0
        return float(self.model(x, y).mean())


# ---------------------------------------------------------------------------------------------
# Confidence intervals.

# Two-sided 95 % Student t quantiles t(0.975, dof) for dof = 1..30.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959963984540054


def t975(dof: int) -> float:
    """Student t 0.975 quantile: table up to 30 dof, Cornish-Fisher expansion beyond (error < 1e-5)."""
    if dof < 1:
        raise ValueError("degrees of freedom must be >= 1")
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = _Z975
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3 + g4 / dof**4


def mean_ci95(values: Iterable[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its two-sided 95 % Student t confidence interval.

    All values must be finite (use ``summarize`` for PSNR lists that may hold ``inf``).
    A single value gives (v, v, v).
    """
    data = [float(v) for v in values]
    if not data:
        raise ValueError("mean_ci95 needs at least one value")
    if not all(math.isfinite(v) for v in data):
        raise ValueError("mean_ci95 needs finite values; use summarize() to set inf PSNRs aside")
    n = len(data)
    mean = sum(data) / n
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in data) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


class Summary(NamedTuple):
    """A metric over a test set: mean and 95 % CI of the finite values, and how many were +inf."""

    mean: float
    low: float
    high: float
    n: int
    n_inf: int


def summarize(values: Iterable[float]) -> Summary:
    """Mean and 95 % CI with +inf values (PSNR of identical images) set aside and counted.

    When every value is +inf the summary is (inf, inf, inf). NaN or -inf raises ``ValueError``
    since no metric here produces them legitimately.
    """
    data = [float(v) for v in values]
    if any(math.isnan(v) or v == -math.inf for v in data):
        raise ValueError("values contain NaN or -inf")
    finite = [v for v in data if v != math.inf]
    n_inf = len(data) - len(finite)
    if not finite:
        if not data:
            raise ValueError("summarize needs at least one value")
        return Summary(math.inf, math.inf, math.inf, len(data), n_inf)
    return Summary(*mean_ci95(finite), n=len(data), n_inf=n_inf)
