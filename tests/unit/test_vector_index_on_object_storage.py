"""A side table on an object store (moto's S3 on loopback) and the vector index built from it: the
segment follows the manifest's version (the same rows rewritten stay fresh, other rows make it
stale until it is rebuilt), a failed write leaves the committed rows, and the views read it."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from refinery.names import DOCUMENT_EMBEDDINGS
from refinery.object_storage import open_storage
from refinery.partition_tables import PartitionTable, table_files
from refinery.quality.embeddings import embeddings_schema, read_embeddings
from refinery.retrieval.index import VectorIndex
from refinery.retrieval.segment import StaleSegment
from refinery.sql import connect
from refinery.storage import PROVENANCE_KEY
from tests.s3_server import s3_credentials, s3_root

s3 = (s3_root, s3_credentials)  # fixtures, used by name
DIM = 8


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def vectors_table(vectors: np.ndarray) -> pa.Table:
    stamp = {"model": "toy", "dim": DIM}
    schema = embeddings_schema(DIM).with_metadata({PROVENANCE_KEY: json.dumps(stamp).encode()})
    ids = [f"d{i}" for i in range(len(vectors))]
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return pa.Table.from_arrays(
        [pa.array(ids), pa.array(ids), pa.FixedSizeListArray.from_arrays(flat, DIM)], schema=schema
    )


def write(store, partition: str, table: pa.Table) -> None:
    with PartitionTable(store, DOCUMENT_EMBEDDINGS, partition, table.schema, {"model": "toy"}) as out:
        out.write(table.slice(0, 20))
        out.write(table.slice(20))


def test_the_index_follows_the_manifest_version(tmp_path, s3_root):
    store = open_storage(s3_root)
    first = unit_vectors(50, 1)
    write(store, "p", vectors_table(first))
    assert np.array_equal(read_embeddings(store, "p").vectors, first)
    index = VectorIndex(tmp_path / "vectors")
    index.update(store, "p")
    assert index.status(store)["state"].tolist() == ["fresh"]
    for exact in (False, True):
        hits = index.search(first[[7, 30]], 1, exact=exact)
        assert hits["id"].tolist() == ["d7", "d30"]

    write(store, "p", vectors_table(first))  # the same rows again: the same version, new parts
    assert index.status(store)["state"].tolist() == ["fresh"]
    assert index.sync(store) == {}

    with (
        pytest.raises(RuntimeError, match="killed"),
        PartitionTable(store, DOCUMENT_EMBEDDINGS, "p", vectors_table(first).schema, {"model": "toy"}) as out,
    ):
        out.write(vectors_table(unit_vectors(50, 9)))
        raise RuntimeError("killed")
    assert np.array_equal(read_embeddings(store, "p").vectors, first)  # the committed rows stay
    folder = store.parts_path(DOCUMENT_EMBEDDINGS, "p")
    names = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
    assert names == {f.rsplit("/", 1)[1] for f in table_files(store, DOCUMENT_EMBEDDINGS, "p")} | {
        "_manifest.json"
    }

    second = unit_vectors(50, 2)
    write(store, "p", vectors_table(second))  # other rows: the segment is stale until rebuilt
    assert index.status(store)["state"].tolist() == ["stale"]
    with pytest.raises(StaleSegment):
        index.search(second[:1], 1)
    with pytest.raises(StaleSegment):
        index.search(second[:1], 1, exact=True)
    assert index.sync(store) == {"p": "rebuilt"}
    assert index.search(second[[3]], 1)["id"].tolist() == ["d3"]

    views = connect(s3_root).execute(
        "SELECT source, count(*), round(min(array_inner_product(embedding, embedding)), 4) "
        "FROM vectors_documents GROUP BY 1"
    )
    assert views.fetchall() == [("p", 50, 1.0)]
