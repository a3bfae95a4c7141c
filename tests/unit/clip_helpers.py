"""A CLIP small enough to build in a test, and generated scene JPEGs for it to score."""

from __future__ import annotations

import io
import random

from refinery.multimodal import synthetic
from refinery.multimodal.tiny_clip_train import TinyClipConfig

SMALL = TinyClipConfig(
    embed_dim=32,
    vision_width=32,
    vision_head_width=16,
    text_width=32,
    text_heads=2,
    train_images=48,
    eval_images=24,
    batch_size=16,
    steps=2,
    warmup_steps=1,
    seed=3,
)


def jpeg(seed: int, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    synthetic.render(synthetic.random_scene(random.Random(seed)), size).save(buffer, "JPEG")
    return buffer.getvalue()
