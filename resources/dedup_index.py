"""The dedup indexes shared by every partition: local files by default, Redis for many machines."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from refinery.dedup.backends import DedupIndexes
from refinery.dedup.exact_index import ExactIndex
from refinery.dedup.lsh_index import FuzzyIndex
from refinery.paths import Layout


class DedupIndexResource(dg.ConfigurableResource):
    backend: str = Field(
        "local",
        description="'local' (SQLite files under the home), 'redis' (one server: every key of an index in "
        "one slot) or 'redis-cluster' (claims spread over every shard of a Redis Cluster).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Used when backend is 'redis', or names any node of the cluster for 'redis-cluster'.",
    )
    namespace: str = Field(
        "refinery", description="Key prefix in Redis, so several corpora can share a server."
    )

    def plain(self) -> DedupIndexes:
        """The library's value of this resource (what a stage's maker gets)."""
        return DedupIndexes(self.backend, self.redis_url, self.namespace)

    def exact(self, layout: Layout) -> ExactIndex:
        return self.plain().exact(layout)

    def fuzzy(self, layout: Layout, params: dict) -> FuzzyIndex:
        return self.plain().fuzzy(layout, params)
