"""SFT rules and prompt dedup: each rule fires on what it targets and spares what it should."""

import json

import pandas as pd
import pytest

from refinery.paths import Layout
from refinery.sft.check import SftCheckParams, check_batch
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.dedup_keys import DEFAULT_DEDUP_KEYS, key_text
from refinery.sft.rules import SftRuleParams, SftRules, prompt_overlap, truncation
from refinery.sft.schema import SFT_SCHEMA

ANSWER = "The river floods every spring, so the farmers plant late and harvest in the autumn."


def row(
    prompt="How do rivers flood?",
    response=ANSWER,
    kind="instruction",
    rejected=None,
    responses=None,
    rid="r1",
):
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return {
        "id": rid,
        "source": "s",
        "kind": kind,
        "format": "test",
        "system": None,
        "prompt": prompt,
        "response": response,
        "rejected_response": rejected,
        "messages": json.dumps(messages),
        "responses": json.dumps(responses) if responses else None,
        "turns": 1,
        "quality": None,
        "meta": None,
        "dedup_text": key_text(DEFAULT_DEDUP_KEYS[kind], prompt, messages, responses),
        "file": "f",
        "line": 1,
    }


def verdict(params=None, **kw):
    _, reasons = SftRules(params or SftRuleParams()).apply(
        pd.DataFrame([row(**kw)], columns=SFT_SCHEMA.names)
    )
    return reasons[0][0] if reasons[0] else None


def test_good_record_passes():
    assert verdict() is None


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"prompt": "  "}, "empty_prompt"),
        ({"response": " \n"}, "empty_response"),
        ({"response": "They flood because the snow melts and"}, "truncated_response"),
        ({"response": "Here:\n```python\nprint(1)\n"}, "truncated_response"),
        ({"response": "The reasons are:"}, "truncated_response"),
        (
            {"prompt": "Say: the river floods every spring.", "response": "The river floods every spring."},
            "response_copies_prompt",
        ),
        ({"response": "As an AI language model, I cannot have opinions about rivers."}, "refusal"),
        ({"response": "I'm sorry, but I can't help with that."}, "refusal"),
        ({"prompt": "x" * 9000}, "prompt_too_long"),
        (
            {
                "response": "Le fleuve déborde chaque printemps, alors les paysans plantent tard "
                "et récoltent en automne quand il fait encore doux dans la vallée du Rhône près de Lyon."
            },
            "language.not_english",
        ),
        (
            {
                "kind": "preference",
                "rejected": ANSWER,
                "responses": [{"text": ANSWER, "score": None}, {"text": ANSWER, "score": None}],
            },
            "preference.identical",
        ),
        (
            {
                "kind": "preference",
                "rejected": "",
                "responses": [{"text": ANSWER, "score": 1}, {"text": "", "score": 0}],
            },
            "empty_response",
        ),
        (
            {
                "kind": "ranked",
                "rejected": "Floods.",
                "responses": [{"text": ANSWER, "score": 2}, {"text": "Floods.", "score": 2}],
            },
            "ranked.tied_scores",
        ),
    ],
)
def test_each_rule_fires(kw, code):
    assert verdict(**kw) == code


def test_rejected_answer_may_be_a_refusal_and_rules_can_be_disabled():
    refusal = "As an AI language model, I cannot answer."
    pair = {
        "kind": "preference",
        "rejected": refusal,
        "responses": [{"text": ANSWER, "score": 1}, {"text": refusal, "score": 0}],
    }
    assert verdict(**pair) is None  # what a rejected answer is for
    assert verdict(SftRuleParams(disabled_rules=["refusal"]), response=refusal) is None
    with pytest.raises(ValueError, match="unknown rules"):
        SftRuleParams(disabled_rules=["no_such_rule"])


def test_truncation_and_overlap_scores():
    assert truncation("A full sentence.") is None and truncation("1. milk\n2. eggs") is None
    assert truncation("We went to the") and truncation("```\ncode\n```") is None
    assert prompt_overlap("Fix: their going home now.", "They're going home now.") < 0.95  # an edit passes
    assert prompt_overlap("abc", "ABC!") == 1.0


def test_dedup_first_come_and_groups_are_separate(tmp_path):
    layout = Layout.at(tmp_path)
    params = SftCheckParams()
    rules = SftRules(params)
    long = "Explain why the river floods every spring and what the farmers in the valley do about it."
    rows = [
        row(prompt=long, rid="a"),
        row(prompt=long.upper(), rid="b"),
        row(prompt="Please " + long[0].lower() + long[1:], rid="c"),
        row(
            prompt=long,
            rid="d",
            kind="preference",
            rejected="No.",
            responses=[{"text": ANSWER, "score": 1}, {"text": "No.", "score": 0}],
        ),
        row(prompt=long, rid="e", response="", kind="instruction"),
    ]
    frame = pd.DataFrame(rows, columns=SFT_SCHEMA.names)

    def run(source, data):
        indexes = open_group_indexes("local", layout, "", "t", params)
        with SftPromptDeduper.claiming(indexes, source, params) as deduper:
            result = check_batch(data, rules, deduper)
        return result

    result = run("one", frame)
    assert result.kept["id"].tolist() == ["a", "d"]  # d: same prompt, other group
    rejected = result.rejected.set_index("id")
    assert rejected.loc["b", "reason"] == "exact_duplicate" and rejected.loc["b", "duplicate_of"] == "one/a"
    assert rejected.loc["c", "reason"] == "near_duplicate" and rejected.loc["c", "similarity"] >= 0.8
    assert rejected.loc["e", "reason"] == "empty_response"  # rules first: e never claimed its prompt
    later = run("two", frame.iloc[[0]].assign(id="z"))
    assert later.rejected["duplicate_of"].tolist() == ["one/a"]
    again = run("one", frame)  # re-running a source withdraws and renews its own claims
    assert again.kept["id"].tolist() == ["a", "d"]
