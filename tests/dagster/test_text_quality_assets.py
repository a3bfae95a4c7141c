"""The model-based stages under materialize(): the real text chain up to fuzzy_deduplicated, the two
model assets (KenLM via lmplz, the torch classifier), then perplexity → quality → embeddings (real
MiniLM) → semantic dedup, for three sources, on a temporary home."""

import hashlib
import itertools
import json
import random
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

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
from refinery.paths import Layout
from refinery.quality.embeddings import read_embeddings
from refinery.sample import prose
from refinery.sample.reference_sample import build_reference_sample
from refinery.storage import PROVENANCE_KEY, Storage
from resources.embedder import EmbedderResource
from resources.kenlm import KenLMResource
from resources.quality import QualityClassifierResource
from tests.conftest import write_source
from tests.dagster.conftest import ALPHA, build_inbox, jsonl, resources_for

UPSTREAM = [raw_documents, clean_documents, heuristic_filtered, exact_deduplicated, fuzzy_deduplicated]
MODELS = [reference_lm, quality_classifier]
QUALITY = [perplexity_scored, quality_scored, document_embeddings, semantic_deduplicated]
QUALITY_NAMES = [a.key.to_user_string() for a in QUALITY]
SOURCES = ("alpha", "beta", "gamma")
SWAPS = {"the": "this", "was": "is", "and": "as well as", "of": "from", "a": "one", "in": "within"}


def reworded(text: str, seed: int, share: float = 0.35) -> str:
    """The same article with common words substituted: a paraphrase MinHash does not recognise."""
    rng = random.Random(seed)
    return " ".join(SWAPS.get(w, w) if rng.random() < share else w for w in text.split(" "))


def resources(layout: Layout, **overrides) -> dict:
    return resources_for(layout, **overrides)


def gamma_inbox(layout: Layout) -> None:
    """gamma: a reworded copy of alpha's a5, its own articles, and junk the classifier learns from."""
    rng = random.Random(31)
    records = [{"id": "para", "text": reworded(ALPHA[5], 1)}]
    records += [{"id": f"g{i}", "text": prose.article(rng, "astronomy", paragraphs=3)} for i in range(5)]
    makers = [prose.boilerplate_page, prose.keyword_spam, prose.bullet_dump, prose.short_stub]
    records += [{"id": f"junk{i}", "text": makers[i % 4](rng)} for i in range(24)]
    write_source(layout, "gamma", {"crawl.jsonl": jsonl(records)})


def materialize(assets, instance, layout, partition=None, **overrides):
    return dg.materialize(
        assets,
        partition_key=partition,
        instance=instance,
        resources=resources(layout, **overrides),
        raise_on_error=False,
    )


def failure_message(result) -> str:
    assert not result.success
    return "\n".join(
        str(e.event_specific_data.error.to_string()) for e in result.all_events if e.is_step_failure
    )


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("quality") / "home")
    layout.inbox_kind("text").mkdir(parents=True)
    build_inbox(layout)
    gamma_inbox(layout)
    build_reference_sample(layout.inbox_kind("reference"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", list(SOURCES))
        for source in SOURCES:
            assert materialize(UPSTREAM, instance, layout, source).success
        models = materialize(MODELS, instance, layout)
        quality = {source: materialize(QUALITY, instance, layout, source) for source in SOURCES}
        yield layout, instance, models, quality


def events(result) -> dict:
    return {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }


def test_chain_succeeds_with_checks_and_accounting(run):
    layout, _, models, quality = run
    assert models.success and all(c.passed for c in models.get_asset_check_evaluations())
    storage = Storage(layout.storage)
    for source, result in quality.items():
        assert result.success, source
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 3 * 3 + 2 and all(c.passed for c in checks), source
        chain = ["fuzzy_deduplicated", "perplexity_scored", "quality_scored"]
        for upstream, stage in itertools.pairwise(chain):
            assert storage.row_count(upstream, source) == storage.row_count(
                stage, source
            ) + storage.row_count(stage, source, rejected=True)
        assert storage.row_count("document_embeddings", source) == storage.row_count("quality_scored", source)
        assert storage.row_count("quality_scored", source) == storage.row_count(
            "semantic_deduplicated", source
        ) + storage.row_count("semantic_deduplicated", source, rejected=True)
        scored = storage.read("semantic_deduplicated", source)
        assert set(scored["perplexity_bucket"]) <= {"head", "middle", "tail"}
        assert scored["quality_score"].between(0, 1).all() and (scored["perplexity"] > 1).all()


def test_models_are_versioned_and_named_by_every_scored_partition(run):
    layout, _, models, quality = run
    meta = events(models)
    lm_path = meta["reference_lm"]["model_path"].value
    lm_sha = meta["reference_lm"]["model_sha256"].value
    assert lm_sha[:12] in lm_path and hashlib.sha256(Path(lm_path).read_bytes()).hexdigest() == lm_sha
    sidecar = json.loads(Path(lm_path + ".json").read_text())
    assert sidecar["order"] == 5 and len(sidecar["percentiles"]) == 101 and sidecar["train_tokens"] > 10_000
    clf = meta["quality_classifier"]
    assert 0.5 <= clf["heldout_auc"].value <= 1 and 0 <= clf["heldout_accuracy"].value <= 1
    assert clf["model_path"].value.endswith(f"-{clf['model_sha256'].value[:12]}.safetensors")
    storage = Storage(layout.storage)
    for source, result in quality.items():
        scored = events(result)
        assert scored["perplexity_scored"]["model_sha256"].value == lm_sha
        assert scored["quality_scored"]["model_sha256"].value == clf["model_sha256"].value
        assert storage.provenance("perplexity_scored", source)["model"]["sha256"] == lm_sha
        assert storage.provenance("quality_scored", source)["model"]["sha256"] == clf["model_sha256"].value
        assert "bucket_cutoffs" in scored["perplexity_scored"] and "keep_rule" in scored["quality_scored"]


def test_classifier_and_perplexity_separate_junk_from_prose(run):
    layout, *_ = run
    storage = Storage(layout.storage)
    from refinery.quality.perplexity import document_perplexity

    lm = KenLMResource().load(layout).lm.model
    classifier, _ = QualityClassifierResource().load(layout)
    clean = storage.read("clean_documents", "gamma").set_index("id")
    prose_docs = clean.loc[[f"g{i}" for i in range(5)], "text"].tolist()
    junk_docs = clean.loc[[f"junk{i}" for i in range(4)], "text"].tolist()
    assert max(document_perplexity(lm, t) for t in prose_docs) * 10 < min(
        document_perplexity(lm, t) for t in junk_docs
    )
    assert classifier.score(prose_docs).min() > classifier.score(junk_docs).max()


def test_embedder_backends_through_dagster(run):
    """The default (ONNX Runtime, int8) and the documented torch and fp32 options, each through
    materialize: every option's vectors keep cosine >= 0.99 with the others, and say which made them."""
    layout, instance, _, quality = run
    storage = Storage(layout.storage)
    path = storage.path("document_embeddings", "alpha")
    before = digest(path)
    meta = events(quality["alpha"])["document_embeddings"]
    assert (meta["backend"].value, meta["quantize"].value) == ("onnx", "int8")
    default = read_embeddings(storage, "alpha").vectors
    compute = resources(layout)["embedder"].compute
    for backend, quantize in (("torch", "none"), ("onnx", "none")):
        embedder = EmbedderResource(compute=compute, backend=backend, quantize=quantize)
        result = materialize([document_embeddings], instance, layout, "alpha", embedder=embedder)
        assert result.success
        meta = events(result)["document_embeddings"]
        assert (meta["backend"].value, meta["quantize"].value) == (backend, quantize)
        stamp = json.loads(pq.read_schema(path).metadata[PROVENANCE_KEY])
        assert (stamp["backend"], stamp["quantize"]) == (backend, quantize)
        cosine = (read_embeddings(storage, "alpha").vectors * default).sum(axis=1)
        assert cosine.min() >= 0.99, (backend, quantize, cosine.min())
    assert materialize([document_embeddings], instance, layout, "alpha").success
    assert digest(path) == before  # the default is deterministic: the file comes back byte for byte


def test_semantic_dedup_names_the_kept_neighbour_across_sources(run):
    layout, *_ = run
    storage = Storage(layout.storage)
    assert storage.read("fuzzy_deduplicated", "gamma")["id"].tolist().count("para") == 1  # MinHash kept it
    rejected = storage.read("semantic_deduplicated", "gamma", rejected=True).set_index("id")
    assert rejected.loc["para", "reason"] == "semantic_duplicate"
    assert rejected.loc["para", "duplicate_of"] == "alpha/a5" and rejected.loc["para", "similarity"] >= 0.93
    assert "with alpha/a5" in rejected.loc["para", "reason_detail"]
    kept = set(storage.read("semantic_deduplicated", "gamma")["id"])
    assert {f"g{i}" for i in range(5)} <= kept | set(
        storage.read("quality_scored", "gamma", rejected=True)["id"]
    )
    alpha = storage.read("semantic_deduplicated", "alpha", rejected=True)
    assert alpha.empty  # alpha was first: nothing of it is anyone's copy


def test_rematerializing_unchanged_input_is_byte_identical(run):
    layout, instance, _, _ = run
    storage = Storage(layout.storage)
    names = [*QUALITY_NAMES]
    before = {n: digest(storage.path(n, "alpha")) for n in names}
    assert materialize(QUALITY, instance, layout, "alpha").success
    assert {n: digest(storage.path(n, "alpha")) for n in names} == before


def test_clear_errors_for_bad_models_and_stale_inputs(run, tmp_path):
    layout, instance, _, _ = run
    wrong_order = materialize([perplexity_scored], instance, layout, "beta", kenlm=KenLMResource(order=4))
    assert "5-gram model but order 4 is configured" in failure_message(wrong_order)
    missing = materialize(
        [perplexity_scored],
        instance,
        layout,
        "beta",
        kenlm=KenLMResource(model_path=str(tmp_path / "none.binary")),
    )
    assert "no KenLM model at" in failure_message(missing)
    not_a_model = tmp_path / "notes.arpa"
    not_a_model.write_text("hello\n")
    foreign = materialize(
        [perplexity_scored], instance, layout, "beta", kenlm=KenLMResource(model_path=str(not_a_model))
    )
    assert "is not a KenLM model" in failure_message(foreign)
    no_clf = materialize(
        [quality_scored],
        instance,
        layout,
        "beta",
        quality_model=QualityClassifierResource(model_path=str(tmp_path / "x.safetensors")),
    )
    assert "no quality classifier at" in failure_message(no_clf)
    no_reference = dg.materialize(
        [reference_lm],
        instance=instance,
        resources=resources(layout),
        raise_on_error=False,
        run_config={"ops": {"reference_lm": {"config": {"reference_source": "wikipedia"}}}},
    )
    assert "no reference corpus at" in failure_message(no_reference)
    storage = Storage(layout.storage)
    table = pq.read_table(storage.path("quality_scored", "beta"))
    pq.write_table(table.slice(1), storage.path("quality_scored", "beta"))  # embeddings now stale
    stale = materialize([semantic_deduplicated], instance, layout, "beta")
    assert "document_embeddings for partition 'beta' is stale" in failure_message(stale)
    pq.write_table(table, storage.path("quality_scored", "beta"))
