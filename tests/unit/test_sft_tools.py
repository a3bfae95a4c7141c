"""Tool calling is SFT data: OpenAI transcripts (assistant ``tool_calls`` with null content, ``tool``
results), the legacy ``function_call``, and ShareGPT ``function_call``/``observation`` turns are
normalised, keep their calls and results, and meet rules that read what the assistant says."""

import json

import pandas as pd
import pytest

from refinery.sft.dedup_keys import DEFAULT_DEDUP_KEYS, key_text, record_key
from refinery.sft.normalize import Malformed, normalize, turn_text
from refinery.sft.reader import SftIngestParams, SftReader
from refinery.sft.rules import SftRuleParams, SftRules
from refinery.sft.schema import KEY_COLUMN, SFT_SCHEMA

QUESTION = "What's the weather like in Paris right now? I'm deciding whether to bring a jacket."
SYSTEM = {"role": "system", "content": "You are a helpful assistant with access to a weather tool."}
USER = {"role": "user", "content": QUESTION}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_9pw1",
            "type": "function",
            "function": {"name": "get_current_weather", "arguments": '{"location": "Paris, France"}'},
        }
    ],
}
RESULT = {"role": "tool", "tool_call_id": "call_9pw1", "content": '{"temperature": 11, "unit": "celsius"}'}
ANSWER = {
    "role": "assistant",
    "content": "It is 11 °C in Paris at the moment, so a light jacket is a good idea for the evening.",
}
TRANSCRIPT = {"messages": [SYSTEM, USER, CALL, RESULT, ANSWER], "tools": [{"type": "function"}]}
# As OpenAI's and Azure's fine-tuning guides show a tool-calling example: it ends on the call, with
# no content key at all.
ENDS_ON_CALL = {"messages": [USER, {k: v for k, v in CALL.items() if k != "content"}]}


def rules_verdict(record: dict, **params) -> tuple[dict, tuple[str, str] | None]:
    rec = normalize(record)
    row = {
        "kind": rec.kind,
        "prompt": rec.prompt,
        "messages": json.dumps(rec.messages),
        "responses": json.dumps(rec.responses) if rec.responses else None,
        "response": rec.response,
        "rejected_response": rec.rejected_response,
    }
    scores, reasons = SftRules(SftRuleParams(**params)).apply(pd.DataFrame([row]))
    return {k: v[0] for k, v in scores.items()}, reasons[0]


def with_answer(content: str) -> dict:
    return {"messages": [SYSTEM, USER, CALL, RESULT, {"role": "assistant", "content": content}]}


def test_openai_transcript_keeps_calls_and_results():
    rec = normalize(TRANSCRIPT)
    assert (rec.kind, rec.format, rec.prompt, rec.turns) == ("conversation", "openai", QUESTION, 2)
    assert rec.response == ANSWER["content"]
    call, result = rec.messages[2], rec.messages[3]
    assert call == CALL  # content null, the call in OpenAI's shape, untouched
    assert result == {"role": "tool", "content": RESULT["content"], "tool_call_id": "call_9pw1"}
    assert rec.messages[4] == ANSWER and set(rec.messages[1]) == {"role", "content"}
    assert turn_text(call) == 'get_current_weather({"location": "Paris, France"})'
    assert "tools" not in rec.consumed  # the tool schemas go to meta, nothing is lost


def test_a_transcript_may_end_on_a_call():
    rec = normalize(ENDS_ON_CALL)
    assert rec.messages[-1]["content"] is None and rec.turns == 1
    assert rec.response == 'get_current_weather({"location": "Paris, France"})'
    scores, reason = rules_verdict(ENDS_ON_CALL)
    assert reason is None  # a call is an answer: not empty, not truncated, not an echo
    assert scores["response_chars"] == len(rec.response)


def test_legacy_function_call_and_sharegpt_observation_become_tool_calls():
    legacy = normalize(
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
                },
                {"role": "function", "name": "get_current_weather", "content": "11 celsius, cloudy"},
                ANSWER,
            ]
        }
    )
    assert legacy.messages[1]["tool_calls"] == [
        {
            "type": "function",
            "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
        }
    ]
    assert legacy.messages[2] == {
        "role": "tool",
        "content": "11 celsius, cloudy",
        "name": "get_current_weather",
    }
    sharegpt = normalize(  # LLaMA-Factory's ShareGPT tool format: arguments as an object
        {
            "conversations": [
                {"from": "human", "value": QUESTION},
                {
                    "from": "function_call",
                    "value": json.dumps({"name": "get_current_weather", "arguments": {"location": "Paris"}}),
                },
                {"from": "observation", "value": '{"temperature": 11}'},
                {"from": "gpt", "value": ANSWER["content"]},
            ]
        }
    )
    assert sharegpt.format == "sharegpt" and [m["role"] for m in sharegpt.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert sharegpt.messages[1]["tool_calls"][0]["function"]["arguments"] == '{"location": "Paris"}'


def test_parallel_calls_each_answered():
    calls = {
        "role": "assistant",
        "content": "Let me check both cities:",
        "tool_calls": [
            {
                "id": "a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "b",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
        ],
    }
    results = [
        {"role": "tool", "tool_call_id": "a", "content": "11 C"},
        {"role": "tool", "tool_call_id": "b", "content": "19 C"},
    ]
    final = {"role": "assistant", "content": "Paris is 11 °C and Rome is 19 °C, so Rome is warmer today."}
    record = {"messages": [USER, calls, *results, final]}
    rec = normalize(record)
    assert turn_text(rec.messages[1]).splitlines() == [
        "Let me check both cities:",
        'get_weather({"city": "Paris"})',
        'get_weather({"city": "Rome"})',
    ]
    assert rules_verdict(record)[1] is None  # the ':' before a call is not a cut-off answer
    with pytest.raises(Malformed, match=r"call \['b'\] got no result") as err:
        normalize({"messages": [USER, calls, results[0], final]})
    assert err.value.reason == "malformed_conversation"


@pytest.mark.parametrize(
    ("messages", "reason", "detail"),
    [
        ([USER, CALL, RESULT], "malformed_conversation", "ends with a tool turn"),
        ([USER, RESULT, ANSWER], "malformed_conversation", "answers no call"),
        (
            [USER, CALL, {**RESULT, "tool_call_id": "call_other"}, ANSWER],
            "malformed_conversation",
            "not made",
        ),
        ([USER, CALL, ANSWER], "malformed_conversation", "got no result"),
        ([USER, CALL, USER, ANSWER], "malformed_conversation", "got no result"),
        ([USER, {"role": "assistant", "content": None}], "malformed_conversation", "has no content"),
        ([USER, {"role": "assistant", "tool_calls": []}], "malformed_tool_call", "non-empty list"),
        (
            [USER, {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            "malformed_tool_call",
            "name",
        ),
        (
            [USER, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}],
            "malformed_tool_call",
            "arguments",
        ),
        ([{**USER, "tool_calls": CALL["tool_calls"]}, ANSWER], "malformed_tool_call", "cannot call"),
    ],
)
def test_broken_tool_transcripts_are_quarantined_with_a_reason(messages, reason, detail):
    with pytest.raises(Malformed, match=detail) as err:
        normalize({"messages": messages})
    assert err.value.reason == reason


def test_rules_judge_what_the_assistant_says_not_its_calls():
    assert rules_verdict(TRANSCRIPT)[1] is None
    cut = with_answer("It is 11 °C in Paris at the moment, so you should bring a")
    assert rules_verdict(cut)[1] == ("truncated_response", "response 2: ends mid-clause with 'a'")
    refusing = with_answer("I'm sorry, but I can't help with that request about the weather.")
    assert rules_verdict(refusing)[1][0] == "refusal"
    assert rules_verdict(with_answer("  "))[1][0] == "empty_response"
    # A search call whose argument is the question verbatim is not the answer echoing the prompt.
    search = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "s",
                "type": "function",
                "function": {"name": "search", "arguments": json.dumps({"q": QUESTION})},
            }
        ],
    }
    echo_call = {"messages": [USER, search, {"role": "tool", "tool_call_id": "s", "content": "11 C"}, ANSWER]}
    scores, reason = rules_verdict(echo_call)
    assert reason is None and scores["prompt_overlap"] < 0.5
    # The language gate reads prose: a long call in a non-English-looking format does not trip it.
    long_call = {
        "messages": [
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "x",
                        "type": "function",
                        "function": {
                            "name": "lookup",
                            "arguments": json.dumps({f"k{i}": f"v{i}" for i in range(40)}),
                        },
                    }
                ],
            },
        ]
    }
    assert rules_verdict(long_call)[1] is None


def test_preference_pair_between_a_call_and_a_guess():
    record = {
        "chosen": [USER, {k: v for k, v in CALL.items()}],
        "rejected": [USER, {"role": "assistant", "content": "It is probably sunny and warm in Paris today."}],
    }
    rec = normalize(record)
    assert rec.kind == "preference" and rec.response == turn_text(CALL)
    assert rec.rejected_response.startswith("It is probably")
    assert rules_verdict(record)[1] is None
    prompt_responses = record_key(rec, DEFAULT_DEDUP_KEYS)
    assert (
        "response: get_current_weather(" in prompt_responses
        and "response: It is probably" in prompt_responses
    )


def test_dedup_keys_render_calls_and_results():
    rec = normalize(TRANSCRIPT)
    conversation = key_text("conversation", rec.prompt, rec.messages, rec.responses)
    assert conversation.split("\n\n") == [
        f"system: {SYSTEM['content']}",
        f"user: {QUESTION}",
        'assistant: get_current_weather({"location": "Paris, France"})',
        f"tool: {RESULT['content']}",
        f"assistant: {ANSWER['content']}",
    ]
    assert key_text("user_turns", rec.prompt, rec.messages) == QUESTION


def test_reader_admits_tool_transcripts_and_quarantines_broken_ones(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    records = [
        TRANSCRIPT,
        ENDS_ON_CALL,
        {"messages": [USER, CALL, ANSWER]},
        {"messages": [USER, CALL, RESULT]},
    ]
    (folder / "tools.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    reader = SftReader(folder, "s", SftIngestParams())
    docs, quarantine = [], []
    for batch in reader.batches():
        docs += batch.documents
        quarantine += batch.quarantine
    assert [d["line"] for d in docs] == [1, 2]
    assert json.loads(docs[0]["messages"])[2]["tool_calls"][0]["id"] == "call_9pw1"
    assert json.loads(docs[0]["meta"]) == {"tools": [{"type": "function"}]}
    assert docs[0][KEY_COLUMN] == QUESTION and set(docs[0]) == set(SFT_SCHEMA.names)
    assert [(q["line"], q["reason"]) for q in quarantine] == [
        (3, "malformed_conversation"),
        (4, "malformed_conversation"),
    ]
