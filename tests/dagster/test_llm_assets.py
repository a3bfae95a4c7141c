"""The LLM stages under materialize() against a real OpenAI-compatible server on loopback
(``transformers serve`` on the tiny chat model: its text has no quality; what is tested is the
machinery: requests, cache, resume after a kill, quarantine, provenance, concurrency)."""

import json
import random
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest

from assets import LLM_TEXT
from assets.llm import llm_judged, llm_rewritten, sft_judged
from assets.sft import raw_sft, sft_checked, sft_selected
from refinery.llm.cache import RequestCache
from refinery.llm.client import ChatClient, ChatRequest, LlmUnavailable, require_reachable
from refinery.llm.endpoint import LlmEndpoint
from refinery.llm.parse import QUARANTINE_REASONS, unusable
from refinery.llm.prompts import JUDGE_DOCUMENT, JUDGE_SFT, REWRITE_WIKI, SYNTHESIS_QA
from refinery.paths import Layout
from refinery.sample import prose
from refinery.schema import DOCUMENT_SCHEMA
from refinery.storage import Storage
from resources import LlmResource, build_resources

SOURCE = "web"
BUCKETS = ["head", "middle", "tail"]
SAMPLING = {"temperature": 1.0, "seed": 7, "max_input_chars": 300}


@pytest.fixture(scope="module")
def served(llm_server):
    return llm_server  # the session's server (tests/dagster/conftest.py)


def write_corpus(layout: Layout, source: str, count: int) -> pd.DataFrame:
    """A pretrain_corpus partition as the text chain leaves it (the columns the LLM stages read)."""
    rng = random.Random(11)
    frame = pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(count)],
            "text": [prose.article(rng, paragraphs=2) for _ in range(count)],
            "source": source,
            "url": None,
            "meta": None,
            "file": "docs.jsonl",
            "line": list(range(1, count + 1)),
        }
    )
    frame["perplexity_bucket"] = [BUCKETS[i % 3] for i in range(count)]
    frame["quality_score"] = [i / count for i in range(count)]
    schema = pa.schema(
        [
            *DOCUMENT_SCHEMA,
            pa.field("perplexity_bucket", pa.string()),
            pa.field("quality_score", pa.float64()),
        ]
    )
    rejected = pa.schema([*schema, pa.field("reason", pa.string()), pa.field("reason_detail", pa.string())])
    with Storage(layout.storage).writer(
        "pretrain_corpus", source, schema, rejected, {"test": True}
    ) as writer:
        writer.write(frame, frame.iloc[:0].assign(reason=[], reason_detail=[]))
    return frame


def llm(served, **kw) -> LlmResource:
    return LlmResource(base_url=served.base_url, model=served.model, **{"max_concurrency": 4, **kw})


def resources(layout, served, **kw) -> dict:
    return build_resources("local", home=str(layout.home), device="cpu", batch_size=16, llm=llm(served, **kw))


def add_partition(instance, kind: str, source: str) -> None:
    if source not in instance.get_dynamic_partitions(f"{kind}_source"):
        instance.add_dynamic_partitions(f"{kind}_source", [source])


def metadata(result, asset):
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    )


TEXT_CONFIG = {
    "ops": {
        "llm_judged": {"config": {**SAMPLING, "min_score": 3}},
        "llm_rewritten": {"config": {**SAMPLING, "perplexity_buckets": ["tail"], "max_tokens": 80}},
        # no seed: one seed for every request makes the tiny model sample alike whatever the document
        "llm_sft_synthesized": {
            "config": {**SAMPLING, "seed": None, "pairs_per_document": 2, "max_tokens": 120}
        },
    }
}


@pytest.fixture(scope="module")
def text_run(served, tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("llm") / "home")
    corpus = write_corpus(layout, SOURCE, 24)
    with dg.instance_for_test() as instance:
        add_partition(instance, "text", SOURCE)
        started = time.perf_counter()
        result = dg.materialize(
            LLM_TEXT,
            partition_key=SOURCE,
            instance=instance,
            resources=resources(layout, served),
            run_config=TEXT_CONFIG,
        )
        yield layout, instance, corpus, result, time.perf_counter() - started


def provenance_ok(frame: pd.DataFrame, template, served, seed: int | None = 7) -> None:
    for row in frame.itertuples():
        prov = json.loads(row.llm_provenance)
        assert prov["model"] == served.model and prov["endpoint"] == served.base_url
        assert prov["prompt_template"] == template.name and prov["prompt_hash"] == template.hash
        assert prov["sampling"]["temperature"] == 1.0 and prov["sampling"].get("seed") == seed
        assert prov["source_document"] == row.id.removesuffix("#rewrite")


def test_judge_scores_filters_and_quarantines(text_run, served):
    layout, _, corpus, result, _ = text_run
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    storage = Storage(layout.storage)
    kept, rejected = storage.read("llm_judged", SOURCE), storage.read("llm_judged", SOURCE, rejected=True)
    assert len(kept) + len(rejected) == len(corpus) and len(kept) > 0
    assert kept["judge_score"].between(3, 5).all() and kept["judge_rationale"].str.len().min() > 0
    assert set(rejected["reason"]) <= {"judge_below_threshold", *QUARANTINE_REASONS}
    below = rejected[rejected["reason"] == "judge_below_threshold"]
    assert (below["judge_score"] < 3).all()
    provenance_ok(pd.concat([kept, rejected]), JUDGE_DOCUMENT, served)
    meta = metadata(result, "llm_judged")
    assert meta["llm_requests"].value == len(corpus) and meta["llm_cache_hits"].value == 0
    assert meta["llm_tokens_in"].value > 0 and meta["llm_tokens_out"].value > 0
    assert 1 < meta["llm_peak_in_flight"].value <= 4  # concurrent, within the resource's limit
    assert storage.provenance("llm_judged", SOURCE)["prompt_hash"] == JUDGE_DOCUMENT.hash


def test_rewrites_only_the_chosen_bucket_linked_to_originals(text_run, served):
    layout, _, corpus, result, _ = text_run
    storage = Storage(layout.storage)
    kept, rejected = (
        storage.read("llm_rewritten", SOURCE),
        storage.read("llm_rewritten", SOURCE, rejected=True),
    )
    tail = set(corpus.loc[corpus["perplexity_bucket"] == "tail", "id"])
    assert len(kept) + len(rejected) == len(tail) and len(kept) > 0
    assert set(kept["rewrite_of"]) <= tail and (kept["id"] == kept["rewrite_of"] + "#rewrite").all()
    originals = corpus.set_index("id")["text"]
    assert all(t != originals[o] for t, o in zip(kept["text"], kept["rewrite_of"], strict=True))
    assert set(rejected["reason"]) <= set(QUARANTINE_REASONS)
    provenance_ok(kept, REWRITE_WIKI, served)
    checks = {
        c.check_name: c for c in result.get_asset_check_evaluations() if c.asset_key.path == ["llm_rewritten"]
    }
    assert checks["rows_accounted"].metadata["rows_routed"].value == len(corpus) - len(tail)


def test_synthesized_pairs_enter_the_sft_pipeline(text_run, served):
    layout, instance, corpus, result, _ = text_run
    storage = Storage(layout.storage)
    kept = storage.read("llm_sft_synthesized", SOURCE)
    rejected = storage.read("llm_sft_synthesized", SOURCE, rejected=True)
    assert len(kept) + len(rejected) == len(corpus) and len(kept) > 0
    # the tiny model refuses or breaks its JSON now and then: quarantined with the reason
    assert set(rejected["reason"]) <= set(QUARANTINE_REASONS)
    provenance_ok(pd.concat([kept, rejected]), SYNTHESIS_QA, served, seed=None)
    written = metadata(result, "llm_sft_synthesized")["sft_records_written"].value
    assert written == kept["synthesized_pairs"].sum() > 0
    inbox = layout.inbox_source("sft", f"llm-{SOURCE}") / "synthesized.jsonl"
    assert len(inbox.read_text().splitlines()) == written

    add_partition(instance, "sft", f"llm-{SOURCE}")
    sft = dg.materialize(
        [raw_sft, sft_checked, sft_selected],
        partition_key=f"llm-{SOURCE}",
        instance=instance,
        resources=resources(layout, served),
        run_config={"ops": {"sft_selected": {"config": {"budget_count": 4}}}},
    )
    assert sft.success and all(c.passed for c in sft.get_asset_check_evaluations())
    raw = storage.read("raw_sft", f"llm-{SOURCE}")
    assert len(raw) == written and set(raw["kind"]) <= {"instruction", "conversation"}
    meta = [json.loads(m) for m in raw["meta"]]
    assert all(m["origin"] == "llm_synthesized" for m in meta)
    assert {m["source_document"].split("/")[1] for m in meta} <= set(kept["id"])
    assert all(m["provenance"]["prompt_hash"] == SYNTHESIS_QA.hash for m in meta)
    # the canned answers repeat: sft_checked's dedup removes the copies, naming the kept one
    checked_rejected = storage.read("sft_checked", f"llm-{SOURCE}", rejected=True)
    assert raw["dedup_text"].duplicated().any() and checked_rejected["duplicate_of"].notna().any()
    assert storage.row_count("sft_selected", f"llm-{SOURCE}") <= 4

    judged = dg.materialize(
        [sft_judged],
        partition_key=f"llm-{SOURCE}",
        instance=instance,
        resources=resources(layout, served),
        run_config={"ops": {"sft_judged": {"config": {**SAMPLING, "min_score": 2}}}},
    )
    assert judged.success and all(c.passed for c in judged.get_asset_check_evaluations())
    scored = pd.concat(
        [
            storage.read("sft_judged", f"llm-{SOURCE}"),
            storage.read("sft_judged", f"llm-{SOURCE}", rejected=True),
        ]
    )
    assert len(scored) == storage.row_count("sft_selected", f"llm-{SOURCE}")
    assert all(json.loads(p)["prompt_hash"] == JUDGE_SFT.hash for p in scored["llm_provenance"])


def test_rerun_is_answered_from_the_cache(text_run, served):
    layout, instance, _, _, first_seconds = text_run
    before = Storage(layout.storage).read("llm_judged", SOURCE)
    started = time.perf_counter()
    again = dg.materialize(
        LLM_TEXT,
        partition_key=SOURCE,
        instance=instance,
        resources=resources(layout, served),
        run_config=TEXT_CONFIG,
    )
    assert again.success
    for asset in ("llm_judged", "llm_rewritten", "llm_sft_synthesized"):
        meta = metadata(again, asset)
        assert meta["llm_cache_hit_rate"].value == 1.0, asset
        assert meta["llm_tokens_in"].value == 0 and meta["llm_tokens_saved_by_cache"].value > 0
    pd.testing.assert_frame_equal(Storage(layout.storage).read("llm_judged", SOURCE), before)
    assert time.perf_counter() - started < first_seconds


def test_answers_cut_at_max_tokens_are_quarantined(text_run, served):
    layout, instance, corpus, _, _ = text_run
    result = dg.materialize(
        [llm_judged],
        partition_key=SOURCE,
        instance=instance,
        resources=resources(layout, served),
        run_config={"ops": {"llm_judged": {"config": {**SAMPLING, "max_tokens": 2}}}},
    )
    assert result.success
    rejected = Storage(layout.storage).read("llm_judged", SOURCE, rejected=True)
    assert len(rejected) == len(corpus) and set(rejected["reason"]) == {"llm_too_long"}


def test_rewrite_by_quality_range_with_own_prompt(text_run, served):
    layout, instance, corpus, _, _ = text_run
    prompt = "Rephrase this text plainly:\n{text}"
    config = {"perplexity_buckets": [], "min_quality": 0.5, "user_prompt": prompt, "max_tokens": 2}
    result = dg.materialize(
        [llm_rewritten],
        partition_key=SOURCE,
        instance=instance,
        resources=resources(layout, served),
        run_config={"ops": {"llm_rewritten": {"config": config}}},
    )
    assert result.success
    chosen = corpus[corpus["quality_score"] >= 0.5]
    rejected = Storage(layout.storage).read("llm_rewritten", SOURCE, rejected=True)
    assert sorted(rejected["id"]) == sorted(chosen["id"])  # two tokens are too few for any rewrite
    assert set(rejected["reason"]) == {"llm_too_long"} and (rejected["text"] == chosen["text"].values).all()
    own = REWRITE_WIKI.with_text(None, prompt).hash
    assert all(json.loads(p)["prompt_hash"] == own for p in rejected["llm_provenance"])


def test_unreachable_endpoint_fails_the_step_and_unset_endpoint_says_so(text_run):
    layout, instance, _, _, _ = text_run
    dead = LlmResource(base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, backoff_s=0.01)
    for resource, message in ((dead, "none of"), (LlmResource(), "no LLM endpoint configured")):
        result = dg.materialize(
            [llm_judged],
            partition_key=SOURCE,
            instance=instance,
            raise_on_error=False,
            resources=build_resources("local", home=str(layout.home), device="cpu", llm=resource),
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert message in str(failure.event_specific_data.error), failure.event_specific_data.error


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, dagster as dg
    from assets.llm import llm_judged, llm_rewritten, sft_judged
    from resources import LlmResource, build_resources
    home, url, model, source = sys.argv[1:5]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", [source])
        res = build_resources("local", home=home, device="cpu",
                              llm=LlmResource(base_url=url, model=model, max_concurrency=1))
        dg.materialize([llm_judged], partition_key=source, instance=instance, resources=res,
                       run_config={"ops": {"llm_judged": {"config": {"temperature": 1.0, "seed": 3,
                                   "max_input_chars": 300, "batch_rows": 4}}}})
    """
)


def test_resume_after_a_kill_sends_only_what_is_missing(text_run, served, tmp_path):
    layout, instance, _, _, _ = text_run
    source = "resume"
    corpus = write_corpus(layout, source, 40)
    cache = layout.home / "cache/llm/requests.sqlite"
    before = len(RequestCache(cache))
    step = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, str(layout.home), served.base_url, served.model, source]
    )
    deadline = time.monotonic() + 120
    while len(RequestCache(cache)) < before + 8 and time.monotonic() < deadline and step.poll() is None:
        time.sleep(0.2)
    step.send_signal(signal.SIGKILL)
    step.wait()
    answered = len(RequestCache(cache)) - before
    assert 8 <= answered < len(corpus)
    assert not Storage(layout.storage).exists("llm_judged", source)  # nothing half-written

    add_partition(instance, "text", source)
    result = dg.materialize(
        [llm_judged],
        partition_key=source,
        instance=instance,
        resources=resources(layout, served),
        run_config={"ops": {"llm_judged": {"config": {**SAMPLING, "seed": 3, "batch_rows": 4}}}},
    )
    meta = metadata(result, "llm_judged")
    assert meta["llm_cache_hits"].value == answered
    assert meta["llm_requests"].value - meta["llm_cache_hits"].value == len(corpus) - answered


def test_client_errors_retries_and_duplicate_requests(served, tmp_path):
    request = ChatRequest([{"role": "user", "content": "Text:\nhello"}], {"max_tokens": 8, "temperature": 0})
    wrong = ChatClient(LlmEndpoint(served.base_url, "no-such-model", max_retries=3))
    (answer,) = wrong.complete([request])  # the server answers 400: final at once, not retried
    assert answer.error.startswith("HTTP 400") and answer.attempts == 1 and not answer.transport_error
    assert unusable(answer)[0] == "llm_http_error"

    dead = ChatClient(LlmEndpoint("http://127.0.0.1:9/v1", "m", max_retries=2, backoff_s=0.01))
    other = ChatRequest([{"role": "user", "content": "Text:\nbye"}], request.params)
    results = dead.complete([request, other])
    assert all(r.transport_error and r.attempts == 3 for r in results)
    with pytest.raises(LlmUnavailable):
        require_reachable(results)

    client = ChatClient(LlmEndpoint(served.base_url, served.model, cache_path=str(tmp_path / "c.sqlite")))
    client.complete([request, request, request])  # identical requests of one call are sent once
    assert (client.totals.sent, client.totals.cache_hits, client.totals.tokens_in > 0) == (1, 2, True)
