"""A small inbox with known contents, and helpers to materialize the real text chain on it."""

from __future__ import annotations

import json
import random

import dagster as dg
import pytest

from assets import TEXT_MODELS, TEXT_PREFILTER, TEXT_QUALITY, corpus_report
from refinery.sample import prose
from refinery.sample.reference_sample import build_reference_sample
from resources import DedupIndexResource, build_resources
from tests.conftest import write_source

rng = random.Random(99)
ALPHA = [prose.article(rng, rng.choice(["history", "travel"]), paragraphs=4) for _ in range(12)]
PII_DOC = prose.with_pii(prose.article(rng, "economics", paragraphs=3), rng)
SPAM = prose.keyword_spam(rng)
BOILERPLATE = prose.boilerplate_page(rng)
FRENCH = prose.foreign_article(rng, "fr")
NEAR_COPY = prose.near_duplicate(ALPHA[3], random.Random(5), edits=2)
BETA_OWN = [prose.article(rng, "cooking", paragraphs=4) for _ in range(4)]
BAD_LINES = [b'{"text": "broken', "caf\xe9".encode("latin-1"), b'{"no_text": 1}', b'{"text": ""}']


def jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def build_inbox(layout) -> dict:
    """alpha: clean articles with ids, PII, junk, bad lines. beta: copies of alpha plus its own.
    empty: a source folder with no files."""
    alpha = [{"id": f"a{i}", "text": t} for i, t in enumerate(ALPHA)]
    alpha += [
        {"id": "pii", "text": PII_DOC},
        {"id": "spam", "text": SPAM},
        {"id": "boiler", "text": BOILERPLATE},
        {"id": "french", "text": FRENCH},
    ]
    write_source(layout, "alpha", {"docs.jsonl": jsonl(alpha) + b"\n".join(BAD_LINES) + b"\n"})
    beta = [{"text": ALPHA[1]}, {"text": prose.surface_variant(ALPHA[2])}, {"text": NEAR_COPY}]
    beta += [{"text": t} for t in BETA_OWN]
    write_source(layout, "beta", {"part-1.jsonl": jsonl(beta)})
    layout.inbox_source("text", "empty").mkdir(parents=True)
    return {"alpha": len(alpha) + len(BAD_LINES), "beta": len(beta), "empty": 0}


def resources_for(layout, dedup: DedupIndexResource | None = None, **overrides) -> dict:
    """Every resource of the real definitions, pointed at ``layout`` (models on the CPU)."""
    return build_resources(
        "local", home=str(layout.home), device="cpu", batch_size=16, dedup_index=dedup, **overrides
    )


def materialize_source(instance, layout, source, dedup=None) -> dg.ExecuteInProcessResult:
    if source not in instance.get_dynamic_partitions("text_source"):
        instance.add_dynamic_partitions("text_source", [source])
    return dg.materialize(
        TEXT_PREFILTER, partition_key=source, instance=instance, resources=resources_for(layout, dedup)
    )


def materialize_text_chain(instance, layout, sources, quality_run_config: dict | None = None) -> None:
    """The whole text chain as `refinery run` does it: rule-based stages per source, the models
    (on the bundled reference sample unless one is in the inbox), the model-based stages per source."""
    reference = layout.inbox_kind("reference")
    if not reference.is_dir() or not any(reference.iterdir()):
        build_reference_sample(reference)
    for source in sources:
        assert materialize_source(instance, layout, source).success
    assert dg.materialize(TEXT_MODELS, instance=instance, resources=resources_for(layout)).success
    for source in sources:
        assert dg.materialize(
            TEXT_QUALITY,
            partition_key=source,
            instance=instance,
            resources=resources_for(layout),
            run_config=quality_run_config,
        ).success


def materialize_report(instance, layout) -> dg.ExecuteInProcessResult:
    return dg.materialize([corpus_report], instance=instance, resources=resources_for(layout))


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """One ``transformers serve`` on the tiny chat model for every LLM test file of the session (its
    start costs tens of seconds on two cores); the scheduler in tests/ray/shared_cluster.py puts the
    files that take it on one worker. The tests send it requests only, never stop or restart it."""
    from tests.llm_server import start_server, stop_server

    server = start_server(tmp_path_factory.mktemp("llm-server"))
    yield server
    stop_server(server)
