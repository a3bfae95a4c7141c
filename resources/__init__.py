"""Dagster resources: where data lives, the shared dedup indexes, the models, and one function
that builds them all for an environment.

Each resource a stage's maker reads hands the library a plain value through ``plain()`` (a model
loader, an index's or a client's configuration: frozen dataclasses of the library, or the language
routing's pydantic model). They pickle, so the ray engine sends a stage's context to its workers
as it is; the library never sees a Dagster object."""

from resources.clip import ClipResource
from resources.compute import ComputeResource
from resources.dedup_index import DedupIndexResource
from resources.embedder import EmbedderResource
from resources.engine import EngineResource
from resources.environments import ENVIRONMENTS, build_executor, build_resources
from resources.home import RefineryHome
from resources.kenlm import KenLMResource
from resources.language_routing import LanguageRoutingResource
from resources.llm import LlmResource
from resources.quality import QualityClassifierResource

__all__ = [
    "ENVIRONMENTS",
    "ClipResource",
    "ComputeResource",
    "DedupIndexResource",
    "EmbedderResource",
    "EngineResource",
    "KenLMResource",
    "LanguageRoutingResource",
    "LlmResource",
    "QualityClassifierResource",
    "RefineryHome",
    "build_executor",
    "build_resources",
]
