"""Every bundled sample, in the order the demo runs them, written where the inbox lacks one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from refinery.paths import Layout


def sample_builders() -> list[tuple[str, Callable[[Path, int], object]]]:
    """(inbox kind, builder(folder, seed)) for every bundled sample."""
    from refinery.sample.multimodal_sample import build_image_text_sample, build_video_sample
    from refinery.sample.reference_sample import build_reference_sample
    from refinery.sample.sft_sample import build_sft_sample
    from refinery.sample.target_sample import build_target_sample
    from refinery.sample.text_sample import build_text_sample

    return [
        ("text", build_text_sample),
        ("reference", build_reference_sample),
        ("target", lambda folder, seed: build_target_sample(folder, seed=seed)),
        ("sft", build_sft_sample),
        ("image_text", build_image_text_sample),
        ("video", build_video_sample),
    ]


def write_missing_samples(layout: Layout, seed: int) -> list[tuple[str, Path]]:
    """Write each kind's bundled sample into an empty or missing inbox folder; returns what was
    written, so a user's own data is never overwritten."""
    written = []
    for kind, build in sample_builders():
        folder = layout.inbox_kind(kind)
        if not folder.is_dir() or not any(folder.iterdir()):
            build(folder, seed=seed)
            written.append((kind, folder))
    return written


def text_source_order(layout: Layout) -> list[str]:
    """The sample's canonical text sources first (dedup keeps the first copy it sees: news before
    forum reposts), then any other source in the inbox, sorted."""
    from refinery.sample.text_sample import SOURCES

    folder = layout.inbox_kind("text")
    present = {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
    return [s for s in SOURCES if s in present] + sorted(present - set(SOURCES))
