"""Perplexity buckets on crawl-like data: cut at the partition's own 30th/60th percentiles (CCNet,
the default) they hold 30/30/40% of it; cut at the reference's they do not, which is what a user of
``drop_buckets: ["tail"]`` must know. Both with a real 5-gram model trained by lmplz."""

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from refinery.kernel.runner import run_stage
from refinery.paths import Layout
from refinery.quality.perplexity import (
    PERPLEXITY_FIELDS,
    PerplexityParams,
    PerplexityScorer,
    document_perplexity,
)
from refinery.quality.reference import ReferenceLMParams, scoring_lm, train_reference_lm
from refinery.sample import prose
from refinery.sample.reference_sample import build_reference_sample
from refinery.storage import Storage


@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    """reference_lm trained on the bundled reference sample, as the kenlm resource loads it."""
    layout = Layout.at(tmp_path_factory.mktemp("lm") / "home")
    build_reference_sample(layout.inbox_kind("reference"))
    train_reference_lm(layout, ReferenceLMParams(), order=5)
    return scoring_lm(layout, "", 5)


def crawl(n: int = 200, seed: int = 8) -> pd.DataFrame:
    """What a crawl looks like next to a curated reference: a fifth clean prose, the rest pages that
    are worse in varied ways (boilerplate, spam, lists, code, shuffled words, other languages)."""
    rng = random.Random(seed)
    makers = [
        prose.boilerplate_page,
        prose.keyword_spam,
        prose.bullet_dump,
        prose.code_snippet,
        prose.lorem_ipsum,
        lambda r: " ".join(random.Random(r.random()).sample(w := prose.article(r).split(), len(w))),
        lambda r: prose.foreign_article(r),
        lambda r: prose.article(r) + "\n" + prose.boilerplate_page(r),
    ]
    texts = [prose.article(rng) if i % 5 == 0 else makers[i % len(makers)](rng) for i in range(n)]
    return pd.DataFrame({"id": [f"d{i:04d}" for i in range(n)], "text": texts})


def shares(buckets: list[str]) -> dict[str, float]:
    return {b: buckets.count(b) / len(buckets) for b in ("head", "middle", "tail")}


def test_on_crawl_data_the_reference_cut_is_not_thirds_and_the_corpus_cut_is(scoring):
    frame = crawl()
    model = scoring.lm.model
    ppl = np.array([document_perplexity(model, t) for t in frame["text"]])
    assert np.isfinite(ppl).all()

    reference = PerplexityScorer.for_model(scoring, PerplexityParams(bucket_reference="reference"))
    by_reference = reference(frame).kept["perplexity_bucket"].tolist()
    ref_shares = shares(by_reference)
    # The reference's 60th percentile is better than most of a crawl: the tail holds far more than 40%.
    assert ref_shares["tail"] > 0.7 and ref_shares["head"] + ref_shares["middle"] < 0.3, ref_shares

    corpus = PerplexityScorer.for_model(scoring, PerplexityParams(), [frame.iloc[:70], frame.iloc[70:]])
    result = corpus(frame)
    by_corpus = result.kept["perplexity_bucket"].tolist()
    assert shares(by_corpus) == pytest.approx({"head": 0.3, "middle": 0.3, "tail": 0.4}, abs=0.01)
    # From the quantile sketch: within its relative accuracy (0.1%) of the exact percentiles.
    exact = tuple(np.percentile(ppl, [30, 60]))
    assert corpus.cutoffs == pytest.approx(exact, rel=PerplexityParams().bucket_relative_accuracy)
    assert result.kept["perplexity"].to_numpy() == pytest.approx(ppl)  # the first pass's scores, reused
    # Ranking within the partition is the same under both cuts; only where it is cut differs.
    order = {"head": 0, "middle": 1, "tail": 2}
    assert all(order[c] <= order[r] for c, r in zip(by_corpus, by_reference, strict=True))

    dropping = PerplexityScorer.for_model(scoring, PerplexityParams(drop_buckets=["tail"]), [frame])(frame)
    assert len(dropping.rejected) == pytest.approx(0.4 * len(frame), abs=2)
    assert dropping.rejected["reason_detail"].str.contains(r"\(partition p60\): bucket 'tail'").all()
    summary = corpus.summary()
    assert summary["bucket_reference"] == "corpus" and len(summary["partition_perplexity_percentiles"]) == 101
    assert "of this partition's 200 scored documents" in corpus.report()["bucket_cutoffs"].text


def test_corpus_cut_through_the_stage_runner_in_bounded_batches(scoring, tmp_path):
    """The stage's real path: a first pass over the stored partition, then the streamed decisions;
    every row accounted for, the cut recorded in the file's provenance and the stats."""
    storage = Storage(tmp_path)
    frame = pd.concat(
        [crawl(120, 3), pd.DataFrame({"id": ["empty"], "text": ["\x01\x02"]})], ignore_index=True
    )
    path = storage.path("fuzzy_deduplicated", "web")
    path.parent.mkdir(parents=True)
    frame.to_parquet(path, index=False, row_group_size=25)
    params = PerplexityParams()
    scorer = PerplexityScorer.for_model(
        scoring, params, lambda: storage.iter_batches("fuzzy_deduplicated", "web", 16, ["id", "text"])
    )
    run = run_stage(
        storage,
        "fuzzy_deduplicated",
        "perplexity_scored",
        "web",
        scorer,
        PERPLEXITY_FIELDS,
        scorer.provenance(),
        batch_rows=7,  # other batches than the first pass: rows are matched one by one
    )
    assert run.stats.rows_in == 121 and run.stats.rows_out == 120 and run.stats.rows_rejected == 1
    kept = storage.read("perplexity_scored", "web")
    assert shares(kept["perplexity_bucket"].tolist()) == pytest.approx(
        {"head": 0.3, "middle": 0.3, "tail": 0.4}, abs=0.01
    )
    stamped = storage.provenance("perplexity_scored", "web")
    assert stamped["bucket_reference"] == "corpus" and stamped["bucket_cutoffs"] == list(scorer.cutoffs)
    assert pa.types.is_floating(pa.Schema.from_pandas(kept).field("perplexity").type)


def test_a_partition_that_changes_between_the_passes_fails_clearly(scoring):
    frame = crawl(20)
    scorer = PerplexityScorer.for_model(scoring, PerplexityParams(), [frame])
    with pytest.raises(RuntimeError, match="changed between the two passes"):
        scorer(frame.iloc[::-1])


def test_corpus_cut_edge_cases(scoring):
    nothing = PerplexityScorer.for_model(scoring, PerplexityParams(), [pd.DataFrame({"id": [], "text": []})])
    assert nothing.cutoffs is None and "no document" in nothing.report()["bucket_cutoffs"].text
    one = pd.DataFrame({"id": ["a", "b"], "text": [prose.article(random.Random(1)), "\x01"]})
    single = PerplexityScorer.for_model(scoring, PerplexityParams(drop_buckets=["tail"]), [one])
    result = single(one)
    assert result.kept["perplexity_bucket"].tolist() == ["head"]  # p30 == p60 == its own perplexity
    assert result.rejected["reason"].tolist() == ["perplexity.no_tokens"]
    with pytest.raises(ValueError, match="needs the partition"):
        PerplexityScorer.for_model(scoring, PerplexityParams())


def test_fixed_resource_cutoffs_apply_to_the_reference_cut_only(scoring):
    from dataclasses import replace

    fixed = replace(scoring, fixed_cutoffs=(10.0, 20.0))
    frame = crawl(30)
    by_reference = PerplexityScorer.for_model(fixed, PerplexityParams(bucket_reference="reference"))
    assert by_reference.cutoffs == (10.0, 20.0)
    by_corpus = PerplexityScorer.for_model(fixed, PerplexityParams(), [frame])
    assert by_corpus.cutoffs != (10.0, 20.0) and "are not used" in by_corpus.warnings[0]
