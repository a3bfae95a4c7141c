"""KenLM perplexity with a real model trained here by lmplz (scripts/build_kenlm.sh builds it)."""

import json
import math
import random
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refinery.paths import Layout
from refinery.quality import ngram_lm
from refinery.quality.ngram_lm import (
    KenLMToolsMissing,
    LmplzOptions,
    ModelFormatError,
    ModelOrderError,
    build_binary,
    find_kenlm_tool,
    load_language_model,
    model_format,
    train_arpa,
)
from refinery.quality.normalize import normalized_lines
from refinery.quality.perplexity import (
    PerplexityParams,
    PerplexityScorer,
    cutoffs_from_table,
    document_perplexity,
    percentile_table,
)
from refinery.quality.reference import (
    ReferenceCorpusError,
    ReferenceLMParams,
    read_reference,
    scoring_lm,
    split_reference,
    train_reference_lm,
    write_training_corpus,
)
from refinery.sample import prose
from refinery.sample.reference_sample import build_reference_sample

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """reference_lm's training on the bundled reference sample: a 5-gram binary plus percentiles."""
    layout = Layout.at(tmp_path_factory.mktemp("lm") / "home")
    build_reference_sample(layout.inbox_kind("reference"))
    result = train_reference_lm(layout, ReferenceLMParams(), order=5)
    return layout, result


@pytest.fixture(scope="module")
def model(trained):
    return load_language_model(trained[1].artifact.path, 5).model


def unseen_prose(n=8, seed=404):
    rng = random.Random(seed)
    return [prose.article(rng, paragraphs=3) for _ in range(n)]


def word_salad(text: str, seed: int) -> str:
    """The same words in random order: unigram statistics kept, n-gram order destroyed."""
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def gibberish(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        "".join(rng.choice("qwrtzpsdfghjklxcvbnm") for _ in range(rng.randint(3, 9))) for _ in range(120)
    )


def test_build_script_is_idempotent_and_tools_are_found():
    out = subprocess.run([str(REPO / "scripts/build_kenlm.sh")], capture_output=True, text=True, check=True)
    assert "already in" in out.stdout
    assert find_kenlm_tool("lmplz").name == "lmplz" and find_kenlm_tool("build_binary").name == "build_binary"


def test_missing_tools_say_how_to_build_them(monkeypatch, tmp_path):
    monkeypatch.setenv(ngram_lm.KENLM_BIN_ENV, str(tmp_path))
    monkeypatch.setattr(ngram_lm, "BUNDLED_BIN", tmp_path / "nothing")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KenLMToolsMissing, match=r"scripts/build_kenlm\.sh"):
        find_kenlm_tool("lmplz")
    (tmp_path / "lmplz").write_text("#!/bin/sh\n")
    (tmp_path / "lmplz").chmod(0o755)
    assert find_kenlm_tool("lmplz") == tmp_path / "lmplz"  # the environment variable wins


def test_training_records_model_and_percentiles(trained):
    layout, result = trained
    info = result.artifact.info
    assert result.artifact.path.name == f"reference_lm-o5-{result.artifact.sha256[:12]}.binary"
    assert info["order"] == 5 and sorted(result.ngram_counts) == [1, 2, 3, 4, 5]
    assert result.train_documents + result.heldout_documents == len(result.corpus.documents)
    assert 0 < result.heldout_documents < result.train_documents
    assert len(result.percentiles) == 101 and result.percentiles == sorted(result.percentiles)
    assert (result.artifact.path.parent / "current.json").exists()
    # The same input gives the same bytes, so the same versioned file.
    again = train_reference_lm(layout, ReferenceLMParams(), order=5)
    assert again.artifact.path == result.artifact.path and again.artifact.sha256 == result.artifact.sha256


def test_reference_like_text_scores_lower_than_noise(model):
    good = [document_perplexity(model, t) for t in unseen_prose()]
    rng = random.Random(5)
    bad = {
        "gibberish": [document_perplexity(model, gibberish(i)) for i in range(4)],
        "word salad": [
            document_perplexity(model, word_salad(t, i)) for i, t in enumerate(unseen_prose(4, 9))
        ],
        "boilerplate": [document_perplexity(model, prose.boilerplate_page(rng)) for _ in range(4)],
        "keyword spam": [document_perplexity(model, prose.keyword_spam(rng)) for _ in range(4)],
    }
    for kind, values in bad.items():
        assert min(values) > 3 * max(good), (kind, values, good)


def test_document_perplexity_is_ccnet_formula(model):
    text = unseen_prose(1)[0]
    lines = list(normalized_lines(text))
    total = sum(model.score(line, bos=True, eos=True) for line in lines)
    tokens = sum(len(line.split()) + 1 for line in lines)
    assert document_perplexity(model, text) == pytest.approx(10 ** (-total / tokens))
    assert document_perplexity(model, lines[1]) == pytest.approx(model.perplexity(lines[1]))


def test_arpa_and_binary_agree_and_order_is_checked(trained, tmp_path):
    layout, result = trained
    train, _ = split_reference(read_reference(layout, "curated"), 0.1)
    corpus = tmp_path / "corpus.txt"
    write_training_corpus(train, corpus)
    arpa3 = tmp_path / "three.arpa"
    counts = train_arpa(corpus, arpa3, LmplzOptions(order=3, memory="64M"))
    assert sorted(counts) == [1, 2, 3]
    binary3 = tmp_path / "three.binary"
    build_binary(arpa3, binary3)
    assert model_format(arpa3) == "arpa" and model_format(binary3) == "binary"
    text = unseen_prose(1)[0]
    from_arpa = document_perplexity(load_language_model(arpa3, 3).model, text)
    from_binary = document_perplexity(load_language_model(binary3, 3).model, text)
    assert from_arpa == pytest.approx(from_binary, rel=1e-4)
    with pytest.raises(ModelOrderError, match=r"3-gram model but order 5 is configured"):
        load_language_model(arpa3, 5)
    with pytest.raises(ModelOrderError, match=r"5-gram model but order 4"):
        load_language_model(result.artifact.path, 4)


def test_wrong_or_missing_model_files_are_clear_errors(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"materialize the reference_lm asset.*model_path"):
        load_language_model(tmp_path / "nope.binary", 5)
    text = tmp_path / "notes.arpa"
    text.write_text("these are my notes, not a language model\n")
    with pytest.raises(ModelFormatError, match=r"not a KenLM model.*ARPA.*binary"):
        load_language_model(text, 5)
    random_bytes = tmp_path / "model.binary"
    random_bytes.write_bytes(bytes(random.Random(1).getrandbits(8) for _ in range(4096)))
    with pytest.raises(ModelFormatError, match="not a KenLM model"):
        load_language_model(random_bytes, 5)
    truncated = tmp_path / "truncated.binary"
    truncated.write_bytes(trained[1].artifact.path.read_bytes()[:300])
    with pytest.raises(ModelFormatError, match="KenLM could not load"):
        load_language_model(truncated, 5)
    with pytest.raises(ModelFormatError, match="directory"):
        load_language_model(tmp_path, 5)


def test_scoring_model_resolution(trained, tmp_path):
    layout, result = trained
    lm = scoring_lm(layout, "", 5)
    assert lm.lm.sha256 == result.artifact.sha256 and lm.origin == "reference_lm"
    (lo, hi), origin = lm.cutoffs([33, 66])
    assert (lo, hi) == pytest.approx(
        cutoffs_from_table(result.percentiles, [33, 66])
    ) and "reference_lm" in origin
    # A user-given file needs cutoffs: given explicitly, or recorded by reference_lm for that very file.
    copy = tmp_path / "mine.binary"
    copy.write_bytes(result.artifact.path.read_bytes())
    assert scoring_lm(layout, str(copy), 5).percentiles == result.percentiles  # same hash: recorded ones
    other = tmp_path / "other.arpa"
    other.write_text(
        "\\data\\\nngram 1=3\nngram 2=1\n\n\\1-grams:\n-1.0\t<unk>\t0\n0\t<s>\t-0.3\n-0.5\t</s>\t0\n\n"
        "\\2-grams:\n-0.2\t<s> </s>\n\n\\end\\\n"
    )
    with pytest.raises(ValueError, match="bucket_cutoffs"):  # only a reference cut needs them
        scoring_lm(layout, str(other), 2).cutoffs([30, 60])
    fixed = scoring_lm(layout, str(other), 2, bucket_cutoffs=[10.0, 20.0])
    assert fixed.cutoffs([33, 66])[0] == (10.0, 20.0)
    empty = Layout.at(tmp_path / "empty-home")
    with pytest.raises(FileNotFoundError, match="materialize the reference_lm asset first"):
        scoring_lm(empty, "", 5)


def test_reference_corpus_errors(tmp_path):
    layout = Layout.at(tmp_path / "home")
    with pytest.raises(ReferenceCorpusError, match=r"no reference corpus at .*build_reference_sample"):
        read_reference(layout, "curated")
    folder = layout.inbox_source("reference", "tiny")
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text(
        '{"id": "1", "text": "One short line."}\n{"id": "2", "text": "Another."}\n'
    )
    with pytest.raises(ReferenceCorpusError, match="training tokens"):
        train_reference_lm(layout, ReferenceLMParams(reference_source="tiny"), 5)


def test_percentile_cutoffs_interpolate():
    table = percentile_table(list(range(1, 102)))  # 1..101
    assert table[0] == 1 and table[100] == 101 and table[50] == 51
    assert cutoffs_from_table(table, [33.0, 66.5]) == pytest.approx((34.0, 67.5))
    with pytest.raises(ValueError):
        percentile_table([math.nan])


def test_scorer_buckets_filters_and_reasons(model):
    texts = [*unseen_prose(6), gibberish(1), "\x01\x02", unseen_prose(1, 77)[0] * 3]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    ppl = [document_perplexity(model, t) for t in unseen_prose(6)]
    cutoffs = (float(np.percentile(ppl, 33)), float(np.percentile(ppl, 66)))

    keep_all = PerplexityScorer(model, PerplexityParams(), cutoffs)(frame)
    assert len(keep_all.kept) == len(texts) - 1
    assert keep_all.rejected["reason"].tolist() == ["perplexity.no_tokens"]
    kept = keep_all.kept.set_index("id")
    assert set(kept["perplexity_bucket"]) == {"head", "middle", "tail"}
    assert kept.loc["d6", "perplexity_bucket"] == "tail"  # gibberish
    assert kept.loc["d8", "paragraph_perplexity"] is not None  # long: one value per line
    assert len(kept.loc["d8", "paragraph_perplexity"]) == len(list(normalized_lines(texts[8])))
    assert len(texts[0]) < 2000 and kept.loc["d0", "paragraph_perplexity"] is None  # short: none

    reference_cut = PerplexityParams(
        bucket_reference="reference", bucket_percentiles=[33, 66], drop_buckets=["tail"]
    )
    no_tail = PerplexityScorer(model, reference_cut, cutoffs)(frame)
    assert set(no_tail.kept["perplexity_bucket"]) <= {"head", "middle"}
    tail = no_tail.rejected[no_tail.rejected["reason"] == "perplexity.tail"]
    assert "d6" in tail["id"].tolist() and "reference p66" in tail["reason_detail"].iloc[0]

    absolute = PerplexityScorer(model, PerplexityParams(max_perplexity=3 * max(ppl)), cutoffs)(frame)
    above = absolute.rejected.set_index("id")
    assert above.loc["d6", "reason"] == "perplexity.above_max"
    assert len(absolute.kept) + len(absolute.rejected) == len(frame)


def test_params_validation():
    with pytest.raises(ValueError):
        PerplexityParams(bucket_percentiles=[66, 33])
    with pytest.raises(ValueError):
        PerplexityParams(drop_buckets=["bottom"])
    with pytest.raises(ValueError):
        PerplexityParams(drop_buckets=["head", "middle", "tail"])


def test_registering_an_external_model(trained, tmp_path):
    """reference_lm with a user-given file: checked, percentiles from the whole reference corpus,
    current.json names the file (not a copy), and scoring with that path finds the percentiles."""
    layout, result = trained
    from refinery.quality.reference import register_external_lm

    external = tmp_path / "user.binary"
    external.write_bytes(result.artifact.path.read_bytes())
    registered = register_external_lm(layout, ReferenceLMParams(), external, 5)
    assert not registered.trained and registered.artifact.path == external.resolve()
    assert registered.heldout_documents == len(registered.corpus.documents)
    current = json.loads((result.artifact.path.parent / "current.json").read_text())
    assert current["file"] == str(external.resolve()) and current["sha256"] == result.artifact.sha256
    lm = scoring_lm(layout, str(external), 5)
    assert lm.origin == "external" and lm.percentiles == registered.percentiles
    with pytest.raises(ModelOrderError):
        register_external_lm(layout, ReferenceLMParams(), external, 3)
    train_reference_lm(layout, ReferenceLMParams(), order=5)  # back to the trained model for other tests
