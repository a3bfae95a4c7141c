"""The inbox kinds: one record each, what every layer needs to know about a kind.

A kind is a folder of the inbox (``inbox/<kind>/<source>/``), the dynamic partitions its sources
become, the Dagster group its stages form, the job that takes one source from raw input to its last
asset, and its stages in order (``refinery/stages/<kind>.py``'s ``STAGES``; the first is the ingest
stage the inbox sensor requests). This module stays light (the CLI reads it at start); the stage
list is imported when first asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from refinery import names

if TYPE_CHECKING:
    from refinery.kernel.spec import StageSpec


@dataclass(frozen=True)
class InboxKind:
    name: str  # the inbox folder and the specs' ``kind``: text, sft, image_text, video
    partitions: str  # the dynamic partitions, one per source folder
    job: str  # the job from the inbox to the kind's last asset

    @property
    def group(self) -> str:
        """The Dagster group of its stages: named after the kind."""
        return self.name

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        """Its stage specs in pipeline order (``refinery/stages/<kind>.py``)."""
        return importlib.import_module(f"refinery.stages.{self.name}").STAGES

    @property
    def raw(self) -> str:
        """Its ingest stage, the asset the inbox sensor requests when a source's files change."""
        return self.stages[0].name


KINDS: dict[str, InboxKind] = {
    kind.name: kind
    for kind in (
        InboxKind("text", "text_source", names.TEXT_PIPELINE_JOB),
        InboxKind("sft", "sft_source", names.SFT_PIPELINE_JOB),
        InboxKind("image_text", "image_text_source", names.IMAGE_TEXT_PIPELINE_JOB),
        InboxKind("video", "video_source", names.VIDEO_PIPELINE_JOB),
    )
}
