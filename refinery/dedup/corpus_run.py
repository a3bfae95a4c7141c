"""corpus_fuzzy_dedup's run on an engine's workers: the shuffle, the table committed as parts, the
comparison with the incremental path per source; the caller (the Dagster step) holds counts only.

The engine gives the task runner (in this process for ``local``, Ray tasks for ``ray``) and the
piece size; the same steps run either way, so both write the same table. The shuffle's files live
under ``<storage>/_shuffle/corpus_fuzzy_dedup/<fingerprint>`` until the table is committed: a step
retried after a failure (a worker lost, the Dagster step re-executed) resumes from them
(:mod:`refinery.dedup.marked_shuffle`: files named after their attempt, committed by done markers,
on a local folder and on an object store alike).

The table's commit differs by root. Local: the table tasks' parts are hard-linked into a staging
folder with its manifest, renamed into place as a whole. Object store (no rename): the table tasks
wrote their parts straight into the table's folder, named after their attempt; the manifest,
written last, lists the committed attempts' parts (the commit point), then every part it does not
list (an older run's, a killed attempt's) is deleted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from refinery.dedup.corpus_compare import Meter, incremental_decisions
from refinery.dedup.corpus_dedup import CorpusDedupParams
from refinery.dedup.corpus_shuffle import TABLE_SCHEMA, ShufflePlan, ShuffleResult, plan_pieces, shuffle_dedup
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import slice_location
from refinery.engine.tasks import TaskRunner
from refinery.fs import child, listing
from refinery.ids import doc_key
from refinery.manifest import write_manifest, write_manifest_at
from refinery.names import CORPUS_FUZZY_DEDUP, EXACT_DEDUPLICATED
from refinery.object_storage import ObjectStorage, delete_unlisted_parts, open_storage
from refinery.storage import Storage, replace_partition, stamped
from refinery.tempfiles import fsync_tree, temp_path

SHUFFLE_DIR = "_shuffle"
LOCAL_PIECE_ROWS = 50_000


def engine_tasks(engine: Any) -> tuple[TaskRunner, int, int]:
    """(task runner, workers, rows per piece) of an engine: ``engine.tasks()`` (the local engine:
    this process; the Ray engine: Ray tasks over the cluster) and its slice size."""
    runner, workers = engine.tasks()
    return runner, workers, int(getattr(engine, "slice_rows", LOCAL_PIECE_ROWS))


def run_shuffle(
    storage: Storage | ObjectStorage,
    sources: list[str],
    params: CorpusDedupParams,
    engine: Any,
    meter: Meter,
    stamp: dict,
) -> tuple[str, ShufflePlan, ShuffleResult]:
    """The batch pass over ``sources`` (sorted) as shuffles on ``engine``; the table committed
    (its folder, as a person names it)."""
    runner, workers, piece_rows = engine_tasks(engine)
    locations = [(s, slice_location(storage, EXACT_DEDUPLICATED, s)) for s in sources]
    table_folder = (
        storage.location_uri(CORPUS_FUZZY_DEDUP, CORPUS_FUZZY_DEDUP)
        if isinstance(storage, ObjectStorage)
        else ""
    )
    seconds: dict = {}
    with meter.session():
        plan, result = shuffle_dedup(
            plan_pieces(locations, piece_rows),
            params,
            runner,
            child(storage.root, SHUFFLE_DIR, CORPUS_FUZZY_DEDUP),
            workers,
            stamp,
            seconds,
            meter.step,
            table_folder,
        )
    result.stats["seconds"] = seconds
    if isinstance(storage, ObjectStorage):
        path = commit_object_table(storage, plan, result.parts, stamp)
    else:
        path = str(commit_table(storage, plan, result.parts, stamp))
    remove_shuffles(plan)
    return path, plan, result


def remove_shuffles(plan: ShufflePlan) -> None:
    """This run's shuffle, and those of earlier runs over inputs that have changed since (a failed
    run leaves its files for a retry over the same inputs; once the table is committed they are dead)."""
    parent = RootFolder(_parent_of(plan.work))
    for info in listing(parent.fs, parent.path):
        parent.sub(info.base_name).remove()


def _parent_of(work: str) -> str:
    """The folder holding ``work`` (a path, or a URI whose query is kept)."""
    head, mark, query = work.partition("?")
    return head.rstrip("/").rpartition("/")[0] + mark + query


def commit_object_table(storage: ObjectStorage, plan: ShufflePlan, parts: list[str], stamp: dict) -> str:
    """The manifest of the table tasks' parts (written in place in piece order), written last;
    then every part of the folder it does not list is deleted. An empty corpus gets one empty part."""
    folder = storage.parts_path(CORPUS_FUZZY_DEDUP, CORPUS_FUZZY_DEDUP)
    names = [p.rpartition("/")[2] for p in parts]
    if not names:
        names = [f"part-{0:08d}-{os.urandom(6).hex()}.parquet"]
        RootFolder(plan.table_folder).write_table(names[0], stamped(TABLE_SCHEMA, stamp).empty_table())
    write_manifest_at(storage.fs, folder, names, stamp)
    delete_unlisted_parts(storage.fs, folder, names)
    return storage.uri(folder)


def commit_table(storage: Storage, plan: ShufflePlan, parts: list[str], stamp: dict) -> Path:
    """The table's parts, linked into a staging folder as ``part-<piece>.parquet`` and moved into
    place as a whole (replacing the single-file layout of older runs); then the shuffle's files go."""
    final = storage.parts_path(CORPUS_FUZZY_DEDUP, CORPUS_FUZZY_DEDUP)
    staging = temp_path(final, "parts")
    staging.mkdir(parents=True)
    width = max(8, len(str(len(parts))))
    for p, part in enumerate(parts):
        target = staging / f"part-{p:0{width}d}.parquet"
        try:
            os.link(part, target)
        except OSError:  # another filesystem, or no hard links
            shutil.copy2(part, target)
    if not parts:
        pq.write_table(stamped(TABLE_SCHEMA, stamp).empty_table(), staging / f"part-{0:0{width}d}.parquet")
    write_manifest(staging, stamp)  # last: a folder with a manifest is complete
    fsync_tree(staging)
    replace_partition(staging, final, storage.table_path(CORPUS_FUZZY_DEDUP))
    return final


def compare_task(root: str, source: str, parts: list[str], threshold: float, examples: int) -> dict:
    """The batch and incremental removals of one source: counts and the first examples of each
    difference (in the table's order), computed where the source's rows are."""
    storage = open_storage(root)
    decisions, missing = incremental_decisions(storage, [source])
    if missing:
        return {"missing": True}
    frames = [
        pq.read_table(
            p, columns=["source", "id", "kept", "duplicate_of", "similarity"], filesystem=storage.fs
        ).to_pandas()
        for p in parts
    ]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "kept"])
    removed = rows[~rows["kept"].astype(bool)]
    removed = removed.assign(key=[doc_key(source, str(i)) for i in removed["id"]])
    batch, incremental = set(removed["key"]), set(decisions["key"])
    only_batch = removed[~removed["key"].isin(incremental)][["key", "duplicate_of", "similarity"]]
    only_incremental = decisions[~decisions["key"].isin(batch)]
    return {
        "missing": False,
        "counts": {
            "removed_by_batch": len(batch),
            "removed_by_incremental": len(incremental),
            "removed_by_both": len(batch & incremental),
            "only_batch": len(only_batch),
            "only_batch_chained": int((only_batch["similarity"] < threshold).sum()),
            "only_incremental": len(only_incremental),
        },
        "only_batch": only_batch.head(examples).to_dict("records"),
        "only_incremental": only_incremental.head(examples).to_dict("records"),
    }


def compare_sources(
    storage: Storage | ObjectStorage, plan: ShufflePlan, runner: TaskRunner, threshold: float, examples: int
) -> tuple[dict, list[str], list[str], pd.DataFrame, pd.DataFrame]:
    """Per source on the runner: (summed counts, sources compared, sources fuzzy_deduplicated has
    not materialized, the first only-batch and only-incremental examples)."""
    files = storage.files(CORPUS_FUZZY_DEDUP, CORPUS_FUZZY_DEDUP)  # the committed parts, in piece order
    by_source: dict[str, list[str]] = {}
    for piece, file in zip(plan.pieces, files, strict=False):
        by_source.setdefault(piece.source, []).append(str(file))
    sources = list(by_source)
    found = runner.map(
        compare_task, [(str(storage.root), s, by_source[s], threshold, examples) for s in sources]
    )
    counts = dict.fromkeys(
        ("removed_by_batch", "removed_by_incremental", "removed_by_both", "only_batch", "only_batch_chained",
         "only_incremental"), 0,
    )  # fmt: skip
    compared, missing, only_batch, only_incremental = [], [], [], []
    for source, result in zip(sources, found, strict=True):
        if result["missing"]:
            missing.append(source)
            continue
        compared.append(source)
        for k, v in result["counts"].items():
            counts[k] += v
        only_batch += result["only_batch"]
        only_incremental += result["only_incremental"]
    columns = ["key", "duplicate_of", "similarity"]
    return (
        counts,
        compared,
        missing,
        pd.DataFrame(only_batch[:examples], columns=columns),
        pd.DataFrame(only_incremental[:examples], columns=columns),
    )


def sizes_summary(result: ShuffleResult) -> tuple[int, int]:
    """(components with duplicates, largest component)."""
    return int(result.stats["components"]), int(np.max([result.stats["largest_component"], 1]))
