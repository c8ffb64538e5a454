"""A procedural text-to-video "mini world".

Every clip shows one flat shape of one colour on a plain background, moving in a
straight line in one direction.  A clip is fully described by a :class:`ClipParams`;
its caption ("a red circle moves to the right") is generated from those parameters,
and the frames are rendered from them, so the world is deterministic per seed and
its captions can be checked against the pixels (see :mod:`finetune.scorer`).

The "simple world" is the default :class:`WorldConfig`: black background, three
colours, two shapes, four directions -> 24 captions.  The world is enlarged by
passing another config (more colours, backgrounds, ...); when a config has more
than one background, captions say which one ("... on a white background").
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

RGB = tuple[int, int, int]

DEFAULT_COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
}
DEFAULT_BACKGROUNDS: dict[str, RGB] = {"black": (0, 0, 0)}

# Unit motion vectors in image coordinates (x to the right, y downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
DIRECTION_PHRASES: dict[str, str] = {
    "left": "to the left",
    "right": "to the right",
    "up": "up",
    "down": "down",
}
# Area of the shape divided by the area of its axis-aligned bounding box; the
# scorer tells shapes apart by this ratio.
SHAPE_FILL: dict[str, float] = {"circle": math.pi / 4, "square": 1.0}

MARGIN = 1.0  # pixels kept free between the object and the frame edge


@dataclass(frozen=True)
class WorldConfig:
    colours: dict[str, RGB] = field(default_factory=lambda: dict(DEFAULT_COLOURS))
    shapes: tuple[str, ...] = ("circle", "square")
    directions: tuple[str, ...] = ("left", "right", "up", "down")
    backgrounds: dict[str, RGB] = field(default_factory=lambda: dict(DEFAULT_BACKGROUNDS))
    radius_range: tuple[float, float] = (28.0, 36.0)  # circle radius / square half-side
    distance_range: tuple[float, float] = (24.0, 40.0)  # centre travel over the clip
    frames: int = 17
    size: int = 128

    def __post_init__(self):
        if not self.colours or not self.shapes or not self.directions or not self.backgrounds:
            raise ValueError("WorldConfig needs at least one colour, shape, direction and background")
        for name in self.shapes:
            if name not in SHAPE_FILL:
                raise ValueError(f"unknown shape {name!r}; renderable shapes: {', '.join(SHAPE_FILL)}")
        for name in self.directions:
            if name not in DIRECTION_VECTORS:
                raise ValueError(f"unknown direction {name!r}; known: {', '.join(DIRECTION_VECTORS)}")
        for name in list(self.colours) + list(self.backgrounds):
            if not re.fullmatch(r"[a-z]+", name):
                raise ValueError(f"colour/background names must be single lowercase words, got {name!r}")
        r_lo, r_hi = self.radius_range
        d_lo, d_hi = self.distance_range
        if not (0 < r_lo <= r_hi and 0 <= d_lo <= d_hi and self.frames >= 2):
            raise ValueError("bad radius_range / distance_range / frames")
        if 2 * (r_hi + MARGIN) + d_hi > self.size:
            raise ValueError("largest object plus its travel does not fit in the frame")


@dataclass(frozen=True)
class ClipParams:
    colour: str
    shape: str
    direction: str
    background: str
    radius: float  # circle radius or square half-side, pixels
    x0: float  # centre at the first frame, pixels (frame spans [0, size])
    y0: float
    distance: float  # centre travel from first to last frame, pixels


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(params: ClipParams, config: WorldConfig | None = None) -> str:
    """"a red circle moves to the right" (+ " on a white background" when the
    config has several backgrounds)."""
    config = config or WorldConfig()
    text = (f"{_article(params.colour)} {params.colour} {params.shape} moves "
            f"{DIRECTION_PHRASES[params.direction]}")
    if len(config.backgrounds) > 1:
        text += f" on {_article(params.background)} {params.background} background"
    return text


_CAPTION_RE = re.compile(
    r"an? (?P<colour>\w+) (?P<shape>\w+) moves (?P<phrase>to the left|to the right|up|down)"
    r"(?: on an? (?P<background>\w+) background)?")


def parse_caption(text: str, config: WorldConfig | None = None) -> dict[str, str | None]:
    """Attributes named by a caption: colour, shape, direction, background (None
    when the caption does not name one).  ValueError for a caption outside the world."""
    config = config or WorldConfig()
    norm = " ".join(text.strip().lower().rstrip(".").split())
    m = _CAPTION_RE.fullmatch(norm)
    if m is None:
        raise ValueError(f"caption {text!r} is not of the form 'a <colour> <shape> moves "
                         f"<to the left|to the right|up|down>[ on a <background> background]'")
    direction = {v: k for k, v in DIRECTION_PHRASES.items()}[m["phrase"]]
    checks = [("colour", m["colour"], list(config.colours)), ("shape", m["shape"], list(config.shapes)),
              ("direction", direction, list(config.directions))]
    if m["background"] is not None:
        checks.append(("background", m["background"], list(config.backgrounds)))
    for what, value, known in checks:
        if value not in known:
            raise ValueError(f"caption {text!r}: {what} {value!r} is outside the world "
                             f"(known: {', '.join(known)})")
    return {"colour": m["colour"], "shape": m["shape"], "direction": direction,
            "background": m["background"]}


def _draw_geometry(rng: np.random.Generator, config: WorldConfig, direction: str):
    radius = float(rng.uniform(*config.radius_range))
    distance = float(rng.uniform(*config.distance_range))
    lo, hi = radius + MARGIN, config.size - radius - MARGIN
    dx, dy = DIRECTION_VECTORS[direction]
    starts = []
    for d in (dx, dy):  # along the motion axis leave room for the travel
        a, b = (lo, hi - distance) if d > 0 else (lo + distance, hi) if d < 0 else (lo, hi)
        starts.append(float(rng.uniform(a, b)))
    return radius, starts[0], starts[1], distance


def sample_params(rng: np.random.Generator, config: WorldConfig | None = None) -> ClipParams:
    config = config or WorldConfig()
    pick = lambda names: str(names[rng.integers(len(names))])  # noqa: E731
    colour, shape = pick(list(config.colours)), pick(list(config.shapes))
    direction, background = pick(list(config.directions)), pick(list(config.backgrounds))
    radius, x0, y0, distance = _draw_geometry(rng, config, direction)
    return ClipParams(colour, shape, direction, background, radius, x0, y0, distance)


def params_from_caption(text: str, rng: np.random.Generator,
                        config: WorldConfig | None = None) -> ClipParams:
    """Parameters matching a caption; what it does not name is drawn from rng."""
    config = config or WorldConfig()
    attrs = parse_caption(text, config)
    background = attrs["background"]
    if background is None:
        names = list(config.backgrounds)
        background = str(names[rng.integers(len(names))])
    radius, x0, y0, distance = _draw_geometry(rng, config, attrs["direction"])
    return ClipParams(attrs["colour"], attrs["shape"], attrs["direction"], background,
                      radius, x0, y0, distance)


def trajectory(params: ClipParams, config: WorldConfig | None = None) -> np.ndarray:
    """(T, 2) object centres (x, y) in pixels, moving linearly."""
    config = config or WorldConfig()
    t = np.linspace(0.0, 1.0, config.frames)[:, None]
    dx, dy = DIRECTION_VECTORS[params.direction]
    return np.array([params.x0, params.y0]) + t * params.distance * np.array([dx, dy], float)


def _coverage(shape: str, rx: np.ndarray, ry: np.ndarray, radius: float) -> np.ndarray:
    """Approximate pixel coverage (0..1) given pixel-centre offsets from the centre."""
    if shape == "circle":
        return np.clip(radius + 0.5 - np.hypot(rx, ry), 0, 1)
    if shape == "square":  # exact box-filter coverage of an axis-aligned square
        return np.clip(radius + 0.5 - np.abs(rx), 0, 1) * np.clip(radius + 0.5 - np.abs(ry), 0, 1)
    raise ValueError(f"no renderer for shape {shape!r}")


def render(params: ClipParams, config: WorldConfig | None = None) -> np.ndarray:
    """uint8 array (frames, size, size, 3), anti-aliased."""
    config = config or WorldConfig()
    centres = trajectory(params, config)
    centres = centres.astype(np.float32)
    grid = np.arange(config.size, dtype=np.float32) + np.float32(0.5)  # pixel centres
    rx = grid[None, None, :] - centres[:, 0, None, None]
    ry = grid[None, :, None] - centres[:, 1, None, None]
    alpha = _coverage(params.shape, rx, ry, np.float32(params.radius))[..., None]
    fg = np.asarray(config.colours[params.colour], np.float32)
    bg = np.asarray(config.backgrounds[params.background], np.float32)
    return np.rint(bg + alpha * (fg - bg)).astype(np.uint8)


def make_clip(seed: int, config: WorldConfig | None = None):
    """(frames, caption, params), deterministic per seed."""
    config = config or WorldConfig()
    params = sample_params(np.random.default_rng(seed), config)
    return render(params, config), caption(params, config), params


def all_captions(config: WorldConfig | None = None) -> list[str]:
    config = config or WorldConfig()
    return [caption(ClipParams(c, s, d, b, 0.0, 0.0, 0.0, 0.0), config)
            for b in config.backgrounds for c in config.colours
            for s in config.shapes for d in config.directions]


def vocabulary(config: WorldConfig | None = None) -> list[str]:
    """Sorted list of the words captions use."""
    return sorted({w for text in all_captions(config) for w in text.split()})


def degrade(frames: np.ndarray, rng: np.random.Generator, noise_std: float = 12.0,
            blur: int = 3) -> np.ndarray:
    """Add N(0, noise_std) noise then a blur x blur box blur (edge-padded); uint8 out.
    A stand-in for the imperfections of generated clips."""
    x = frames.astype(np.float32) + np.float32(noise_std) * rng.standard_normal(frames.shape, np.float32)
    if blur > 1:  # separable: average `blur` shifted copies along y, then along x
        p = blur // 2
        h, w = x.shape[1:3]
        padded = np.pad(x, ((0, 0), (p, blur - 1 - p), (0, 0), (0, 0)), mode="edge")
        x = sum(padded[:, i:i + h] for i in range(blur)) / blur
        padded = np.pad(x, ((0, 0), (0, 0), (p, blur - 1 - p), (0, 0)), mode="edge")
        x = sum(padded[:, :, j:j + w] for j in range(blur)) / blur
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
