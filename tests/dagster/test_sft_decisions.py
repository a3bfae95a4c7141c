"""The SFT chain's decisions on the records that exposed them, under materialize(): multi-turn
ShareGPT/LMSYS conversations sharing a greeting, HH-RLHF and k-sample preference pairs sharing a
prompt, OpenAI tool-calling transcripts; and the per-kind key as run config."""

import json

import dagster as dg
import pytest

from assets.sft import raw_sft, sft_checked, sft_selected
from refinery.paths import Layout
from refinery.storage import Storage
from resources import build_resources

SFT_CHAIN = [raw_sft, sft_checked, sft_selected]
GREETING = "Hi there, can you help me with a question?"
OPENER = "Of course! What would you like to know?"
QUESTIONS = {
    "sg-everest": (
        "What is the boiling point of water at the top of Mount Everest?",
        "About 70 °C up there.",
    ),
    "sg-python": (
        "How do I turn a list of strings into a list of integers in Python?",
        "Use [int(s) for s in xs].",
    ),
    "sg-bread": (
        "Why does my sourdough bread come out dense and flat?",
        "The dough is probably under-proofed.",
    ),
}


def sharegpt(rid: str, *turns: str) -> dict:
    return {
        "id": rid,
        "conversations": [{"from": ("human", "gpt")[i % 2], "value": t} for i, t in enumerate(turns)],
    }


def hh(context: str, chosen: str, rejected: str) -> dict:
    return {
        "chosen": f"\n\nHuman: {context}\n\nAssistant: {chosen}",
        "rejected": f"\n\nHuman: {context}\n\nAssistant: {rejected}",
    }


CHATS = [sharegpt(rid, GREETING, OPENER, q, a) for rid, (q, a) in QUESTIONS.items()]
CHATS += [
    sharegpt(
        "sg-everest-again", GREETING.upper(), OPENER, *QUESTIONS["sg-everest"]
    ),  # the whole record again
    {  # LMSYS-Chat-1M: the same opening, then a task
        "conversation_id": "lm-1",
        "model": "vicuna-13b",
        "conversation": [
            {"role": "user", "content": GREETING},
            {"role": "assistant", "content": OPENER},
            {"role": "user", "content": "Write a haiku about autumn leaves falling in the rain."},
            {
                "role": "assistant",
                "content": "Wet red leaves let go / each drop carries one lower / the street turns to fire.",
            },
        ],
        "turn": 2,
    },
]
CAT = "What are some good ways to keep an indoor cat entertained?"
PAIRS = [
    hh(
        CAT,
        "Puzzle feeders, wand toys and a window perch all help; rotate the toys weekly.",
        "Cats sleep all day.",
    ),
    hh(CAT, "Play with a wand toy twice a day and hide treats around the house.", "Cats sleep all day."),
    hh(
        CAT,
        "Puzzle feeders, wand toys and a window perch all help; rotate the toys weekly.",
        "Get a dog instead.",
    ),
    hh(
        CAT,
        "Puzzle feeders, wand toys and a window perch all help; rotate the toys weekly.",
        "Cats sleep all day.",
    ),
]
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_current_weather", "arguments": '{"location": "Oslo"}'},
}
TOOLS = [
    {
        "id": "tools-full",
        "messages": [
            {"role": "user", "content": "What's the weather in Oslo today? Should I take an umbrella?"},
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 6, "rain": true}'},
            {"role": "assistant", "content": "It is 6 °C and raining in Oslo, so yes, take an umbrella."},
        ],
    },
    {
        "id": "tools-ends-on-call",
        "messages": [
            {"role": "user", "content": "Check the weather in Oslo for me."},
            {"role": "assistant", "tool_calls": [WEATHER_CALL]},
        ],
    },
    {
        "id": "tools-unanswered",
        "messages": [
            {"role": "user", "content": "Is it cold in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
            {"role": "assistant", "content": "Yes, it is cold."},
        ],
    },
]
SOURCES = {"chats": CHATS, "pairs": PAIRS, "tools": TOOLS}


def write(layout: Layout, source: str, records: list[dict]) -> None:
    folder = layout.inbox_source("sft", source)
    folder.mkdir(parents=True)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def materialize(instance, layout, source, config: dict | None = None) -> dg.ExecuteInProcessResult:
    if source not in instance.get_dynamic_partitions("sft_source"):
        instance.add_dynamic_partitions("sft_source", [source])
    ops = {"sft_selected": {"config": {"budget_fraction": 1.0}}, **(config or {})}
    return dg.materialize(
        SFT_CHAIN,
        partition_key=source,
        instance=instance,
        resources=build_resources("local", home=str(layout.home), device="cpu", batch_size=32),
        run_config={"ops": ops},
    )


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("sft-decisions") / "home")
    for source, records in SOURCES.items():
        write(layout, source, records)
    with dg.instance_for_test() as instance:
        results = {s: materialize(instance, layout, s) for s in SOURCES}
        yield Storage(layout.storage), results


def test_every_run_succeeds_with_its_checks(decided):
    _, results = decided
    for source, result in results.items():
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations()), source


def test_conversations_sharing_a_greeting_are_kept_and_the_repeat_removed(decided):
    storage, results = decided
    raw = storage.read("raw_sft", "chats").set_index("id")
    assert set(raw["prompt"]) == {GREETING, GREETING.upper()}
    assert raw.loc["sg-python", "dedup_text"] == f"{GREETING}\n\n{QUESTIONS['sg-python'][0]}"
    kept = storage.read("sft_checked", "chats")
    assert {"sg-everest", "sg-python", "sg-bread"} <= set(kept["id"]) and len(kept) == 4  # and the LMSYS one
    rejected = storage.read("sft_checked", "chats", rejected=True)
    assert rejected[["id", "reason", "duplicate_of"]].values.tolist() == [
        ["sg-everest-again", "exact_duplicate", "chats/sg-everest"]
    ]
    selected = results["chats"].asset_materializations_for_node("sft_selected")[0].metadata
    assert selected["embedded_column"].value == "dedup_text"
    assert "boiling point" in selected["per_cluster"].value  # the question, not just the greeting


def test_pairs_sharing_a_prompt_are_kept_and_the_repeated_pair_removed(decided):
    storage, _ = decided
    raw = storage.read("raw_sft", "pairs")
    assert raw["prompt"].nunique() == 1 and len(raw) == 4
    kept = storage.read("sft_checked", "pairs")
    rejected = storage.read("sft_checked", "pairs", rejected=True)
    assert kept["id"].tolist() == raw["id"].tolist()[:3]
    assert rejected[["reason", "duplicate_of"]].values.tolist() == [
        ["exact_duplicate", f"pairs/{raw['id'][0]}"]
    ]


def test_tool_calling_transcripts_keep_calls_and_results(decided):
    storage, _ = decided
    raw = storage.read("raw_sft", "tools").set_index("id")
    full = json.loads(raw.loc["tools-full", "messages"])
    assert full[1] == {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]}
    assert full[2]["tool_call_id"] == "call_1" and raw.loc["tools-full", "turns"] == 2
    assert raw.loc["tools-ends-on-call", "response"] == 'get_current_weather({"location": "Oslo"})'
    quarantine = storage.read("raw_sft", "tools", rejected=True)
    assert quarantine[["id", "reason"]].values.tolist() == [["tools-unanswered", "malformed_conversation"]]
    assert "got no result" in quarantine["reason_detail"][0]
    checked = storage.read("sft_checked", "tools")
    assert sorted(checked["id"]) == ["tools-ends-on-call", "tools-full"]


def test_first_turn_key_as_run_config_reproduces_the_old_collapse(tmp_path):
    layout = Layout.at(tmp_path / "home")
    write(layout, "chats", CHATS)
    config = {
        "raw_sft": {"config": {"dedup_key": {"conversation": "prompt"}}},
        "sft_checked": {"config": {"fuzzy_groups": []}},
    }
    with dg.instance_for_test() as instance:
        assert materialize(instance, layout, "chats", config).success
    storage = Storage(layout.storage)
    assert set(storage.read("raw_sft", "chats")["dedup_text"]) == {GREETING, GREETING.upper()}
    assert len(storage.read("sft_checked", "chats")) == 1  # every conversation opens alike: one is left
    assert set(storage.read("sft_checked", "chats", rejected=True)["reason"]) == {"exact_duplicate"}
