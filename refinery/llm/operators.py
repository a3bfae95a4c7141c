"""The batch processors of the LLM stages: judge, rewrite, synthesize.

Each turns one batch of rows into one request per row (through a :class:`PromptTemplate`), sends
them through a :class:`ChatClient` (cache first, then the endpoint), and splits the batch: rows
whose answer parsed are kept with the new columns, the others are rejected with the quarantine
reason of :mod:`refinery.llm.parse`. Every row, kept or rejected, carries ``llm_provenance``: the
endpoint, model, template and its hash, the sampling parameters, the source document and the
tokens its request used. A batch in which no request reached the server raises
:class:`~refinery.llm.client.LlmUnavailable` (the step fails and can be resumed: the cache keeps
every answer already received).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator

from refinery.batch import BatchResult, Reason, split_batch
from refinery.kernel.processor import StageProcessor
from refinery.llm.client import ChatClient, ChatRequest, ChatResult, require_reachable
from refinery.llm.endpoint import LlmEndpoint, SamplingParams
from refinery.llm.parse import UNPARSABLE, Unparsable, parse_judgement, parse_pairs, parse_rewrite, unusable
from refinery.llm.prompts import JUDGE_DOCUMENT, REWRITE_WIKI, SYNTHESIS_QA, PromptTemplate
from refinery.metadata import Json

PROVENANCE_COLUMN = "llm_provenance"
PROVENANCE_FIELD = pa.field(PROVENANCE_COLUMN, pa.string())
BELOW_THRESHOLD = "judge_below_threshold"


class LlmStageParams(SamplingParams):
    """What every LLM stage takes: sampling, the prompt (a built-in template, or your own texts),
    how much of a document goes into it, and how many rows go out per batch."""

    system_prompt: str = Field("", description="Replaces the template's system message ('' keeps it).")
    user_prompt: str = Field(
        "",
        description="Replaces the template's user message ('' keeps it); {text} marks the document "
        "({prompt} and {response} the record, in sft_judged). Other placeholders are refused.",
    )
    max_input_chars: int = Field(6000, ge=1, description="A document is cut to this many characters.")
    batch_rows: int = Field(
        64,
        ge=1,
        description="Rows per batch; its requests run concurrently: keep it a few times max_concurrency.",
    )


class JudgeParams(LlmStageParams):
    """LLM-judge scoring: a score in [0, scale] and a one-sentence rationale per row."""

    max_tokens: int = Field(128, ge=1, description="Completion tokens at most; more ends as too_long.")
    scale: float = Field(5.0, gt=0, description="The top of the score range the prompt asks for.")
    min_score: float | None = Field(
        None, description="Rows scored below this are rejected as judge_below_threshold (None: keep all)."
    )


class RewriteParams(LlmStageParams):
    """Which documents are rephrased: a perplexity bucket and/or a quality-score range."""

    max_tokens: int = Field(1024, ge=1, description="Completion tokens at most; more ends as too_long.")
    perplexity_buckets: list[str] = Field(
        ["tail"], description="Rewrite documents in these perplexity buckets ([] ignores the bucket)."
    )
    min_quality: float | None = Field(None, description="Only documents with quality_score ≥ this.")
    max_quality: float | None = Field(None, description="Only documents with quality_score ≤ this.")

    @model_validator(mode="after")
    def _range(self) -> RewriteParams:
        low, high = self.min_quality, self.max_quality
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_quality {low} > max_quality {high}")
        return self


class SynthesisParams(LlmStageParams):
    """Question–answer pairs from each document, written as an SFT inbox source of their own."""

    max_tokens: int = Field(512, ge=1, description="Completion tokens at most; more ends as too_long.")
    pairs_per_document: int = Field(3, ge=1, le=20, description="Pairs asked for (and kept at most).")
    sft_source: str = Field(
        "", description="The SFT inbox source the pairs are written to ('' → 'llm-<text source>')."
    )


JUDGE_FIELDS = (
    pa.field("judge_score", pa.float64()),
    pa.field("judge_rationale", pa.large_string()),
    PROVENANCE_FIELD,
)
REWRITE_FIELDS = (
    pa.field("rewrite_of", pa.string()),  # the original document's id, in the upstream stage
    pa.field("original_chars", pa.int64()),
    PROVENANCE_FIELD,
)
SYNTHESIS_FIELDS = (
    pa.field("synthesized_pairs", pa.int32()),
    pa.field("sft_records", pa.large_string()),  # JSON list of the SFT records written to the inbox
    PROVENANCE_FIELD,
)


def template_for(default: PromptTemplate, params: LlmStageParams) -> PromptTemplate:
    """The stage's template with the config's texts; a placeholder the stage does not fill is an
    error here, before any request, naming the ones it fills."""
    template = default.with_text(params.system_prompt or None, params.user_prompt or None)
    unknown = [f for f in template.fields if f not in default.fields]
    if unknown:
        offered = ", ".join(f"{{{f}}}" for f in default.fields)
        raise ValueError(
            f"system_prompt/user_prompt use {', '.join(f'{{{f}}}' for f in unknown)}, which "
            f"{default.name} does not fill; it fills {offered}"
        )
    return template


class LlmProcessor(StageProcessor):
    """Shared by the three stages: build requests, send, classify, stamp provenance, count."""

    fields: tuple[pa.Field, ...] = ()
    replaces: tuple[str, ...] = ()  # upstream columns a usable answer overwrites (the rewrite's text)

    def __init__(self, endpoint: LlmEndpoint, template: PromptTemplate, params: LlmStageParams):
        self.endpoint = endpoint
        self.template = template
        self.params = params
        self.client = ChatClient(endpoint)
        self.sampling = SamplingParams(**params.model_dump(include=set(SamplingParams.model_fields)))
        self.reasons: Counter = Counter()

    # -- what a subclass says --------------------------------------------------------------------
    def values(self, row: dict) -> dict:
        return {"text": str(row.get("text") or "")[: self.params.max_input_chars]}

    def accept(self, row: dict, result: ChatResult) -> tuple[dict, Reason]:
        """The new column values for a usable answer, or a reason to reject the row."""
        raise NotImplementedError

    # -- the batch -------------------------------------------------------------------------------
    def provenance(self, row_id: object, result: ChatResult) -> str:
        return json.dumps(
            {
                **self.endpoint.describe(),
                **self.template.describe(),
                "sampling": self.sampling.request_fields(),
                "source_document": None if row_id is None else str(row_id),
                "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out,
                "finish_reason": result.finish_reason,
            },
            sort_keys=True,
        )

    def ask(self, rows: list[dict]) -> list[ChatResult]:
        fields = self.sampling.request_fields()
        requests = [ChatRequest(self.template.render(**self.values(r)), fields) for r in rows]
        results = self.client.complete(requests)
        require_reachable(results)
        return results

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        rows = frame.to_dict("records")
        results = self.ask(rows) if rows else []
        columns: dict[str, list] = {name: [] for name in (*(f.name for f in self.fields), *self.replaces)}
        reasons: list[Reason] = []
        for row, result in zip(rows, results, strict=True):
            reason = unusable(result)
            new: dict = {}
            if reason is None:
                try:
                    new, reason = self.accept(row, result)
                except Unparsable as err:
                    reason = (UNPARSABLE, str(err)[:500])
            new[PROVENANCE_COLUMN] = self.provenance(row.get("id"), result)
            if reason is not None:  # a rejected row keeps its own values in the replaced columns
                new.update({name: row[name] for name in self.replaces})
            for name in columns:
                columns[name].append(new.get(name))
            reasons.append(reason)
            if reason is not None:
                self.reasons[reason[0]] += 1
        out = frame.copy()
        for name, values in columns.items():
            out[name] = values
        return self.finish(split_batch(out, reasons))

    def finish(self, result: BatchResult) -> BatchResult:
        return result

    # -- what the step reports -------------------------------------------------------------------
    def report(self) -> dict:
        totals = self.client.totals
        return {
            "llm_model": self.endpoint.model,
            "llm_endpoint": self.endpoint.base_url,
            "prompt_template": self.template.name,
            "prompt_hash": self.template.hash,
            "sampling": Json(self.sampling.request_fields()),
            "llm_requests": totals.requests,
            "llm_cache_hits": totals.cache_hits,
            "llm_cache_hit_rate": round(totals.hit_rate, 4),
            "llm_retries": totals.retries,
            "llm_peak_in_flight": totals.peak_in_flight,
            "llm_tokens_in": totals.tokens_in,
            "llm_tokens_out": totals.tokens_out,
            "llm_tokens_saved_by_cache": totals.cached_tokens_in + totals.cached_tokens_out,
            "llm_rejected_by_reason": Json(dict(self.reasons)),
        }

    def summary(self) -> dict:
        return {"llm": self.client.totals.as_dict(), "llm_rejected_by_reason": dict(self.reasons)}


class Judge(LlmProcessor):
    """A score and a rationale per row; below ``min_score`` (when set) the row is rejected."""

    fields = JUDGE_FIELDS

    def __init__(
        self,
        endpoint: LlmEndpoint,
        params: JudgeParams,
        template: PromptTemplate = JUDGE_DOCUMENT,
        values: Callable[[dict, int], dict] | None = None,
    ):
        super().__init__(endpoint, template_for(template, params), params)
        self._values = values
        self.scores: list[float] = []

    def values(self, row: dict) -> dict:
        if self._values is not None:
            return self._values(row, self.params.max_input_chars)
        return super().values(row)

    def accept(self, row: dict, result: ChatResult) -> tuple[dict, Reason]:
        score, rationale = parse_judgement(result.text or "", self.params.scale)
        self.scores.append(score)
        new = {"judge_score": score, "judge_rationale": rationale}
        threshold = self.params.min_score
        if threshold is not None and score < threshold:
            return new, (BELOW_THRESHOLD, f"score {score:g} < min_score {threshold:g}")
        return new, None

    def report(self) -> dict:
        scores = np.asarray(self.scores, dtype=float)
        distribution = (
            {str(k): int(v) for k, v in sorted(Counter(self.scores).items())} if len(scores) else {}
        )
        return {
            **super().report(),
            "judge_scores": Json(distribution),
            "judge_mean": float(scores.mean()) if len(scores) else None,
        }


def sft_judge_values(row: dict, limit: int) -> dict:
    """What the SFT judge template reads from an SFT record: its prompt and final response."""
    return {
        "prompt": str(row.get("prompt") or "")[:limit],
        "response": str(row.get("response") or "")[:limit],
    }


class Rewriter(LlmProcessor):
    """Rephrases the documents of the chosen bucket or quality range; the others are routed past
    (neither kept nor rejected). A kept row is the rewrite: new id ``<id>#rewrite``, the new text,
    ``rewrite_of`` naming the original (which stays where it was, in the upstream stage)."""

    fields = REWRITE_FIELDS
    replaces = ("text",)

    def __init__(self, endpoint: LlmEndpoint, params: RewriteParams):
        super().__init__(endpoint, template_for(REWRITE_WIKI, params), params)
        self.params: RewriteParams = params

    def route(self, frame: pd.DataFrame) -> np.ndarray:
        p = self.params
        mask = np.ones(len(frame), dtype=bool)
        if p.perplexity_buckets:
            if "perplexity_bucket" not in frame.columns:
                raise KeyError("perplexity_buckets is set but the upstream has no perplexity_bucket column")
            mask &= frame["perplexity_bucket"].isin(p.perplexity_buckets).to_numpy()
        if p.min_quality is not None or p.max_quality is not None:
            if "quality_score" not in frame.columns:
                raise KeyError("a quality range is set but the upstream has no quality_score column")
            quality = pd.to_numeric(frame["quality_score"], errors="coerce").to_numpy(dtype=float)
            if p.min_quality is not None:
                mask &= quality >= p.min_quality
            if p.max_quality is not None:
                mask &= quality <= p.max_quality
        return mask

    def accept(self, row: dict, result: ChatResult) -> tuple[dict, Reason]:
        return {
            "text": parse_rewrite(result.text or ""),
            "rewrite_of": str(row["id"]),
            "original_chars": len(str(row.get("text") or "")),
        }, None

    def finish(self, result: BatchResult) -> BatchResult:
        kept = result.kept
        if len(kept):
            kept = kept.copy()
            kept["id"] = kept["rewrite_of"] + "#rewrite"
        return BatchResult(kept, result.rejected)


class Synthesizer(LlmProcessor):
    """Question–answer pairs per document; a document whose answer gives none is rejected."""

    fields = SYNTHESIS_FIELDS

    def __init__(self, endpoint: LlmEndpoint, params: SynthesisParams, source: str):
        super().__init__(endpoint, template_for(SYNTHESIS_QA, params), params)
        self.params: SynthesisParams = params
        self.source = source
        self.pairs = 0

    def values(self, row: dict) -> dict:
        return {**super().values(row), "pairs": self.params.pairs_per_document}

    def accept(self, row: dict, result: ChatResult) -> tuple[dict, Reason]:
        pairs = parse_pairs(result.text or "", self.params.pairs_per_document)
        provenance = json.loads(self.provenance(row.get("id"), result))
        records = [
            {
                "id": f"{row['id']}-qa{k}",
                "messages": [
                    {"role": "user", "content": p["question"]},
                    {"role": "assistant", "content": p["answer"]},
                ],
                "origin": "llm_synthesized",
                "source_document": f"{self.source}/{row['id']}",
                "provenance": provenance,
            }
            for k, p in enumerate(pairs, start=1)
        ]
        self.pairs += len(records)
        return {
            "synthesized_pairs": len(records),
            "sft_records": json.dumps(records, ensure_ascii=False),
        }, None

    def report(self) -> dict:
        return {**super().report(), "pairs_synthesized": self.pairs}
