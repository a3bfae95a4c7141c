"""Rules for SFT records: what makes a demonstration or a preference pair unfit to train on.

A fine-tuned model imitates its responses, so the rules look at responses first: empty ones
teach nothing, truncated ones teach stopping mid-sentence, ones that repeat the prompt teach
echoing, and refusal boilerplate ("As an AI language model…") teaches refusing. Length limits
keep records inside the context window; a language gate makes the English assumption explicit,
as in the text pipeline. Which response is judged depends on the kind: every assistant turn of
a demonstration; the chosen answer of a preference pair and the best of a ranking (a rejected
answer may well be truncated or a refusal: that is what it is there to show), while an empty
answer anywhere makes a comparison meaningless. Tool calls count as answers (an assistant turn
that only calls a tool is not empty, and its calls count toward the response length) but are not
prose: truncation, refusal, prompt-echo and language rules read what the assistant *says*.

The first failed rule names the rejection; every score is a column.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from refinery.filters.language import english_word_fraction
from refinery.sft.normalize import turn_text
from refinery.text.words import simplify, words

RULE_FIELDS = [
    pa.field("prompt_chars", pa.int32()),
    pa.field("response_chars", pa.int32()),  # all assistant turns (chosen branch), summed
    pa.field("prompt_overlap", pa.float32()),  # share of the response's word 3-grams found in the prompt
    pa.field("english_word_fraction", pa.float32()),
]

DEFAULT_REFUSALS = [
    r"\bas an ai(?: language)? model\b",
    r"\bas a (?:large )?language model\b",
    r"\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:'|no)t|am unable|won't)\b",
    r"\bi (?:can(?:'|no)t|am unable to|won't) (?:help|assist|comply|fulfill|provide|do) "
    r"(?:with )?(?:that|this)(?: request)?\b",
    r"\bi apologi[sz]e,? but i (?:can(?:'|no)t|am unable)\b",
    r"\bit(?:'s| is) not appropriate for me to\b",
]
DANGLING_WORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "but",
        "of",
        "to",
        "in",
        "with",
        "for",
        "on",
        "at",
        "by",
        "from",
        "as",
        "that",
        "which",
        "because",
        "if",
        "than",
        "so",
        "my",
        "your",
        "their",
        "our",
        "its",
        "this",
        "these",
        "those",
        "is",
        "are",
        "was",
        "were",
        "be",
    ]
)


class SftRuleParams(BaseModel):
    """Thresholds of the SFT rules. ``None`` switches a limit off; ``disabled_rules`` lists codes."""

    disabled_rules: list[str] = Field([], description="Reason codes to skip, e.g. 'refusal'.")
    max_prompt_chars: int | None = Field(8_000, description="Longer prompts are rejected.")
    max_response_chars: int | None = Field(16_000, description="Assistant text of a record, summed.")
    max_turns: int | None = Field(64, description="Assistant turns per conversation.")
    max_prompt_overlap: float | None = Field(
        0.95,
        description="A response whose word 3-grams are at least this share copied from the prompt is an echo "
        "(high, so edits such as grammar fixes pass).",
    )
    refusal_patterns: list[str] = Field(DEFAULT_REFUSALS, description="Case-insensitive regexes.")
    language_gate: bool = Field(True, description="Reject records that are not English.")
    min_english_word_fraction: float | None = Field(
        0.10, description="Share of English function words below which a record is not English."
    )
    language_gate_min_words: int = Field(20, description="Shorter records skip the gate.")

    @model_validator(mode="after")
    def _known_codes(self) -> SftRuleParams:
        unknown = sorted(set(self.disabled_rules) - set(RULE_CODES))
        if unknown:
            raise ValueError(f"unknown rules in disabled_rules: {unknown}; known: {list(RULE_CODES)}")
        for pattern in self.refusal_patterns:
            re.compile(pattern)
        return self


RULE_CODES = (
    "empty_prompt",
    "empty_response",
    "prompt_too_long",
    "response_too_long",
    "too_many_turns",
    "preference.identical",
    "ranked.tied_scores",
    "truncated_response",
    "response_copies_prompt",
    "refusal",
    "language.not_english",
)


def truncation(text: str) -> str | None:
    """Why a response looks cut off, or None: an unclosed code block, or it ends mid-clause."""
    if text.count("```") % 2:
        return "unclosed ``` code block"
    stripped = text.rstrip()
    if not stripped:
        return None
    if stripped[-1] in ",;:([{-":
        return f"ends with {stripped[-1]!r}"
    last = re.findall(r"[A-Za-z']+$", stripped)
    if last and last[0].lower() in DANGLING_WORDS:
        return f"ends mid-clause with {last[0]!r}"
    return None


def _trigrams(text: str) -> list[tuple[str, ...]]:
    w = simplify(text).split()
    return [tuple(w[i : i + 3]) for i in range(len(w) - 2)]


def prompt_overlap(prompt: str, response: str) -> float:
    """Share of the response's word 3-grams that occur in the prompt (1.0 for an exact echo)."""
    a, b = simplify(prompt), simplify(response)
    if not b:
        return 0.0
    if a == b:
        return 1.0
    grams = _trigrams(response)
    if not grams:
        return 1.0 if b in a else 0.0
    seen = set(_trigrams(prompt))
    return sum(g in seen for g in grams) / len(grams)


class SftRules:
    """Applies the rules to a batch; returns score columns and one reason (or None) per row."""

    def __init__(self, params: SftRuleParams):
        self.p = params
        self.off = set(params.disabled_rules)
        self.refusal = (
            re.compile("|".join(f"(?:{p})" for p in params.refusal_patterns), re.IGNORECASE)
            if (params.refusal_patterns)
            else None
        )

    def _on(self, code: str) -> bool:
        return code not in self.off

    def check(self, row: dict) -> tuple[dict, tuple[str, str] | None]:
        kind, prompt = row["kind"], row["prompt"] or ""
        messages = json.loads(row["messages"])
        turns = [m for m in messages if m["role"] == "assistant"]
        assistant = [turn_text(m) for m in turns]  # tool calls rendered as name(arguments)
        responses = json.loads(row["responses"]) if row.get("responses") else []
        # The answers a model is trained toward (every assistant turn of a demonstration; the
        # chosen or best answer, the last turn of the chosen branch, of a comparison), and every
        # answer whose emptiness voids the record. A tool call is an answer (never empty), but
        # not prose: the prose rules read what the turn says, and a turn that calls a tool may
        # stop at "Let me look that up:" without being cut off.
        judged = turns if kind in ("instruction", "conversation") else messages[-1:]
        prose = [m["content"] for m in judged if m.get("content")]
        all_answers = assistant + [r["text"] for r in responses]
        response_text = "\n".join(assistant)
        overlap = max((prompt_overlap(prompt, a) for a in prose), default=0.0)
        sample = words(prompt + " " + "\n".join(m.get("content") or "" for m in turns))
        fraction = english_word_fraction(sample)
        scores = {
            "prompt_chars": len(prompt),
            "response_chars": len(response_text),
            "prompt_overlap": overlap,
            "english_word_fraction": fraction,
        }
        p = self.p
        checks = [
            ("empty_prompt", not prompt.strip(), "prompt is empty or whitespace"),
            ("empty_response", any(not a.strip() for a in all_answers), "a response is empty or whitespace"),
            (
                "prompt_too_long",
                p.max_prompt_chars is not None and len(prompt) > p.max_prompt_chars,
                f"{len(prompt)} chars > {p.max_prompt_chars}",
            ),
            (
                "response_too_long",
                p.max_response_chars is not None and len(response_text) > p.max_response_chars,
                f"{len(response_text)} chars > {p.max_response_chars}",
            ),
            (
                "too_many_turns",
                p.max_turns is not None and len(assistant) > p.max_turns,
                f"{len(assistant)} assistant turns > {p.max_turns}",
            ),
            (
                "preference.identical",
                kind == "preference"
                and " ".join((row["response"] or "").split())
                == " ".join((row.get("rejected_response") or "").split()),
                "chosen and rejected are the same text",
            ),
            (
                "ranked.tied_scores",
                kind == "ranked" and len({r["score"] for r in responses}) == 1,
                "every response has the same score: no preference to learn",
            ),
        ]
        for code, failed, detail in checks:
            if failed and self._on(code):
                return scores, (code, detail)
        if self._on("truncated_response"):
            for i, turn in enumerate(judged):
                why = None if turn.get("tool_calls") else truncation(turn.get("content") or "")
                if why:
                    return scores, ("truncated_response", f"response {i + 1}: {why}")
        if (
            self._on("response_copies_prompt")
            and p.max_prompt_overlap is not None
            and overlap >= p.max_prompt_overlap
        ):
            return scores, (
                "response_copies_prompt",
                f"{overlap:.0%} of the response's 3-grams are in the prompt",
            )
        if self._on("refusal") and self.refusal is not None:
            for answer in prose:
                found = self.refusal.search(answer)
                if found:
                    return scores, ("refusal", f"refusal boilerplate: {found.group(0)!r}")
        if (
            self._on("language.not_english")
            and p.language_gate
            and p.min_english_word_fraction is not None
            and len(sample) >= p.language_gate_min_words
            and fraction < p.min_english_word_fraction
        ):
            return scores, (
                "language.not_english",
                f"{fraction:.1%} English function words < {p.min_english_word_fraction:.0%}",
            )
        return scores, None

    def apply(self, frame: pd.DataFrame) -> tuple[dict[str, list], list[tuple[str, str] | None]]:
        cols = ["kind", "prompt", "messages", "responses", "response", "rejected_response"]
        scores: dict[str, list] = {f.name: [] for f in RULE_FIELDS}
        reasons = []
        for row in frame[cols].to_dict("records"):
            row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            s, reason = self.check(row)
            for name, value in s.items():
                scores[name].append(value)
            reasons.append(reason)
        return {k: np.asarray(v) for k, v in scores.items()}, reasons
