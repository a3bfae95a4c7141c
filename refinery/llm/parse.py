"""Reading what the model said, and naming why an answer is unusable.

Every answer is first checked for what makes it unusable whatever the task: the request failed
after its retries (``llm_http_error``), the answer was cut at ``max_tokens``
(``llm_too_long``: finish_reason ``length``), it is empty (``llm_empty``) or it is refusal
boilerplate (``llm_refused``). Then each task's parser reads it, or names why it cannot
(``llm_unparsable``). The reasons become the ``reason`` column of the stage's rejected rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from refinery.batch import Reason
from refinery.llm.client import ChatResult
from refinery.sft.rules import DEFAULT_REFUSALS

HTTP_ERROR = "llm_http_error"
TOO_LONG = "llm_too_long"
EMPTY = "llm_empty"
REFUSED = "llm_refused"
UNPARSABLE = "llm_unparsable"
QUARANTINE_REASONS = (HTTP_ERROR, TOO_LONG, EMPTY, REFUSED, UNPARSABLE)

_REFUSAL = re.compile("|".join(f"(?:{p})" for p in DEFAULT_REFUSALS), re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_PREAMBLE = re.compile(
    r"^(?:sure[,!.]?\s*)?(?:here(?:'s| is) (?:the |a )?(?:rewritten|rephrased)[^\n:]*:)\s*", re.IGNORECASE
)


class Unparsable(ValueError):
    """An answer the task's parser cannot read; the message is the quarantine detail."""


def unusable(result: ChatResult) -> Reason:
    """Why an answer cannot be used at all (None when it can be parsed)."""
    if result.error is not None:
        return HTTP_ERROR, result.error[:500]
    if result.finish_reason == "length":
        return TOO_LONG, f"cut at max_tokens after {result.tokens_out} tokens"
    text = result.text or ""
    if not text.strip():
        return EMPTY, f"empty answer (finish_reason {result.finish_reason!r})"
    found = _REFUSAL.search(text[:400])
    if found:
        return REFUSED, f"refusal: {found.group(0)!r}"
    return None


def json_payload(text: str) -> object:
    """The first JSON value in ``text`` (code fences and leading prose skipped)."""
    body = _FENCE.sub("", text.strip())
    starts = [i for i in (body.find("["), body.find("{")) if i >= 0]
    if not starts:
        raise Unparsable(f"no JSON in the answer: {text[:120]!r}")
    try:
        value, _ = json.JSONDecoder().raw_decode(body, min(starts))
    except json.JSONDecodeError as err:
        raise Unparsable(f"invalid JSON ({err.msg} at {err.pos}): {text[:120]!r}") from err
    return value


_QUESTION_KEYS = ("question", "instruction", "prompt", "q")
_ANSWER_KEYS = ("answer", "response", "output", "a")


def parse_pairs(text: str, max_pairs: int | None = None) -> list[dict]:
    """Question–answer pairs from a JSON list (or ``{"pairs": [...]}``) of objects."""
    value = json_payload(text)
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), [value])
    if not isinstance(value, list):
        raise Unparsable(f"expected a list of pairs, got {type(value).__name__}")
    pairs = []
    for item in value:
        if not isinstance(item, dict):
            continue
        lowered = {str(k).lower(): v for k, v in item.items()}
        question = next((lowered[k] for k in _QUESTION_KEYS if isinstance(lowered.get(k), str)), "")
        answer = next((lowered[k] for k in _ANSWER_KEYS if isinstance(lowered.get(k), str)), "")
        if question.strip() and answer.strip():
            pairs.append({"question": question.strip(), "answer": answer.strip()})
    if not pairs:
        raise Unparsable(f"no object with a non-empty question and answer in {text[:120]!r}")
    return pairs[:max_pairs] if max_pairs else pairs


def parse_judgement(text: str, scale: float = 5.0) -> tuple[float, str]:
    """A score in [0, scale] and its rationale from ``{"score": ..., "rationale": ...}``."""
    value = json_payload(text)
    if not isinstance(value, dict):
        raise Unparsable(f"expected an object with a score, got {type(value).__name__}")
    lowered = {str(k).lower(): v for k, v in value.items()}
    score = lowered.get("score", lowered.get("rating"))
    if isinstance(score, str):
        try:
            score = float(score.strip())
        except ValueError:
            score = None
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise Unparsable(f"no numeric score in {text[:120]!r}")
    if not 0 <= score <= scale:
        raise Unparsable(f"score {score} outside [0, {scale}]")
    rationale = lowered.get("rationale", lowered.get("reason", lowered.get("explanation", "")))
    return float(score), str(rationale or "").strip()


def parse_rewrite(text: str) -> str:
    """The rewritten text, without a "Here is the rewritten text:" preamble or code fences."""
    body = _PREAMBLE.sub("", _FENCE.sub("", text.strip())).strip()
    if not body:
        raise Unparsable("only a preamble, no rewritten text")
    return body


def reason_counts(reasons: Sequence[Reason]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in reasons:
        if reason is not None:
            counts[reason[0]] = counts.get(reason[0], 0) + 1
    return counts
