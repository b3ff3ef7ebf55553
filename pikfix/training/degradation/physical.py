"""Physical damage to the print: scratches, cracks and crack networks, crazing, dust, tears,
holes, flaking, paper showing through, creases and folds.

Each operation ``op(img, rng, cfg, win)`` returns (damaged image, mask); the mask is 1 where the
picture's content was destroyed, which the restoration sub-net learns to detect and repair.
Sizes follow the scan (``win.scale``), positions are drawn where they meet the window.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from pikfix.training.degradation.common import (
    Canvas,
    Masked,
    Window,
    bezier,
    blend,
    blur,
    defect_look,
    draw_stroke,
    near_window,
    randint,
    uniform,
    unit,
    value_noise,
    window_of,
)
from pikfix.training.degradation.config import DEFAULT_CONFIG, DegradationConfig


def add_scratches(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Long smooth scratches: quadratic or cubic Bezier strokes of varying width and brightness."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    canvas = Canvas(h, w)
    for _ in range(randint(rng, cfg.scratch_count)):
        length = uniform(rng, cfg.scratch_length) * win.long_side
        direction = unit(rng.uniform(0.0, 2 * math.pi))
        # The scratch passes through a point of the window at a random place along its length.
        start = near_window(rng, h, w) - direction * length * rng.random()
        normal = np.array([-direction[1], direction[0]])
        inner = [start + direction * length * t + normal * rng.normal(0.0, 0.1 * length) for t in (0.33, 0.67)]
        control = np.array([start, *inner[: int(rng.integers(1, 3))], start + direction * length])
        points = bezier(control, max(8, min(2000, int(length / 3))))
        draw_stroke(canvas, points, uniform(rng, cfg.scratch_width) * win.scale, rng, cfg)
    return canvas.apply(img)


def _crack_path(rng: np.random.Generator, start: np.ndarray, angle: float, length: float, step: float) -> np.ndarray:
    """A jagged random walk: the heading wanders a little at every step, like a crack in emulsion."""
    n = max(2, min(4000, int(length / step)))
    headings = angle + np.cumsum(rng.normal(0.0, 0.35, n))
    steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * (length / n)
    return start + np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def _heading(path: np.ndarray, i: int) -> float:
    dx, dy = path[i + 1] - path[i]
    return math.atan2(dy, dx)


def add_cracks(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Jagged cracks (random-walk polylines), some with side branches."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    step = max(2.0, 4.0 * win.scale)
    canvas = Canvas(h, w)
    for _ in range(randint(rng, cfg.crack_count)):
        length = uniform(rng, cfg.crack_length) * win.long_side
        width = uniform(rng, cfg.crack_width) * win.scale
        angle = rng.uniform(0.0, 2 * math.pi)
        start = near_window(rng, h, w) - unit(angle) * length * rng.random()
        path = _crack_path(rng, start, angle, length, step)
        draw_stroke(canvas, path, width, rng, cfg)
        if rng.random() < cfg.crack_branch_prob:
            for _ in range(int(rng.integers(1, 4))):
                i = int(rng.integers(0, len(path) - 1))
                turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.2)
                branch = _crack_path(rng, path[i], _heading(path, i) + turn, length * rng.uniform(0.2, 0.5), step)
                draw_stroke(canvas, branch, 0.7 * width, rng, cfg)
    return canvas.apply(img)


def add_crack_network(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """A branching tree of cracks that runs across the picture (faces included), thinning as it
    branches, as where a print was bent or its emulsion dried out."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    step = max(2.0, 3.0 * win.scale)
    canvas = Canvas(h, w)
    opacity, level = defect_look(rng, cfg)
    length = rng.uniform(0.3, 0.8) * win.long_side
    angle = rng.uniform(0.0, 2 * math.pi)
    start = near_window(rng, h, w) - unit(angle) * length * rng.uniform(0.2, 0.6)
    stack = [(start, angle, length, uniform(rng, cfg.crack_width) * win.scale * 1.3, randint(rng, cfg.network_depth))]
    while stack:
        origin, heading, size, width, depth = stack.pop()
        path = _crack_path(rng, origin, heading, size, step)
        piece = max(width, 0.3)
        canvas.line(path, max(1, round(piece)), opacity * min(1.0, piece), level)
        if depth > 0:
            for _ in range(int(rng.integers(2, 5))):
                i = int(rng.integers(0, len(path) - 1))
                turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.3)
                stack.append((path[i], _heading(path, i) + turn, size * rng.uniform(0.3, 0.6), width * 0.7, depth - 1))
    return canvas.apply(img)


def add_crazing(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Crazing: a net of fine cracks around irregular cells (the edges of a jittered Voronoi
    diagram), over a soft-edged region of the picture."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    cell = max(4.0, uniform(rng, cfg.crazing_cell) * win.scale)
    width = max(0.5, rng.uniform(0.1, 0.3) * win.scale)
    gy, gx = math.ceil(h / cell) + 2, math.ceil(w / cell) + 2
    seeds = (np.stack(np.mgrid[-1 : gy - 1, -1 : gx - 1], axis=-1) + rng.random((gy, gx, 2))) * cell  # (y, x)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    iy, ix = (y / cell).astype(int) + 1, (x / cell).astype(int) + 1
    distances = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            s = seeds[np.clip(iy + dy, 0, gy - 1), np.clip(ix + dx, 0, gx - 1)]
            distances.append(np.hypot(s[..., 0] - y, s[..., 1] - x))
    d = np.sort(np.stack(distances), axis=0)
    edge = np.clip(1.0 - (d[1] - d[0]) / (2.0 * width), 0.0, 1.0)  # 1 on the cell border
    region = np.clip(value_noise(h, w, max(h, w) * 0.7, rng, octaves=2) + rng.uniform(-0.5, 1.5), 0.0, 1.0)
    opacity, level = defect_look(rng, cfg)
    return blend(img, (edge * region * opacity).astype(np.float32), level)


def add_noise_cracks(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Texture-like crack masks: the zero crossings of a smooth noise field form winding,
    connected lines (as in the crack textures of Bringing Old Photos Back to Life)."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    field = value_noise(h, w, rng.uniform(10.0, 40.0) * win.scale, rng, octaves=3)
    gy, gx = np.gradient(field)
    slope = np.hypot(gy, gx) + 1e-3
    width = max(0.5, uniform(rng, cfg.crack_width) * win.scale * 0.5)
    line = np.clip(1.0 - np.abs(field) / slope / width, 0.0, 1.0)  # distance to the zero line, px
    keep = value_noise(h, w, max(h, w) * 0.5, rng, octaves=1) > rng.uniform(-0.5, 0.8)  # only some lines
    opacity, level = defect_look(rng, cfg)
    return blend(img, (line * keep * opacity).astype(np.float32), level)


def add_dust(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Dust specks and spots: small ellipses, ``dust_count`` per 256 x 256 px of the window."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    count = round(randint(rng, cfg.dust_count) * h * w / 256**2)
    lo, hi = cfg.dust_radius
    canvas = Canvas(h, w)
    for _ in range(count):
        cx, cy = near_window(rng, h, w)
        # Cubing a uniform number makes most specks tiny and a few of them real spots.
        rx = (lo + (hi - lo) * rng.random() ** 3) * win.scale
        ry = rx * rng.uniform(0.6, 1.4)
        opacity, level = defect_look(rng, cfg)
        # A speck smaller than a pixel is one faint pixel.
        rx, ry, opacity = max(rx, 0.5), max(ry, 0.5), opacity * min(1.0, 2 * rx)
        canvas.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), opacity, level)
    return canvas.apply(img)


def _tear_polygon(rng: np.random.Generator, depth_limit: float) -> np.ndarray:
    """A torn region in unit coordinates at the top-left corner or along the top edge.

    Vertices sit slightly outside the unit square so the tear reaches the border cleanly;
    ``depth_limit`` is the border band it should stay within (the caller clips anyway).
    """
    if rng.random() < 0.5:  # torn corner: a jagged cut from the top edge to the left edge
        a, b = rng.uniform(0.04, depth_limit, size=2)
        t = np.linspace(0.0, 1.0, 12)[1:-1]
        cut = np.stack([a * (1 - t), b * t], axis=1) + rng.normal(0.0, 0.012, (len(t), 2))
        return np.vstack([[-0.01, -0.01], [a, -0.01], cut, [-0.01, b]])
    length = rng.uniform(0.05, 0.25)
    depth = rng.uniform(0.02, min(0.1, depth_limit))
    x0 = rng.uniform(0.0, 1.0 - length)
    t = np.linspace(0.0, 1.0, 14)
    inward = depth * np.sin(math.pi * t) ** 0.7 + rng.normal(0.0, 0.15 * depth, len(t))
    cut = np.stack([x0 + length * t, np.clip(inward, -0.01, None)], axis=1)
    return np.vstack([[x0, -0.01], cut, [x0 + length, -0.01]])


def add_tears(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Torn corners and missing border pieces of the scan, filled pure white as Pik-Fix does.

    The centred box of ``tear_protect_centre`` (fraction of each side) is never touched, and a
    tear that would push the total area to ``tear_max_area`` or beyond is skipped, so the photo's
    subject survives as in the paper's recipe. In a window, only the part of a tear inside it shows.
    """
    h, w = img.shape[:2]
    win = window_of(img, win)
    sh, sw = win.scan_h, win.scan_w
    band = (1.0 - cfg.tear_protect_centre) / 2
    budget = cfg.tear_max_area * sh * sw
    # Tears are drawn on a coarse copy of the whole scan (at most 512 px), then cut to the window.
    coarse = min(1.0, 512 / max(sh, sw))
    ch, cw = max(1, round(sh * coarse)), max(1, round(sw * coarse))
    y0, y1, x0, x1 = round(band * ch), round((1 - band) * ch), round(band * cw), round((1 - band) * cw)
    torn = np.zeros((ch, cw), dtype=bool)
    for _ in range(randint(rng, cfg.tear_count)):
        # Place the canonical tear at any corner/edge by one of the 8 symmetries of the square.
        uv = _tear_polygon(rng, max(band, 0.05))
        if rng.random() < 0.5:
            uv = uv[:, ::-1]
        uv = np.where(rng.random(2) < 0.5, 1.0 - uv, uv)
        layer = Image.new("1", (cw, ch), 0)
        ImageDraw.Draw(layer).polygon([(u * cw, v * ch) for u, v in uv.tolist()], fill=1)
        candidate = torn | np.asarray(layer, dtype=bool)
        candidate[y0:y1, x0:x1] = False
        if candidate.sum() < budget * coarse * coarse:
            torn = candidate
    if coarse < 1.0 or (h, w) != (sh, sw):
        ys = np.clip(((np.arange(h) + win.top) * coarse).astype(int), 0, ch - 1)
        xs = np.clip(((np.arange(w) + win.left) * coarse).astype(int), 0, cw - 1)
        torn = torn[ys][:, xs]
    out = np.where(torn[..., None], np.float32(1.0), img)
    return out, torn.astype(np.float32)


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float, n: int = 16) -> np.ndarray:
    """An irregular closed polygon around ``centre``: a circle with random radial wobble."""
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, n))
    radii = radius * rng.uniform(0.5, 1.3, n)
    return centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]


def add_holes(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Interior holes and missing patches: irregular blobs of white paper, dark backing or grey."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    canvas = Canvas(h, w)
    for _ in range(randint(rng, cfg.hole_count)):
        radius = max(1.0, uniform(rng, cfg.hole_radius) * win.scale)
        level = float(rng.choice([rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.15), rng.uniform(0.4, 0.7)]))
        canvas.polygon(_blob(rng, near_window(rng, h, w), radius), 1.0, level)
    return canvas.apply(img)


def add_flaking(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Emulsion flaking: sharp-edged bright patches, many small pieces in one area."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    detail = value_noise(h, w, rng.uniform(2.0, 8.0) * win.scale, rng, octaves=2)
    area = value_noise(h, w, max(h, w) * rng.uniform(0.3, 0.8), rng, octaves=1)
    flakes = ((detail > rng.uniform(0.6, 1.4)) & (area > rng.uniform(-0.3, 0.7))).astype(np.float32)
    paper = rng.uniform(0.75, 0.95) + 0.03 * value_noise(h, w, 3.0, rng, octaves=1)
    return blend(img, flakes, paper)


def add_paper_mask(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Blotches where the picture is gone and textured paper shows (a noise-field mask with soft
    edges, filled with fibrous paper), as in worn or abraded prints."""
    h, w = img.shape[:2]
    win = window_of(img, win)
    field = value_noise(h, w, rng.uniform(8.0, 30.0) * win.scale, rng, octaves=3)
    threshold = rng.uniform(0.8, 1.6)
    alpha = np.clip((field - threshold) * 4.0, 0.0, 1.0).astype(np.float32)
    paper = rng.uniform(0.6, 0.95) + 0.06 * value_noise(h, w, max(1.5, 0.5 * win.scale), rng, octaves=2)
    return blend(img, alpha, paper)


def add_creases(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """Creases: a long, slightly bent line across the window with a light edge beside a dark one."""
    h, w = img.shape[:2]
    scale = window_of(img, win).scale
    field_img = Image.new("F", (w, h), 0.0)
    draw = ImageDraw.Draw(field_img)
    for _ in range(randint(rng, cfg.crease_count)):
        ends = _line_across(rng, h, w)
        direction = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
        normal = np.array([-direction[1], direction[0]])
        bend = ends.mean(axis=0) + normal * rng.normal(0.0, 0.03 * max(h, w))
        points = bezier(np.array([ends[0], bend, ends[1]]), 64)
        width = max(1.0, uniform(rng, cfg.crease_width) * scale)
        strength = uniform(rng, cfg.crease_strength)
        side = rng.choice([-1.0, 1.0])  # which edge catches the light
        for sign in (side, -side):
            offset = points + normal * sign * 0.5 * width
            draw.line([tuple(p) for p in offset.tolist()], fill=float(sign * strength), width=round(width))
    edges = np.asarray(field_img)
    mask = (edges != 0).astype(np.float32)
    out = img + blur(edges, max(0.5, 0.5 * scale))[..., None]  # soften the drawn edges
    return np.clip(out, 0.0, 1.0), mask


def _line_across(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """End points of a line from one edge of an h x w image to the opposite one."""
    if rng.random() < 0.5:  # left edge to right edge
        return np.array([[0.0, rng.uniform(0.1, 0.9) * h], [w, rng.uniform(0.1, 0.9) * h]])
    return np.array([[rng.uniform(0.1, 0.9) * w, 0.0], [rng.uniform(0.1, 0.9) * w, h]])


def add_folds(
    img: np.ndarray, rng: np.random.Generator, cfg: DegradationConfig = DEFAULT_CONFIG, win: Window | None = None
) -> Masked:
    """A fold: one side of a straight line shifted in tone, and the emulsion broken along the line
    (bright, ragged pieces), as on a photo once folded in two."""
    h, w = img.shape[:2]
    scale = window_of(img, win).scale
    ends = _line_across(rng, h, w)
    direction = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    side = (x - ends[0][0]) * direction[1] - (y - ends[0][1]) * direction[0]  # signed distance, px
    step = rng.uniform(-0.06, 0.06) * np.clip(side / max(2.0, 4.0 * scale), -1.0, 1.0)
    out = np.clip(img + step[..., None], 0.0, 1.0).astype(np.float32)
    canvas = Canvas(h, w)
    points = ends[0] + (ends[1] - ends[0]) * np.linspace(0.0, 1.0, 200)[:, None]
    points += rng.normal(0.0, 0.3 * scale, points.shape)
    keep = value_noise(1, len(points), 12.0, rng, octaves=1)[0] > rng.uniform(-0.8, 0.5)
    opacity, level = defect_look(rng, cfg)
    width = max(1.0, uniform(rng, cfg.crack_width) * scale)
    for i in np.flatnonzero(keep[:-1] & keep[1:]):
        canvas.line(points[i : i + 2], round(width), opacity, level)
    return canvas.apply(out)
