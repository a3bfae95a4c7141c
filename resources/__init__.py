"""Dagster resources: where data lives, and the shared dedup indexes."""

from resources.dedup_index import DedupIndexResource
from resources.home import RefineryHome

__all__ = ["DedupIndexResource", "RefineryHome"]
