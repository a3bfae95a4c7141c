"""Every documented option of the rule-based text stages, through Dagster's ``materialize``.

The library has its own tests per option; these prove each option is accepted as run config (or
resource config), reaches the library (the output's provenance records it), and the chain still
runs end to end with it: ``raw_documents`` → ``clean_documents`` → ``heuristic_filtered`` /
``multilingual_filtered`` → ``exact_deduplicated`` → ``fuzzy_deduplicated``, plus the
``language_routing`` resource. Options are grouped into four rounds, one materialization each, on
a tiny real source (generated articles, Debian man-page text in six languages, one Debian HTML
page and one PDF). ``test_every_option_is_exercised`` fails when a stage gains an option that no
round sets to a non-default value.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from assets import (
    clean_documents,
    exact_deduplicated,
    fuzzy_deduplicated,
    heuristic_filtered,
    multilingual_filtered,
    raw_documents,
)
from refinery.stages import text
from refinery.storage import Storage
from refinery.text.language_id import DEFAULT_MODEL
from refinery.text.language_models import LANGUAGE_MODELS, MIN_SCORE_BY_MODEL
from resources import LanguageRoutingResource
from tests.conftest import write_source
from tests.dagster.conftest import ALPHA, FRENCH, PII_DOC, jsonl, resources_for
from tests.dagster.test_cli import BIN, cli_env, run  # noqa: F401 (cli_env is a fixture)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ASSETS = [
    raw_documents,
    clean_documents,
    heuristic_filtered,
    multilingual_filtered,
    exact_deduplicated,
    fuzzy_deduplicated,
]
SPECS = {
    spec.name: spec
    for spec in (
        text.RAW_DOCUMENTS,
        text.CLEAN_DOCUMENTS,
        text.HEURISTIC_FILTERED,
        text.MULTILINGUAL_FILTERED,
        text.EXACT_DEDUPLICATED,
        text.FUZZY_DEDUPLICATED,
    )
}
CANDIDATES = ["en", "de", "fr", "es", "ru", "zh"]

# Round by round: stage -> options (non-default values), and the language_routing resource's.
LOOSE_RULES = {
    "language_gate": False,
    "min_english_word_fraction": 0.05,
    "language_gate_min_words": 10,
    "min_doc_words": 30,
    "max_doc_words": 50_000,
    "min_avg_word_length": 2.5,
    "max_avg_word_length": 12.0,
    "max_hash_word_ratio": 0.2,
    "max_ellipsis_word_ratio": 0.2,
    "max_bullet_lines_ratio": 0.95,
    "max_ellipsis_lines_ratio": 0.4,
    "min_alpha_words_ratio": 0.7,
    "min_stop_words": 1,
    "stop_words": ["the", "and", "of", "to"],
    "bullet_prefixes": ["-", "*"],
    "max_dup_para_frac": 0.35,
    "max_dup_para_char_frac": 0.25,
    "max_dup_line_frac": 0.35,
    "max_dup_line_char_frac": 0.25,
    "max_top_2gram_char_frac": 0.25,
    "max_top_3gram_char_frac": 0.22,
    "max_top_4gram_char_frac": 0.2,
    "max_dup_5gram_char_frac": 0.2,
    "max_dup_6gram_char_frac": 0.19,
    "max_dup_7gram_char_frac": 0.18,
    "max_dup_8gram_char_frac": 0.17,
    "max_dup_9gram_char_frac": 0.16,
    "max_dup_10gram_char_frac": 0.15,
}
C4_VARIANTS = {
    "disabled_rules": ["gopher_quality.too_many_hashes", "gopher_repetition.dup_10gram"],
    "c4_rewrite_lines": False,
    "c4_terminal_punctuation": False,
    "c4_remove_citations": False,
    "c4_min_words_per_line": 2,
    "c4_max_word_length": 500,
    "c4_min_sentences": 3,
    "c4_lorem_ipsum": False,
    "c4_javascript": False,
    "c4_curly_bracket": False,
    "c4_policy": False,
    "c4_badwords": True,
    "c4_max_badwords": 2,
}
GERMAN_BASE = {"language": "de", "language_gate": False, "stop_words": ["der", "die", "und", "in", "den"]}
ROUNDS: dict[str, dict] = {
    "fasttext_loose_rules": {
        "raw_documents": {
            "max_document_chars": 200_000,
            "batch_rows": 3,
            "split_bytes": 1_000_000,  # ranges on a distributed engine (tests/ray); recorded here
            "html_extractor": "trafilatura",
            "html_drop_nav_lines": False,
            "html_heading_marks": True,
            "min_main_content_chars": 10,
            "max_record_bytes": 4_000_000,
            "max_pdf_bytes": 50_000_000,
            "max_pdf_pages": 500,
            "max_pdf_stream_bytes": 32_000_000,
        },
        "clean_documents": {
            "language_model": "fasttext",
            "language_candidates": CANDIDATES,
            "language_max_chars": 500,
            "fix_unicode": False,
            "unicode_form": "NFKC",
            "strip_invisible": False,
            "normalize_whitespace": False,
            "redact": ["email"],
            "placeholder": "[{kind}]",
        },
        "heuristic_filtered": LOOSE_RULES,
        "multilingual_filtered": LOOSE_RULES,
        "exact_deduplicated": {"batch_rows": 2, "normalization": "whitespace"},
        "fuzzy_deduplicated": {
            "batch_rows": 2,
            "num_perm": 64,
            "ngram": 3,
            "threshold": 0.7,
            "seed": 7,
            "recall": 0.95,
        },
        "language_routing": {
            "languages": ["en", "de"],
            "min_language_score": 0.5,
            "overrides": {"de": {"min_doc_words": 20}},
        },
    },
    "cld3_families_off": {
        "raw_documents": {"max_document_chars": 10_000, "html_main_container": False},
        "clean_documents": {"language_model": "cld3", "language_max_chars": None},
        "heuristic_filtered": {"gopher_quality": False, "gopher_repetition": False, "c4": False},
        "multilingual_filtered": {"gopher_quality": False, "gopher_repetition": False, "c4": False},
        "exact_deduplicated": {"normalization": "none"},
    },
    "lingua_high_accuracy_c4": {
        "clean_documents": {
            "language_model": "lingua",
            "language_low_accuracy": False,
            "language_candidates": CANDIDATES,
        },
        "heuristic_filtered": C4_VARIANTS,
        "multilingual_filtered": C4_VARIANTS,
    },
    # Unlabelled German text: the base rule set named "de", its gate off (only 'en' has one), German
    # stop words. (Labels off with the default English base rules: test_labels_off_through_the_cli.)
    "labels_off_german_base": {
        "clean_documents": {"label_language": False},
        "heuristic_filtered": GERMAN_BASE,
        "multilingual_filtered": GERMAN_BASE,
    },
}


def _source(home) -> None:
    rows = [{"id": f"en{i}", "text": t} for i, t in enumerate(ALPHA[:6])]
    rows += [{"id": "pii", "text": PII_DOC}, {"id": "french", "text": FRENCH}]
    with (FIXTURES / "multilingual.jsonl").open() as lines:
        rows += [
            {"id": f"man-{r['lang']}", "text": r["text"]}
            for r in map(json.loads, lines)
            if r["kind"] == "page"
        ]
    html = FIXTURES / "html" / "libffi8" / "Introduction.html"
    pdf = FIXTURES / "pdf" / "shared-mime-info-spec.pdf"
    write_source(
        home,
        "opts",
        {"docs.jsonl": jsonl(rows), "page.html": html.read_bytes(), "spec.pdf": pdf.read_bytes()},
    )


def _expected(stage: str, options: dict) -> dict:
    """What the output's provenance must record: the options as the parameter model normalizes them."""
    dumped = SPECS[stage].params(**options).model_dump()
    return {name: dumped[name] for name in options}


@pytest.mark.parametrize("round_name", list(ROUNDS))
def test_options_through_materialize(home, round_name):
    plan = ROUNDS[round_name]
    _source(home)
    stage_config = {stage: {"config": opts} for stage, opts in plan.items() if stage in SPECS}
    routing = LanguageRoutingResource(**plan.get("language_routing", {}))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["opts"])
        result = dg.materialize(
            ASSETS,
            partition_key="opts",
            instance=instance,
            resources=resources_for(home, language_routing=routing),
            run_config={"ops": stage_config},
        )
    assert result.success
    storage = Storage(home.storage)
    for stage, options in plan.items():
        if stage == "language_routing":
            for side in ("heuristic_filtered", "multilingual_filtered"):
                stamp = storage.provenance(side, "opts")["language_routing"]
                assert {k: stamp[k] for k in options} == options, (side, stamp)
            continue
        params = storage.provenance(stage, "opts")["params"]
        assert {k: params[k] for k in options} == json.loads(json.dumps(_expected(stage, options))), stage

    if "language_routing" not in plan:  # the threshold follows the model that labelled the partition
        model = plan["clean_documents"].get("language_model", DEFAULT_MODEL)
        stamp = storage.provenance("heuristic_filtered", "opts")["language_routing"]
        assert stamp["min_language_score"] == MIN_SCORE_BY_MODEL[model]

    kept = storage.read("clean_documents", "opts")
    main = storage.read("heuristic_filtered", "opts")
    rejected_main = storage.read("heuristic_filtered", "opts", rejected=True)
    other = storage.read("multilingual_filtered", "opts")
    if round_name == "labels_off_german_base":
        # No labels: both columns null, every row on the main side under the base rules (here
        # named "de", with German stop words), nothing routed elsewhere.
        assert kept["language"].isna().all() and kept["language_score"].isna().all()
        assert len(other) == 0 and storage.row_count("multilingual_filtered", "opts", rejected=True) == 0
        assert set(main["rule_set"]) | set(rejected_main["rule_set"]) == {"de"}
        reasons = dict(zip(rejected_main["id"], rejected_main["reason"], strict=True))
        assert reasons["en0"] == "gopher_quality.few_stop_words"  # English lacks German stop words
        assert reasons.get("man-de") != "gopher_quality.few_stop_words"  # (man pages: low_alpha_words)
        return
    labels = dict(zip(kept["id"], kept["language"], strict=True))
    # CLD3 calls this zh man page (Chinese with groff table markup) Hindi: measured, docs/language.md
    expected = [lang for lang in CANDIDATES if not (lang == "zh" and round_name == "cld3_families_off")]
    assert {labels[f"man-{lang}"] for lang in expected} == set(expected), labels
    assert labels["french"] == "fr" and labels["en0"] == "en"
    if round_name == "fasttext_loose_rules":
        assert "[EMAIL]" in kept.loc[kept["id"] == "pii", "text"].item()
        assert "man-de" in set(main["id"])  # de is a main language in this round's routing
        assert set(main.loc[main["id"] == "man-de", "rule_set"]) == {"de"}
    else:
        assert "man-de" in set(other["id"]) | set(
            storage.read("multilingual_filtered", "opts", rejected=True)["id"]
        )
    if round_name == "cld3_families_off":
        quarantined = storage.read("raw_documents", "opts", rejected=True)
        assert "oversized" in set(quarantined["reason"])  # the PDF's text is over 10,000 characters


def test_every_option_is_exercised():
    """Each stage's every config field (and the routing resource's) is set, off its default, in a round."""
    for stage, spec in SPECS.items():
        covered = {name for plan in ROUNDS.values() for name in plan.get(stage, {})}
        missing = sorted(set(spec.params.model_fields) - covered)
        assert not missing, f"{stage}: options no round sets: {missing}"
        for plan in ROUNDS.values():
            for name, value in plan.get(stage, {}).items():
                if name != "language_model":  # every model is named (below), the default included
                    assert value != spec.params.model_fields[name].default, (stage, name)
    models = {plan["clean_documents"].get("language_model") for plan in ROUNDS.values()}
    assert set(LANGUAGE_MODELS) <= models
    resource_fields = set(LanguageRoutingResource.model_fields)
    covered = {name for plan in ROUNDS.values() for name in plan.get("language_routing", {})}
    assert resource_fields <= covered, sorted(resource_fields - covered)


def test_labels_off_through_the_cli(home, cli_env):  # noqa: F811
    """The command of issue 22, as a user types it: labels off, then the routing downstream. Rows
    without a label stay on the main side under the base (English) rules, whose function-word gate
    rejects the other languages there; multilingual_filtered gets nothing."""
    _source(home)
    assert run([str(BIN / "refinery"), "partitions"], cli_env).returncode == 0
    config = {"ops": {"clean_documents": {"config": {"label_language": False}}}}
    done = run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "definitions",
            "--partition",
            "opts",
            "--select",
            "raw_documents,clean_documents,heuristic_filtered,multilingual_filtered",
            "--config-json",
            json.dumps(config),
        ],
        cli_env,
    )
    assert done.returncode == 0 and "RUN_SUCCESS" in done.stderr + done.stdout, done.stderr[-3000:]
    storage = Storage(home.storage)
    kept = storage.read("clean_documents", "opts")
    assert kept["language"].isna().all() and kept["language_score"].isna().all()
    rejected = storage.read("heuristic_filtered", "opts", rejected=True)
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    assert reasons["french"] == "language.not_english"
    assert "man-de" in reasons  # on the main side (rejected there: man pages are low in alpha words)
    assert set(storage.read("heuristic_filtered", "opts")["rule_set"]) == {"en"}
    assert storage.row_count("multilingual_filtered", "opts") == 0
