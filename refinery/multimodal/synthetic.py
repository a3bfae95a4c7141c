"""Generated scenes with captions: coloured shapes, counts and positions on varied backgrounds.

No pretrained CLIP weights can be had offline, so the project trains its own small CLIP on these
scenes (``refinery.multimodal.tiny_clip_train``), and the bundled sample, the tests and the
benchmarks draw their images and video frames from the same renderer. A caption describes a
scene's colour, shape and count, and optionally the position of a single object and the kind of
background; :func:`describes` says whether a caption's claims hold for a scene, which training
uses to avoid pushing apart pairs that are in fact matched, and evaluation uses to draw captions
that really are mismatched.

Everything is drawn from a ``random.Random`` the caller seeds, so scenes are reproducible.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 205, 35),
    "purple": (140, 55, 180),
    "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COUNT_WORDS = {2: "two", 3: "three"}
POSITIONS = ("left", "right", "top", "bottom", "center")
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
BACKGROUNDS = ("plain", "gradient", "noise", "stripes", "checker")
BACKGROUND_WORDS = {
    "plain": "plain",
    "gradient": "gradient",
    "noise": "noisy",
    "stripes": "striped",
    "checker": "checkered",
}
TEMPLATES = (
    "{subject}",
    "a photo of {subject}",
    "an image of {subject}",
    "a picture of {subject}",
    "a drawing of {subject}",
    "{subject} in the picture",
)
# Muted background colours: low saturation, so every object colour stands out on them.
BACKGROUND_PALETTE = [
    (236, 236, 236),
    (200, 200, 200),
    (150, 150, 150),
    (95, 95, 95),
    (50, 50, 55),
    (225, 215, 195),
    (190, 205, 210),
    (200, 210, 190),
    (120, 110, 100),
    (80, 90, 100),
]


@dataclass(frozen=True)
class Background:
    kind: str
    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    seed: int
    vertical: bool = False
    period: float = 0.125  # stripes/checker cell size as a fraction of the short side


@dataclass(frozen=True)
class Shape:
    """One object: centre and radius as fractions of the width, height and short side."""

    shape: str
    colour: tuple[int, int, int]
    cx: float
    cy: float
    r: float
    angle: float = 0.0


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    count: int
    position: str | None  # where the single object sits; None for two or three (scattered)
    background: Background
    objects: tuple[Shape, ...] = field(default=())


@dataclass(frozen=True)
class Caption:
    text: str
    colour: str
    shape: str
    count: int
    position: str | None  # mentioned position, if any
    background: str | None  # mentioned background kind, if any


def random_background(rng: random.Random, kind: str | None = None) -> Background:
    kind = kind or rng.choice(BACKGROUNDS)
    first, second = rng.sample(BACKGROUND_PALETTE, 2)
    return Background(
        kind=kind,
        colours=(first, second),
        seed=rng.randrange(2**31),
        vertical=rng.random() < 0.5,
        period=rng.uniform(0.08, 0.2),
    )


def _place_single(rng: random.Random, position: str) -> tuple[float, float]:
    jitter = rng.uniform(-0.05, 0.05)
    along = rng.uniform(0.38, 0.62)
    if position == "left":
        return 0.24 + jitter, along
    if position == "right":
        return 0.76 + jitter, along
    if position == "top":
        return along, 0.24 + jitter
    if position == "bottom":
        return along, 0.76 + jitter
    return 0.5 + jitter / 2, 0.5 + rng.uniform(-0.025, 0.025)


def _place_many(rng: random.Random, count: int, r: float) -> list[tuple[float, float]]:
    """Non-overlapping centres anywhere in the frame (rejection sampling, then a grid fallback)."""
    for _ in range(200):
        centres = [
            (rng.uniform(r + 0.04, 1 - r - 0.04), rng.uniform(r + 0.04, 1 - r - 0.04)) for _ in range(count)
        ]
        if all(math.dist(a, b) > 2.3 * r for i, a in enumerate(centres) for b in centres[i + 1 :]):
            return centres
    return [((i + 0.5) / count, 0.5) for i in range(count)]


def jitter_colour(rng: random.Random, rgb: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def random_scene(
    rng: random.Random,
    colour: str | None = None,
    shape: str | None = None,
    count: int | None = None,
    position: str | None = None,
    background: str | None = None,
) -> Scene:
    """A scene with the given attributes, the others drawn at random."""
    colour = colour or rng.choice(list(COLOURS))
    shape = shape or rng.choice(SHAPES)
    count = count or rng.choice((1, 1, 2, 3))
    if count == 1:
        position = position or rng.choice(POSITIONS)
        r = rng.uniform(0.14, 0.2)
        centres = [_place_single(rng, position)]
    else:
        position = None
        r = rng.uniform(0.1, 0.13)
        centres = _place_many(rng, count, r)
    rgb = COLOURS[colour]
    objects = tuple(
        Shape(shape, jitter_colour(rng, rgb), cx, cy, r * rng.uniform(0.92, 1.08), rng.uniform(-0.3, 0.3))
        for cx, cy in centres
    )
    return Scene(colour, shape, count, position, random_background(rng, background), objects)


def subject_phrase(colour: str, shape: str, count: int) -> str:
    if count == 1:
        article = "an" if colour[0] in "aeiou" else "a"
        return f"{article} {colour} {shape}"
    return f"{COUNT_WORDS[count]} {colour} {PLURALS[shape]}"


def caption_for(
    scene: Scene,
    rng: random.Random,
    p_position: float = 0.5,
    p_background: float = 0.3,
) -> Caption:
    """A templated caption that is true of the scene (position and background sometimes said)."""
    text = subject_phrase(scene.colour, scene.shape, scene.count)
    position = scene.position if scene.position and rng.random() < p_position else None
    if position:
        text += " " + POSITION_PHRASES[position]
    background = scene.background.kind if rng.random() < p_background else None
    if background:
        text += f" on a {BACKGROUND_WORDS[background]} background"
    text = rng.choice(TEMPLATES).format(subject=text)
    return Caption(text, scene.colour, scene.shape, scene.count, position, background)


def describes(caption: Caption, scene: Scene) -> bool:
    """Whether every claim of the caption holds for the scene."""
    return (
        caption.colour == scene.colour
        and caption.shape == scene.shape
        and caption.count == scene.count
        and (caption.position is None or caption.position == scene.position)
        and (caption.background is None or caption.background == scene.background.kind)
    )


def mismatched_caption(scene: Scene, rng: random.Random, hard: bool = False) -> Caption:
    """A caption that is false of the scene: another random scene's (or, ``hard``, one attribute
    changed: colour, shape or count)."""
    for _ in range(100):
        if hard:
            change = rng.choice(("colour", "shape", "count"))
            other = random_scene(
                rng,
                colour=rng.choice([c for c in COLOURS if c != scene.colour])
                if change == "colour"
                else scene.colour,
                shape=rng.choice([s for s in SHAPES if s != scene.shape])
                if change == "shape"
                else scene.shape,
                count=rng.choice([n for n in (1, 2, 3) if n != scene.count])
                if change == "count"
                else scene.count,
            )
        else:
            other = random_scene(rng)
        cap = caption_for(other, rng)
        if not describes(cap, scene):
            return cap
    raise RuntimeError("could not draw a mismatched caption")  # pragma: no cover - 100 draws


# -- rendering ----------------------------------------------------------------------------------
def draw_background(bg: Background, width: int, height: int) -> np.ndarray:
    """An HxWx3 uint8 array."""
    first = np.array(bg.colours[0], dtype=np.float32)
    second = np.array(bg.colours[1], dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    short = min(width, height)
    if bg.kind == "plain":
        img = np.broadcast_to(first, (height, width, 3)).copy()
    elif bg.kind == "gradient":
        t = (ys / max(height - 1, 1)) if bg.vertical else (xs / max(width - 1, 1))
        img = first * (1 - t[..., None]) + second * t[..., None]
    elif bg.kind == "noise":
        noise = np.random.default_rng(bg.seed).normal(0, 22, (height, width, 1)).astype(np.float32)
        img = first + noise
    elif bg.kind == "stripes":
        cell = max(1.0, bg.period * short)
        band = ((ys if bg.vertical else xs) // cell).astype(int) % 2
        img = np.where(band[..., None] == 0, first, second)
    elif bg.kind == "checker":
        cell = max(1.0, bg.period * short)
        band = ((ys // cell).astype(int) + (xs // cell).astype(int)) % 2
        img = np.where(band[..., None] == 0, first, second)
    else:
        raise ValueError(f"unknown background kind {bg.kind!r}; choose from {BACKGROUNDS}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(shape: Shape, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape.shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        scale = r * 0.85
    elif shape.shape == "triangle":
        corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        scale = r * 1.1
    elif shape.shape == "cross":
        w = 0.36
        corners = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                   (-1, -w), (-w, -w)]  # fmt: skip
        scale = r
    else:
        raise ValueError(f"unknown shape {shape.shape!r}; choose from {SHAPES}")
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    return [(cx + scale * (x * cos - y * sin), cy + scale * (x * sin + y * cos)) for x, y in corners]


def render_objects(
    background: Background | np.ndarray, objects: tuple[Shape, ...] | list[Shape], width: int, height: int
) -> Image.Image:
    """Objects drawn on a background, supersampled twice for smooth edges."""
    from PIL import ImageDraw  # here: its fonts module costs ~0.1 s at every `import definitions`

    base = background if isinstance(background, np.ndarray) else draw_background(background, width, height)
    big = Image.fromarray(base).resize((width * 2, height * 2), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(big)
    short = 2 * min(width, height)
    for obj in objects:
        cx, cy, r = obj.cx * 2 * width, obj.cy * 2 * height, obj.r * short
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=obj.colour)
        else:
            draw.polygon(_polygon(obj, cx, cy, r), fill=obj.colour)
    return big.resize((width, height), Image.Resampling.LANCZOS)


def render(scene: Scene, width: int, height: int | None = None) -> Image.Image:
    return render_objects(scene.background, scene.objects, width, height or width)
