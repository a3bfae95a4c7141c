"""The fine-tuning stages, one spec each (one ``sft_source`` partition per source)."""

from __future__ import annotations

import pyarrow as pa

from refinery import names
from refinery.kernel.pipeline import chain
from refinery.kernel.spec import StageSpec
from refinery.sft.check import CHECK_FIELDS, SftCheckParams
from refinery.sft.reader import SftIngestParams
from refinery.sft.schema import TEXT_COLUMN
from refinery.sft.select import SelectionParams

SELECT_FIELDS = (pa.field("cluster", pa.int32()), pa.field("cluster_distance", pa.float32()))

RAW_SFT = StageSpec(
    name=names.RAW_SFT,
    kind="sft",
    params=SftIngestParams,
    text_column=TEXT_COLUMN,
    score_columns=("kind", "format"),
    description="SFT records parsed from $REFINERY_HOME/inbox/sft/<source>/ (JSONL, JSONL.gz, JSON arrays, "
    "Parquet) and normalised to one schema with a `kind` (instruction, conversation, preference, ranked): "
    "Alpaca, Dolly, ShareGPT, OpenAI messages (tool calls and tool results kept), prompt/chosen/rejected, "
    "message-list and HH preference pairs, ranked responses. Each record gets `dedup_text`, the key later "
    "stages compare it on, chosen per kind (`dedup_key`). Malformed records are quarantined in "
    "storage/rejected/raw_sft with reason and raw bytes.",
)

SFT_CHECKED = StageSpec(
    name=names.SFT_CHECKED,
    kind="sft",
    params=SftCheckParams,
    fields=tuple(CHECK_FIELDS),
    names_duplicates=True,
    # On a distributed engine the claims are made in the step first (refinery.sft.check_plan);
    # each row is then decided alone (its rules, its claim's outcome), so workers write the rows.
    parallel=True,
    histograms={
        "response_chars": (10, 50, 100, 250, 500, 1000, 2000, 4000, 8000),
        "prompt_overlap": (0.1, 0.25, 0.5, 0.75, 0.9, 0.95),
    },
    score_columns=("kind", "response_chars", "prompt_overlap"),
    text_column=TEXT_COLUMN,
    description="SFT rules (empty, truncated, prompt-echoing and refusing responses; prompt/response/turn "
    "limits; identical preference pairs, tied rankings; a language gate), then exact and MinHash-LSH "
    "dedup of `dedup_text` (all user turns of a conversation, the whole pair of a preference record) "
    "against every SFT partition materialized before (demonstrations and preference data in separate "
    "indexes, each switched on per group: near-duplicates off for preference data). Rejected rows name "
    "the rule or the kept duplicate.",
)

SFT_SELECTED = StageSpec(
    name=names.SFT_SELECTED,
    kind="sft",
    params=SelectionParams,
    fields=SELECT_FIELDS,
    score_columns=("kind", "cluster", "cluster_distance"),
    text_column=TEXT_COLUMN,
    kinds=frozenset({"pytorch"}),
    # The plan (embeddings, k-means, quotas, per-cluster choice) is made before any row is written;
    # each row is then looked up alone, so the Ray engine writes the rows on its workers.
    parallel=True,
    description="A diverse subset to a budget (count or fraction): embeddings of `dedup_text` "
    "(sentence-transformers), "
    "k-means, then per-cluster sampling (proportional or uniform; random, by quality score, or nearest the "
    "centroid). Every row carries its cluster; dropped rows are rejected as not_selected with the cluster's "
    "before → after counts. Coverage, per-cluster counts and a PCA plot of kept vs dropped in metadata.",
)

# The SFT pipeline, in order (refinery.kernel.pipeline).
STAGES = chain(RAW_SFT, SFT_CHECKED, SFT_SELECTED)
