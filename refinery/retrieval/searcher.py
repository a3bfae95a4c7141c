"""A search handle for a long-lived process (an MCP server, a notebook): the query model loaded once.

``refinery search`` is a cold process: it imports, loads the query model and reads the index on
every call. A server answering many queries holds a :class:`Searcher` instead; each query then
costs the query's encoding (a few milliseconds with the ONNX backend), the index lookup and, for
each hit, its rows in the stage files, read through the handle's :class:`StageLookup` (each file
indexed by id once, then only the row groups holding hits decoded, kept up to a byte budget). The
model is the one the index was built with (read from its provenance), so a handle made before the
index is rebuilt with another model refuses to answer rather than compare unlike vectors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from refinery.paths import Layout
from refinery.retrieval.index import VectorIndex
from refinery.retrieval.search import search
from refinery.retrieval.stage_lookup import StageLookup
from refinery.vector_collections import collection


@dataclass
class Searcher:
    """``Searcher.open(home)`` then ``searcher(query, k)``: :func:`search` with the model kept."""

    home: str
    collection_name: str = "documents"
    encoder: object | None = None  # the query embedder (an OnnxEmbedder on CPU), loaded by open()
    lookup: StageLookup = field(default_factory=StageLookup)  # the stage rows of earlier hits, kept
    _stats: dict = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        home: str | os.PathLike | None = None,
        collection_name: str = "documents",
        backend: str = "auto",
        device: str = "cpu",
        threads: int = 0,
    ) -> Searcher:
        """Load the query model of ``collection_name``'s index under ``home`` (sentence collections;
        CLIP collections load their model per call through :func:`search`)."""
        layout = Layout.at(home)
        which = collection(collection_name)
        encoder = None
        if which.encoder == "sentence":
            from refinery.models.embedder import load_embedder

            model, _ = VectorIndex.at(layout, which).model(None)
            encoder = load_embedder(model, device=device, backend=backend, threads=threads)
        return cls(str(layout.home), collection_name, encoder)

    def __call__(
        self,
        query: str | list[str],
        k: int = 10,
        *,
        exact: bool = False,
        partitions: list[str] | None = None,
        with_stage: bool = True,
    ) -> pd.DataFrame:
        """The ``k`` nearest documents to each query, as :func:`search` returns them."""
        return search(
            query,
            k,
            home=self.home,
            collection_name=self.collection_name,
            exact=exact,
            partitions=partitions,
            embedder=self.encoder,
            with_stage=with_stage,
            lookup=self.lookup,
        )
