"""Vector retrieval over the stored embeddings: a per-partition HNSW index, search, neighbours.

- :class:`VectorIndex` (index.py): ``$REFINERY_HOME/index/vectors/<collection>/``, one immutable
  segment per partition, replaced atomically when the partition is re-materialized;
- :func:`search` (search.py): text query -> the nearest documents with source, stage and scores;
- :class:`Searcher` (searcher.py): the same with the query model held, for long-lived processes;
- :class:`StageLookup` (stage_lookup.py): a hit's rows in the stage files, indexed once per file;
- :func:`nearest_neighbours` / :func:`kept_neighbours` (neighbours.py): nearest already-kept
  document of other partitions, in bounded memory, for semantic dedup;
- :func:`write_clip_embeddings` (clip_embeddings.py): image and caption CLIP embeddings at rest, so
  the image collections can be indexed like documents.
"""

from refinery.retrieval.index import ModelMismatch, VectorIndex, index_root
from refinery.retrieval.neighbours import Neighbours, kept_neighbours, nearest_neighbours
from refinery.retrieval.search import describe_hits, search
from refinery.retrieval.searcher import Searcher
from refinery.retrieval.segment import IndexParams, StaleSegment
from refinery.retrieval.stage_lookup import StageLookup
from refinery.vector_collections import CAPTIONS, COLLECTIONS, DOCUMENTS, IMAGES, Collection

__all__ = [
    "CAPTIONS",
    "COLLECTIONS",
    "DOCUMENTS",
    "IMAGES",
    "Collection",
    "IndexParams",
    "ModelMismatch",
    "Neighbours",
    "Searcher",
    "StageLookup",
    "StaleSegment",
    "VectorIndex",
    "describe_hits",
    "index_root",
    "kept_neighbours",
    "nearest_neighbours",
    "search",
]
