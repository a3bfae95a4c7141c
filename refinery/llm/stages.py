"""The LLM stages, one spec each: judge, rewrite and synthesize over ``pretrain_corpus`` (per
``text_source``), and judge over ``sft_selected`` (per ``sft_source``)."""

from __future__ import annotations

from refinery import names
from refinery.kernel.spec import StageSpec
from refinery.llm.operators import (
    JUDGE_FIELDS,
    REWRITE_FIELDS,
    SYNTHESIS_FIELDS,
    JudgeParams,
    RewriteParams,
    SynthesisParams,
)
from refinery.sft.schema import TEXT_COLUMN as SFT_TEXT_COLUMN

LLM_KINDS = frozenset({"openai"})
SCORE_EDGES = (0.5, 1.5, 2.5, 3.5, 4.5)

LLM_JUDGED = StageSpec(
    name=names.LLM_JUDGED,
    kind="text",
    upstream=names.PRETRAIN_CORPUS,
    params=JudgeParams,
    fields=JUDGE_FIELDS,
    histograms={"judge_score": SCORE_EDGES},
    score_columns=("judge_score", "judge_rationale"),
    kinds=LLM_KINDS,
    batch_rows=64,
    description="LLM-judge scoring of the final corpus through the `llm` endpoint: score in [0, scale] and a "
    "rationale per document, and `llm_provenance` (endpoint, model, prompt template and hash, sampling, "
    "source document, tokens). `min_score` turns the score into a filter (judge_below_threshold). Answers "
    "that fail, come back empty, refuse, run past max_tokens or do not parse are rejected with that reason. "
    "Every request is cached: a rerun or a resumed step sends none again.",
)

LLM_REWRITTEN = StageSpec(
    name=names.LLM_REWRITTEN,
    kind="text",
    upstream=names.PRETRAIN_CORPUS,
    params=RewriteParams,
    fields=REWRITE_FIELDS,
    histograms={"original_chars": (100, 300, 1000, 3000, 10000)},
    score_columns=("rewrite_of", "original_chars"),
    kinds=LLM_KINDS,
    batch_rows=64,
    description="Rephrasing (Nemotron-CC style) of the documents in the chosen perplexity buckets and/or "
    "quality-score range; other documents are routed past. Each output row is the rewrite, id "
    "`<id>#rewrite`, with `rewrite_of` linking it to the original (kept in pretrain_corpus) and "
    "`llm_provenance`. Unusable answers are rejected with their reason.",
)

LLM_SFT_SYNTHESIZED = StageSpec(
    name=names.LLM_SFT_SYNTHESIZED,
    kind="text",
    upstream=names.PRETRAIN_CORPUS,
    params=SynthesisParams,
    fields=SYNTHESIS_FIELDS,
    histograms={"synthesized_pairs": (0.5, 1.5, 2.5, 3.5, 5.5)},
    score_columns=("synthesized_pairs",),
    kinds=LLM_KINDS,
    batch_rows=64,
    description="Question–answer pairs synthesized from each pretrain_corpus document. The pairs are written "
    "as OpenAI-messages records (origin llm_synthesized, provenance and source document in each) to "
    "inbox/sft/llm-<source>/, an SFT source of their own that raw_sft → sft_checked → sft_selected then "
    "check, deduplicate and select as any other. Documents whose answer is unusable are rejected with "
    "the reason.",
)

SFT_JUDGED = StageSpec(
    name=names.SFT_JUDGED,
    kind="sft",
    upstream=names.SFT_SELECTED,
    params=JudgeParams,
    fields=JUDGE_FIELDS,
    histograms={"judge_score": SCORE_EDGES},
    score_columns=("kind", "judge_score", "judge_rationale"),
    text_column=SFT_TEXT_COLUMN,
    kinds=LLM_KINDS,
    batch_rows=64,
    description="LLM-judge scoring of selected SFT records (prompt and final response): a score, a rationale "
    "and `llm_provenance` per record; `min_score` filters. Unusable answers are rejected with the reason.",
)
