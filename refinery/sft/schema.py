"""The one schema of every SFT record, whatever dialect it arrived in.

A training loop for supervised fine-tuning wants ``messages``; one for DPO wants a prompt with a
chosen and a rejected response; one for reward modelling wants ranked responses. Storing all of
them in one table with a ``kind`` column keeps one set of rules, one dedup and one selection for
every kind, while each consumer reads the columns it needs:

- ``instruction``: a single-turn demonstration (Alpaca, Dolly, prompt/completion).
- ``conversation``: a multi-turn dialogue (ShareGPT, OpenAI ``messages``).
- ``preference``: a prompt (or conversation) with a ``chosen`` and a ``rejected`` response.
- ``ranked``: a prompt with two or more responses and a score each.

``prompt`` (the first user turn) is the text column that invariant checks read and reports
show. What dedup and selection compare is ``dedup_text``: the record's key, chosen per kind at
ingest (:mod:`refinery.sft.dedup_keys`), because the first turn alone ("Hi, can you help me?")
says too little about a conversation, and one prompt with several answer pairs is normal
preference data.

Messages keep tool calling as OpenAI writes it: an assistant turn may have ``tool_calls`` (and
``content`` null when it only calls), a ``tool`` turn has the result and, where given,
``tool_call_id`` and ``name``.
"""

from __future__ import annotations

import pyarrow as pa

KINDS = ("instruction", "conversation", "preference", "ranked")
# Which kinds share a dedup index: demonstrations are compared with demonstrations and
# preference data with preference data, since one prompt legitimately appears in both.
KIND_GROUPS = {
    "instruction": "demonstration",
    "conversation": "demonstration",
    "preference": "preference",
    "ranked": "preference",
}
DEDUP_GROUPS = tuple(sorted(set(KIND_GROUPS.values())))
TEXT_COLUMN = "prompt"
KEY_COLUMN = "dedup_text"  # what dedup and selection compare (refinery.sft.dedup_keys)

SFT_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # one of KINDS
    pa.field("format", pa.string(), nullable=False),  # the input dialect: alpaca, sharegpt, openai, …
    pa.field("system", pa.large_string()),  # the system prompt, if any
    pa.field("prompt", pa.large_string(), nullable=False),  # first user turn
    pa.field("response", pa.large_string()),  # final assistant turn; chosen; best ranked
    pa.field("rejected_response", pa.large_string()),  # preference: rejected; ranked: worst
    # JSON [{role, content, tool_calls?, tool_call_id?, name?}], the chosen branch
    pa.field("messages", pa.large_string(), nullable=False),
    pa.field("responses", pa.large_string()),  # JSON [{text, score}] best first (preference, ranked)
    pa.field("turns", pa.int32(), nullable=False),  # assistant turns in messages
    pa.field("quality", pa.float64()),  # a score the input provides (quality/score/rating), else null
    pa.field("meta", pa.string()),  # every input field not modelled above, as JSON
    pa.field(KEY_COLUMN, pa.large_string(), nullable=False),  # the per-kind dedup/selection key
    pa.field("file", pa.string()),
    pa.field("line", pa.int64()),  # 1-based line (JSONL), row (Parquet) or record number (JSON array)
]
SFT_SCHEMA = pa.schema(SFT_FIELDS)

SFT_QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("kind", pa.string()),  # the kind it looked like, when that was recognisable
        pa.field("prompt", pa.large_string()),
        pa.field("raw", pa.large_binary()),  # the undecoded input, so nothing is lost
        pa.field("reason", pa.string(), nullable=False),
        pa.field("reason_detail", pa.string()),
    ]
)
