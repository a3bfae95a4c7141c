"""dataset_splits and training_schedule: leak-free splits, and the ordered manifest training reads."""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from assets.metadata import column_schema, provenance
from assets.mixing import pretrain_mixture
from assets.text_corpus import pretrain_corpus
from refinery import markdown
from refinery.mixing.corpus import output_path, read_provenance, require_output, write_table
from refinery.mixing.plots import markdown_image, schedule_plot
from refinery.schedule.order import ScheduleParams, eval_order, order_mixture
from refinery.schedule.shards import shard_dir, write_shards
from refinery.schedule.splits import SplitParams, assign_splits
from resources import RefineryHome

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


class SplitConfig(dg.Config, SplitParams):
    domain_column: str | None = "domain"


class ScheduleConfig(dg.Config, ScheduleParams):
    pass


@dg.asset(
    deps=[pretrain_corpus],
    group_name="schedule",
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            "no_leakage",
            asset="dataset_splits",
            blocking=True,
            description="No known duplicate relation crosses splits, and no sampled held-out document has a "
            "near copy (brute force over MinHash signatures) in train.",
        )
    ],
    description="Deterministic train/validation/test splits (80/10/10 by default) by a salted hash of each "
    "document's group: union-find over the dedup stages' duplicate_of decisions, identical content hashes, "
    "and a lower-threshold MinHash-LSH pass over the corpus, so every near-duplicate cluster stays in one "
    "split. Sizes and the leakage check in metadata.",
)
def dataset_splits(context: dg.AssetExecutionContext, config: SplitConfig, refinery: RefineryHome):
    storage = refinery.storage()
    cfg = config.model_dump()
    domain_column = cfg.pop("domain_column")
    params = SplitParams(**cfg)
    result = assign_splits(storage, params, domain_column)
    table = pa.Table.from_pandas(result.assignment, preserve_index=False)
    path = write_table(
        table,
        output_path(storage, "dataset_splits"),
        provenance("dataset_splits", "all", params) | {"domain_column": domain_column},
    )
    sizes = result.sizes()
    groups = result.assignment.drop_duplicates("group")
    passed = result.crossing_edges == 0 and result.leakage_found == 0
    examples = "\n".join(f"- {a} ~ {b} (Jaccard {s:.2f})" for a, b, s in result.leak_examples) or "_none_"
    context.log.info(
        f"splits: {dict(zip(sizes['split'], sizes['documents'], strict=True))}; leakage check "
        f"{'passed' if passed else 'FAILED'}"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(result.assignment),
            "dagster/column_schema": column_schema(table.schema),
            "sizes": dg.MetadataValue.md(
                markdown.table(
                    ["split", "documents", "tokens", "groups", "share of documents"],
                    sizes[["split", "documents", "tokens", "groups", "share_of_documents"]]
                    .round(4)
                    .itertuples(index=False),
                )
            ),
            "requested_fractions": dg.MetadataValue.json(params.fractions),
            "groups": len(groups),
            "largest_group": int(groups["group_size"].max()) if len(groups) else 0,
            "grouped_documents": int((result.assignment["group_size"] > 1).sum()),
            "relations": dg.MetadataValue.json(result.edges),
            "output": dg.MetadataValue.path(str(path)),
            "parameters": dg.MetadataValue.json(params.model_dump()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_leakage",
                passed=passed,
                metadata={
                    "relations_crossing_splits": result.crossing_edges,
                    "held_out_documents_checked": result.leakage_checked,
                    "held_out_with_near_copy_in_train": result.leakage_found,
                    "threshold": params.near_dup_threshold if params.near_dup_threshold is not None else -1.0,
                    "examples": dg.MetadataValue.md(examples),
                },
            )
        ],
    )


def _difficulty(mixture: pd.DataFrame, choice: str) -> tuple[np.ndarray, str]:
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


@dg.asset(
    deps=[pretrain_mixture, dataset_splits],
    group_name="schedule",
    kinds={"python", "parquet", "duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "shards_match_manifest",
            asset="training_schedule",
            blocking=True,
            description="Every split's shards hold exactly the manifest's documents, "
            "positions 0…n−1 in order.",
        )
    ],
    description="The ordered manifest of what training reads "
    "(storage/training_schedule/training_schedule.parquet: "
    "split, position, step, phase, shard, domain, source, id, epoch, replay, tokens, difficulty) and its "
    "documents in order as Parquet shards (storage/training_schedule/shards/<split>/) for "
    "refinery.schedule.loader.ScheduleDataset. Train follows pretrain_mixture, ordered by the strategy: "
    "multi-task mixing by weight, sequential with replay, or a curriculum easy → hard "
    "(KenLM perplexity where "
    "present, else length) with linear/root/step pacing; validation and test hold each split document once.",
)
def training_schedule(context: dg.AssetExecutionContext, config: ScheduleConfig, refinery: RefineryHome):
    storage = refinery.storage()
    params = ScheduleParams(**config.model_dump())
    mixture = pd.read_parquet(require_output(storage, "pretrain_mixture"))
    mixture_split = read_provenance(output_path(storage, "pretrain_mixture"))["params"].get("split")
    splits = pd.read_parquet(require_output(storage, "dataset_splits"))
    split_fractions = read_provenance(output_path(storage, "dataset_splits"))["params"].get("fractions", {})
    difficulty, measure = _difficulty(mixture, params.difficulty)
    train = order_mixture(mixture, params, difficulty if params.strategy == "curriculum" else None)
    train_name = mixture_split or "train"
    train = train.assign(split=train_name)
    parts = [train]
    held_out = sorted(splits.groupby("split"), key=lambda kv: kv[0]) if mixture_split is not None else []
    if mixture_split is None:
        context.log.warning(
            "pretrain_mixture was drawn from every split (split: null): the schedule has no held-out "
            "splits, since their documents are already in training"
        )
    for i, (name, docs) in enumerate(held_out):
        if name == train_name:
            continue
        held = eval_order(docs[["domain", "source", "id", "tokens"]], params.seed + 1 + i)
        parts.append(
            held.assign(split=name, step=held["position"] // params.docs_per_step, difficulty=np.nan)
        )
    manifest = pd.concat(parts, ignore_index=True)
    manifest["shard"] = (manifest["position"] // params.shard_docs).astype(np.int32)
    manifest = manifest.astype(
        {
            "position": "int64",
            "step": "int64",
            "phase": "int32",
            "epoch": "int32",
            "replay": "bool",
            "tokens": "int64",
            "difficulty": "float64",
        }
    )
    manifest = manifest[MANIFEST_COLUMNS]
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    root = output_path(storage, "training_schedule").parent
    root.mkdir(parents=True, exist_ok=True)
    summary = write_shards(
        storage,
        table,
        root,
        params.docs_per_step,
        params.shard_docs,
        params.row_group_docs,
        split_names=sorted(set(split_fractions) | set(splits["split"]) | {train_name})
        if mixture_split is not None
        else [train_name],
    )
    path = write_table(
        table,
        output_path(storage, "training_schedule"),
        provenance("training_schedule", "all", params) | {"difficulty_measure": measure},
    )

    # -- check from the files written ------------------------------------------------------------
    problems = []
    for name, count in manifest.groupby("split").size().items():
        files = sorted(shard_dir(root, name).glob("shard-*.parquet"))
        positions = (
            np.concatenate([pq.read_table(f, columns=["position"]).column(0).to_numpy() for f in files])
            if (files)
            else np.zeros(0, np.int64)
        )
        if len(positions) != count or not np.array_equal(positions, np.arange(count)):
            problems.append(f"{name}: {len(positions)} rows in shards, manifest {count}")
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
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(manifest),
            "dagster/column_schema": column_schema(table.schema),
            "strategy": params.strategy,
            "difficulty_measure": measure if params.strategy == "curriculum" else "n/a",
            "splits": dg.MetadataValue.json(summary),
            "train_documents": len(train),
            "train_tokens": int(train["tokens"].sum()),
            "steps": int(train["step"].max() + 1) if len(train) else 0,
            "docs_per_step": params.docs_per_step,
            "replay_documents": len(replayed),
            "replay_tokens": int(replayed["tokens"].sum()),
            "phases": dg.MetadataValue.md(
                markdown.table(["phase", *[str(c) for c in by_phase.columns], "mean difficulty"], phase_rows)
                if len(by_phase)
                else "_empty_"
            ),
            "plot_order": dg.MetadataValue.md(markdown_image(schedule_plot(manifest), "training order")),
            "manifest": dg.MetadataValue.path(str(path)),
            "shards": dg.MetadataValue.path(str(root / "shards")),
            "parameters": dg.MetadataValue.json(params.model_dump()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="shards_match_manifest",
                passed=not problems,
                metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_")},
            )
        ],
    )
