"""Heuristic rules: each fires on what it targets, each can be switched off, scores are correct."""

import random
from collections import Counter

import pandas as pd
import pytest

from refinery.filters.chain import evaluate, filter_batch
from refinery.filters.gopher_repetition import gopher_repetition
from refinery.filters.params import RULE_SWITCHES, HeuristicParams
from refinery.sample import prose
from refinery.text.words import tokens

P = HeuristicParams()
GOOD = prose.article(random.Random(11), "history", paragraphs=4)
_rng = random.Random(12)
SHORT_PARAS = [prose.paragraph(_rng, "travel", sentences=3) for _ in range(5)]
LONG_PARA = prose.paragraph(_rng, "travel", sentences=14)
SENTENCES = prose.paragraph(_rng, "cooking", sentences=9).split(". ")


def reason(text, **overrides):
    verdict, _, _ = evaluate(text, HeuristicParams(**overrides))
    return verdict[0] if verdict else None


def test_good_article_passes_with_all_scores():
    verdict, scores, kept = evaluate(GOOD, P)
    assert verdict is None
    assert scores["word_count"] > 50 and 0.2 < scores["english_word_fraction"] < 0.7
    assert scores["c4_sentences"] >= 5 and scores["dup_5gram_char_frac"] < 0.15
    assert kept.count("\n") >= 3  # paragraphs survive as lines


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Too short to be a document at all.", "gopher_quality.short_doc"),
        ("a is it of to an by " * 20 + "the end.", "gopher_quality.mean_word_length_low"),
        (
            " ".join(["internationalization", "telecommunications", "the", "and"] * 20) + ".",
            "gopher_quality.mean_word_length_high",
        ),
        (GOOD + "\n" + " ".join("#tag" for _ in range(200)), "gopher_quality.too_many_hashes"),
        (
            "\n".join(f"- {w} item number {i} of the list and more" for i, w in enumerate(["alpha"] * 60)),
            "gopher_quality.too_many_bullets",
        ),
        (
            "\n".join(
                f"{w} and the story continues here with {i} more..." for i, w in enumerate(["so"] * 40)
            ),
            "gopher_quality.too_many_end_ellipsis",
        ),
        (
            " ".join(f"{1000 + i} = {5000 + i} ; value{i} ." for i in range(40)) + " the and with",
            "gopher_quality.low_alpha_words",
        ),
        (
            GOOD.split("\n\n")[1] + "\n\n" + GOOD.split("\n\n")[1] + "\n\n" + GOOD.split("\n\n")[2],
            "gopher_repetition.dup_para_frac",
        ),
        ("\n\n".join([*SHORT_PARAS, LONG_PARA, LONG_PARA]), "gopher_repetition.dup_para_char_frac"),
        (prose.foreign_article(random.Random(1), "fr"), "language.not_english"),
        (
            " ".join(["cat dog bird fish lamp desk road tree"] * 3)
            + " "
            + GOOD.replace("the ", "")
            .replace("The ", "")
            .replace(" and ", " ")
            .replace(" of ", " ")
            .replace(" to ", " ")
            .replace(" with ", " ")
            .replace(" that ", " ")
            .replace(" have ", " ")
            .replace(" be ", " "),
            "gopher_quality.few_stop_words",
        ),
        (GOOD + "\n\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4.lorem_ipsum"),
        (GOOD + "\n\nSet {debug: true} in the file and restart it.", "c4.curly_bracket"),
        (
            "\n".join([*[x.rstrip(".") for x in SENTENCES[:-2]], SENTENCES[-2] + ".", SENTENCES[-1]]),
            "c4.too_few_sentences",
        ),
    ],
)
def test_rule_fires(text, code):
    assert reason(text) == code


def test_every_rule_can_be_disabled_by_code():
    fields = HeuristicParams.model_fields
    for code, (name, off) in RULE_SWITCHES.items():
        assert name in fields, code
        assert getattr(HeuristicParams(disabled_rules=[code]), name) == off
    assert reason("Too short to be a document at all.", disabled_rules=["gopher_quality.short_doc"]) != (
        "gopher_quality.short_doc"
    )
    with pytest.raises(ValueError, match="unknown rules"):
        HeuristicParams(disabled_rules=["gopher_quality.typo"])


def test_threshold_none_disables_and_families_switch_off():
    french = prose.foreign_article(random.Random(1), "fr")
    assert reason(french, min_english_word_fraction=None) == "gopher_quality.few_stop_words"
    assert reason(french, language_gate=False) == "gopher_quality.few_stop_words"
    assert reason(french, language_gate=False, gopher_quality=False, c4=False) is None


def test_language_gate_runs_after_language_agnostic_rules():
    spam = "\n".join(["cheap pills buy online deal"] * 40)
    assert reason(spam).startswith("gopher_")  # spam is spam, not "not English"


def test_c4_rewrites_lines_unless_told_not_to():
    text = GOOD + "\n\nPlease enable JavaScript to view comments.\nShare this\nRead our privacy policy today."
    _, scores, kept = evaluate(text, P)
    _, baseline, _ = evaluate(GOOD, P)
    assert "JavaScript" not in kept and "Share this" not in kept and "privacy policy" not in kept
    assert scores["c4_lines_removed"] == baseline["c4_lines_removed"] + 3
    _, _, untouched = evaluate(text, HeuristicParams(c4_rewrite_lines=False))
    assert untouched == text


def test_c4_drops_lines_without_terminal_punctuation():
    _, _, kept = evaluate("Navigation menu\n" + GOOD, P)
    assert not kept.startswith("Navigation")


# -- the numpy repetition code against a naive reading of the definitions ----------------------


def naive_repetition(text: str, toks: list[str]) -> dict:
    def top(n):
        grams = [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        if not grams:
            return None
        gram, count = Counter(grams).most_common(1)[0]
        return len(gram) * count / len(text)

    def dup(n):
        seen, i, chars = set(), 0, 0
        while i < len(toks) - n + 1:
            gram = "\0".join(toks[i : i + n])
            if gram in seen:
                chars += sum(len(t) for t in toks[i : i + n])
                i += n
            else:
                seen.add(gram)
                i += 1
        return chars / len(text)

    return {
        **{f"top_{n}gram_char_frac": top(n) for n in (2, 3, 4)},
        **{f"dup_{n}gram_char_frac": dup(n) for n in range(5, 11)},
    }


def test_ngram_scores_match_naive_definitions():
    rng = random.Random(5)
    everything_on = HeuristicParams(
        **{f"max_top_{n}gram_char_frac": 1e9 for n in (2, 3, 4)},
        **{f"max_dup_{n}gram_char_frac": 1e9 for n in range(5, 11)},
        max_dup_para_frac=None,
        max_dup_para_char_frac=None,
        max_dup_line_frac=None,
        max_dup_line_char_frac=None,
    )
    texts = [prose.article(rng) for _ in range(15)] + [prose.keyword_spam(rng) for _ in range(10)]
    texts += [" ".join(rng.choice(["a", "b", "c"]) for _ in range(rng.randint(3, 60))) for _ in range(40)]
    for text in texts:
        out: dict = {}
        assert gopher_repetition(text, tokens(text), everything_on, out) is None
        expected = naive_repetition(text, tokens(text))
        for key, value in expected.items():
            if value is not None:
                assert out[key] == pytest.approx(value), (key, text[:80])


def test_filter_batch_splits_and_types():
    frame = pd.DataFrame({"id": ["good", "short"], "text": [GOOD, "tiny text"]})
    result = filter_batch(frame, P)
    assert result.kept["id"].tolist() == ["good"]
    assert result.rejected[["id", "reason"]].values.tolist() == [["short", "gopher_quality.short_doc"]]
    assert "words < 50" in result.rejected["reason_detail"].iloc[0]
    assert str(result.kept["word_count"].dtype) == "Int32"
    assert pd.isna(result.rejected["dup_5gram_char_frac"].iloc[0])  # families after the failure did not run


def test_word_tokens_equal_the_word_regex():
    from refinery.text.words import word_tokens, words

    rng = random.Random(3)
    texts = [prose.article(rng) for _ in range(20)] + [prose.boilerplate_page(rng), prose.code_snippet(rng)]
    texts += ["snake_case _x ½ Straße 日本語 don't well-known 3.14 — “quoted” #tag ...", "", "!!!"]
    for text in texts:
        assert word_tokens(tokens(text)) == words(text)
