"""Dagster resources: where data lives, and the shared dedup indexes."""

from resources.clip import ClipResource
from resources.compute import ComputeResource
from resources.dedup_index import DedupIndexResource
from resources.embedder import EmbedderResource
from resources.home import RefineryHome
from resources.kenlm import KenLMResource
from resources.quality import QualityClassifierResource

__all__ = [
    "ClipResource",
    "ComputeResource",
    "DedupIndexResource",
    "EmbedderResource",
    "KenLMResource",
    "QualityClassifierResource",
    "RefineryHome",
]
