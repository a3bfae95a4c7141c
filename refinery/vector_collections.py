"""What the vector index holds: one collection per kind of stored embedding.

A collection names the storage asset whose Parquet files hold the vectors (one file per partition,
its provenance naming the model), the vector column, how a text query is embedded for it (with the
sentence embedder, or with CLIP's text tower for images and captions), and the stage chain a hit is
followed through to say where the document stands now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from refinery import names

CLIP_EMBEDDINGS_ASSET = names.CLIP_EMBEDDINGS


@dataclass(frozen=True)
class Collection:
    name: str
    asset: str  # storage/<asset>/<partition>.parquet holds id + the vector column
    column: str
    encoder: Literal["sentence", "clip_text"]  # how a text query is turned into a vector
    stages: tuple[str, ...]  # the stages a hit is followed through, upstream first
    text_column: str  # the column shown as the hit's text


DOCUMENTS = Collection(
    "documents",
    names.DOCUMENT_EMBEDDINGS,
    "embedding",
    "sentence",
    (names.QUALITY_SCORED, names.SEMANTIC_DEDUPLICATED, names.PRETRAIN_CORPUS),
    "text",
)
IMAGES = Collection(
    "images",
    CLIP_EMBEDDINGS_ASSET,
    "image_embedding",
    "clip_text",
    (names.IMAGE_TEXT_CHECKED, names.CLIP_SCORED, names.CLIP_FILTERED),
    "caption",
)
CAPTIONS = Collection(
    "captions",
    CLIP_EMBEDDINGS_ASSET,
    "caption_embedding",
    "clip_text",
    (names.IMAGE_TEXT_CHECKED, names.CLIP_SCORED, names.CLIP_FILTERED),
    "caption",
)
COLLECTIONS: dict[str, Collection] = {c.name: c for c in (DOCUMENTS, IMAGES, CAPTIONS)}


def collection(name: str | Collection) -> Collection:
    if isinstance(name, Collection):
        return name
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise ValueError(f"unknown vector collection {name!r}; known: {sorted(COLLECTIONS)}") from None
