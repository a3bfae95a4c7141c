"""Partitions for semantic dedup written straight to storage: upstream documents and their
``document_embeddings`` (near-copies within and across partitions), no model needed."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.names import DOCUMENT_EMBEDDINGS
from refinery.quality.embeddings import embeddings_schema, text_hash
from refinery.stages import text
from refinery.storage import PROVENANCE_KEY, Storage

UPSTREAM = text.SEMANTIC_DEDUPLICATED.upstream
DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def corpus_vectors(seed: int, sizes: list[int], dim: int = DIM) -> list[np.ndarray]:
    """One array per partition: topics with tight groups of paraphrases, some of them spread over
    partitions (so later partitions hold near-copies of documents earlier ones kept)."""
    rng = np.random.default_rng(seed)
    topics = unit(rng.normal(size=(6, dim)))
    total = sum(sizes)
    docs = unit(topics[rng.integers(0, len(topics), total)] + 0.6 * rng.normal(size=(total, dim)))
    copies = rng.random(total) < 0.3
    origin = rng.integers(0, total, int(copies.sum()))
    docs[copies] = unit(docs[origin] + rng.uniform(0.02, 0.06) * rng.normal(size=(len(origin), dim)))
    return np.split(docs, np.cumsum(sizes)[:-1])


def write_partition(storage: Storage, source: str, vectors: np.ndarray, row_group: int = 16) -> None:
    """``source``'s upstream documents and their embeddings (model 'test', unit vectors)."""
    ids = [f"{source}-{i}" for i in range(len(vectors))]
    texts = [f"document {i} of {source}" for i in range(len(vectors))]
    path = storage.path(UPSTREAM, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=row_group)
    dim = vectors.shape[1]
    meta = {PROVENANCE_KEY: json.dumps({"model": "test", "dim": dim}).encode()}
    table = pa.Table.from_arrays(
        [
            pa.array(ids),
            pa.array([text_hash(t) for t in texts]),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        ],
        schema=embeddings_schema(dim).with_metadata(meta),
    )
    target = storage.path(DOCUMENT_EMBEDDINGS, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target, row_group_size=row_group)
