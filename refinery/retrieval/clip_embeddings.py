"""Image and caption CLIP embeddings at rest: ``storage/clip_embeddings/<source>.parquet``.

Today clip_scored computes both embeddings of every pair and keeps only their cosine, so nothing can
be searched by similarity afterwards. This writes what the image collections of the vector index
need, in the layout of document_embeddings: ``id``, ``image_embedding`` and ``caption_embedding``
(fixed-size float32 lists, L2-normalised: a dot product is a cosine), the provenance naming the CLIP
model (``model``: its name, ``weights``: the file) so a query is embedded with the same towers.

One pass over the upstream partition, as ``score_file`` does (DataLoader workers decode and
preprocess the images from the Parquet file, the main process tokenizes the captions): memory holds
one batch. Rows whose image cannot be decoded get no row here (the CLIP stages quarantine them);
the run returns their count, for the asset's metadata.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.metadata import FilePath
from refinery.multimodal.clip_model import ClipModel
from refinery.multimodal.clip_score import ColumnChunks, ParquetImages, dataloader
from refinery.storage import PROVENANCE_KEY, Storage
from refinery.vector_collections import CLIP_EMBEDDINGS_ASSET


def clip_embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("image_embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("caption_embedding", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


@dataclass
class ClipEmbeddingRun:
    path: Path
    rows: int
    skipped: int  # images that could not be decoded
    dim: int
    seconds: float

    def report(self) -> dict:
        return {
            "output": FilePath.of(self.path),
            "pairs_embedded": self.rows,
            "images_not_decoded": self.skipped,
            "dimension": self.dim,
            "seconds": round(self.seconds, 3),
        }


def _fixed(vectors: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def write_clip_embeddings(
    storage: Storage,
    upstream: str,
    partition: str,
    clip: ClipModel,
    provenance: dict,
    workers: int = 0,
    text_column: str = "caption",
) -> ClipEmbeddingRun:
    """Embed the images and captions of ``upstream``'s partition with ``clip``; write atomically."""
    started = time.perf_counter()
    source = storage.require(upstream, partition)
    dim = clip.dim
    target = storage.path(CLIP_EMBEDDINGS_ASSET, partition)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    dataset = ParquetImages(source, clip.preprocess, clip.image_size)
    ids = ColumnChunks(source, "id", clip.batch_size)
    texts = ColumnChunks(source, text_column, clip.batch_size)
    rows = skipped = 0
    stamp = {**provenance, "model": clip.name, "weights": clip.weights, "dim": dim, "normalized": True}
    schema = clip_embeddings_schema(dim).with_metadata(
        {PROVENANCE_KEY: json.dumps(stamp, sort_keys=True, default=str).encode()}
    )
    writer = pq.ParquetWriter(temp, schema, compression="zstd")
    try:
        if len(dataset):
            loader = dataloader(
                dataset, clip.batch_size, min(workers, math.ceil(len(dataset) / clip.batch_size)), clip.device
            )
            for pixels, ok, _, _ in loader:
                batch_ids, captions = ids.take(len(ok)), texts.take(len(ok))
                flags = ok.numpy().astype(bool)
                if not flags.any():
                    skipped += len(flags)
                    continue
                image = clip.encode_pixels(pixels[flags])
                caption = clip.encode_texts([c for c, f in zip(captions, flags, strict=True) if f])
                kept = [i for i, f in zip(batch_ids, flags, strict=True) if f]
                writer.write_table(
                    pa.Table.from_arrays(
                        [pa.array(kept, pa.string()), _fixed(image, dim), _fixed(caption, dim)], schema=schema
                    )
                )
                rows += len(kept)
                skipped += int((~flags).sum())
        writer.close()
        os.replace(temp, target)
    except BaseException:
        writer.close()
        temp.unlink(missing_ok=True)
        raise
    return ClipEmbeddingRun(target, rows, skipped, dim, time.perf_counter() - started)
