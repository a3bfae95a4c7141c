"""What two SFT records are compared on: one key per kind, rendered into ``dedup_text``.

Deduplicating on the first user turn collapses multi-turn data: ShareGPT and LMSYS
conversations that open with the same greeting ("Hi, can you help me with a question?") and then
ask different things would be one record. So each record carries the text it is compared on,
built at ingest from a *key* chosen per kind, and both dedup (``sft_checked``) and diversity
selection (``sft_selected``) read that column. The keys:

- ``prompt``: the first user turn (for Alpaca, the instruction and its input).
- ``user_turns``: every user turn, in order; what the record asks. A one-turn conversation's key
  is its prompt, so it matches an instruction asking the same.
- ``conversation``: every turn with its role (system, user, assistant with its tool calls as
  ``name(arguments)``, tool results); for preference and ranked records, the chosen branch.
- ``prompt_responses``: every turn before the answers being compared, then each answer (chosen
  then rejected; ranked responses best first). For instruction and conversation records the
  answer is the final assistant turn.

Defaults (:data:`DEFAULT_DEDUP_KEYS`): instruction → ``prompt``, conversation → ``user_turns``,
preference and ranked → ``prompt_responses`` (several pairs for one prompt are what DPO data
is). Which dedup runs on which kinds is :class:`SftDedupScopeParams`: per index group, since
kinds in one group share one index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator

from refinery.sft.normalize import Normalized, turn_text
from refinery.sft.schema import DEDUP_GROUPS, KINDS

DedupKey = Literal["prompt", "user_turns", "conversation", "prompt_responses"]
DEDUP_KEYS: tuple[str, ...] = get_args(DedupKey)
DEFAULT_DEDUP_KEYS: dict[str, str] = {
    "instruction": "prompt",
    "conversation": "user_turns",
    "preference": "prompt_responses",
    "ranked": "prompt_responses",
}
TURN_SEPARATOR = "\n\n"


def _labelled(message: dict) -> str:
    return f"{message['role']}: {turn_text(message)}"


def key_text(key: str, prompt: str, messages: Sequence[dict], responses: Sequence[dict] | None = None) -> str:
    """The text a record is compared on under ``key``, from its normalised columns (``messages``
    as stored, ``responses`` as ``[{text, score}]`` best first, or None)."""
    if key == "prompt":
        return prompt
    if key == "user_turns":
        return TURN_SEPARATOR.join(turn_text(m) for m in messages if m["role"] == "user")
    if key == "conversation":
        return TURN_SEPARATOR.join(_labelled(m) for m in messages)
    if key == "prompt_responses":
        answers = [r["text"] for r in responses] if responses else [turn_text(messages[-1])]
        context = [_labelled(m) for m in messages[:-1]]
        return TURN_SEPARATOR.join(context + [f"response: {a}" for a in answers])
    raise ValueError(f"unknown dedup key {key!r}; choose one of {DEDUP_KEYS}")


def record_key(record: Normalized, keys: Mapping[str, str]) -> str:
    """``dedup_text`` of a normalised record under the per-kind ``keys``."""
    return key_text(keys[record.kind], record.prompt, record.messages, record.responses)


def complete_keys(value: Mapping[str, str] | None) -> dict[str, str]:
    """A per-kind key mapping with every kind filled in (defaults for those not given); unknown
    kinds or keys are an error, not ignored."""
    given = dict(value or {})
    unknown = sorted(set(given) - set(KINDS))
    if unknown:
        raise ValueError(f"dedup_key names unknown kinds {unknown}; kinds: {list(KINDS)}")
    bad = {k: v for k, v in given.items() if v not in DEDUP_KEYS}
    if bad:
        raise ValueError(f"unknown dedup keys {bad}; choose from {DEDUP_KEYS}")
    return {**DEFAULT_DEDUP_KEYS, **given}


class SftDedupScopeParams(BaseModel):
    """Which dedup runs on which index group (``demonstration``: instruction and conversation;
    ``preference``: preference and ranked). Per group rather than per kind: kinds in a group share
    one index, and a switch per kind inside it would make the outcome depend on arrival order (a
    kind left out of the fuzzy index is never matched by a later near-copy of another kind, while
    the reverse order drops it). Both apply only where the global ``exact``/``fuzzy`` are on."""

    exact_groups: list[str] = Field(
        list(DEDUP_GROUPS),
        description="Groups whose records are exact-deduplicated on dedup_text (default: both; for "
        "preference data that removes only whole pairs repeated, since the key holds both answers).",
    )
    fuzzy_groups: list[str] = Field(
        ["demonstration"],
        description="Groups whose records are near-duplicate-deduplicated (MinHash-LSH) on dedup_text. "
        "Not preference data by default: pairs built from k samples of one prompt share the prompt and "
        "an answer, and differ in exactly the detail a preference pair exists to show.",
    )

    @field_validator("exact_groups", "fuzzy_groups")
    @classmethod
    def _known_groups(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(DEDUP_GROUPS))
        if unknown:
            raise ValueError(f"unknown dedup groups {unknown}; groups: {list(DEDUP_GROUPS)}")
        return value
