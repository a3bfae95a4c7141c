"""Dedup decides on the record's key, not its first turn: multi-turn conversations that share a
greeting are different records, several preference pairs for one prompt are normal DPO data, and
real duplicates (of the whole request, or of the whole pair) are still removed.

Records are read by the real reader and checked by the real rules and local dedup indexes."""

import json

import pandas as pd
import pytest

from refinery.paths import Layout
from refinery.sft.check import SftChecker, SftCheckParams
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.dedup_keys import DEFAULT_DEDUP_KEYS, SftDedupScopeParams, complete_keys, key_text
from refinery.sft.reader import SftIngestParams, SftReader
from refinery.sft.rules import SftRules
from refinery.sft.schema import KEY_COLUMN, SFT_SCHEMA

GREETING = "Hi there, can you help me with a question?"
OPENER = "Of course! What would you like to know?"
EVEREST = (
    "What is the boiling point of water at the top of Mount Everest, and why is it lower than at sea level?"
)
EVEREST_A = (
    "At the summit of Everest water boils at about 70 °C. The air pressure there is roughly a third of the "
    "pressure at sea level, and water boils when its vapour pressure matches the pressure around it."
)
PYTHON = "How do I turn a list of strings like ['1', '2', '3'] into a list of integers in Python?"
PYTHON_A = "Use a list comprehension: `numbers = [int(s) for s in strings]`, or `list(map(int, strings))`."


def sharegpt(rid: str, *turns: str) -> dict:
    """A ShareGPT record (``from``/``value``), human and gpt turns alternating."""
    names = ("human", "gpt")
    return {"id": rid, "conversations": [{"from": names[i % 2], "value": t} for i, t in enumerate(turns)]}


def lmsys(cid: str, model: str, *turns: str) -> dict:
    """An LMSYS-Chat-1M record: ``conversation`` of role/content, with its own metadata fields."""
    roles = ("user", "assistant")
    return {
        "conversation_id": cid,
        "model": model,
        "conversation": [{"content": t, "role": roles[i % 2]} for i, t in enumerate(turns)],
        "turn": len(turns) // 2,
        "language": "English",
        "redacted": False,
    }


def read(tmp_path, records, name="s", **params) -> pd.DataFrame:
    folder = tmp_path / "inbox" / name
    folder.mkdir(parents=True)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    reader = SftReader(folder, name, SftIngestParams(**params))
    docs, quarantine = [], []
    for batch in reader.batches():
        docs += batch.documents
        quarantine += batch.quarantine
    assert not quarantine, [q["reason_detail"] for q in quarantine]
    return pd.DataFrame(docs, columns=SFT_SCHEMA.names)


def check(tmp_path, frame: pd.DataFrame, source="s", **params):
    check_params = SftCheckParams(**params)
    layout = Layout.at(tmp_path / "home")
    indexes = open_group_indexes("local", layout, "", "t", check_params)
    with SftPromptDeduper.claiming(indexes, source, check_params) as deduper:
        return SftChecker(SftRules(check_params), deduper)(frame)


def verdicts(result) -> dict[str, str | None]:
    """id → None (kept) or the rejection reason and, for duplicates, whom it duplicates."""
    out = {i: None for i in result.kept["id"]}
    for _, r in result.rejected.iterrows():
        out[r["id"]] = f"{r['reason']} of {r['duplicate_of']}" if r["duplicate_of"] else r["reason"]
    return out


GREETING_CHATS = [
    sharegpt("sg-everest", GREETING, OPENER, EVEREST, EVEREST_A),
    sharegpt("sg-python", GREETING, OPENER, PYTHON, PYTHON_A),
    sharegpt(
        "sg-bread",
        GREETING,
        OPENER,
        "Why does my sourdough bread come out dense and flat?",
        "Usually the starter is not active enough or the dough is under-proofed; let it rise longer.",
        "How long should I let it rise?",
        "At room temperature, about four to six hours, until it has grown by roughly half.",
    ),
]


def test_greeting_first_turn_does_not_make_conversations_duplicates(tmp_path):
    copy = sharegpt("sg-everest-again", GREETING.lower(), OPENER, "  " + EVEREST, EVEREST_A)  # spacing, case
    near = sharegpt("sg-everest-thanks", GREETING, OPENER, EVEREST + " Thanks!", EVEREST_A)
    frame = read(tmp_path, [*GREETING_CHATS, copy, near])
    assert set(frame["prompt"]) == {GREETING, GREETING.lower()}  # the old key could not tell them apart
    assert frame[KEY_COLUMN].iloc[0] == f"{GREETING}\n\n{EVEREST}"  # every user turn
    assert verdicts(check(tmp_path, frame)) == {
        "sg-everest": None,
        "sg-python": None,
        "sg-bread": None,
        "sg-everest-again": "exact_duplicate of s/sg-everest",
        "sg-everest-thanks": "near_duplicate of s/sg-everest",
    }


def test_lmsys_single_turn_greetings_are_one_request_but_a_greeting_then_a_task_is_not(tmp_path):
    records = [
        lmsys("c1", "vicuna-13b", "hi", "Hello! How can I assist you today?"),
        lmsys("c2", "koala-13b", "hi", "Hi there! What can I do for you?"),
        lmsys(
            "c3",
            "vicuna-13b",
            "hi",
            "Hello!",
            "write a haiku about autumn leaves",
            "Red leaves drift and fall...",
        ),
        lmsys("c4", "alpaca-13b", "hi", "Hello!", "explain recursion to a five year old", "Imagine a box..."),
    ]
    frame = read(tmp_path, records)
    assert set(frame["format"]) == {"lmsys"} and json.loads(frame["meta"].iloc[0])["model"] == "vicuna-13b"
    ids = dict(zip(frame["line"], frame["id"], strict=True))
    out = verdicts(check(tmp_path, frame))
    # c2 asks exactly what c1 asks (its whole request is "hi"); c3 and c4 only open the same way.
    assert out == {ids[1]: None, ids[2]: f"exact_duplicate of s/{ids[1]}", ids[3]: None, ids[4]: None}


def test_first_turn_key_is_still_available_and_changes_the_decision(tmp_path):
    frame = read(tmp_path, GREETING_CHATS, dedup_key={"conversation": "prompt"})
    assert set(frame[KEY_COLUMN]) == {GREETING}
    out = verdicts(check(tmp_path, frame))
    assert out["sg-everest"] is None
    assert out["sg-python"] == out["sg-bread"] == "exact_duplicate of s/sg-everest"


def test_whole_conversation_key_keeps_the_same_request_answered_differently(tmp_path):
    answered_twice = [
        lmsys("c1", "vicuna-13b", "hi", "Hello! How can I assist you today?"),
        lmsys("c2", "koala-13b", "hi", "Hi there! What can I do for you?"),
        lmsys("c3", "koala-13b", "hi", "Hi there! What can I do for you?"),
    ]
    frame = read(tmp_path, answered_twice, dedup_key={"conversation": "conversation"})
    assert frame[KEY_COLUMN].iloc[0] == "user: hi\n\nassistant: Hello! How can I assist you today?"
    out = verdicts(check(tmp_path, frame))
    assert list(out.values()) == [None, None, f"exact_duplicate of s/{frame['id'].iloc[1]}"]


PROMPT = "Write a two-sentence summary of why the Roman Republic fell."
SAMPLES = [  # k = 3 sampled completions, best first: every ordered pair is a DPO pair
    "Ambitious generals with private armies, above all Caesar, overrode the Senate. Decades of civil war "
    "and political violence then ended in Augustus ruling alone.",
    "The Republic fell because Julius Caesar crossed the Rubicon and made himself dictator for life.",
    "It fell because it was very old and the Romans got lazy.",
]


def pair(chosen: str, rejected: str, prompt: str = PROMPT, **extra) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def hh(context: list[str], chosen: str, rejected: str) -> dict:
    """An Anthropic HH-RLHF record: both branches as Human:/Assistant: transcripts."""
    said = "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(context))
    return {"chosen": f"{said}\n\nAssistant: {chosen}", "rejected": f"{said}\n\nAssistant: {rejected}"}


CAT = "What are some good ways to keep an indoor cat entertained?"
PREFERENCE = [
    pair(SAMPLES[0], SAMPLES[1], score_chosen=9.0, score_rejected=6.5),
    pair(SAMPLES[0], SAMPLES[2], score_chosen=9.0, score_rejected=2.0),
    pair(SAMPLES[1], SAMPLES[2], score_chosen=6.5, score_rejected=2.0),
    hh(
        [CAT],
        "Puzzle feeders, wand toys and a window perch all help; rotate toys so they stay new.",
        "Cats sleep.",
    ),
    hh(
        [CAT],
        "Play with a wand toy twice a day and hide treats around the house for it to find.",
        "Get a dog.",
    ),
    hh(
        [CAT, "Puzzle feeders help.", "Which puzzle feeder is best for a beginner cat?"],
        "Start with a simple treat ball: it rolls and drops kibble, so the cat learns quickly.",
        "The hardest one you can find.",
    ),
]


def test_several_pairs_for_one_prompt_are_kept_and_only_repeated_pairs_removed(tmp_path):
    repeated = pair(SAMPLES[0].upper(), SAMPLES[1])  # the first pair again, shouting
    almost = pair(SAMPLES[0], SAMPLES[1].replace("dictator for life", "dictator"))  # rejected edited
    frame = read(tmp_path, [*PREFERENCE, repeated, almost])
    assert frame["prompt"].iloc[:3].nunique() == 1 and frame["prompt"].iloc[3:5].nunique() == 1
    key = frame[KEY_COLUMN].iloc[0]
    assert key == f"user: {PROMPT}\n\nresponse: {SAMPLES[0]}\n\nresponse: {SAMPLES[1]}"
    out = verdicts(check(tmp_path, frame))
    ids = list(frame["id"])
    assert [out[i] for i in ids[:6]] == [None] * 6  # HH pairs and the k-sample pairs: all kept
    assert out[ids[6]] == f"exact_duplicate of s/{ids[0]}"
    assert out[ids[7]] is None  # near-duplicate pairs differ in what DPO learns from: kept by default

    fuzzy_too = verdicts(check(tmp_path / "other", frame, fuzzy_groups=["demonstration", "preference"]))
    assert fuzzy_too[ids[7]] == f"near_duplicate of s/{ids[0]}"


def test_ranked_responses_of_one_prompt_differ_by_their_responses(tmp_path):
    records = [
        {"prompt": PROMPT, "responses": [{"text": s, "score": 3 - i} for i, s in enumerate(SAMPLES)]},
        {"prompt": PROMPT, "responses": [{"text": SAMPLES[1], "score": 2}, {"text": SAMPLES[2], "score": 1}]},
        {"prompt": PROMPT, "completions": SAMPLES, "ratings": [5, 4, 1]},  # the first, rated on another scale
        pair(SAMPLES[1], SAMPLES[2]),  # the second ranking, as a pair: the same comparison
    ]
    frame = read(tmp_path, records)
    out = verdicts(check(tmp_path, frame))
    ids = list(frame["id"])
    assert out == {
        ids[0]: None,
        ids[1]: None,
        ids[2]: f"exact_duplicate of s/{ids[0]}",
        ids[3]: f"exact_duplicate of s/{ids[1]}",
    }


def test_demonstration_and_preference_dedup_are_switched_separately(tmp_path):
    demos = [
        sharegpt("sg-1", EVEREST, EVEREST_A),
        sharegpt("sg-2", EVEREST, "About 70 °C, because of the low pressure."),
    ]
    pairs = [pair(SAMPLES[0], SAMPLES[1]), pair(SAMPLES[0], SAMPLES[1])]
    frame = read(tmp_path, [*demos, *pairs])
    ids = list(frame["id"])
    default = verdicts(check(tmp_path, frame, "one"))
    assert (
        default["sg-2"] == "exact_duplicate of one/sg-1"
        and default[ids[3]] == f"exact_duplicate of one/{ids[2]}"
    )
    demos_only = verdicts(check(tmp_path, frame, "two", exact_groups=["demonstration"], fuzzy_groups=[]))
    assert demos_only["sg-2"] == "exact_duplicate of one/sg-1"
    assert demos_only[ids[2]] is None and demos_only[ids[3]] is None  # preference dedup off


def test_key_and_scope_parameters_are_validated_and_completed():
    assert complete_keys({"conversation": "conversation"}) == {
        **DEFAULT_DEDUP_KEYS,
        "conversation": "conversation",
    }
    assert SftIngestParams(dedup_key={"ranked": "prompt"}).dedup_key["preference"] == "prompt_responses"
    with pytest.raises(ValueError, match="unknown kinds"):
        SftIngestParams(dedup_key={"chat": "prompt"})
    with pytest.raises(ValueError, match="unknown dedup keys"):
        SftIngestParams(dedup_key={"conversation": "first_turn"})
    with pytest.raises(ValueError, match="unknown dedup groups"):
        SftDedupScopeParams(fuzzy_groups=["conversation"])
    assert SftCheckParams().fuzzy_groups == ["demonstration"]
    with pytest.raises(ValueError, match="unknown dedup key"):
        key_text("everything", "p", [{"role": "user", "content": "p"}])
