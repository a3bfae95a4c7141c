"""Generated videos: stretches of moving shapes, written with the ffmpeg imageio-ffmpeg ships.

The sample, the tests and the benchmark need videos whose content is known frame by frame, such
as a red circle that shows only between seconds 4 and 8, to check that keyframes chosen for "a
red circle" come from that stretch. Shapes come from :mod:`refinery.multimodal.synthetic`, so
the project's tiny CLIP recognises them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refinery.multimodal import synthetic

CODECS = {".mp4": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx"}


@dataclass(frozen=True)
class Stretch:
    """``seconds`` of video showing ``count`` moving shapes (none when ``shape`` is None)."""

    seconds: float
    colour: str | None = None
    shape: str | None = None
    count: int = 1


def stretch_frames(
    stretch: Stretch, background: np.ndarray, fps: float, width: int, height: int, rng: random.Random
) -> Iterator[np.ndarray]:
    n = max(1, round(stretch.seconds * fps))
    objects = []
    if stretch.shape and stretch.colour:
        scene = synthetic.random_scene(rng, colour=stretch.colour, shape=stretch.shape, count=stretch.count)
        for obj in scene.objects:
            dx, dy = rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1)
            objects.append((obj, dx, dy))
    for i in range(n):
        t = i / max(1, n - 1) - 0.5
        moved = [
            synthetic.Shape(
                o.shape,
                o.colour,
                min(max(o.cx + dx * t, o.r), 1 - o.r),
                min(max(o.cy + dy * t, o.r), 1 - o.r),
                o.r,
                o.angle + t * 0.5,
            )
            for o, dx, dy in objects
        ]
        yield np.asarray(synthetic.render_objects(background, moved, width, height))


def video_frames(
    stretches: list[Stretch], fps: float, width: int, height: int, seed: int, background: str | None = None
) -> Iterator[np.ndarray]:
    """Frames of the stretches in order, on one background for the whole video."""
    rng = random.Random(seed)
    base = synthetic.draw_background(synthetic.random_background(rng, background), width, height)
    for stretch in stretches:
        yield from stretch_frames(stretch, base, fps, width, height, rng)


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, width: int, height: int) -> Path:
    """Encode RGB frames; the codec follows the suffix (H.264 for .mp4/.mkv, MPEG-4 .avi, VP8 .webm)."""
    import imageio_ffmpeg

    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no codec for {path.suffix!r}; use one of {sorted(CODECS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec=codec, macro_block_size=8, ffmpeg_log_level="error"
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    finally:
        writer.close()
    return path


def write_stretches(
    path: Path,
    stretches: list[Stretch],
    fps: float = 10,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    background: str | None = None,
) -> Path:
    return write_video(
        path, video_frames(stretches, fps, width, height, seed, background), fps, width, height
    )
