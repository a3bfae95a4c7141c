"""dataset_splits and training_schedule end to end: compute, write, verify from the files.

The schedule is what training reads: an ordered manifest (split, position, step, phase, shard,
domain, source, id, epoch, replay, tokens, difficulty) and, per split, the documents in that order
as Parquet shards for :class:`refinery.schedule.loader.ScheduleDataset`. The check reads the
shards back: each split's shards hold exactly the manifest's positions 0…n−1, in order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from refinery import markdown
from refinery.fs import join, listing
from refinery.metadata import CheckOutcome, FilePath, Json, Markdown, Published
from refinery.mixing.plots import schedule_plot
from refinery.names import DATASET_SPLITS, PRETRAIN_MIXTURE, TRAINING_SCHEDULE
from refinery.plots import markdown_image
from refinery.schedule.order import ScheduleParams, eval_order, order_mixture
from refinery.schedule.shards import build_shards
from refinery.schedule.splits import SplitParams, assign_splits
from refinery.storage import Storage
from refinery.table_store import AnyStorage, commit_folder, discard_staging, folder_staging, read_frame, shown

MANIFEST_COLUMNS = [
    "split",
    "position",
    "step",
    "phase",
    "shard",
    "domain",
    "source",
    "id",
    "epoch",
    "replay",
    "tokens",
    "difficulty",
]
MANIFEST_DTYPES = {
    "position": "int64",
    "step": "int64",
    "phase": "int32",
    "epoch": "int32",
    "replay": "bool",
    "tokens": "int64",
    "difficulty": "float64",
}


class SplitsParams(SplitParams):
    """dataset_splits' parameters: the split rule, and where a document's domain is read from."""

    domain_column: str | None = Field(
        "domain", description="Corpus column naming a document's domain where present; else its source."
    )


def publish_splits(storage: Storage, params: SplitsParams, stamp: dict) -> Published:
    """Leak-free splits: near-duplicate groups stay in one split; the no_leakage check."""
    domain_column = params.domain_column
    result = assign_splits(storage, params, domain_column)
    table = pa.Table.from_pandas(result.assignment, preserve_index=False)
    path = storage.write_table(DATASET_SPLITS, table, stamp | {"domain_column": domain_column})
    sizes = result.sizes()
    groups = result.assignment.drop_duplicates("group")
    passed = result.crossing_edges == 0 and result.leakage_found == 0
    examples = "\n".join(f"- {a} ~ {b} (Jaccard {s:.2f})" for a, b, s in result.leak_examples) or "_none_"
    meta = {
        "sizes": Markdown(
            markdown.table(
                ["split", "documents", "tokens", "groups", "share of documents"],
                sizes[["split", "documents", "tokens", "groups", "share_of_documents"]]
                .round(4)
                .itertuples(index=False),
            )
        ),
        "requested_fractions": Json(params.fractions),
        "groups": len(groups),
        "largest_group": int(groups["group_size"].max()) if len(groups) else 0,
        "grouped_documents": int((result.assignment["group_size"] > 1).sum()),
        "relations": Json(result.edges),
        "output": FilePath.of(shown(storage, path)),
        "parameters": Json(params.model_dump()),
    }
    check = CheckOutcome(
        "no_leakage",
        passed,
        {
            "relations_crossing_splits": result.crossing_edges,
            "held_out_documents_checked": result.leakage_checked,
            "held_out_with_near_copy_in_train": result.leakage_found,
            "threshold": params.near_dup_threshold if params.near_dup_threshold is not None else -1.0,
            "examples": Markdown(examples),
        },
    )
    info = (
        f"splits: {dict(zip(sizes['split'], sizes['documents'], strict=True))}; leakage check "
        f"{'passed' if passed else 'FAILED'}"
    )
    return Published(meta, [check], info=[info], schema=table.schema, rows=len(result.assignment))


def difficulty_of(mixture: pd.DataFrame, choice: str) -> tuple[np.ndarray, str]:
    """Perplexity (KenLM stage) where every row has one, else length in whitespace tokens."""
    perplexity = (
        pd.to_numeric(mixture.get("perplexity"), errors="coerce") if "perplexity" in mixture else None
    )
    complete = perplexity is not None and len(mixture) and bool(np.isfinite(perplexity.to_numpy(float)).all())
    if choice == "perplexity" and not complete:
        raise ValueError(
            "difficulty='perplexity' but the corpus has no perplexity column for every document: "
            "materialize the KenLM stage, or use difficulty 'length' or 'auto'"
        )
    if choice in ("perplexity", "auto") and complete:
        return perplexity.to_numpy(float), "perplexity"
    return mixture["tokens"].to_numpy(float), "length"


def build_manifest(
    mixture: pd.DataFrame, mixture_split: str | None, splits: pd.DataFrame, params: ScheduleParams
) -> tuple[pd.DataFrame, pd.DataFrame, str, list[str]]:
    """The ordered manifest: train in strategy order, then each held-out split once; shard numbers
    from positions. Returns (manifest, train rows, difficulty measure, warnings)."""
    difficulty, measure = difficulty_of(mixture, params.difficulty)
    train = order_mixture(mixture, params, difficulty if params.strategy == "curriculum" else None)
    train_name = mixture_split or "train"
    train = train.assign(split=train_name)
    parts, warnings = [train], []
    if mixture_split is None:
        warnings.append(
            "pretrain_mixture was drawn from every split (split: null): the schedule has no held-out "
            "splits, since their documents are already in training"
        )
    held_out = sorted(splits.groupby("split"), key=lambda kv: kv[0]) if mixture_split is not None else []
    for i, (name, docs) in enumerate(held_out):
        if name == train_name:
            continue
        held = eval_order(docs[["domain", "source", "id", "tokens"]], params.seed + 1 + i)
        parts.append(
            held.assign(split=name, step=held["position"] // params.docs_per_step, difficulty=np.nan)
        )
    manifest = pd.concat(parts, ignore_index=True)
    manifest["shard"] = (manifest["position"] // params.shard_docs).astype(np.int32)
    return manifest.astype(MANIFEST_DTYPES)[MANIFEST_COLUMNS], train, measure, warnings


def verify_shards(filesystem, shards: str, manifest: pd.DataFrame) -> list[str]:
    """Problems found reading the committed shards back (``shards`` on ``filesystem``, a local one
    or an object store): each split must hold positions 0…n−1 in order."""
    problems = []
    for name, count in manifest.groupby("split").size().items():
        files = [
            i.path
            for i in listing(filesystem, join(shards, name))
            if i.base_name.startswith("shard-") and i.base_name.endswith(".parquet")
        ]
        positions = (
            np.concatenate(
                [
                    pq.read_table(f, columns=["position"], filesystem=filesystem).column(0).to_numpy()
                    for f in files
                ]
            )
            if files
            else np.zeros(0, np.int64)
        )
        if len(positions) != count or not np.array_equal(positions, np.arange(count)):
            problems.append(f"{name}: {len(positions)} rows in shards, manifest {count}")
    return problems


def publish_schedule(storage: AnyStorage, params: ScheduleParams, stamp: dict) -> Published:
    """Order the mixture, write the shards and the manifest, then check the shards."""
    mixture = read_frame(storage, PRETRAIN_MIXTURE)
    mixture_split = storage.table_provenance(PRETRAIN_MIXTURE)["params"].get("split")
    splits = read_frame(storage, DATASET_SPLITS)
    split_fractions = storage.table_provenance(DATASET_SPLITS)["params"].get("fractions", {})
    manifest, train, measure, warnings = build_manifest(mixture, mixture_split, splits, params)
    train_name = mixture_split or "train"
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    staging = folder_staging(storage, TRAINING_SCHEDULE)
    try:
        summary = build_shards(
            storage,
            table,
            staging,
            params.docs_per_step,
            params.shard_docs,
            params.row_group_docs,
            split_names=sorted(set(split_fractions) | set(splits["split"]) | {train_name})
            if mixture_split is not None
            else [train_name],
        )
    except BaseException:
        discard_staging(storage, staging)
        raise
    shards = commit_folder(storage, TRAINING_SCHEDULE, staging)
    path = storage.write_table(TRAINING_SCHEDULE, table, stamp | {"difficulty_measure": measure})
    problems = verify_shards(storage.fs, str(shards), manifest)
    meta = _schedule_metadata(manifest, train, params, measure)
    meta.update(
        splits=Json(summary),
        manifest=FilePath.of(shown(storage, path)),
        shards=FilePath.of(shown(storage, shards)),
    )
    check = CheckOutcome(
        "shards_match_manifest",
        not problems,
        {"problems": Markdown("\n".join(f"- {p}" for p in problems) or "_none_")},
    )
    return Published(meta, [check], warnings=warnings, schema=table.schema, rows=len(manifest))


def _schedule_metadata(
    manifest: pd.DataFrame, train: pd.DataFrame, params: ScheduleParams, measure: str
) -> dict:
    by_phase = train.groupby(["phase", "domain"]).size().unstack(fill_value=0)
    phase_rows = [
        (
            int(ph),
            *[int(v) for v in row],
            round(float(train.loc[train["phase"] == ph, "difficulty"].mean()), 2)
            if params.strategy == "curriculum"
            else "",
        )
        for ph, row in by_phase.iterrows()
    ]
    replayed = train[train["replay"]]
    return {
        "strategy": params.strategy,
        "difficulty_measure": measure if params.strategy == "curriculum" else "n/a",
        "train_documents": len(train),
        "train_tokens": int(train["tokens"].sum()),
        "steps": int(train["step"].max() + 1) if len(train) else 0,
        "docs_per_step": params.docs_per_step,
        "replay_documents": len(replayed),
        "replay_tokens": int(replayed["tokens"].sum()),
        "phases": Markdown(
            markdown.table(["phase", *[str(c) for c in by_phase.columns], "mean difficulty"], phase_rows)
            if len(by_phase)
            else "_empty_"
        ),
        "plot_order": Markdown(markdown_image(schedule_plot(manifest), "training order")),
        "parameters": Json(params.model_dump()),
    }
