"""A small corpus for corpus_fuzzy_dedup: partitions with cross-partition exact copies, one-word
edits of shared articles, and a chain A ~ B ~ C across three partitions (A and C below the
threshold), materialized through the real text chain. Shared by the Dagster and the Ray tests."""

from __future__ import annotations

import random

import dagster as dg
import pandas as pd

from assets import TEXT_PREFILTER
from refinery import names
from refinery.sample import prose
from tests.conftest import write_source
from tests.dagster.conftest import jsonl, resources_for
from tests.unit.dedup_race import build_partitions

# Partitions up to exact_deduplicated only: fuzzy_deduplicated is missing for them.
UP_TO_EXACT = [names.RAW_DOCUMENTS, names.CLEAN_DOCUMENTS, names.HEURISTIC_FILTERED, names.EXACT_DEDUPLICATED]
CHAIN_IDS = ("chainA", "chainB", "chainC")


def chain(seed: int = 7) -> tuple[str, str, str]:
    """A ~ B and B ~ C at an estimated Jaccard of about 0.85, A ~ C about 0.72: B replaces words
    spread over the first half of A, C as many more over the second half."""
    rng = random.Random(seed)
    words = prose.article(rng, paragraphs=6).split(" ")
    k = max(1, round(0.016 * len(words)))
    half = len(words) // 2
    b = list(words)
    for j in range(k):
        b[(2 * j + 1) * half // (2 * k)] = f"zyx{j}"
    c = list(b)
    for j in range(k):
        c[half + (2 * j + 1) * half // (2 * k)] = f"qwv{j}"
    return " ".join(words), " ".join(b), " ".join(c)


def corpus(per_kind: int = 4, partitions: int = 3) -> dict[str, pd.DataFrame]:
    """``part0``…: build_partitions' rows (copies, one-word edits, own articles) plus one link of the
    chain each; ``zlate``: an edit of a shared row and an article of its own."""
    frames = build_partitions(k=partitions, per_kind=per_kind)
    for (source, frame), key, text in zip(sorted(frames.items()), CHAIN_IDS, chain(), strict=False):
        frames[source] = pd.concat([frame, pd.DataFrame({"id": [key], "text": [text]})], ignore_index=True)
    rng = random.Random(11)
    base = frames["part1"]["text"].iloc[1]
    frames["zlate"] = pd.DataFrame(
        {
            "id": ["late-edit", "late-own"],
            "text": [prose.near_duplicate(base, rng, edits=1), prose.article(rng, paragraphs=4)],
        }
    )
    return frames


def materialize_corpus(
    instance, home, frames: dict[str, pd.DataFrame], run_config: dict | None = None
) -> list[str]:
    """Every partition through the rule-based chain in sorted order (``zlate`` only up to
    exact_deduplicated); returns the sources."""
    sources = sorted(frames)
    instance.add_dynamic_partitions("text_source", sources)
    for source in sources:
        write_source(home, source, {"docs.jsonl": jsonl(frames[source].to_dict("records"))})
        selection = UP_TO_EXACT if source == "zlate" else None
        done = dg.materialize(
            TEXT_PREFILTER,
            selection=selection,
            partition_key=source,
            instance=instance,
            resources=resources_for(home),
            run_config=run_config,
        )
        assert done.success
    return sources
