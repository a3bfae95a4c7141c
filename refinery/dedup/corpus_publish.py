"""corpus_fuzzy_dedup end to end: every text source's deduplicated rows in one batch pass.

What it reads: ``exact_deduplicated`` of every source, in first-come order (sources sorted by name,
rows in reading order), the input the incremental ``fuzzy_deduplicated`` stage reads too. What it
does: the steps of :mod:`refinery.dedup.corpus_shuffle`, every one a list of tasks over Parquet
files run by the engine (in this process for ``local``, as Ray tasks for ``ray``), so this process
holds per-piece counts only (:mod:`refinery.dedup.corpus_run`). What it writes: the parts folder
``storage/corpus_fuzzy_dedup/corpus_fuzzy_dedup/`` with its ``_manifest.json``, one row per document:
``source``, ``id``, ``component``, ``component_size``, ``kept``, ``duplicate_of``, ``similarity``.
:func:`batch_dedup` keeps the previous path (every step's arrays in this process, whatever the engine) as
the in-memory baseline to compare with.

**Keep rule.** Documents are numbered in first-come order; every connected component of the graph of
verified near-duplicate pairs (estimated Jaccard ≥ threshold) keeps its first document, the one from
the alphabetically first source and, within it, the earliest row. Every other member names it in
``duplicate_of`` with their estimated Jaccard in ``similarity`` (which may be below the threshold:
the member is in the component through a chain of near-duplicates).

**Batch or incremental.** The incremental stage (``fuzzy_deduplicated``) suits sources that arrive
one at a time: each new partition is checked against an index of everything kept before, and earlier
decisions never change. The batch pass suits a backfill, or a periodic audit, of a whole corpus: it
needs no index, its work is parallel (signatures by slice, pairs by bucket), and it removes a
superset of what the incremental path removes when sources are materialized in sorted order, because
components chain: with A ~ B ~ C and A, C below the threshold, the incremental path keeps A and C, the
batch pass only A. The side-by-side metadata lists both sets and where they differ.

Time and memory of the two paths are measured here, on the same documents: the batch steps, and a
replay of the incremental path (every source in the same order through :class:`FuzzyDeduper` against
a temporary SQLite index, as the stage runs it) unless ``replay_incremental`` is off. Peak memory is
the peak of ``tracemalloc``'s traced allocations (Python objects and NumPy arrays of this process) per
step, not the process RSS; with the Ray engine, the workers' memory is not included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from refinery import markdown
from refinery.dedup.banding import candidate_probability
from refinery.dedup.corpus_compare import PEAK_MEMORY_MEASURE, Meter, replay_incremental
from refinery.dedup.corpus_dedup import (
    CorpusDedupParams,
    CorpusDedupResult,
    dedup_signed,
    document_keys,
    pairs_by_band,
)
from refinery.dedup.corpus_run import compare_sources, engine_tasks, run_shuffle
from refinery.dedup.corpus_shuffle import TABLE_SCHEMA
from refinery.dedup.fuzzy import signature_function
from refinery.ids import doc_key
from refinery.kernel.spec import Engine
from refinery.manifest import read_manifest
from refinery.metadata import CheckOutcome, FilePath, Json, Markdown, Published, bullet_list
from refinery.names import CORPUS_FUZZY_DEDUP, EXACT_DEDUPLICATED
from refinery.object_storage import ObjectStorage
from refinery.storage import Storage, iter_path_batches

KEEP_RULE = (
    "one document kept per connected component of verified near-duplicate pairs: the first in "
    "first-come order (sources sorted by name, rows in reading order)"
)


class CorpusFuzzyDedupParams(CorpusDedupParams):
    """corpus_fuzzy_dedup's parameters: the batch pass (MinHash and banding as fuzzy_deduplicated's,
    so the two compare), and what the comparison with the incremental path does."""

    replay_incremental: bool | None = Field(
        None,
        description="Also replay the incremental path over the same documents in the same order (against a "
        "temporary index) to measure its time and peak memory beside the batch pass's. It runs in the step's "
        "process and reads every document there (it is sequential), doubling the work. None (default): on "
        "with the local engine, off with a distributed one; true or false: always or never.",
    )
    examples: int = Field(5, ge=0, description="Example documents listed per difference.")

    def replays(self, distributed: bool) -> bool:
        """Whether this run replays the incremental path (on a distributed engine only when asked)."""
        return self.replay_incremental if self.replay_incremental is not None else not distributed


def corpus_sources(storage: Storage, sources: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(sources to read, sorted: those with an exact_deduplicated output; those asked for without one).
    ``sources`` None: every partition exact_deduplicated has in storage."""
    asked = sorted(set(sources)) if sources is not None else storage.partitions(EXACT_DEDUPLICATED)
    present = [s for s in asked if storage.exists(EXACT_DEDUPLICATED, s)]
    return present, [s for s in asked if s not in present]


def batch_dedup(
    storage: Storage, sources: list[str], params: CorpusDedupParams, meter: Meter
) -> CorpusDedupResult:
    """The five steps over ``sources`` (first-come order), every one in this process: the
    signatures and band rows of the whole corpus held here (the baseline, not a path for a cluster)."""
    with meter.session():  # one trace: the later steps' peaks include the signatures they hold
        return _batch_steps(storage, sources, params, meter)


def _batch_steps(
    storage: Storage, sources: list[str], params: CorpusDedupParams, meter: Meter
) -> CorpusDedupResult:
    index = params.index_params()
    with meter.step("signatures"):
        key_parts, sig_parts = [], []
        sign = signature_function(index)
        for source in sources:
            location = storage.require(EXACT_DEDUPLICATED, source)
            for batch in iter_path_batches(location, params.batch_rows, ["id", "text"]):
                frame = batch.to_pandas()
                key_parts.append(pd.DataFrame({"source": source, "id": frame["id"].astype(str).to_numpy()}))
                sig_parts.append(sign(frame))
        keys = document_keys(key_parts)
        signatures = np.concatenate(sig_parts) if sig_parts else np.zeros((0, params.num_perm), np.uint32)
        del sig_parts
    with meter.step("bands_and_pairs"):
        pairs, pair_stats = pairs_by_band(
            signatures, index["bands"], index["rows"], params.max_bucket_all_pairs, params.anchors
        )
    with meter.step("edges_components_table"):
        return dedup_signed(keys, signatures, pairs, pair_stats, params, dict(meter.seconds))


def _examples(frame: pd.DataFrame, limit: int, owner: str) -> Markdown:
    if not len(frame):
        return Markdown("_none_")
    rows = [
        (k, d, f"{s:.3f}")
        for k, d, s in frame.head(limit)[["key", "duplicate_of", "similarity"]].itertuples(index=False)
    ]
    return Markdown(markdown.table(["document", owner, "estimated Jaccard"], rows))


def removed_sample(table: pd.DataFrame, limit: int = 10) -> Markdown:
    removed = table[~table["kept"]].head(limit)
    if not len(removed):
        return Markdown("_none_")
    rows = [
        (doc_key(str(r.source), str(r.id)), r.duplicate_of, f"{r.similarity:.3f}", r.component_size)
        for r in removed.itertuples(index=False)
    ]
    return Markdown(markdown.table(["removed", "kept owner", "estimated Jaccard", "component size"], rows))


def check_outcomes(table: pd.DataFrame, documents_in: int) -> list[CheckOutcome]:
    """Computed from the table as written: every document once, and one kept per component (its
    first document), named by every other member."""
    keys = [doc_key(s, i) for s, i in zip(table["source"].astype(str), table["id"].astype(str), strict=True)]
    duplicated = len(keys) - len(set(keys))
    once = CheckOutcome(
        "every_document_once",
        len(table) == documents_in and duplicated == 0,
        {"rows": len(table), "documents_in": documents_in, "repeated_keys": duplicated},
    )
    position = np.arange(len(table))
    component = table["component"].to_numpy(dtype=np.int64)
    kept = table["kept"].to_numpy(dtype=bool)
    kept_count = np.bincount(component, weights=kept, minlength=len(table)) if len(table) else np.zeros(0)
    roots = np.unique(component)
    key_array = np.asarray(keys, dtype=object)
    wrong_owner = (
        int((table["duplicate_of"].to_numpy(dtype=object)[~kept] != key_array[component[~kept]]).sum())
        if len(table)
        else 0
    )
    bad_kept = int((kept != (component == position)).sum())
    bad_components = int((kept_count[roots] != 1).sum()) if len(roots) else 0
    one_kept = CheckOutcome(
        "one_kept_per_component",
        wrong_owner == 0 and bad_kept == 0 and bad_components == 0,
        {
            "components_without_exactly_one_kept": bad_components,
            "kept_rows_not_first_of_component": bad_kept,
            "removed_rows_not_naming_the_kept_first": wrong_owner,
        },
    )
    return [once, one_kept]


def table_manifest(storage: Storage | ObjectStorage) -> dict:
    """The committed table's manifest (its version is the asset's data version)."""
    if isinstance(storage, ObjectStorage):
        return storage.manifest(CORPUS_FUZZY_DEDUP, CORPUS_FUZZY_DEDUP) or {}
    return read_manifest(storage.parts_path(CORPUS_FUZZY_DEDUP, CORPUS_FUZZY_DEDUP)) or {}


def publish_corpus_dedup(
    storage: Storage | ObjectStorage,
    params: CorpusFuzzyDedupParams,
    engine: Engine,
    stamp: dict,
    sources: list[str] | None = None,
) -> Published:
    """Run the batch pass over every source as shuffles on the engine's workers (this process holds
    counts, never rows), commit the table's parts, compare with the incremental path per source."""
    read, missing_exact = corpus_sources(storage, sources)
    meter = Meter()
    path, plan, result = run_shuffle(storage, read, params, engine, meter, stamp)
    stats = result.stats
    documents_in = sum(storage.row_count(EXACT_DEDUPLICATED, s) for s in read)
    replay = params.replays(engine.distributed)
    replayed = replay_incremental(storage, read, params, meter) if replay else None
    runner, _, _ = engine_tasks(engine)
    counts, compared, missing_fuzzy, only_batch, only_incremental = compare_sources(
        storage, plan, runner, params.threshold, params.examples
    )
    index = params.index_params()
    at_threshold = float(candidate_probability(params.threshold, index["bands"], index["rows"]))
    batch_seconds = {k: v for k, v in meter.seconds.items() if k != "incremental_replay"}
    batch_peak = max((v for k, v in meter.peak_mb.items() if k != "incremental_replay"), default=0.0)
    side = [
        (
            "batch (this asset)",
            counts["removed_by_batch"],
            f"{sum(batch_seconds.values()):.3f}",
            f"{batch_peak:.1f}",
        ),
        ("incremental (fuzzy_deduplicated, as materialized)", counts["removed_by_incremental"], "", ""),
    ]
    if replayed is not None:
        replayed_compared = {k for k in replayed if k.partition("/")[0] in compared}
        side.append(
            (
                "incremental (replayed here, sources sorted)",
                len(replayed_compared),
                f"{meter.seconds['incremental_replay']:.3f}",
                f"{meter.peak_mb['incremental_replay']:.1f}",
            )
        )
    side.append(("removed by both", counts["removed_by_both"], "", ""))
    side.append(
        (f"only batch ({counts['only_batch_chained']} through a chain)", counts["only_batch"], "", "")
    )
    side.append(("only incremental", counts["only_incremental"], "", ""))
    rows_out = result.checks["rows"]
    removed = stats["removed"]
    metadata: dict[str, Any] = {
        "documents_in": documents_in,
        "kept": rows_out - removed,
        "removed": removed,
        "components_with_duplicates": stats["components"],
        "largest_component": stats["largest_component"],
        "candidate_pairs": stats["candidate_pairs"],
        "verified_edges": stats["verified_edges"],
        "lsh_false_candidates_dropped": stats["unverified_edges_dropped"],
        "shared_buckets": stats["shared_buckets"],
        "large_buckets": stats["large_buckets"],
        "seconds": Json({k: round(v, 4) for k, v in {**stats["seconds"], **meter.seconds}.items()}),
        "peak_memory_mb": Json(meter.peak_mb),
        "peak_memory_measure": PEAK_MEMORY_MEASURE,
        "signatures_computed_by": engine.name,
        "pairs_grouped_by": engine.name,
        "shuffle": Json(
            {
                k: stats[k]
                for k in (
                    "pieces",
                    "reducers",
                    "component_partitions",
                    "component_rounds",
                    "band_rows",
                    "signature_bytes",
                )
            }
        ),
        "keep_rule": KEEP_RULE,
        "lsh_bands": Markdown(
            markdown.table(
                ["bands", "rows per band", "permutations", "threshold", "P(candidate) at threshold"],
                [(index["bands"], index["rows"], params.num_perm, params.threshold, f"{at_threshold:.3f}")],
            )
        ),
        "parameters": Json(params.model_dump()),
        "removed_sample": removed_sample(result.sample),
        "side_by_side": Markdown(
            markdown.table(["path", "documents removed", "seconds", "peak traced MiB"], side)
            + "\n\nCompared over the sources fuzzy_deduplicated has materialized; the batch pass removes "
            "a superset through chaining (A ~ B ~ C keeps A only) when sources were materialized in "
            "sorted order."
        ),
        **counts,
        "only_batch_examples": _examples(only_batch, params.examples, "batch's kept owner"),
        "only_incremental_examples": _examples(only_incremental, params.examples, "incremental's kept owner"),
        "incremental_sources_compared": len(compared),
        "incremental_missing_partitions": bullet_list(missing_fuzzy, "_none: every source compared_"),
        "sources_read": len(read),
        "sources_without_exact_deduplicated": bullet_list(missing_exact),
        "output": FilePath.of(path),
        "manifest": Json({k: v for k, v in table_manifest(storage).items() if k != "parts"}),
    }
    if replayed is not None:
        metadata["removed_by_incremental_replay"] = len(replayed)
    metadata["incremental_replay"] = (
        "replayed in this step"
        if replay
        else "skipped (replay_incremental false)"
        if params.replay_incremental is False
        else f"skipped on the {engine.name} engine: the replay reads every document in the step "
        "(replay_incremental true runs it)"
    )
    info = [
        f"corpus fuzzy dedup over {len(read)} sources: {documents_in} documents, "
        f"{metadata['removed']} removed in {metadata['components_with_duplicates']} components "
        f"(every step on {engine.name}: {stats['pieces']} pieces, {stats['reducers']} bucket reducers, "
        f"{stats['component_rounds']} component rounds)"
    ]
    warnings = []
    if missing_fuzzy:
        warnings.append(f"fuzzy_deduplicated is not materialized for {missing_fuzzy}: not compared")
    if missing_exact:
        warnings.append(f"exact_deduplicated is not materialized for {missing_exact}: not read")
    checks = shuffle_check_outcomes(result.checks, documents_in)
    return Published(metadata, checks, info=info, warnings=warnings, schema=TABLE_SCHEMA, rows=rows_out)


def shuffle_check_outcomes(found: dict, documents_in: int) -> list[CheckOutcome]:
    """The checks of :func:`check_outcomes`, from the counts the check tasks computed over the
    written parts (keys shuffled by hash; removed rows joined with their owner's row)."""
    once = CheckOutcome(
        "every_document_once",
        found["rows"] == documents_in and found["repeated_keys"] == 0,
        {"rows": found["rows"], "documents_in": documents_in, "repeated_keys": found["repeated_keys"]},
    )
    owner_keys = (
        "components_without_exactly_one_kept",
        "kept_rows_not_first_of_component",
        "removed_rows_not_naming_the_kept_first",
    )
    one_kept = CheckOutcome(
        "one_kept_per_component", all(found[k] == 0 for k in owner_keys), {k: found[k] for k in owner_keys}
    )
    return [once, one_kept]
