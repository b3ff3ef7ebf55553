"""Every parameter of the training damage recipe, validated on construction.

Sizes of local defects (widths, radii) are pixels at a scan whose shorter side is
``DEFECT_REFERENCE_SIZE`` (256 px) and grow with the *scan*, not with the crop being damaged:
a crack is a fixed fraction of the print, so a 4000 px scan shows it 15 px wide and a 512 px
scan 2 px wide (see ``Window``). Capture defects (blur sigma, noise, JPEG) are in pixels of
the image as given, as in the recipes they come from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pikfix.config import reject_unknown_keys

DEFECT_REFERENCE_SIZE = 256  # local-defect sizes in the config are pixels at this scan size


def _prob(default: float) -> Any:
    return field(default=default, metadata={"kind": "prob"})


def _scalar(default: float, lower: float, upper: float) -> Any:
    return field(default=default, metadata={"kind": "scalar", "bounds": (lower, upper)})


def _range(default: tuple[float, float], lower: float, upper: float, integer: bool = False) -> Any:
    kind = "int_range" if integer else "range"
    return field(default=default, metadata={"kind": kind, "bounds": (lower, upper)})


def _is_number(value: Any, integer: bool = False) -> bool:
    # bool is an int subclass, but `true` in a JSON config is a mistake, not a 1.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _check_field(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Raise ValueError naming ``name`` if ``value`` breaks the rules in ``meta``."""
    kind = meta["kind"]
    if kind == "prob":
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: must be a probability in [0, 1], got {value!r}")
        return
    lower, upper = meta["bounds"]
    if kind == "scalar":
        if not _is_number(value) or not lower <= value <= upper:
            raise ValueError(f"{name}: must be a number in [{lower}, {upper}], got {value!r}")
        return
    integer = kind == "int_range"
    what = "integers" if integer else "numbers"
    if not (isinstance(value, tuple) and len(value) == 2 and all(_is_number(v, integer) for v in value)):
        raise ValueError(f"{name}: must be a pair [lo, hi] of {what}, got {value!r}")
    lo, hi = value
    if lo > hi:
        raise ValueError(f"{name}: lo > hi in {list(value)}")
    if lo < lower or hi > upper:
        raise ValueError(f"{name}: {list(value)} is outside [{lower}, {upper}]")


@dataclass(frozen=True)
class DegradationConfig:
    """Every parameter of the damage recipe; ``p_*`` are per-sample probabilities of an operation.

    Ranges are (lo, hi) pairs sampled uniformly (integer ranges include hi). The object is
    frozen and validated on construction so a recorded config always describes what ran.
    """

    # Local physical defects (pikfix.training.degradation.physical); each writes the damage mask.
    p_scratches: float = _prob(0.5)
    scratch_count: tuple[int, int] = _range((1, 5), 0, 1000, integer=True)
    scratch_length: tuple[float, float] = _range((0.2, 1.0), 0.0, 2.0)  # fraction of the scan's longer side
    scratch_width: tuple[float, float] = _range((0.5, 2.5), 0.1, 64.0)  # px at 256
    p_cracks: float = _prob(0.3)
    crack_count: tuple[int, int] = _range((1, 3), 0, 1000, integer=True)
    crack_length: tuple[float, float] = _range((0.1, 0.5), 0.0, 2.0)  # fraction of the scan's longer side
    crack_width: tuple[float, float] = _range((0.4, 2.0), 0.1, 64.0)  # px at 256
    crack_branch_prob: float = _prob(0.4)  # chance that a crack has side branches
    p_crack_network: float = _prob(0.2)  # branching crack trees that cross the whole picture
    network_depth: tuple[int, int] = _range((2, 4), 1, 8, integer=True)  # levels of branching
    p_crazing: float = _prob(0.1)  # a fine net of cell-shaped cracks in the emulsion
    crazing_cell: tuple[float, float] = _range((4.0, 16.0), 1.0, 256.0)  # cell size, px at 256
    p_noise_cracks: float = _prob(0.15)  # texture-like crack masks: zero crossings of a noise field
    p_dust: float = _prob(0.5)
    dust_count: tuple[int, int] = _range((3, 30), 0, 100_000, integer=True)  # per 256 x 256 px window
    dust_radius: tuple[float, float] = _range((0.3, 2.0), 0.1, 64.0)  # px at 256; small ones dominate
    defect_dark_fraction: float = _prob(0.2)  # share of scratches/cracks/dust that are dark
    defect_opacity: tuple[float, float] = _range((0.5, 1.0), 0.0, 1.0)
    defect_bright_level: tuple[float, float] = _range((0.8, 1.0), 0.0, 1.0)
    defect_dark_level: tuple[float, float] = _range((0.0, 0.25), 0.0, 1.0)
    p_tears: float = _prob(0.2)
    tear_count: tuple[int, int] = _range((1, 3), 0, 100, integer=True)
    tear_max_area: float = _scalar(0.05, 0.0, 1.0)  # all tears together cover less than this fraction
    tear_protect_centre: float = _scalar(0.6, 0.0, 1.0)  # centred box (fraction of H and W) never torn
    p_holes: float = _prob(0.1)  # interior holes and missing patches
    hole_count: tuple[int, int] = _range((1, 3), 0, 100, integer=True)
    hole_radius: tuple[float, float] = _range((1.0, 8.0), 0.1, 256.0)  # px at 256
    p_flaking: float = _prob(0.1)  # emulsion flaked off in sharp-edged bright patches
    p_paper_mask: float = _prob(0.1)  # blotches where the paper base shows through, textured
    p_creases: float = _prob(0.15)
    crease_count: tuple[int, int] = _range((1, 2), 0, 100, integer=True)
    crease_strength: tuple[float, float] = _range((0.05, 0.2), 0.0, 1.0)  # light/dark edge amplitude
    crease_width: tuple[float, float] = _range((1.0, 3.0), 0.5, 64.0)  # px at 256
    p_folds: float = _prob(0.1)  # a fold: a shading step with broken emulsion along the line
    # Capture and scanning defects (capture.py; Wan et al.: blur, noise, low resolution, JPEG, p = 0.7).
    p_grain: float = _prob(0.3)
    grain_strength: tuple[float, float] = _range((0.01, 0.05), 0.0, 1.0)  # std in mid-tones
    grain_size: tuple[float, float] = _range((0.5, 1.2), 0.0, 10.0)  # blur sigma of the grain, px
    p_blur: float = _prob(0.7)
    blur_sigma: tuple[float, float] = _range((0.0, 3.0), 0.0, 20.0)  # Pik-Fix's range, px
    p_defocus: float = _prob(0.1)
    defocus_radius: tuple[float, float] = _range((1.0, 3.0), 0.0, 20.0)  # px
    p_motion: float = _prob(0.1)
    motion_length: tuple[float, float] = _range((3.0, 9.0), 1.0, 50.0)  # px
    p_noise: float = _prob(0.7)  # then Gaussian, speckle or salt-and-pepper, equally likely
    noise_sigma: tuple[float, float] = _range((5 / 255, 50 / 255), 0.0, 1.0)  # Wan et al.
    salt_pepper_amount: tuple[float, float] = _range((0.0, 0.01), 0.0, 1.0)  # fraction of pixels
    p_lowres: float = _prob(0.7)
    lowres_scale: tuple[float, float] = _range((0.5, 1.0), 0.05, 1.0)  # per axis, Wan et al.
    p_jpeg: float = _prob(0.7)
    jpeg_quality: tuple[int, int] = _range((40, 100), 1, 100, integer=True)
    p_halftone: float = _prob(0.05)  # printed reproductions: a rotated dot screen
    halftone_period: tuple[float, float] = _range((3.0, 8.0), 2.0, 64.0)  # screen period, px
    # Ageing of the print (ageing.py), applied after the defects in this fixed order.
    p_stains: float = _prob(0.1)  # water stains: a darker blotch with a tide line
    p_mould: float = _prob(0.05)  # clusters of small fuzzy spots
    p_silvering: float = _prob(0.05)  # mirror-like sheen lifting the darks towards the edges
    p_fade: float = _prob(0.6)
    fade_black: tuple[float, float] = _range((0.0, 0.3), 0.0, 1.0)  # new black point
    fade_white: tuple[float, float] = _range((0.65, 1.0), 0.0, 1.0)  # new white point (yellowing dims it)
    fade_curve: tuple[float, float] = _range((0.6, 1.6), 0.1, 10.0)  # exponent of the tone curve (1: linear)
    p_cast: float = _prob(0.9)  # hue only: luminance-neutral, see ageing.colour_cast
    cast_strength: tuple[float, float] = _range((0.3, 1.0), 0.0, 1.0)
    p_vignette: float = _prob(0.4)
    vignette_strength: tuple[float, float] = _range((0.1, 0.5), 0.0, 1.0)  # darkening at the corners
    p_paper: float = _prob(0.4)
    paper_strength: tuple[float, float] = _range((0.02, 0.08), 0.0, 1.0)  # std of the texture gain

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f.name, getattr(self, f.name), f.metadata)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (pairs become lists), e.g. for a checkpoint."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DegradationConfig:
        """Build from a (partial) dict such as parsed JSON; unknown keys are an error, not ignored."""
        reject_unknown_keys(data, cls, "degradation config")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


DEFAULT_CONFIG = DegradationConfig()
