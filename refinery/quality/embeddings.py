"""Document embeddings at rest: ``storage/document_embeddings/<source>.parquet`` when one process
wrote them (the local engine, on a local root); the folder ``<source>/`` of parts and its
``_manifest.json`` (written last) when the ``ray`` engine's workers wrote them, or on an object-store
root. Every reader takes either (:mod:`refinery.partition_tables`, :class:`refinery.storage.Storage`).

One row per document of the upstream partition, in its order: ``id``, ``text_hash`` (so a reader
can tell the embedding still belongs to the text it sits beside) and ``embedding``, a fixed-size
list of float32, L2-normalised (a dot product is a cosine). Semantic dedup reads them here, and so
can later stages (SFT selection, mixing) instead of recomputing. The Parquet schema metadata
records the model, its dimension and the normalisation, so vectors of different models are never
compared.

A sentence model reads at most its ``max_seq_length`` word pieces (256 for all-MiniLM-L6-v2, about
200 words). By default a document is embedded as SemDeDup does, from its beginning (``max_chunks:
1``): two documents that share their first ~200 words look alike whatever follows, and a long
document whose sentences were reordered may not. ``max_chunks > 1`` cuts the document into chunks of
``chunk_words`` words and takes the word-weighted mean of the chunk embeddings, renormalised: it
covers long documents, but averaging also pulls distinct documents on one topic together (on the
bundled sample, distinct same-topic articles rise from at most 0.85 to 0.91-0.93 cosine with 2-8
chunks), so lower epsilon with it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from refinery.fs import iter_parquet_batches, read_parquet_files
from refinery.kernel.spec import Engine
from refinery.manifest import write_manifest
from refinery.metadata import CheckOutcome, FilePath, Json
from refinery.models.embedder import Embedder
from refinery.names import DOCUMENT_EMBEDDINGS
from refinery.object_storage import ObjectStorage
from refinery.partition_tables import PartitionTable, table_files, table_location
from refinery.storage import (
    DEFAULT_BATCH_ROWS,
    PART_PATTERN,
    PROVENANCE_KEY,
    PartsWriter,
    Storage,
    replace_partition,
)
from refinery.tempfiles import fsync_tree, temp_path


class EmbeddingParams(BaseModel):
    """How documents longer than the model's window are embedded (see the module docstring)."""

    chunk_words: int = Field(
        180, ge=16, description="Words per chunk; 180 fits the 256 word pieces of all-MiniLM-L6-v2."
    )
    max_chunks: int = Field(
        1, ge=1, description="1: the document as the model reads it (its beginning); more: mean of chunks."
    )


def chunk_document(text: str, chunk_words: int, max_chunks: int) -> list[str]:
    """Consecutive chunks of whitespace-separated words (the whole text when one chunk is asked for)."""
    if max_chunks == 1:
        return [text]  # the model truncates to its own window, in word pieces
    words = text.split()
    if len(words) <= chunk_words:
        return [text]
    return [
        " ".join(words[i : i + chunk_words])
        for i in range(0, min(len(words), chunk_words * max_chunks), chunk_words)
    ]


def embed_documents(embedder: Embedder, texts: list[str], params: EmbeddingParams) -> np.ndarray:
    """One unit vector per document: the word-weighted mean of its chunk embeddings, renormalised."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    chunks: list[str] = []
    owner: list[int] = []
    weight: list[float] = []
    for i, text in enumerate(texts):
        for chunk in chunk_document(text, params.chunk_words, params.max_chunks):
            chunks.append(chunk)
            owner.append(i)
            weight.append(max(1, len(chunk.split())))
    vectors = embedder.encode(chunks).astype(np.float64)
    pooled = np.zeros((len(texts), vectors.shape[1]))
    np.add.at(pooled, np.asarray(owner), vectors * np.asarray(weight)[:, None])
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("text_hash", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


@dataclass
class EmbeddingRun:
    path: Path | str  # the partition's file, or its folder's URI on an object store
    rows: int
    dim: int
    seconds: float
    chars: int

    @property
    def docs_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def write_embeddings(
    storage: Storage | ObjectStorage,
    upstream: str,
    partition: str,
    embedder: Embedder,
    provenance: dict,
    params: EmbeddingParams | None = None,
    batch_rows: int = 2_000,
) -> EmbeddingRun:
    """Embed every document of ``upstream``'s partition in this process and write the file
    atomically, with the partition's stats file (rows, dimension, model) beside it (the local
    engine's path; :func:`write_embeddings_pooled` is the Ray path, whose vectors never come to the
    step's process)."""
    started = time.perf_counter()
    params = params or EmbeddingParams()
    stamp = {
        **provenance,
        "model": embedder.name,
        "backend": getattr(embedder, "backend", "torch"),
        "quantize": getattr(embedder, "quantize", "none"),
        "dim": embedder.dim,
        "normalized": True,
        "chunking": params.model_dump(),
    }
    schema = embeddings_schema(embedder.dim).with_metadata(
        {PROVENANCE_KEY: json.dumps(stamp, sort_keys=True, default=str).encode()}
    )
    rows = chars = 0
    # A local root: one file renamed into place; an object store: parts, then the manifest.
    with PartitionTable(storage, DOCUMENT_EMBEDDINGS, partition, schema, stamp) as out:
        for batch in storage.iter_batches(upstream, partition, batch_rows=batch_rows, columns=["id", "text"]):
            texts = batch["text"].tolist()
            vectors = embed_documents(embedder, texts, params)
            if vectors.shape != (len(texts), embedder.dim) or not np.isfinite(vectors).all():
                raise ValueError(
                    f"the embedder returned {vectors.shape} (finite: {bool(np.isfinite(vectors).all())}) for "
                    f"{len(texts)} texts of dimension {embedder.dim}"
                )
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
            table = pa.Table.from_arrays(
                [
                    pa.array(batch["id"].tolist(), type=pa.string()),
                    pa.array([text_hash(t) for t in texts], type=pa.string()),
                    pa.FixedSizeListArray.from_arrays(flat, embedder.dim),
                ],
                schema=schema,
            )
            out.write(table)
            rows += len(texts)
            chars += sum(len(t) for t in texts)
    storage.write_stats(
        DOCUMENT_EMBEDDINGS, partition, {"rows_out": rows, "dim": embedder.dim, "model": embedder.name}
    )
    return EmbeddingRun(out.path, rows, embedder.dim, time.perf_counter() - started, chars)


@dataclass
class Embeddings:
    ids: list[str]
    text_hashes: list[str]
    vectors: np.ndarray  # (n, dim) float32, unit rows
    model: str
    dim: int


def read_embeddings(storage: Storage | ObjectStorage, partition: str) -> Embeddings:
    """The stored embeddings of a partition (raises with the command to run if there are none)."""
    files = table_files(storage, DOCUMENT_EMBEDDINGS, partition)
    if not files:
        raise FileNotFoundError(
            f"no document embeddings for partition '{partition}' at "
            f"{table_location(storage, DOCUMENT_EMBEDDINGS, partition)}: materialize document_embeddings "
            "for it first"
        )
    table = read_parquet_files(storage.fs, files)
    meta = json.loads((table.schema.metadata or {}).get(PROVENANCE_KEY, b"{}"))
    dim = table.schema.field("embedding").type.list_size
    column = table.column("embedding").combine_chunks()
    # A writable copy: torch refuses to wrap read-only (zero-copy Arrow) buffers without a warning.
    vectors = np.array(column.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    return Embeddings(
        table.column("id").to_pylist(),
        table.column("text_hash").to_pylist(),
        vectors,
        meta.get("model", "unknown"),
        dim,
    )


EMBEDDING_CHECKS = {
    "one_embedding_per_document": "Exactly one embedding per upstream document, ids unique and in its order.",
    "unit_norm": "Every embedding is finite with L2 norm 1 (so a dot product is a cosine).",
}


def embedding_checks(storage: Storage | ObjectStorage, upstream: str, partition: str) -> list[CheckOutcome]:
    """Read back what was written: one row per upstream document in order, unit-norm vectors."""
    files = table_files(storage, DOCUMENT_EMBEDDINGS, partition)
    ids = read_parquet_files(storage.fs, files, columns=["id"]).column("id")
    upstream_files = [str(f) for f in storage.files(upstream, partition)]
    upstream_ids = pa.chunked_array(
        [b.column(0) for b in iter_parquet_batches(storage.fs, upstream_files, DEFAULT_BATCH_ROWS, ["id"])],
        type=pa.string(),
    )
    vectors = read_embeddings(storage, partition).vectors
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
    bad_norm = int((~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3)).sum())
    same_ids = ids.equals(upstream_ids) and pc.count_distinct(ids).as_py() == len(ids) if len(ids) else True
    return [
        CheckOutcome(
            "one_embedding_per_document",
            bool(same_ids),
            {"embeddings": len(ids), "documents": len(upstream_ids)},
        ),
        CheckOutcome("unit_norm", bad_norm == 0, {"bad_rows": bad_norm}),
    ]


def intra_op_threads(embedder: Embedder) -> int:
    """Threads the model computes with: the ONNX session's intra-op setting (0: one per physical
    core), or torch's thread count."""
    session = getattr(embedder, "session", None)
    if session is not None:
        return int(session.get_session_options().intra_op_num_threads)
    import torch

    return int(torch.get_num_threads())


def embedding_report(run: EmbeddingRun, embedder: Embedder, params: EmbeddingParams) -> dict:
    return {
        "output": FilePath.of(run.path),
        "model": embedder.name,
        "dimension": run.dim,
        "device": embedder.device,
        "backend": getattr(embedder, "backend", "torch"),
        "quantize": getattr(embedder, "quantize", "none"),
        "batch_size": embedder.batch_size,
        "threads": intra_op_threads(embedder),
        "seconds": round(run.seconds, 3),
        "documents_per_second": round(run.docs_per_second, 1),
        "chars_per_second": round(run.chars / run.seconds, 1) if run.seconds > 0 else 0.0,
        "parameters": Json(params.model_dump()),
    }


# -- on a Ray actor pool: the actors embed, the workers write -------------------------------------


@dataclass(frozen=True)
class EmbedderInfo:
    """What the report shows about the embedder, as the actor that loaded it described it."""

    name: str
    dim: int
    device: str
    backend: str
    quantize: str
    batch_size: int

    @classmethod
    def of(cls, embedder: Embedder) -> EmbedderInfo:
        return cls(
            embedder.name,
            int(embedder.dim),
            str(embedder.device),
            getattr(embedder, "backend", "torch"),
            getattr(embedder, "quantize", "none"),
            int(embedder.batch_size),
        )


def describe_embedder(embedder: Embedder) -> dict:
    """An actor's description of its loaded model (written for the driver and the part tasks)."""
    from dataclasses import asdict

    return asdict(EmbedderInfo.of(embedder))


def _embed_frame(params: EmbeddingParams, embedder: Embedder, frame) -> np.ndarray:
    return embed_documents(embedder, frame["text"].tolist(), params)


def _stamp(provenance: dict, info: EmbedderInfo, params: EmbeddingParams) -> dict:
    return {
        **provenance,
        "model": info.name,
        "backend": info.backend,
        "quantize": info.quantize,
        "dim": info.dim,
        "normalized": True,
        "chunking": params.model_dump(),
    }


@dataclass
class EmbeddingPart:
    """The per-slice task: the slice's ids and text hashes beside the vectors the actors wrote,
    as one part file in ``staging``: a local staging folder, or (an object store root, ``run``
    set) the partition's own folder as a URI, the part named after the run until a manifest lists it."""

    staging: str
    provenance: dict
    params: EmbeddingParams
    run: str = ""

    @staticmethod
    def part_name(index: int, run: str = "") -> str:
        from refinery.storage import PartsWriter

        return f"part-{index:05d}-{run}.parquet" if run else PartsWriter.part_name(index)

    def __call__(self, piece, outputs, model: dict) -> dict:
        from refinery.engine.model_pool import read_slice
        from refinery.engine.root_folder import RootFolder

        info = EmbedderInfo(**model)
        schema = embeddings_schema(info.dim).with_metadata(
            {
                PROVENANCE_KEY: json.dumps(
                    _stamp(self.provenance, info, self.params), sort_keys=True, default=str
                ).encode()
            }
        )
        rows = read_slice(piece, ["id", "text"])
        texts = rows["text"].tolist()
        if outputs is None:
            vectors = pa.FixedSizeListArray.from_arrays(pa.array([], pa.float32()), info.dim)
        else:
            vectors = outputs.column("output").combine_chunks().cast(pa.list_(pa.float32(), info.dim))
        flat = vectors.values.to_numpy(zero_copy_only=False)
        if len(vectors) != len(texts) or not np.isfinite(flat).all():
            raise ValueError(
                f"the embedder returned {len(vectors)} vectors (finite: {bool(np.isfinite(flat).all())}) for "
                f"{len(texts)} texts of slice {piece.index}"
            )
        table = pa.Table.from_arrays(
            [
                pa.array(rows["id"].tolist(), type=pa.string()),
                pa.array([text_hash(t) for t in texts], type=pa.string()),
                vectors,
            ],
            schema=schema,
        )
        RootFolder(self.staging).write_table(self.part_name(piece.index, self.run), table)  # atomic
        return {"index": piece.index, "rows": len(texts), "chars": sum(len(t) for t in texts)}


def write_embeddings_pooled(
    storage: Storage | ObjectStorage,
    upstream: str,
    partition: str,
    load: Callable[[], Embedder],
    provenance: dict,
    params: EmbeddingParams,
    engine: Engine,
    pool,
) -> tuple[EmbeddingRun, EmbedderInfo, dict]:
    """document_embeddings on a Ray actor pool (:func:`refinery.engine.model_pool.run_pooled`):
    the actors load the model (once each; never this process) and embed batches, CPU tasks write
    each slice's part, and the parts are the partition's output (a folder with its manifest, as
    every stage split over workers writes; no step merges them). Returns the run, the model as the
    actors described it, and the pool's figures."""
    from refinery.engine.model_pool import ModelStage

    started = time.perf_counter()
    stage = ModelStage(["text"], load=load, infer=partial(_embed_frame, params), describe=describe_embedder)
    write = _pooled_into_parts if isinstance(storage, ObjectStorage) else _pooled_into_folder
    pooled, target = write(storage, upstream, partition, stage, provenance, params, engine, pool)
    info = EmbedderInfo(**pooled.model)
    rows = sum(p["rows"] for p in pooled.parts)
    storage.write_stats(
        DOCUMENT_EMBEDDINGS, partition, {"rows_out": rows, "dim": info.dim, "model": info.name}
    )
    chars = sum(p["chars"] for p in pooled.parts)
    run = EmbeddingRun(target, rows, info.dim, time.perf_counter() - started, chars)
    return run, info, pooled.describe()


def _pooled_into_folder(storage: Storage, upstream, partition, stage, provenance, params, engine, pool):
    """A local root: the part tasks write each slice's part into a staging folder, which is sealed
    with its manifest (written last; its hash is the data version) and moved into place as the
    partition's parts folder (the single-file layout of an earlier run removed: one layout at a
    time). Returns the pool's run and the folder.

    Why no merge into one file: it was one task streaming every vector of the partition (some 380
    GB for 1 TB of 4 KB documents at 384 dimensions) through one node, and every reader (semantic
    dedup, the checks, the vector index and search, the DuckDB views) reads a parts folder."""
    from refinery.engine.model_pool import run_pooled

    writer = PartsWriter(storage, DOCUMENT_EMBEDDINGS, partition)  # its staging: beside the partition
    staging = writer.staging()
    staging.mkdir(parents=True, exist_ok=True)
    try:
        pooled = run_pooled(
            engine,
            storage.require(upstream, partition),
            stage,
            pool,
            EmbeddingPart(str(staging), provenance, params),
            storage.root / ".model_pool",
        )
        parts = len(pooled.parts)
        written = sorted(p.name for p in staging.glob(PART_PATTERN))
        if written != [PartsWriter.part_name(i) for i in range(parts)] or not parts:
            raise RuntimeError(f"{len(written)} of {parts} embedding parts were written; nothing committed")
        for entry in staging.iterdir():  # temporaries of part tasks whose worker died (rerun by Ray)
            if entry.name not in written:
                entry.unlink(missing_ok=True)
        write_manifest(staging, _stamp(provenance, EmbedderInfo(**pooled.model), params))
        fsync_tree(staging)
        target = storage.parts_path(DOCUMENT_EMBEDDINGS, partition)
        replace_partition(staging, target, storage.path(DOCUMENT_EMBEDDINGS, partition))
    finally:
        writer.abort()  # the staging folder, if it is still there
    return pooled, target


def _pooled_into_parts(storage: ObjectStorage, upstream, partition, stage, provenance, params, engine, pool):
    """An object store root: the part tasks write each slice's part straight into the partition's
    folder, named after this run; this process then writes the manifest (the commit point, as
    :class:`~refinery.object_storage.ObjectTableWriter` does) and deletes the parts it does not
    list. A failed run deletes its own parts; returns the pool's run and the folder's URI."""
    from refinery.engine.model_pool import run_pooled
    from refinery.engine.resume import under_root
    from refinery.engine.slices import slice_location
    from refinery.manifest import write_manifest_at
    from refinery.object_storage import delete_unlisted_parts

    run = temp_path(Path("x")).name.split(".")[2]  # host-pid-random, as ObjectTableWriter names its parts
    folder = storage.parts_path(DOCUMENT_EMBEDDINGS, partition)
    try:
        pooled = run_pooled(
            engine,
            slice_location(storage, upstream, partition),
            stage,
            pool,
            EmbeddingPart(storage.location_uri(DOCUMENT_EMBEDDINGS, partition), provenance, params, run),
            under_root(storage, ".model_pool"),
        )
    except BaseException:
        _delete_run_parts(storage, folder, run)
        raise
    names = [EmbeddingPart.part_name(i, run) for i in range(len(pooled.parts))]
    stamp = _stamp(provenance, EmbedderInfo(**pooled.model), params)
    write_manifest_at(storage.fs, folder, names, stamp)
    delete_unlisted_parts(storage.fs, folder, names)  # older runs' parts
    return pooled, storage.uri(folder)


def _delete_run_parts(storage: ObjectStorage, folder: str, run: str) -> None:
    from refinery.fs import listing

    for info in listing(storage.fs, folder):
        if info.base_name.endswith(f"-{run}.parquet"):
            storage.fs.delete_file(info.path)
