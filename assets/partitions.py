"""Partitions: one per source folder of each inbox kind, added by the inbox sensor."""

import dagster as dg

from refinery.kinds import KINDS

_PARTITIONS = {name: dg.DynamicPartitionsDefinition(name=kind.partitions) for name, kind in KINDS.items()}


def partitions_of(kind: str) -> dg.DynamicPartitionsDefinition:
    """The dynamic partitions of an inbox kind (``text`` -> ``text_source``)."""
    return _PARTITIONS[kind]


text_source = partitions_of("text")
sft_source = partitions_of("sft")
image_text_source = partitions_of("image_text")
video_source = partitions_of("video")
