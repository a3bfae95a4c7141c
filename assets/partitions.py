"""Partitions: one per source folder of each inbox kind, added by the inbox sensor."""

import dagster as dg

text_source = dg.DynamicPartitionsDefinition(name="text_source")
sft_source = dg.DynamicPartitionsDefinition(name="sft_source")
image_text_source = dg.DynamicPartitionsDefinition(name="image_text_source")
video_source = dg.DynamicPartitionsDefinition(name="video_source")

PARTITIONS_BY_KIND = {
    "text": text_source,
    "sft": sft_source,
    "image_text": image_text_source,
    "video": video_source,
}
