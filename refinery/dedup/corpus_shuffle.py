"""Corpus-wide fuzzy dedup as shuffles over Parquet files: no step on one node.

The same decisions as :func:`refinery.dedup.corpus_dedup.corpus_dedup` (every row of the table
equal), computed by tasks that each read and write files (:mod:`refinery.dedup.marked_shuffle`); the
driver holds the list of pieces, their row counts and the tasks' small results.

Pieces are the input's slices (runs of row groups of one file, :func:`plan_slices`), sources in
sorted order. Documents are numbered in first-come order without a central counter: piece ``p``'s
first document is the sum of the rows of the pieces before it, read from the Parquet footers.

Steps (each a list of tasks; ``P`` pieces, ``R`` bucket reducers, ``K`` component partitions):

1. ``sign`` (P): MinHash signatures of the piece, kept as ``sig.parquet`` (id, signature), and its
   ``(band, bucket, doc)`` rows sent to reducer ``bucket mod R``;
2. ``pairs`` (R): each reducer holds whole ``(band, bucket)`` groups and pairs them with the
   per-bucket code (:func:`candidate_pairs`); pairs sent to the piece of ``a``;
3. ``join`` (P): the pairs of the piece made unique (every pair with this ``a`` is here), ``a``'s
   signature attached, sent to the piece of ``b``; ``verify`` (P): ``b``'s signature joined,
   pairs below the threshold dropped, the verified edges contracted by a local union-find and sent
   to the component partitions;
4. ``cc-*`` (K per round): large-star / small-star rounds
   (:mod:`refinery.dedup.distributed_components`) until each component is a star on its first
   document;
5. ``members`` (K): ``(document, root)`` sent to the piece of the root; ``owners`` (P): component
   sizes, the root's key and signature, sent back to the piece of each member; ``table`` (P): the
   piece's rows of the output table (component, size, kept, duplicate_of, similarity), written by
   the worker; ``checks`` (keys' uniqueness and the owner check, one map) verify the written parts.

Memory per task: one piece's signatures (``4·num_perm`` B per document) or one reducer's share of
the band rows (``18·bands/R`` B per document); ``R`` grows with the corpus
(:data:`BAND_ROWS_PER_REDUCER`), so no task's input grows with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.dedup.banding import band_bucket
from refinery.dedup.corpus_dedup import CorpusDedupParams, candidate_pairs, unique_pairs
from refinery.dedup.distributed_components import local_stars, star_rounds, write_for_large_star
from refinery.dedup.marked_shuffle import (
    TaskOutput,
    WorkDir,
    bucket_partition,
    gather,
    read_task_file,
    task_files,
)
from refinery.dedup.minhash import MinHasher
from refinery.engine.root_folder import RootFolder, filesystem_of
from refinery.engine.slices import plan_slices
from refinery.engine.tasks import TaskRunner
from refinery.fs import child
from refinery.ids import doc_key
from refinery.storage import stamped

BAND_ROWS_PER_REDUCER = 4_000_000  # about 72 MB of band rows (plus their sort) per pairs task
EDGES_PER_PARTITION = 2_000_000
SAMPLE_ROWS = 10
TABLE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("id", pa.string()),
        pa.field("component", pa.int64()),
        pa.field("component_size", pa.int64()),
        pa.field("kept", pa.bool_()),
        pa.field("duplicate_of", pa.string()),
        pa.field("similarity", pa.float32()),
    ]
)


@dataclass(frozen=True)
class Piece:
    source: str
    file: str  # a local path, or a path on the filesystem of ``fs_uri``
    row_groups: tuple[int, ...]
    rows: int
    fs_uri: str = ""  # the partition's URI on an object store root ("" for a local file)
    bytes: int = 0  # its row groups' uncompressed size (the signatures' work grows with the text)

    def parquet(self) -> pq.ParquetFile:
        if not self.fs_uri:
            return pq.ParquetFile(self.file)
        return pq.ParquetFile(filesystem_of(self.fs_uri)[0].open_input_file(self.file))


@dataclass
class ShufflePlan:
    """What every task needs: the pieces, where each starts, the parameters, the fan-outs."""

    pieces: list[Piece]
    starts: np.ndarray  # first document of each piece
    params: dict
    reducers: int
    parts: int
    work: str  # a local path, or a URI with the root's query (what workers open the filesystem from)
    table_folder: str = ""  # object store roots: the table's folder (URI), where table tasks write parts

    @property
    def documents(self) -> int:
        return int(self.starts[-1] + self.pieces[-1].rows) if self.pieces else 0

    def piece_of(self, doc: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, doc, side="right") - 1

    def step(self, name: str) -> str:
        return child(self.work, name)


@dataclass
class ShuffleResult:
    """Where the committed table's parts are, and the counts (as ``dedup_signed``'s stats)."""

    stats: dict
    sample: pd.DataFrame
    checks: dict
    sizes: dict = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)  # the table's parts, in piece order


def plan_pieces(locations: list[tuple[str, Path | str]], piece_rows: int) -> list[Piece]:
    """The pieces of every source's input, in first-come order (``locations`` sorted by source)."""
    pieces = []
    for source, location in locations:
        footers: dict[str, pq.FileMetaData] = {}
        for s in plan_slices(location, piece_rows):
            if s.row_groups and s.file not in footers:
                footers[s.file] = s.parquet().metadata
            size = sum(footers[s.file].row_group(g).total_byte_size for g in s.row_groups)
            pieces.append(Piece(source, s.file, s.row_groups, s.rows, s.fs_uri, size))
    return pieces


def make_plan(
    pieces: list[Piece],
    params: CorpusDedupParams,
    work_root: Path | str,
    workers: int,
    table_folder: str = "",
) -> ShufflePlan:
    index = params.index_params()
    rows = np.array([p.rows for p in pieces], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64) if len(rows) else rows
    documents = int(rows.sum())
    band_total = documents * index["bands"]
    reducers = max(1, workers, -(-band_total // BAND_ROWS_PER_REDUCER))
    # A whole number of reducers per worker: three on two workers left one worker idle for a third
    # of the pairs step (benchmarks/RESULTS.md, "corpus-wide dedup ... 266 MB").
    reducers = -(-reducers // max(1, workers)) * max(1, workers)
    # Component partitions follow the corpus, not the workers: on two workers a 310k-document corpus
    # took two partitions, one more star round than on one (each partition contracts only its own
    # rows), and its few thousand edges cost more in dispatch than a second task saved
    # (benchmarks/RESULTS.md, "The corpus-wide dedup at 174 MB, eighth session").
    parts = max(1, -(-documents // EDGES_PER_PARTITION))
    fixed = {
        "num_perm": params.num_perm,
        "ngram": params.ngram,
        "seed": params.seed,
        "bands": index["bands"],
        "rows": index["rows"],
        "threshold": params.threshold,
        "max_bucket_all_pairs": params.max_bucket_all_pairs,
        "anchors": params.anchors,
        "batch_rows": params.batch_rows,
    }
    fingerprint = hashlib.sha256(
        json.dumps(
            {"params": fixed, "reducers": reducers, "parts": parts, "pieces": [_identity(p) for p in pieces]},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return ShufflePlan(pieces, starts, fixed, reducers, parts, child(work_root, fingerprint), table_folder)


def _identity(piece: Piece) -> list:
    if piece.fs_uri:
        info = filesystem_of(piece.fs_uri)[0].get_file_info(piece.file)
        size, mtime = info.size, info.mtime_ns
    else:
        stat = os.stat(piece.file)
        size, mtime = stat.st_size, stat.st_mtime_ns
    return [piece.source, piece.file, list(piece.row_groups), piece.rows, size, mtime]


# -- reading what earlier steps wrote -------------------------------------------------------------
def load_signed(plan: ShufflePlan, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, signatures) of piece ``p`` as the sign step stored them."""
    table = read_task_file(plan.step("sign"), p, "sig")
    ids = table.column("id").to_numpy(zero_copy_only=False).astype(object)
    return ids, _sig_matrix(table.column("sig"), plan.params["num_perm"])


def _sig_matrix(column: pa.ChunkedArray | pa.Array, perms: int) -> np.ndarray:
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return flat.flatten().to_numpy().reshape(-1, perms).astype(np.uint32, copy=False)


def _sig_array(signatures: np.ndarray) -> pa.Array:
    perms = signatures.shape[1]
    return pa.FixedSizeListArray.from_arrays(pa.array(signatures.reshape(-1), pa.uint32()), perms)


def _column(table: pa.Table | None, name: str, dtype=np.int64) -> np.ndarray:
    if table is None:
        return np.zeros(0, dtype)
    return table.column(name).to_numpy().astype(dtype, copy=False)


# -- 1. signatures, and the band rows sent to their reducers -----------------------------------------
def sign_task(step: str, p: int, plan: ShufflePlan) -> dict:
    out = TaskOutput(step, p)
    piece, par = plan.pieces[p], plan.params
    hasher = MinHasher(par["num_perm"], par["ngram"], par["seed"])
    ids, sigs = [], []
    if piece.row_groups:
        parquet = piece.parquet()
        for batch in parquet.iter_batches(
            par["batch_rows"], row_groups=list(piece.row_groups), columns=["id", "text"]
        ):
            frame = batch.to_pandas()
            ids.append(frame["id"].astype(str).to_numpy())
            sigs.append(hasher.signatures(frame["text"].tolist()))
    signatures = np.concatenate(sigs) if sigs else np.zeros((0, par["num_perm"]), np.uint32)
    id_array = np.concatenate(ids) if ids else np.zeros(0, dtype=object)
    if len(signatures) != piece.rows:
        raise RuntimeError(
            f"{piece.file}: {len(signatures)} rows read where the footer says {piece.rows}: the input changed"
        )
    out.write("sig", pa.table({"id": pa.array(id_array, pa.string()), "sig": _sig_array(signatures)}))
    n, bands, rows = len(signatures), par["bands"], par["rows"]
    buckets = (
        np.concatenate([band_bucket(signatures, b, rows) for b in range(bands)])
        if n
        else np.zeros(0, np.int64)
    )
    band_rows = pa.table(
        {
            "band": np.repeat(np.arange(bands, dtype=np.int16), n),
            "bucket": buckets,
            "doc": np.tile(np.arange(plan.starts[p], plan.starts[p] + n, dtype=np.int64), bands),
        }
    )
    out.scatter(band_rows, bucket_partition(buckets, plan.reducers), plan.reducers)
    return out.commit({"rows": n})


# -- 2. candidate pairs per reducer, sent to the piece of their first document -------------------------
def pairs_task(step: str, r: int, plan: ShufflePlan) -> dict:
    out = TaskOutput(step, r)
    rows = gather(plan.step("sign"), r)
    frame = rows.to_pandas() if rows is not None else pd.DataFrame({"band": [], "bucket": [], "doc": []})
    pairs, stats = candidate_pairs(frame, plan.params["max_bucket_all_pairs"], plan.params["anchors"])
    a = pairs["a"].to_numpy(np.int64)
    out.scatter(pa.table({"a": a, "b": pairs["b"].to_numpy(np.int64)}), plan.piece_of(a), len(plan.pieces))
    return out.commit(
        {
            "band_rows": stats.band_rows,
            "shared_buckets": stats.shared_buckets,
            "large_buckets": stats.large_buckets,
            "large_bucket_docs": stats.large_bucket_docs,
        }
    )


# -- 3. verification: a join with the signature parts, by a then by b ---------------------------------
def join_task(step: str, p: int, plan: ShufflePlan) -> dict:
    out = TaskOutput(step, p)
    found = gather(plan.step("pairs"), p)
    pairs = unique_pairs(_column(found, "a"), _column(found, "b"))  # every pair with its a here: unique
    a, b = pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64)
    if len(a):
        _, sigs = load_signed(plan, p)
        table = pa.table({"a": a, "b": b, "sig_a": _sig_array(sigs[a - plan.starts[p]])})
        out.scatter(table, plan.piece_of(b), len(plan.pieces))
    return out.commit({"candidate_pairs": len(a)})


def verify_task(step: str, p: int, plan: ShufflePlan) -> dict:
    out = TaskOutput(step, p)
    found = gather(plan.step("join"), p)
    if found is None or not found.num_rows:
        return out.commit({"verified_edges": 0, "dropped": 0})
    a, b = _column(found, "a"), _column(found, "b")
    perms = plan.params["num_perm"]
    sig_a = _sig_matrix(found.column("sig_a"), perms)
    _, sigs = load_signed(plan, p)
    similarity = np.count_nonzero(sig_a == sigs[b - plan.starts[p]], axis=1) / perms
    ok = similarity >= plan.params["threshold"]
    x, y = local_stars(a[ok], b[ok])
    write_for_large_star(out, x, y, plan.parts)
    return out.commit({"verified_edges": int(ok.sum()), "dropped": int((~ok).sum())})


# -- 5. removals back to each piece -------------------------------------------------------------
def members_task(step: str, k: int, plan: ShufflePlan, final: str) -> dict:
    out = TaskOutput(step, k)
    found = gather(final, k)
    leaf, root = _column(found, "u"), _column(found, "v")
    out.scatter(pa.table({"leaf": leaf, "root": root}), plan.piece_of(root), len(plan.pieces))
    return out.commit({"members": len(leaf)})


def owners_task(step: str, p: int, plan: ShufflePlan) -> dict:
    out = TaskOutput(step, p)
    found = gather(plan.step("members"), p)
    if found is None or not found.num_rows:
        return out.commit({"components": 0, "largest": 1})
    leaf, root = _column(found, "leaf"), _column(found, "root")
    ids, sigs = load_signed(plan, p)
    roots, counts = np.unique(root, return_counts=True)
    sizes = counts + 1
    size_of = sizes[np.searchsorted(roots, root)]
    local = root - plan.starts[p]
    source = plan.pieces[p].source
    keys = np.array([doc_key(source, str(i)) for i in ids[local]], dtype=object)
    rows = pa.table(
        {
            "leaf": np.concatenate([leaf, roots]),
            "root": np.concatenate([root, roots]),
            "size": np.concatenate([size_of, sizes]),
            "owner": pa.array(np.concatenate([keys, np.full(len(roots), None, dtype=object)]), pa.string()),
            "owner_sig": _sig_array(np.concatenate([sigs[local], sigs[roots - plan.starts[p]]])),
        }
    )
    out.scatter(rows, plan.piece_of(rows.column("leaf").to_numpy()), len(plan.pieces))
    return out.commit({"components": len(roots), "largest": int(sizes.max())})


def table_task(step: str, p: int, plan: ShufflePlan, stamp: dict, key_parts: int) -> dict:
    """Piece ``p``'s rows of the output table, written here; its keys sent for the uniqueness
    check, its removed rows' owners to the owner's piece for the owner check."""
    out = TaskOutput(step, p)
    piece, start = plan.pieces[p], int(plan.starts[p])
    ids, sigs = load_signed(plan, p)
    n = len(ids)
    component = np.arange(start, start + n, dtype=np.int64)
    size = np.ones(n, dtype=np.int64)
    duplicate_of = np.full(n, None, dtype=object)
    similarity = np.full(n, np.nan, dtype=np.float32)
    found = gather(plan.step("owners"), p)
    if found is not None and found.num_rows:
        local = _column(found, "leaf") - start
        root = _column(found, "root")
        component[local] = root
        size[local] = _column(found, "size")
        member = root != local + start
        owner = found.column("owner").to_numpy(zero_copy_only=False)
        duplicate_of[local[member]] = owner[member]
        owner_sig = _sig_matrix(found.column("owner_sig"), plan.params["num_perm"])
        equal = np.count_nonzero(sigs[local[member]] == owner_sig[member], axis=1)
        similarity[local[member]] = equal / plan.params["num_perm"]
    kept = component == np.arange(start, start + n)
    table = pa.table(
        {
            "source": pa.array([piece.source] * n, pa.string()),
            "id": pa.array(ids, pa.string()),
            "component": component,
            "component_size": size,
            "kept": kept,
            "duplicate_of": pa.array(duplicate_of, pa.string()),
            "similarity": similarity,
        },
        schema=TABLE_SCHEMA,
    )
    table = table.replace_schema_metadata(stamped(TABLE_SCHEMA, stamp).metadata)
    if plan.table_folder:  # an object store: the part goes where the manifest will list it
        name = f"part-{p:0{part_width(plan)}d}-{out.attempt}.parquet"
        part = out.write_at(RootFolder(plan.table_folder), name, "part", table)
    else:  # a local root: linked into the table's folder at the commit
        part = out.write("part", table)
    keys = np.array([doc_key(piece.source, str(i)) for i in ids], dtype=object)
    hashes = pd.util.hash_array(keys) if n else np.zeros(0, np.uint64)
    key_rows = pa.table({"key": pa.array(keys, pa.string())})
    out.scatter(key_rows, (hashes % np.uint64(key_parts)).astype(np.int64), key_parts)
    removed = np.flatnonzero(~kept)
    claims = pa.table(
        {"component": component[removed], "duplicate_of": pa.array(duplicate_of[removed], pa.string())}
    )
    out.scatter(
        claims.rename_columns(["component", "duplicate_of"]),
        plan.piece_of(component[removed]) + key_parts,  # after the key destinations
        key_parts + len(plan.pieces),
    )
    sample = [
        [piece.source, str(ids[i]), duplicate_of[i], float(similarity[i]), int(size[i])]
        for i in removed[:SAMPLE_ROWS]
    ]
    return out.commit({"rows": n, "removed": len(removed), "sample": sample, "part": part})


# -- checks over the written parts ------------------------------------------------------------------
def keys_task(step: str, k: int, plan: ShufflePlan) -> dict:
    out = TaskOutput(step, k)
    found = gather(plan.step("table"), k)
    keys = found.column("key").to_numpy(zero_copy_only=False) if found is not None else np.zeros(0, object)
    return out.commit({"keys": len(keys), "repeated": int(len(keys) - len(pd.unique(keys)))})


def checks_task(step: str, i: int, plan: ShufflePlan, key_parts: int) -> dict:
    """Task ``i`` of the checks: the key partitions' uniqueness first (``i < key_parts``), then
    each piece's owner check. Why one map: two maps of small tasks paid two barriers and two
    dispatches, a fixed cost that did not shrink on two workers (benchmarks/RESULTS.md, "Ingest,
    embeddings and the corpus dedup on 1 vs 2 Ray workers, seventh session")."""
    if i < key_parts:
        return keys_task(step, i, plan)
    return owner_check_task(step, i - key_parts, plan, key_parts, slot=i)


def owner_check_task(step: str, p: int, plan: ShufflePlan, key_parts: int, slot: int | None = None) -> dict:
    """The removed rows naming a component of piece ``p``, against piece ``p``'s written rows: the
    component's row is kept, is its own component, carries the named key and counts the members.
    ``slot``: the task's number in its step, when not ``p``."""
    out = TaskOutput(step, p if slot is None else slot)
    start = int(plan.starts[p])
    written = read_task_file(plan.step("table"), p, "part")
    kept = written.column("kept").to_numpy(zero_copy_only=False)
    component = written.column("component").to_numpy()
    sizes = written.column("component_size").to_numpy()
    keys = np.array(
        [
            doc_key(s, str(i))
            for s, i in zip(
                written.column("source").to_pylist(), written.column("id").to_pylist(), strict=True
            )
        ],
        dtype=object,
    )
    found = gather(plan.step("table"), key_parts + p)
    named = _column(found, "component") - start
    owner = (
        found.column("duplicate_of").to_numpy(zero_copy_only=False)
        if found is not None
        else np.zeros(0, object)
    )
    wrong = (
        int((~kept[named] | (component[named] != named + start) | (keys[named] != owner)).sum())
        if len(named)
        else 0
    )
    members = np.bincount(named, minlength=len(kept)) + 1 if len(kept) else np.zeros(0, np.int64)
    bad_components = int(((members != sizes) & kept).sum()) if len(kept) else 0
    bad_kept = int((kept != (component == np.arange(start, start + len(kept)))).sum())
    return out.commit({"wrong_owner": wrong, "bad_components": bad_components, "bad_kept": bad_kept})


# -- the driver ----------------------------------------------------------------------------------
def shuffle_dedup(
    pieces: list[Piece],
    params: CorpusDedupParams,
    runner: TaskRunner,
    work_root: Path | str,
    workers: int,
    stamp: dict,
    seconds: dict,
    phase: Callable[[str], AbstractContextManager] = lambda name: nullcontext(),
    table_folder: str = "",
) -> tuple[ShufflePlan, ShuffleResult]:
    """Every step over ``pieces`` (first-come order) with ``runner``; the table's parts stay in the
    ``table`` step's files (a local root) or unlisted in the table's folder (``table_folder``, an
    object store root) until :func:`refinery.dedup.corpus_run.commit_table` commits them."""
    plan = make_plan(pieces, params, work_root, workers, table_folder)
    work = WorkDir(plan.work)
    every_piece = [(plan,)] * len(pieces)
    key_parts = plan.parts
    clock = time.perf_counter
    # Pieces differ (a real corpus's long documents against short ones: 3.8 to 20.6 MB of text each
    # at 174 MB). Ray's owner queues a map's tasks and hands the next to whichever leased worker
    # finishes first, so submitted largest first they are scheduled longest-first: no worker ends a
    # step waiting on the other's last large piece. Pulling one task per free worker from here
    # instead (as ingest does) cost a driver round trip per task, 10-15 ms (benchmarks/RESULTS.md,
    # "The corpus-wide dedup at 174 MB, eighth session").
    text_bytes = [max(p.bytes, p.rows) for p in pieces]
    rows = [p.rows for p in pieces]

    def timed(name: str, fn, args, costs=None) -> list[dict]:
        t0 = clock()
        found = work.run(runner, name, fn, args, costs)
        seconds[name] = round(seconds.get(name, 0.0) + clock() - t0, 4)
        return found

    with phase("signatures"):
        signed = timed("sign", sign_task, every_piece, text_bytes)
    with phase("bands_and_pairs"):
        paired = timed("pairs", pairs_task, [(plan,)] * plan.reducers)
        joined = timed("join", join_task, every_piece, rows)
    with phase("edges_components_table"):
        verified = timed("verify", verify_task, every_piece, rows)
        t0 = clock()
        final, rounds = star_rounds(work, runner, "verify", plan.parts)
        seconds["components"] = round(clock() - t0, 4)
        timed("members", members_task, [(plan, work.step(final))] * plan.parts)
        owned = timed("owners", owners_task, every_piece, rows)
        written = timed("table", table_task, [(plan, stamp, key_parts)] * len(pieces), rows)
        # one map: the two checks read only the table step's files (no barrier between them)
        checked = timed(
            "checks",
            checks_task,
            [(plan, key_parts)] * (key_parts + len(pieces)),
            [plan.documents / key_parts] * key_parts + rows,  # a key partition holds 1/K of every key
        )
        keyed, owners_ok = checked[:key_parts], checked[key_parts:]

    documents = sum(r["rows"] for r in signed)
    stats = {
        "documents": documents,
        "bands": plan.params["bands"],
        "rows": plan.params["rows"],
        "band_rows": sum(r["band_rows"] for r in paired),
        "shared_buckets": sum(r["shared_buckets"] for r in paired),
        "large_buckets": sum(r["large_buckets"] for r in paired),
        "large_bucket_documents": sum(r["large_bucket_docs"] for r in paired),
        "candidate_pairs": sum(r["candidate_pairs"] for r in joined),
        "verified_edges": sum(r["verified_edges"] for r in verified),
        "unverified_edges_dropped": sum(r["dropped"] for r in verified),
        "components": sum(r["components"] for r in owned),
        "largest_component": max([r["largest"] for r in owned], default=1),
        "removed": sum(r["removed"] for r in written),
        "signature_bytes": documents * plan.params["num_perm"] * 4,
        "pieces": len(pieces),
        "reducers": plan.reducers,
        "component_partitions": plan.parts,
        "component_rounds": rounds,
    }
    sample_rows = [row for r in written for row in r["sample"]][:SAMPLE_ROWS]
    sample = pd.DataFrame(
        sample_rows, columns=["source", "id", "duplicate_of", "similarity", "component_size"]
    ).assign(kept=False)
    checks = {
        "rows": sum(r["rows"] for r in written),
        "repeated_keys": sum(r["repeated"] for r in keyed),
        "kept_rows_not_first_of_component": sum(r["bad_kept"] for r in owners_ok),
        "removed_rows_not_naming_the_kept_first": sum(r["wrong_owner"] for r in owners_ok),
        "components_without_exactly_one_kept": sum(r["bad_components"] for r in owners_ok),
    }
    return plan, ShuffleResult(stats, sample, checks, parts=[r["part"] for r in written])


def table_parts(plan: ShufflePlan) -> list[str]:
    """The written parts of the output table, in piece (first-come) order (paths on the root's
    filesystem, from the table tasks' markers)."""
    return [task_files(plan.step("table"), p)["part"] for p in range(len(plan.pieces))]


def part_width(plan: ShufflePlan) -> int:
    """Digits of the table's part numbers: names sort in piece order at any count."""
    return max(8, len(str(len(plan.pieces))))
