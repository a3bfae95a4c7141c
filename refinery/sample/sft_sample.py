"""The bundled SFT sample: every dialect the ingest reads, and what each later stage removes.

- ``alpaca``: an Alpaca JSON array (``instruction``/``input``/``output``) and Dolly-style JSONL
  (``instruction``/``context``/``response``), some with a ``quality`` score.
- ``chat``: ShareGPT conversations (``conversations`` of ``from``/``value``) in JSONL, among them
  several that open with the same greeting and then ask different things (all kept: dedup reads
  every user turn) and one repeated whole (removed); OpenAI ``messages`` (with content parts) in
  Parquet; OpenAI tool-calling transcripts (assistant ``tool_calls`` with null content, ``tool``
  results, parallel calls, the legacy ``function_call``, one ending on its call) in JSONL.
- ``preference``: prompt/chosen/rejected JSONL with UltraFeedback-style scores, including every
  pair of k sampled completions for a few prompts (all kept: the dedup key is the whole pair) and
  one pair repeated (removed); chosen/rejected message lists; Anthropic HH transcripts, some
  sharing their conversation and differing in the final answers.
- ``ranked``: responses with a score each, and completions with a parallel ``ratings`` list.

Each source also holds what ``sft_checked`` rejects (empty, truncated, echoed and refusing
responses, other languages, overlong prompts, exact and near-duplicate prompts, identical
preference pairs, tied rankings) and malformed records of its kind that ``raw_sft`` quarantines
(broken JSON, missing fields, unknown roles, conversations ending with the user, tool results
answering no call, calls left without a result, chosen and rejected continuing different
conversations, a single ranked response, non-numeric scores…).
Prompts are drawn from task templates over eight topics, so their embeddings form clusters.
Everything is generated from a seed, so the sample is the same on every machine.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.sample import prose

SFT_SOURCES = ("alpaca", "chat", "preference", "ranked")

TASKS = [
    "Explain how {noun} relates to {noun2} for someone new to {topic}.",
    "Write a short paragraph about {noun} {place}.",
    "What is the difference between {noun} and {noun2}?",
    "Give three tips to {person} who wants to learn about {noun}.",
    "Describe a {adj} day spent with {noun} {place}.",
    "Why do people {verb} {noun} {time}?",
    "Summarize what {person} should know about {noun}.",
    "List the main steps to {verb} {noun}.",
]


def _jsonl(records: list) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def _prompt(rng: random.Random, topic: str) -> str:
    vocab = prose.TOPICS[topic]
    noun, noun2 = rng.sample(vocab["noun"], 2)
    return rng.choice(TASKS).format(
        noun=noun,
        noun2=noun2,
        topic=topic,
        place=rng.choice(vocab["place"]),
        person=rng.choice(vocab["person"]),
        adj=rng.choice(vocab["adj"]),
        verb=rng.choice(vocab["verb"]),
        time=rng.choice(vocab["time"]),
    )


def _answer(rng: random.Random, topic: str, sentences: int | None = None) -> str:
    if rng.random() < 0.25:
        return "\n".join(
            f"{i}. {prose.paragraph(rng, topic, sentences=1)}" for i in range(1, rng.randint(3, 5) + 1)
        )
    return prose.paragraph(rng, topic, sentences=sentences or rng.randint(2, 5))


def _topic(rng: random.Random) -> str:
    return rng.choice(list(prose.TOPICS))


def _truncate(text: str) -> str:
    words = text.split()
    return " ".join(words[: max(3, len(words) // 2)]).rstrip(".!?") + " and the"


REFUSAL = "As an AI language model, I cannot help with that request."
NEAR_EDITS = [
    ("Explain", "Please explain"),
    ("Write", "Please write"),
    ("What", "So what"),
    ("Give", "Please give"),
]


def _near(prompt: str) -> str:
    for old, new in NEAR_EDITS:
        if prompt.startswith(old):
            return prompt.replace(old, new, 1)
    return "Please " + prompt[0].lower() + prompt[1:]


def _alpaca(rng: random.Random, n: int) -> tuple[list, bytes]:
    records = []
    for i in range(n):
        topic = _topic(rng)
        rec = {"instruction": _prompt(rng, topic), "input": "", "output": _answer(rng, topic)}
        if i % 5 == 0:
            rec["input"] = prose.paragraph(rng, topic, sentences=2)
            rec["instruction"] = "Summarize the following text in one sentence."
            rec["output"] = prose.paragraph(rng, topic, sentences=1)
        if i % 3 == 0:
            rec["quality"] = round(rng.uniform(1, 10), 1)
        records.append(rec)
    t = "history"
    long_prompt = (
        _prompt(rng, t) + " Keep the answer short, clear and friendly for a general audience of readers."
    )
    records += [
        {"instruction": long_prompt, "input": "", "output": _answer(rng, t)},
        {"instruction": _prompt(rng, t), "input": "", "output": ""},  # empty_response
        {"instruction": _prompt(rng, t), "input": "", "output": _truncate(_answer(rng, t, 3))},
        {
            "instruction": "Repeat after me: the museum opens at nine.",
            "input": "",
            "output": "The museum opens at nine.",
        },  # response_copies_prompt
        {"instruction": _prompt(rng, t), "input": "", "output": REFUSAL},
        {
            "instruction": "Décris une journée au marché.",
            "input": "",
            "output": prose.foreign_article(rng, "fr"),
        },  # language.not_english
        {
            "instruction": "Explain this: " + " ".join(["word"] * 2500),
            "input": "",
            "output": "It repeats one word.",
        },  # prompt_too_long
        {
            "instruction": records[1]["instruction"].upper(),
            "input": "",
            "output": _answer(rng, t),
        },  # exact dup
        {"instruction": _near(long_prompt), "input": "", "output": _answer(rng, t)},  # near dup
    ]
    malformed = [
        b'{"instruction": "Name a planet.", "input": "", ',  # broken JSON
        json.dumps({"instruction": "Name a river.", "input": ""}).encode(),  # missing output
        json.dumps({"instruction": "Count to three.", "output": 123}).encode(),  # output not a string
        json.dumps({"instruction": ["a", "list"], "output": "no"}).encode(),  # instruction not a string
        json.dumps({"title": "not an SFT record"}).encode(),  # unknown_format
        b'["an", "array"]',  # not an object
    ]
    return records, b"\n".join(malformed) + b"\n"


def _dolly(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        topic = _topic(rng)
        out.append(
            {
                "instruction": _prompt(rng, topic),
                "context": prose.paragraph(rng, topic, sentences=2) if rng.random() < 0.3 else "",
                "response": _answer(rng, topic),
                "category": rng.choice(["open_qa", "brainstorming", "summarization"]),
            }
        )
    return out


def _conversation(rng: random.Random, turns: int, sharegpt: bool) -> list[dict]:
    topic = _topic(rng)
    msgs = []
    if not sharegpt and rng.random() < 0.5:
        msgs.append({"role": "system", "content": "You are a helpful assistant."})
    for t in range(turns):
        user = (
            _prompt(rng, topic)
            if t == 0
            else rng.choice(
                [
                    "Can you say more?",
                    "Why is that?",
                    "Give an example.",
                    f"And what about {rng.choice(prose.TOPICS[topic]['noun'])}?",
                ]
            )
        )
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": _answer(rng, topic)}]
    if sharegpt:
        names = {"user": "human", "assistant": "gpt", "system": "system"}
        return [{"from": names[m["role"]], "value": m["content"]} for m in msgs]
    return msgs


GREETING = "Hi there, can you help me with a question?"
GREETING_REPLY = "Of course! What would you like to know?"
CITIES = ["Lisbon", "Kyoto", "Oslo", "Lima", "Nairobi", "Quebec"]


def _greeting_chat(rng: random.Random, topic: str) -> list[dict]:
    """ShareGPT turns that open with the shared greeting, then ask a question of their own."""
    return [
        {"from": "human", "value": GREETING},
        {"from": "gpt", "value": GREETING_REPLY},
        {"from": "human", "value": _prompt(rng, topic)},
        {"from": "gpt", "value": _answer(rng, topic)},
    ]


def _call(call_id: str | None, name: str, arguments: dict) -> dict:
    call = {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    return {"id": call_id, **call} if call_id else call


def _tools(rng: random.Random) -> tuple[list, bytes]:
    """OpenAI tool-calling transcripts: valid ones, and two whose calls and results do not match."""
    system = {"role": "system", "content": "You are a travel assistant. Use the tools to check facts."}
    out = []
    for i, city in enumerate(rng.sample(CITIES, 3)):
        temp = rng.randint(4, 28)
        call = _call(f"call_w{i}", "get_current_weather", {"location": city, "unit": "celsius"})
        out.append(
            {
                "id": f"tools-weather-{i}",
                "messages": [
                    system,
                    {
                        "role": "user",
                        "content": f"What's the weather like in {city} today? I'm packing tonight.",
                    },
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {
                        "role": "tool",
                        "tool_call_id": f"call_w{i}",
                        "content": json.dumps({"temperature": temp}),
                    },
                    {
                        "role": "assistant",
                        "content": f"It is {temp} °C in {city} today, so pack "
                        + ("a warm coat." if temp < 12 else "light clothes and a sweater for the evening."),
                    },
                ],
                "tools": [{"type": "function", "function": {"name": "get_current_weather"}}],
            }
        )
    a, b = rng.sample(CITIES, 2)
    parallel = [
        _call("call_a", "get_flight_time", {"from": a, "to": b}),
        _call("call_b", "get_flight_time", {"from": b, "to": a}),
    ]
    out += [
        {
            "id": "tools-parallel",
            "messages": [
                {"role": "user", "content": f"How long is the flight from {a} to {b}, and back?"},
                {"role": "assistant", "content": "Let me check both directions:", "tool_calls": parallel},
                {"role": "tool", "tool_call_id": "call_a", "content": "11h 20m"},
                {"role": "tool", "tool_call_id": "call_b", "content": "12h 5m"},
                {"role": "assistant", "content": f"About 11 h 20 min to {b} and 12 h 5 min back to {a}."},
            ],
        },
        {  # ends on the call, with no content key: how OpenAI's fine-tuning guide shows tool calling
            "id": "tools-ends-on-call",
            "messages": [
                {
                    "role": "user",
                    "content": f"Book a table for two in {b} tonight at eight, somewhere Italian.",
                },
                {
                    "role": "assistant",
                    "tool_calls": [_call("call_t", "book_table", {"city": b, "people": 2, "time": "20:00"})],
                },
            ],
        },
        {
            "id": "tools-legacy",
            "messages": [
                {"role": "user", "content": f"What time is it in {a} right now?"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "get_time", "arguments": json.dumps({"city": a})},
                },
                {"role": "function", "name": "get_time", "content": "14:05"},
                {"role": "assistant", "content": f"It is 14:05 in {a} right now."},
            ],
        },
    ]
    user = {"role": "user", "content": f"Is it raining in {a}?"}
    call = _call("call_r", "get_current_weather", {"location": a})
    malformed = [
        json.dumps(  # the call gets no result, yet the assistant answers
            {
                "id": "tools-no-result",
                "messages": [
                    user,
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "assistant", "content": "No."},
                ],
            }
        ).encode(),
        json.dumps(  # a result that answers no call
            {
                "id": "tools-orphan-result",
                "messages": [
                    user,
                    {"role": "tool", "tool_call_id": "call_r", "content": "dry"},
                    {"role": "assistant", "content": "No."},
                ],
            }
        ).encode(),
    ]
    return out, b"\n".join(malformed) + b"\n"


def _chat(rng: random.Random, n: int) -> tuple[list, list, list, bytes]:
    sharegpt = [
        {"id": f"sg-{i}", "conversations": _conversation(rng, rng.randint(1, 3), True)} for i in range(n)
    ]
    openai, parts = [], []
    for i in range(n):
        msgs = _conversation(rng, rng.randint(1, 3), False)
        if i % 4 == 0:  # content as a list of text parts (JSONL: Parquet needs one type per column)
            first = next(m for m in msgs if m["role"] == "user")
            first["content"] = [{"type": "text", "text": first["content"]}]
            parts.append({"id": f"oa-{i}", "messages": msgs})
        else:
            openai.append({"id": f"oa-{i}", "messages": msgs})
    topic = "travel"
    bad = _conversation(rng, 2, True)
    bad[3]["value"] = REFUSAL + " I am unable to provide travel advice."  # refusal in a later turn
    sharegpt += [
        {"id": "sg-refusal", "conversations": bad},
        {
            "id": "sg-truncated",
            "conversations": [
                {"from": "human", "value": _prompt(rng, topic)},
                {"from": "gpt", "value": "Here is the code:\n```python\nprint('hello')\n"},
            ],
        },
        {  # every user turn of sg-0 again, answered differently: the same request, removed
            "id": "sg-dup",
            "conversations": [
                dict(t) if t["from"] == "human" else {"from": "gpt", "value": _answer(rng, topic)}
                for t in sharegpt[0]["conversations"]
            ],
        },
    ]
    greetings = [
        {"id": f"sg-greeting-{i}", "conversations": _greeting_chat(rng, t)}
        for i, t in enumerate(["astronomy", "cooking", "software", "health"])
    ]
    repeated = [dict(t) for t in greetings[0]["conversations"]]
    repeated[0]["value"] = GREETING.lower()  # the same conversation again, typed differently
    sharegpt += [*greetings, {"id": "sg-greeting-repeated", "conversations": repeated}]
    malformed = [
        json.dumps(
            {
                "id": "sg-bad-role",
                "conversations": [
                    {"from": "narrator", "value": "Once upon a time."},
                    {"from": "gpt", "value": "Yes."},
                ],
            }
        ).encode(),
        json.dumps({"id": "sg-ends-user", "conversations": [{"from": "human", "value": "Hello?"}]}).encode(),
        json.dumps({"id": "sg-empty", "conversations": []}).encode(),
        json.dumps(
            {
                "id": "sg-late-system",
                "conversations": [
                    {"from": "human", "value": "Hi"},
                    {"from": "system", "value": "Be terse."},
                    {"from": "gpt", "value": "Hi."},
                ],
            }
        ).encode(),
        json.dumps(
            {
                "id": "sg-image",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]},
                    {"role": "assistant", "content": "A cat."},
                ],
            }
        ).encode(),
        json.dumps({"id": "sg-0", "conversations": _conversation(rng, 1, True)}).encode(),  # repeated id
        "caf\xe9 latin-1 bytes".encode("latin-1"),
    ]
    return sharegpt, openai, parts, b"\n".join(malformed) + b"\n"


def _hh(msgs: list[dict]) -> str:
    return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in msgs)


def _preference(rng: random.Random, n: int) -> tuple[list, list, list, bytes]:
    pairs = []
    for _ in range(n):
        topic = _topic(rng)
        chosen = _answer(rng, topic)
        rejected = rng.choice(
            [_truncate(_answer(rng, topic, 3)), REFUSAL, prose.paragraph(rng, _topic(rng), sentences=1)]
        )
        sc = round(rng.uniform(6, 10), 1)
        pairs.append(
            {
                "prompt": _prompt(rng, topic),
                "chosen": chosen,
                "rejected": rejected,
                "score_chosen": sc,
                "score_rejected": round(sc - rng.uniform(0.5, 5), 1),
            }
        )
    lists = []
    for _ in range(n // 2):
        topic = _topic(rng)
        context = [{"role": "user", "content": _prompt(rng, topic)}]
        lists.append(
            {
                "chosen": [*context, {"role": "assistant", "content": _answer(rng, topic)}],
                "rejected": [*context, {"role": "assistant", "content": REFUSAL}],
            }
        )
    hh = []
    for _ in range(n // 2):
        topic = _topic(rng)
        context = [
            {"role": "user", "content": _prompt(rng, topic)},
            {"role": "assistant", "content": _answer(rng, topic)},
            {"role": "user", "content": "Why is that?"},
        ]
        hh.append(
            {
                "chosen": _hh([*context, {"role": "assistant", "content": _answer(rng, topic)}]),
                "rejected": _hh([*context, {"role": "assistant", "content": "I don't know."}]),
            }
        )
        hh.append(  # the same conversation, another pair of final answers (as HH-RLHF has)
            {
                "chosen": _hh([*context, {"role": "assistant", "content": _answer(rng, topic)}]),
                "rejected": _hh([*context, {"role": "assistant", "content": "Ask someone else."}]),
            }
        )
    for _ in range(2):  # every pair of k = 3 sampled completions of one prompt, as DPO sets build
        topic = _topic(rng)
        prompt = _prompt(rng, topic)
        samples = sorted(
            ((round(rng.uniform(1, 10), 1), _answer(rng, topic)) for _ in range(3)), reverse=True
        )
        pairs += [
            {"prompt": prompt, "chosen": c, "rejected": r, "score_chosen": sc, "score_rejected": sr}
            for i, (sc, c) in enumerate(samples)
            for sr, r in samples[i + 1 :]
            if sc > sr
        ]
    topic = "gardening"
    same = _answer(rng, topic)
    pairs += [
        {"prompt": _prompt(rng, topic), "chosen": same, "rejected": same},  # preference.identical
        {"prompt": _prompt(rng, topic), "chosen": REFUSAL, "rejected": "No."},  # refusal as the chosen answer
        {"prompt": _prompt(rng, topic), "chosen": "", "rejected": _answer(rng, topic)},  # empty_response
        dict(pairs[0], chosen=pairs[0]["chosen"].upper()),  # the first pair again: an exact duplicate
    ]
    malformed = [
        json.dumps({"prompt": "Pick one.", "chosen": "This one."}).encode(),  # rejected missing
        json.dumps(
            {
                "chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "Yes."}],
                "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "No."}],
            }
        ).encode(),
        json.dumps({"prompt": "Pick one.", "chosen": 1, "rejected": 2}).encode(),
        json.dumps({"chosen": "plain text without turns", "rejected": "another"}).encode(),
    ]
    return pairs, lists, hh, b"\n".join(malformed) + b"\n"


def _ranked(rng: random.Random, n: int) -> tuple[list, list, bytes]:
    rankings = []
    for _ in range(n):
        topic = _topic(rng)
        responses = [
            {"text": _answer(rng, topic), "score": round(rng.uniform(0, 10), 2)}
            for _ in range(rng.randint(2, 4))
        ]
        rankings.append({"prompt": _prompt(rng, topic), "responses": responses})
    completions = []
    for _ in range(n // 2):
        topic = _topic(rng)
        k = rng.randint(2, 4)
        completions.append(
            {
                "instruction": _prompt(rng, topic),
                "completions": [_answer(rng, topic) for _ in range(k)],
                "ratings": [rng.randint(1, 5) for _ in range(k)],
            }
        )
    topic = "economics"
    rankings += [
        {
            "prompt": _prompt(rng, topic),
            "responses": [
                {"text": _answer(rng, topic), "score": 3},
                {"text": _answer(rng, topic), "score": 3},
            ],
        },  # tied
        {
            "prompt": _prompt(rng, topic),
            "responses": [{"text": "", "score": 1}, {"text": _answer(rng, topic), "score": 5}],
        },  # empty
    ]
    malformed = [
        json.dumps({"prompt": "Rank these.", "responses": [{"text": "only one", "score": 1}]}).encode(),
        json.dumps(
            {
                "prompt": "Rank these.",
                "responses": [{"text": "a", "score": "high"}, {"text": "b", "score": 2}],
            }
        ).encode(),
        json.dumps({"instruction": "Rate.", "completions": ["a", "b", "c"], "ratings": [1, 2]}).encode(),
        json.dumps(
            {"responses": [{"text": "a", "score": 1}, {"text": "b", "score": 2}]}
        ).encode(),  # no prompt
    ]
    return rankings, completions, b"\n".join(malformed) + b"\n"


def build_sft_sample(inbox_sft: Path, seed: int = 11, records_per_source: int = 160) -> dict[str, int]:
    """Write the sample under ``inbox_sft`` (``$REFINERY_HOME/inbox/sft``); returns files per source.

    ``records_per_source`` sets the size of the well-formed part of each source (the planted
    rule failures and malformed records come on top).
    """
    rng = random.Random(seed)
    n = max(8, records_per_source)
    written: dict[str, int] = {}

    folder = inbox_sft / "alpaca"
    folder.mkdir(parents=True, exist_ok=True)
    records, malformed = _alpaca(rng, n // 2)
    (folder / "alpaca_data.json").write_text(
        json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    (folder / "dolly.jsonl").write_bytes(_jsonl(_dolly(rng, n // 2)) + malformed)
    (folder / "README.txt").write_text("Not a record file: quarantined as unsupported_file_type.\n")
    written["alpaca"] = 3

    folder = inbox_sft / "chat"
    folder.mkdir(parents=True, exist_ok=True)
    sharegpt, openai, parts, malformed = _chat(rng, n // 2)
    (folder / "sharegpt.jsonl").write_bytes(_jsonl(sharegpt) + malformed)
    pq.write_table(pa.Table.from_pylist(openai), folder / "openai.parquet")
    (folder / "openai_parts.jsonl").write_bytes(_jsonl(parts))
    tools, malformed_tools = _tools(rng)
    (folder / "openai_tools.jsonl").write_bytes(_jsonl(tools) + malformed_tools)
    written["chat"] = 4

    folder = inbox_sft / "preference"
    folder.mkdir(parents=True, exist_ok=True)
    pairs, lists, hh, malformed = _preference(rng, n // 2)
    (folder / "pairs.jsonl").write_bytes(_jsonl(pairs) + malformed)
    (folder / "binarized.jsonl").write_bytes(_jsonl(lists))
    (folder / "hh.jsonl").write_bytes(_jsonl(hh))
    written["preference"] = 3

    folder = inbox_sft / "ranked"
    folder.mkdir(parents=True, exist_ok=True)
    rankings, completions, malformed = _ranked(rng, n // 2)
    (folder / "rankings.jsonl").write_bytes(_jsonl(rankings) + malformed)
    (folder / "completions.jsonl").write_bytes(_jsonl(completions))
    written["ranked"] = 2
    return written
