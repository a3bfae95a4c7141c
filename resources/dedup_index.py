"""The dedup indexes shared by every partition: local files by default, Redis for many machines."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from refinery.dedup.backends import open_exact_index, open_fuzzy_index
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

    def exact(self, layout: Layout) -> ExactIndex:
        return open_exact_index(self.backend, layout, self.redis_url, self.namespace)

    def fuzzy(self, layout: Layout, params: dict) -> FuzzyIndex:
        return open_fuzzy_index(self.backend, layout, self.redis_url, self.namespace, params)
