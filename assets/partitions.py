"""Partitions: one per source folder of each inbox kind, added by the inbox sensor."""

import dagster as dg

text_source = dg.DynamicPartitionsDefinition(name="text_source")

PARTITIONS_BY_KIND = {"text": text_source}
