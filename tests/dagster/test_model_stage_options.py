"""Every option of the text model stages, through Dagster's ``materialize``: the two model assets
(``reference_lm``, ``quality_classifier``), ``perplexity_scored``, ``quality_scored``,
``document_embeddings``, ``semantic_deduplicated`` and ``vector_index``.

Each round sets options off their default in one materialization and checks two things: the option
reached the library (the output's provenance or the model's sidecar records it), and it had its
documented effect on the output (cut-offs, dropped buckets, the keep rule, chunked vectors, cluster
counts, a smaller index). Two sources: ``alpha`` (clean articles, PII, spam, boilerplate, French)
and ``gamma`` (a paraphrase of an alpha article, astronomy prose and 24 junk pages).
``tests/dagster/test_option_coverage.py`` fails when an option is in no round.
"""

from __future__ import annotations

import json
import math
import shutil

import dagster as dg
import numpy as np
import pytest

from assets.retrieval import vector_index
from assets.text_embeddings import document_embeddings
from assets.text_models import quality_classifier, reference_lm
from assets.text_stages import (
    clean_documents,
    exact_deduplicated,
    fuzzy_deduplicated,
    heuristic_filtered,
    perplexity_scored,
    quality_scored,
    raw_documents,
    semantic_deduplicated,
)
from refinery.dedup.semantic import SemanticDedupParams
from refinery.paths import Layout
from refinery.quality.classifier import ClassifierTrainParams, QualityParams, pareto_noise
from refinery.quality.embeddings import EmbeddingParams, embed_documents, read_embeddings
from refinery.quality.perplexity import PerplexityParams
from refinery.quality.reference import ReferenceLMParams
from refinery.retrieval.segment import IndexParams
from refinery.sample.reference_sample import build_reference_sample
from refinery.storage import Storage
from tests.dagster.conftest import build_inbox, resources_for
from tests.dagster.test_text_quality_assets import gamma_inbox

MODEL_STAGES = [perplexity_scored, quality_scored, document_embeddings, semantic_deduplicated]
UPSTREAM = [raw_documents, clean_documents, heuristic_filtered, exact_deduplicated, fuzzy_deduplicated]

# asset -> the options its rounds set (off their defaults); the coverage test reads this.
REFERENCE_LM = {
    "reference_source": "other",
    "heldout_fraction": 0.3,
    "memory": "64M",
    "prune": [0, 0, 1],
}
NO_DISCOUNT_FALLBACK = {"discount_fallback": False}  # lmplz's Kneser-Ney fails on the small sample
CLASSIFIER = {
    "reference_source": "other",
    "negatives_asset": "fuzzy_deduplicated",
    "max_documents_per_class": 15,
    "folds": 3,
    "buckets": 4096,
    "dim": 8,
    "ngrams": 1,
    "max_tokens": 256,
    "epochs": 3,
    "learning_rate": 0.05,
    "batch_size": 8,
    "seed": 4,
    "min_documents_per_class": 5,
    "min_heldout_auc": 0.2,  # 15 documents a class: the check must not stop the chain
}
STRICT_AUC = {"min_heldout_auc": 0.999}  # the blocking check fails the step below it
PERPLEXITY_REFERENCE = {  # alpha: cut at the reference's p20/p50, paragraphs from 300 characters on
    "bucket_reference": "reference",
    "bucket_percentiles": [20.0, 50.0],
    "paragraph_detail_min_chars": 300,
}
PERPLEXITY_FILTERS = {
    "bucket_percentiles": [25.0, 50.0],
    "drop_buckets": ["tail"],
    "max_perplexity": 0.0,
    "bucket_relative_accuracy": 0.0005,  # the quantile sketch's α: cut-offs within 0.05% of exact
}
QUALITY_THRESHOLD = {"threshold": 0.3}
QUALITY_PARETO = {"mode": "pareto", "pareto_alpha": 2.0, "seed": 5}
QUALITY_PERCENTILE = {"reference_percentile": 50.0}
EMBEDDINGS = {"chunk_words": 32, "max_chunks": 3}
SEMANTIC_FIXED = {  # alpha
    "clusters": 2,
    "rule": "first_come",
    "epsilon": 0.3,
    "seed": 3,
    "kmeans_iterations": 3,
    "claims_block_rows": 2,
    "kmeans_sample_rows": 4,  # fitted on 4 evenly spaced vectors; every document then assigned
}
SEMANTIC_PER_CLUSTER = {"docs_per_cluster": 2, "against_other_sources": False}  # gamma
INDEX = {
    "connectivity": 8,
    "expansion_add": 16,
    "expansion_search": 8,
    "dtype": "f16",
    "threads": 2,
    "batch_rows": 3,
}
# The resources of these stages (test_resource_options): a 4-gram model named by path with fixed
# bucket cut-offs, the classifier named by path, the embedding model as a local directory on ONNX fp32.
KENLM = {"order": 4, "model_path": "<the 4-gram reference_lm file>", "bucket_cutoffs": [50.0, 500.0]}
QUALITY_MODEL = {"model_path": "<quality_classifier's file>"}
EMBEDDER = {"model": "<the bundled model's directory>", "backend": "onnx", "quantize": "none", "threads": 1}
OPTIONS = {
    "kenlm": [KENLM],
    "quality_model": [QUALITY_MODEL],
    "embedder": [EMBEDDER],
    "compute": [{"batch_size": 4}],
    "reference_lm": [REFERENCE_LM, NO_DISCOUNT_FALLBACK],
    "quality_classifier": [CLASSIFIER, STRICT_AUC],
    "perplexity_scored": [PERPLEXITY_REFERENCE, PERPLEXITY_FILTERS],
    "quality_scored": [QUALITY_THRESHOLD, QUALITY_PARETO, QUALITY_PERCENTILE],
    "document_embeddings": [EMBEDDINGS],
    "semantic_deduplicated": [SEMANTIC_FIXED, SEMANTIC_PER_CLUSTER],
    "vector_index": [INDEX],
}
PARAMS = {
    "reference_lm": ReferenceLMParams,
    "quality_classifier": ClassifierTrainParams,
    "perplexity_scored": PerplexityParams,
    "quality_scored": QualityParams,
    "document_embeddings": EmbeddingParams,
    "semantic_deduplicated": SemanticDedupParams,
    "vector_index": IndexParams,
}


def ops(**stages: dict) -> dict:
    return {"ops": {stage: {"config": options} for stage, options in stages.items()}}


def materialize(
    assets, instance, layout, partition=None, run_config=None, **resources
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        partition_key=partition,
        instance=instance,
        resources=resources_for(layout, **resources),
        run_config=run_config,
        raise_on_error=False,
    )


def metadata(result, asset: str) -> dict:
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    )


def recorded(stamp: dict, options: dict) -> dict:
    return {name: stamp[name] for name in options}


def sidecar(meta: dict) -> dict:
    with open(meta["model_path"].value + ".json") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Both sources through the rule-based stages; the reference model trained with its defaults
    (to compare with), then both models with every option; the model stages on alpha, then gamma."""
    layout = Layout.at(tmp_path_factory.mktemp("model-options") / "home")
    layout.inbox_kind("text").mkdir(parents=True)
    build_inbox(layout)
    gamma_inbox(layout)
    build_reference_sample(layout.inbox_source("reference", "other"))
    shutil.copytree(layout.inbox_source("reference", "other"), layout.inbox_source("reference", "curated"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["alpha", "gamma"])
        for source in ("alpha", "gamma"):
            assert materialize(UPSTREAM, instance, layout, source).success
        defaults = materialize([reference_lm], instance, layout)
        models = materialize(
            [reference_lm, quality_classifier],
            instance,
            layout,
            run_config=ops(reference_lm=REFERENCE_LM, quality_classifier=CLASSIFIER),
        )
        assert defaults.success and models.success
        keep_all = {"threshold": 0.0}
        alpha = materialize(
            MODEL_STAGES,
            instance,
            layout,
            "alpha",
            ops(
                perplexity_scored=PERPLEXITY_REFERENCE,
                quality_scored=keep_all,
                document_embeddings=EMBEDDINGS,
            ),
        )
        gamma = materialize(
            MODEL_STAGES,
            instance,
            layout,
            "gamma",
            ops(quality_scored=keep_all, semantic_deduplicated=SEMANTIC_PER_CLUSTER),
        )
        assert alpha.success and gamma.success
        yield layout, instance, {"defaults": defaults, "models": models, "alpha": alpha, "gamma": gamma}


def failures(result) -> str:
    assert not result.success
    return "\n".join(e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure)


def test_reference_lm_options(chain):
    _, _, runs = chain
    default, chosen = metadata(runs["defaults"], "reference_lm"), metadata(runs["models"], "reference_lm")
    assert chosen["parameters"].value == ReferenceLMParams(**REFERENCE_LM).model_dump()
    info = sidecar(chosen)
    assert info["source"] == "other" and chosen["reference"].value.endswith("/reference/other")
    assert info["lmplz"] == {"memory": "64M", "discount_fallback": True, "prune": [0, 0, 1]}
    # heldout_fraction: three times the default's share of the same documents held out
    total = chosen["reference_documents"].value
    assert chosen["heldout_documents"].value > 2 * default["heldout_documents"].value
    assert chosen["train_documents"].value + chosen["heldout_documents"].value == total
    # prune [0, 0, 1]: trigrams and longer seen once are gone; every unigram is kept
    counts, full = info["ngram_counts"], sidecar(default)["ngram_counts"]
    assert counts["1"] == full["1"]
    assert counts["3"] < full["3"] / 2 and counts["5"] < full["5"] / 2


def test_discount_fallback_off_lets_lmplz_refuse(chain):
    layout, instance, _ = chain
    result = materialize([reference_lm], instance, layout, run_config=ops(reference_lm=NO_DISCOUNT_FALLBACK))
    message = failures(result)
    assert "lmplz failed" in message and "--discount_fallback" in message
    assert "--discount_fallback" not in message.split("--arpa", 1)[1].split("\n", 1)[0]  # not passed


def test_quality_classifier_options(chain):
    layout, _, runs = chain
    meta = metadata(runs["models"], "quality_classifier")
    info = sidecar(meta)
    assert recorded(info["params"], CLASSIFIER) == CLASSIFIER
    assert info["source"] == "other" and info["negatives_asset"] == "fuzzy_deduplicated"
    storage = Storage(layout.storage)
    # negatives: fuzzy_deduplicated's rows (read), max_documents_per_class of them (trained on)
    by_partition = meta["negatives_by_partition"].value
    assert by_partition == {s: storage.row_count("fuzzy_deduplicated", s) for s in ("alpha", "gamma")}
    assert sum(by_partition.values()) > 15
    print("HELDOUT", meta["heldout_documents"].value, meta["heldout_auc"].value)
    # the model itself: 3 folds of a 4096-row table, unigrams, 256 tokens
    from resources.quality import QualityClassifierResource

    classifier, _ = QualityClassifierResource().load(layout)
    assert (classifier.folds, classifier.buckets, classifier.ngrams, classifier.max_tokens) == (
        3,
        4096,
        1,
        256,
    )
    assert len(classifier.features(" ".join(f"w{i}" for i in range(1000)))) <= 256


def test_classifier_minimums_fail_clearly(chain):
    layout, instance, runs = chain
    few = materialize(
        [quality_classifier],
        instance,
        layout,
        run_config=ops(quality_classifier={"min_documents_per_class": 500}),
    )
    assert "500" in failures(few)
    auc = metadata(runs["models"], "quality_classifier")["heldout_auc"].value
    strict = materialize(
        [quality_classifier],
        instance,
        layout,
        run_config=ops(quality_classifier={**CLASSIFIER, **STRICT_AUC}),
    )
    (check,) = strict.get_asset_check_evaluations()
    assert check.passed == (auc >= 0.999) and strict.success == check.passed


def test_perplexity_reference_cutoffs_and_paragraphs(chain):
    layout, _, runs = chain
    storage = Storage(layout.storage)
    stamp = storage.provenance("perplexity_scored", "alpha")["params"]
    assert recorded(stamp, PERPLEXITY_REFERENCE) == PERPLEXITY_REFERENCE
    percentiles = sidecar(metadata(runs["models"], "reference_lm"))["percentiles"]
    cutoffs = storage.provenance("perplexity_scored", "alpha")["bucket_cutoffs"]
    assert cutoffs == pytest.approx([percentiles[20], percentiles[50]])
    kept = storage.read("perplexity_scored", "alpha")
    expected = np.where(
        kept["perplexity"] <= cutoffs[0], "head", np.where(kept["perplexity"] <= cutoffs[1], "middle", "tail")
    )
    assert kept["perplexity_bucket"].tolist() == expected.tolist()
    long = (kept["text"].str.len() >= 300) & kept["text"].str.contains("\n")
    assert long.any() and kept.loc[long, "paragraph_perplexity"].notna().all()
    assert kept.loc[kept["text"].str.len() < 300, "paragraph_perplexity"].isna().all()


def test_perplexity_filters(chain):
    """gamma again, its own p25/p50, the tail dropped and an absolute limit under its worst document."""
    layout, instance, _ = chain
    storage = Storage(layout.storage)
    before = storage.read("perplexity_scored", "gamma")["perplexity"]
    limit = float(before.max()) - 1e-6
    options = {**PERPLEXITY_FILTERS, "max_perplexity": limit}
    result = materialize([perplexity_scored], instance, layout, "gamma", ops(perplexity_scored=options))
    assert result.success
    kept = storage.read("perplexity_scored", "gamma")
    rejected = storage.read("perplexity_scored", "gamma", rejected=True).set_index("id")
    cutoffs = storage.provenance("perplexity_scored", "gamma")["bucket_cutoffs"]
    # the partition's percentiles from its quantile sketch: within the relative accuracy asked for
    assert cutoffs == pytest.approx(list(np.percentile(before, [25, 50])), rel=5e-4)
    assert storage.provenance("perplexity_scored", "gamma")["params"]["bucket_relative_accuracy"] == 0.0005
    assert set(kept["perplexity_bucket"]) <= {"head", "middle"} and (kept["perplexity"] <= cutoffs[1]).all()
    worst = rejected["perplexity"].idxmax()
    assert rejected.loc[worst, "reason"] == "perplexity.above_max"
    assert set(rejected.drop(index=worst)["reason"]) == {"perplexity.tail"}


def test_quality_keep_rules(chain):
    """gamma: a fixed threshold, then GPT-3's Pareto rule (α=2, seed 5), then the reference's p50."""
    layout, instance, runs = chain
    storage = Storage(layout.storage)

    def scored(options):
        result = materialize([quality_scored], instance, layout, "gamma", ops(quality_scored=options))
        assert result.success
        kept = storage.read("quality_scored", "gamma")
        return result, kept, storage.read("quality_scored", "gamma", rejected=True)

    result, kept, rejected = scored(QUALITY_THRESHOLD)
    assert (kept["quality_score"] >= 0.3).all() and (rejected["quality_score"] < 0.3).all()
    assert "≥ 0.3000 (threshold)" in metadata(result, "quality_scored")["keep_rule"].value

    result, kept, rejected = scored(QUALITY_PARETO)
    assert recorded(storage.provenance("quality_scored", "gamma")["params"], QUALITY_PARETO) == QUALITY_PARETO
    rows = [*zip(kept["id"], kept["quality_score"], [True] * len(kept), strict=True)]
    rows += [*zip(rejected["id"], rejected["quality_score"], [False] * len(rejected), strict=True)]
    noise = pareto_noise([f"gamma/{i}" for i, _, _ in rows], 2.0, 5)
    assert [x > 1 - s for (_, s, _), x in zip(rows, noise, strict=True)] == [k for *_, k in rows]
    assert set(rejected["reason"]) <= {"quality.pareto"}
    assert "pareto noise (α=2, seed 5)" in metadata(result, "quality_scored")["keep_rule"].value

    result, kept, rejected = scored(QUALITY_PERCENTILE)
    info = sidecar(metadata(runs["models"], "quality_classifier"))
    cutoff = float(np.interp(50.0, np.arange(101), info["reference_score_percentiles"]))
    assert f"≥ {cutoff:.4f} (p50 of the reference" in metadata(result, "quality_scored")["keep_rule"].value
    assert (kept["quality_score"] >= cutoff).all() and (rejected["quality_score"] < cutoff).all()


def test_embedding_chunks(chain):
    layout, _, _ = chain
    storage = Storage(layout.storage)
    stored = read_embeddings(storage, "alpha")
    texts = storage.read("quality_scored", "alpha").set_index("id").loc[stored.ids, "text"].tolist()
    model = resources_for(layout)["embedder"].load()
    chunked = embed_documents(model, texts, EmbeddingParams(**EMBEDDINGS))
    whole = embed_documents(model, texts, EmbeddingParams())
    assert (stored.vectors * chunked).sum(axis=1).min() >= 0.999
    long = np.array([len(t.split()) > 32 for t in texts])
    assert long.any() and ((stored.vectors * whole).sum(axis=1)[long] < 0.999).all()


def test_semantic_per_cluster_without_other_sources(chain):
    """gamma: k = ceil(rows / 2) clusters; its paraphrase of alpha/a5 is not looked up in alpha."""
    layout, _, _ = chain
    storage = Storage(layout.storage)
    kept = storage.read("semantic_deduplicated", "gamma")
    rejected = storage.read("semantic_deduplicated", "gamma", rejected=True)
    clusters = set(kept["semantic_cluster"]) | set(rejected["semantic_cluster"])
    assert clusters <= set(range(math.ceil((len(kept) + len(rejected)) / 2))) and len(clusters) >= 3
    assert "para" in set(kept["id"])  # by default removed as a copy of alpha/a5
    stamp = storage.provenance("semantic_deduplicated", "gamma")["params"]
    assert recorded(stamp, SEMANTIC_PER_CLUSTER) == SEMANTIC_PER_CLUSTER


def test_semantic_fixed_clusters_first_come(chain):
    """alpha again: two clusters, reading order, ε 0.3 (cosine ≥ 0.7), gamma's kept documents
    streamed two at a time as earlier claims."""
    layout, instance, _ = chain
    result = materialize(
        [semantic_deduplicated], instance, layout, "alpha", ops(semantic_deduplicated=SEMANTIC_FIXED)
    )
    assert result.success
    storage = Storage(layout.storage)
    stamp = storage.provenance("semantic_deduplicated", "alpha")["params"]
    assert recorded(stamp, SEMANTIC_FIXED) == SEMANTIC_FIXED
    kept = storage.read("semantic_deduplicated", "alpha")
    rejected = storage.read("semantic_deduplicated", "alpha", rejected=True)
    assert set(kept["semantic_cluster"]) | set(rejected["semantic_cluster"]) == {0, 1}
    assert len(kept) + len(rejected) > SEMANTIC_FIXED["kmeans_sample_rows"]  # a sample fitted, all assigned
    assert len(rejected) > 0 and (rejected["similarity"] >= 0.7).all()
    assert (rejected["similarity"] < 0.93).any()  # removed only because ε is wider than 0.07
    order = {doc: i for i, doc in enumerate(storage.read("quality_scored", "alpha")["id"])}
    for doc, copy in zip(rejected["id"], rejected["duplicate_of"], strict=True):
        if copy.startswith("alpha/"):  # first come: the kept copy comes earlier in reading order
            assert order[copy.removeprefix("alpha/")] < order[doc]


def test_vector_index_options(chain):
    layout, instance, _ = chain
    default = materialize([vector_index], instance, layout, "alpha")
    chosen = materialize([vector_index], instance, layout, "alpha", ops(vector_index=INDEX))
    assert default.success and chosen.success
    meta, base = metadata(chosen, "vector_index"), metadata(default, "vector_index")
    assert meta["parameters"].value == IndexParams(**INDEX).model_dump()
    # f16 vectors and 8 links per node: a smaller graph, still finding every stored vector
    assert meta["documents_disk_bytes"].value < 0.75 * base["documents_disk_bytes"].value
    assert all(c.passed for c in chosen.get_asset_check_evaluations())


def test_resource_options(chain):
    """Last in this module: it makes a 4-gram model reference_lm's current one."""
    from refinery.models.embedder import resolve_model_path
    from resources import ComputeResource
    from resources.embedder import EmbedderResource
    from resources.kenlm import KenLMResource
    from resources.quality import QualityClassifierResource

    layout, instance, runs = chain
    storage = Storage(layout.storage)
    # kenlm: order 4 trains a 4-gram model; named by path with fixed cut-offs, it scores gamma
    four = materialize([reference_lm], instance, layout, kenlm=KenLMResource(order=4))
    meta = metadata(four, "reference_lm")
    assert sidecar(meta)["order"] == 4 and meta["order"].value == 4
    kenlm = KenLMResource(order=4, model_path=meta["model_path"].value, bucket_cutoffs=[50.0, 500.0])
    cut = ops(perplexity_scored={"bucket_reference": "reference"})
    assert materialize([perplexity_scored], instance, layout, "gamma", cut, kenlm=kenlm).success
    stamp = storage.provenance("perplexity_scored", "gamma")
    assert stamp["model"]["sha256"] == meta["model_sha256"].value and stamp["model"]["order"] == 4
    assert stamp["bucket_cutoffs"] == [50.0, 500.0] and "kenlm resource" in stamp["bucket_cutoffs_origin"]
    scored = storage.read("perplexity_scored", "gamma")
    expected = np.where(
        scored["perplexity"] <= 50, "head", np.where(scored["perplexity"] <= 500, "middle", "tail")
    )
    assert scored["perplexity_bucket"].tolist() == expected.tolist()
    # quality_model: the first classifier, named by path, after a second one became current
    first = metadata(runs["models"], "quality_classifier")
    retrained = ops(quality_classifier={**CLASSIFIER, "seed": 9})
    assert materialize([quality_classifier], instance, layout, run_config=retrained).success
    named = QualityClassifierResource(model_path=first["model_path"].value)
    keep_all = ops(quality_scored={"threshold": 0.0})
    assert materialize([quality_scored], instance, layout, "gamma", keep_all, quality_model=named).success
    assert storage.provenance("quality_scored", "gamma")["model"]["sha256"] == first["model_sha256"].value
    # embedder: the bundled model as a directory, ONNX fp32, one thread
    before = read_embeddings(storage, "gamma").vectors
    compute = ComputeResource(device="cpu", batch_size=4)
    directory = str(resolve_model_path("bundled:all-MiniLM-L6-v2"))
    embedder = EmbedderResource(compute=compute, model=directory, backend="onnx", quantize="none", threads=1)
    result = materialize(
        [document_embeddings, semantic_deduplicated], instance, layout, "gamma", embedder=embedder
    )
    assert result.success
    meta = metadata(result, "document_embeddings")
    assert (meta["backend"].value, meta["quantize"].value, meta["threads"].value) == ("onnx", "none", 1)
    assert meta["batch_size"].value == 4  # the compute resource's
    assert directory in meta["model"].value or meta["model"].value == "all-MiniLM-L6-v2"
    after = read_embeddings(storage, "gamma").vectors
    assert ((after * before).sum(axis=1) >= 0.99).all()  # fp32 beside the default int8
