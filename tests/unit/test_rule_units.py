"""Heuristic rules as units: a rule is one file in refinery/filters/rules/, and the chain takes its
parameters, score columns and reason codes from it. The new rule is docs/adding-a-rule.md's example,
executed as written."""

import random
import re
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import refinery.filters.rules as rules_package
from refinery.filters.c4 import C4Params
from refinery.filters.chain import CHAIN, FLOAT_SCORES, INT_SCORES, RuleChain, registered_rules
from refinery.filters.params import RULE_SWITCHES, HeuristicParams
from refinery.filters.rule import Document, Rule
from refinery.sample import prose
from refinery.text.words import char_class_counts

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "adding-a-rule.md"


def rule_file_from_the_guide() -> str:
    """The code block of docs/adding-a-rule.md: one file, as a contributor would write it."""
    return re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.S).group(1)


@pytest.fixture
def chain_with_new_file(tmp_path, monkeypatch):
    """The rules package with one more file in it, and the chain built from the package."""
    (tmp_path / "shouting.py").write_text(rule_file_from_the_guide())
    monkeypatch.setattr(rules_package, "__path__", [*rules_package.__path__, str(tmp_path)])
    yield RuleChain(registered_rules())
    sys.modules.pop("refinery.filters.rules.shouting", None)


def test_a_rule_file_joins_the_chain_columns_reasons_and_params(chain_with_new_file):
    chain = chain_with_new_file
    assert [r.name for r in chain.rules] == [
        "gopher_quality",
        "gopher_repetition",
        "shouting",
        "language",
        "gopher_stop_words",
        "c4",
    ]
    assert chain.float_scores == [*FLOAT_SCORES, "upper_words_ratio"]
    assert pa.field("upper_words_ratio", pa.float32()) in chain.fields
    assert chain.switches == {**RULE_SWITCHES, "shouting.upper_words": ("max_upper_words_ratio", None)}

    params = chain.params()
    article = prose.article(random.Random(3), "history", paragraphs=4)
    shouted = article.upper()
    frame = pd.DataFrame({"id": ["calm", "loud"], "text": [article, shouted]})
    result = chain.filter_batch(frame, params)
    assert result.kept["id"].tolist() == ["calm"]
    assert result.rejected["reason"].tolist() == ["shouting.upper_words"]
    assert 0 < result.kept["upper_words_ratio"][0] < 0.5
    assert result.rejected["upper_words_ratio"][0] > 0.9
    # it runs before the language gate: its column is filled, the gate's and later ones are not
    assert result.kept["english_word_fraction"].notna().all()
    assert result.rejected["english_word_fraction"].isna().all()

    # its threshold, switch and reason code work like every other rule's
    assert chain.filter_batch(frame, chain.params(max_upper_words_ratio=None)).rejected.empty
    assert chain.filter_batch(frame, chain.params(disabled_rules=["shouting.upper_words"])).rejected.empty
    off = chain.filter_batch(frame, chain.params(shouting=False))
    assert off.rejected.empty and off.kept["upper_words_ratio"].isna().all()
    with pytest.raises(ValueError, match="unknown rules"):
        chain.params(disabled_rules=["shouting.typo"])


def test_the_shipped_chain_keeps_its_order_columns_and_parameters():
    assert [r.name for r in CHAIN.rules] == [
        "gopher_quality",
        "gopher_repetition",
        "language",
        "gopher_stop_words",
        "c4",
    ]
    assert INT_SCORES == [
        "word_count",
        "stop_word_count",
        "c4_lines_removed",
        "c4_sentences",
        "c4_badwords_count",
    ]
    assert FLOAT_SCORES[:2] == ["english_word_fraction", "mean_word_length"]
    assert FLOAT_SCORES[-1] == "dup_10gram_char_frac" and len(FLOAT_SCORES) == 20
    assert HeuristicParams is CHAIN.params and HeuristicParams.__name__ == "HeuristicParams"
    assert list(HeuristicParams.model_fields)[:3] == ["language", "disabled_rules", "language_gate"]
    assert len(RULE_SWITCHES) == 28


def test_a_rule_naming_a_parameter_nobody_declares_fails_at_build():
    class Typo(Rule):
        name, position, params, switch = "typo", 900, C4Params, "c4"
        reasons = {"typo.x": ("c4_no_such_threshold", None)}  # noqa: RUF012

    with pytest.raises(ValueError, match="c4_no_such_threshold"):
        RuleChain([*registered_rules(), Typo])


def test_two_rules_declaring_one_column_fail_at_build():
    class Twin(Rule):
        name, position, params, switch = "twin", 900, C4Params, "c4"
        int_scores = ("word_count",)

    with pytest.raises(ValueError, match="word_count"):
        RuleChain([*registered_rules(), Twin])


def test_a_document_splits_its_tokens_only_when_a_rule_asks():
    text = "x = {a: 1, b: [2, 3]}; y = (x * 2) / 3 # and so on"
    words, others = char_class_counts([text])
    doc = Document(text, (int(words[0]), int(others[0])))  # symbol heavy: tokens counted, not listed
    assert doc._tokens is None and doc.n_tokens == len(doc.tokens)
    assert Document(text).tokens == doc.tokens
