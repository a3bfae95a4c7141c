"""Prompt templates, each with a hash recorded in the provenance of every row it produced.

A template is a system message and a user message with ``{field}`` placeholders; only the named
fields are substituted, so literal braces (a JSON example in the instructions) need no escaping.
The hash covers the name and both texts: editing a template (in code or through a stage's config)
changes the hash, and so the cache key and the provenance of what it produces.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

_FIELD = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    user: str

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_FIELD.findall(self.system + self.user)))

    @property
    def hash(self) -> str:
        canonical = json.dumps([self.name, self.system, self.user], ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    def render(self, **values: object) -> list[dict]:
        """The chat messages with every placeholder filled; a missing value is an error."""
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise KeyError(f"template {self.name!r} needs values for {missing}")

        def fill(text: str) -> str:
            return _FIELD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)

        messages = [{"role": "system", "content": fill(self.system)}] if self.system else []
        return [*messages, {"role": "user", "content": fill(self.user)}]

    def with_text(self, system: str | None, user: str | None) -> PromptTemplate:
        """This template with its texts replaced where given (a stage's config overrides)."""
        return PromptTemplate(self.name, system or self.system, user or self.user)

    def describe(self) -> dict:
        return {"prompt_template": self.name, "prompt_hash": self.hash}


SYNTHESIS_QA = PromptTemplate(
    "synthesis_qa/v1",
    "You write question-answer pairs for instruction tuning from a document. Reply with a JSON list of "
    'objects with the keys "question" and "answer", and nothing else.',
    "Write {pairs} question-answer pairs that a reader could answer from this document.\n\nDocument:\n{text}",
)

REWRITE_WIKI = PromptTemplate(
    "rewrite_wikipedia/v1",
    "You rewrite web text as clear, well-organised encyclopedic English, keeping every fact and adding "
    "none. Reply with the rewritten text only.",
    "Rewrite this document:\n\n{text}",
)

JUDGE_DOCUMENT = PromptTemplate(
    "judge_document/v1",
    "You rate how useful a text is for training a language model, from 0 (useless) to 5 (excellent). "
    'Reply with a JSON object {"score": <0-5>, "rationale": "<one sentence>"} and nothing else.',
    "Text:\n{text}",
)

JUDGE_SFT = PromptTemplate(
    "judge_sft/v1",
    "You rate how well a response answers an instruction, from 0 (useless) to 5 (excellent). Reply with "
    'a JSON object {"score": <0-5>, "rationale": "<one sentence>"} and nothing else.',
    "Instruction:\n{prompt}\n\nResponse:\n{response}",
)

BUILT_IN = {t.name: t for t in (SYNTHESIS_QA, REWRITE_WIKI, JUDGE_DOCUMENT, JUDGE_SFT)}
