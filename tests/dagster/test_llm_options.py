"""Every option of the LLM text stages (``llm_judged``, ``llm_rewritten``, ``llm_sft_synthesized``)
and the llm resource's client limits, through Dagster's ``materialize``, against the real
OpenAI-compatible server of the LLM tests (``transformers serve`` on the tiny chat model, whose text
has no quality: what is checked is what was asked of it, and what the stages did with the answers)."""

from __future__ import annotations

import itertools
import json

import dagster as dg
import pandas as pd
import pytest

from assets import LLM_TEXT
from refinery.llm.prompts import JUDGE_DOCUMENT, REWRITE_WIKI, SYNTHESIS_QA
from refinery.paths import Layout
from refinery.storage import Storage
from tests.dagster.test_llm_assets import SOURCE, add_partition, llm, metadata, write_corpus
from tests.llm_fault_proxy import FaultProxy

SAMPLING = {"temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["<<end>>"], "max_input_chars": 120}
JUDGE = {
    **SAMPLING,
    "max_tokens": 64,
    "system_prompt": "You grade web documents for a training corpus.",
    "user_prompt": 'Grade from 0 to 10. Answer as JSON {"score": n, "rationale": "..."}.\n\n{text}',
    "batch_rows": 2,
    "scale": 10.0,
    "min_score": 2.0,
}
PROMPTS = {"system_prompt": "You edit text.", "user_prompt": "Rewrite plainly:\n\n{text}", "batch_rows": 3}
REWRITE = {
    **SAMPLING,
    **PROMPTS,
    "max_tokens": 60,
    "perplexity_buckets": [],
    "min_quality": 0.3,
    "max_quality": 0.7,
}
SYNTH = {
    **SAMPLING,
    "system_prompt": "You write questions and answers.",
    "user_prompt": 'One question and answer as JSON [{"question": "...", "answer": "..."}]:\n\n{text}',
    "batch_rows": 3,
    "seed": 5,
    "max_tokens": 100,
    "pairs_per_document": 1,
    "sft_source": "synth-opts",
}
SFT_JUDGE = {
    **JUDGE,
    "user_prompt": 'Grade 0-10 as JSON {"score": n, "rationale": "..."}:\n{prompt}\n{response}',
}
OPTIONS = {
    "sft_judged": [SFT_JUDGE],
    "llm_judged": [JUDGE],
    "llm_rewritten": [REWRITE],
    "llm_sft_synthesized": [SYNTH],
    "llm": [
        {"base_url": "<the server>", "model": "<its model>", "max_concurrency": 2, "cache_path": "<a file>"},
        # the client's failure handling, against the fault proxy in front of the server (below)
        {"api_key_env": "<a test variable>", "timeout_s": 0.5, "max_retries": 3, "backoff_s": 0.1},
    ],
}


@pytest.fixture(scope="module")
def server(llm_server):
    return llm_server  # the session's server (tests/dagster/conftest.py)


@pytest.fixture(scope="module")
def run(server, tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("llm-options") / "home")
    corpus = write_corpus(layout, SOURCE, 8)
    cache = layout.home / "my-cache.sqlite"
    from resources import build_resources

    resources = build_resources(
        "local",
        home=str(layout.home),
        device="cpu",
        batch_size=16,
        llm=llm(server, max_concurrency=2, cache_path=str(cache)),
    )
    with dg.instance_for_test() as instance:
        add_partition(instance, "text", SOURCE)
        config = {"ops": {"llm_judged": {"config": JUDGE}, "llm_rewritten": {"config": REWRITE},
                          "llm_sft_synthesized": {"config": SYNTH}}}  # fmt: skip
        result = dg.materialize(
            LLM_TEXT, partition_key=SOURCE, instance=instance, resources=resources, run_config=config
        )
        yield layout, corpus, result, cache, (instance, resources)


def rows(storage: Storage, asset: str) -> pd.DataFrame:
    return pd.concat([storage.read(asset, SOURCE), storage.read(asset, SOURCE, rejected=True)])


def asked(frame: pd.DataFrame) -> list[dict]:
    return [json.loads(p) for p in frame["llm_provenance"].dropna()]


def sampling(options: dict) -> dict:
    out = {
        "temperature": options["temperature"],
        "top_p": options["top_p"],
        "max_tokens": options["max_tokens"],
    }
    if options["seed"] is not None:
        out["seed"] = options["seed"]
    return out | {"stop": options["stop"]}


def test_judge_options(run):
    layout, corpus, result, _, _ = run
    assert result.success
    storage = Storage(layout.storage)
    judged = rows(storage, "llm_judged")
    assert len(judged) == len(corpus)
    for prov in asked(judged):  # the sampling asked for, and a prompt that is not the template's own
        assert prov["sampling"] == sampling(JUDGE)
        assert prov["prompt_hash"] != JUDGE_DOCUMENT.hash
    stamp = storage.provenance("llm_judged", SOURCE)
    assert stamp["params"]["scale"] == 10.0 and stamp["params"]["batch_rows"] == 2
    assert stamp["prompt_hash"] != JUDGE_DOCUMENT.hash
    kept = storage.read("llm_judged", SOURCE)
    assert kept["judge_score"].between(2.0, 10.0).all()  # min_score 2 on a 0–10 scale
    below = storage.read("llm_judged", SOURCE, rejected=True)
    below = below[below["reason"] == "judge_below_threshold"]
    assert (below["judge_score"] < 2.0).all()


def test_rewrite_selection(run):
    layout, corpus, _, _, _ = run
    storage = Storage(layout.storage)
    rewritten = rows(storage, "llm_rewritten")
    chosen = set(corpus.loc[corpus["quality_score"].between(0.3, 0.7), "id"])  # every bucket
    assert set(rewritten["id"].str.removesuffix("#rewrite")) == chosen
    assert {b for b in corpus.set_index("id").loc[sorted(chosen), "perplexity_bucket"]} != {"tail"}
    for prov in asked(rewritten):
        assert prov["sampling"] == sampling(REWRITE) and prov["prompt_hash"] != REWRITE_WIKI.hash


def test_synthesis_options(run):
    layout, _, result, _, _ = run
    storage = Storage(layout.storage)
    kept = storage.read("llm_sft_synthesized", SOURCE)
    assert (kept["synthesized_pairs"] <= 1).all()
    written = metadata(result, "llm_sft_synthesized")["sft_records_written"].value
    inbox = layout.inbox_source("sft", "synth-opts") / "synthesized.jsonl"
    assert written == kept["synthesized_pairs"].sum() and len(inbox.read_text().splitlines()) == written
    for prov in asked(rows(storage, "llm_sft_synthesized")):
        assert prov["sampling"] == sampling(SYNTH) and prov["prompt_hash"] != SYNTHESIS_QA.hash


def test_client_limits_and_input_cut(run):
    import sqlite3

    _, corpus, result, cache, _ = run
    assert cache.is_file()  # cache_path: every request and answer is in the named file
    with sqlite3.connect(cache) as db:
        requests = [json.loads(r) for (r,) in db.execute("SELECT request FROM completions")]
    assert len(requests) >= len(corpus)
    # max_input_chars 120: each request carries the first 120 characters of its document, no more
    texts = " ".join(m["content"] for r in requests for m in r["messages"])
    assert all(d[:120] in texts and d[:121] not in texts for d in corpus["text"])
    systems = {r["messages"][0]["content"] for r in requests}  # system_prompt of each stage
    assert {JUDGE["system_prompt"], REWRITE["system_prompt"], SYNTH["system_prompt"]} <= systems
    for asset in ("llm_judged", "llm_rewritten", "llm_sft_synthesized"):
        assert 1 <= metadata(result, asset)["llm_peak_in_flight"].value <= 2  # max_concurrency


def test_sft_judge_options(run):
    """A sample SFT source through its chain (4 records selected), then sft_judged with every option."""
    from assets.llm import sft_judged
    from assets.sft import raw_sft, sft_checked, sft_selected
    from refinery.llm.prompts import JUDGE_SFT
    from refinery.sample.sft_sample import build_sft_sample

    layout, _, _, _, (instance, resources) = run
    build_sft_sample(layout.inbox_kind("sft"), seed=3, records_per_source=8)
    add_partition(instance, "sft", "alpaca")
    chain = {"ops": {"sft_selected": {"config": {"budget_count": 4}}}}
    assert dg.materialize(
        [raw_sft, sft_checked, sft_selected], partition_key="alpaca", instance=instance, resources=resources,
        run_config=chain,
    ).success  # fmt: skip

    def judge(options):
        return dg.materialize(
            [sft_judged],
            partition_key="alpaca",
            instance=instance,
            resources=resources,
            run_config={"ops": {"sft_judged": {"config": options}}},
            raise_on_error=False,
        )

    # a placeholder this stage does not fill ({text} is the document stages') fails before any request
    wrong = judge({**SFT_JUDGE, "user_prompt": "Grade: {text}"})
    errors = " ".join(e.event_specific_data.error.to_string() for e in wrong.all_events if e.is_step_failure)
    assert not wrong.success and "it fills {prompt}, {response}" in errors
    judged = judge(SFT_JUDGE)
    assert judged.success
    storage = Storage(layout.storage)
    scored = pd.concat(
        [storage.read("sft_judged", "alpaca"), storage.read("sft_judged", "alpaca", rejected=True)]
    )
    assert len(scored) == 4
    for prov in asked(scored):
        assert prov["sampling"] == sampling(SFT_JUDGE) and prov["prompt_hash"] != JUDGE_SFT.hash
    kept = storage.read("sft_judged", "alpaca")
    assert kept["judge_score"].between(2.0, 10.0).all()
    stamp = storage.provenance("sft_judged", "alpaca")["params"]
    assert (stamp["scale"], stamp["batch_rows"], stamp["max_input_chars"]) == (10.0, 2, 120)


# -- the llm resource's failure handling, through a fault-injecting proxy in front of the server --
KEY_ENV = "REFINERY_TEST_OPTIONS_LLM_KEY"
FAULT_DOCS = 2
SLACK_S = 0.15  # scheduling delay allowed on each measured wait (a loaded 2-core machine)
# The server sees a wait as the time between two arrivals, which is the client's wait give or take
# the difference of the two requests' trips (the first may open the connection): a few ms.
EARLY_S = 0.05


@pytest.fixture(scope="module")
def faulty(server, tmp_path_factory):
    """``judge(**llm_options)`` materializes ``llm_judged`` on 2 documents through the proxy (no
    cache: every run sends its requests), returning the result; the proxy records what arrived."""
    from assets.llm import llm_judged
    from resources import LlmResource, build_resources

    proxy = FaultProxy(server.base_url)
    layout = Layout.at(tmp_path_factory.mktemp("llm-faults") / "home")
    write_corpus(layout, "faults", FAULT_DOCS)
    with dg.instance_for_test() as instance:
        add_partition(instance, "text", "faults")

        def judge(**options) -> dg.ExecuteInProcessResult:
            endpoint = LlmResource(base_url=proxy.base_url, model=server.model, cache_path="off", **options)
            return dg.materialize(
                [llm_judged],
                partition_key="faults",
                instance=instance,
                resources=build_resources("local", home=str(layout.home), device="cpu", llm=endpoint),
                run_config={"ops": {"llm_judged": {"config": {"max_tokens": 8}}}},
                raise_on_error=False,
            )

        try:
            yield proxy, judge
        finally:
            proxy.stop()


def step_errors(result) -> str:
    return " ".join(e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure)


def gaps(attempts) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(attempts)]


def test_api_key_env_sends_the_named_variable(faulty, monkeypatch):
    proxy, judge = faulty
    monkeypatch.setenv(KEY_ENV, "sk-from-the-named-variable")
    monkeypatch.setenv("REFINERY_LLM_API_KEY", "sk-from-the-default-variable")
    proxy.script()
    assert judge(api_key_env=KEY_ENV).success
    assert len(proxy.seen) == FAULT_DOCS
    assert {s.authorization for s in proxy.seen} == {"Bearer sk-from-the-named-variable"}
    proxy.script()  # '' sends no key, whatever the default variable holds
    assert judge(api_key_env="").success
    assert len(proxy.seen) == FAULT_DOCS and {s.authorization for s in proxy.seen} == {None}
    # a variable the user named but did not set: a clear error before any request goes out
    monkeypatch.delenv(KEY_ENV)
    proxy.script()
    failed = judge(api_key_env=KEY_ENV)
    assert not failed.success and f"api_key_env names ${KEY_ENV}, which is not set" in step_errors(failed)
    assert proxy.seen == []


def test_max_retries_and_backoff_s_against_a_failing_server(faulty):
    """Three 503s per request: max_retries 3 gets through on the 4th attempt, after waits of
    backoff_s · 2^k (k = 0, 1, 2; jitter ×0.5–1.5) as the server sees them; max_retries 2 gives up
    after 3 attempts and the step fails naming the error."""
    proxy, judge = faulty
    backoff = 0.1
    proxy.script("503", "503", "503")
    done = judge(max_retries=3, backoff_s=backoff)
    assert done.success, step_errors(done)
    by_request = proxy.attempts()
    assert len(by_request) == FAULT_DOCS
    for attempts in by_request.values():
        assert [s.fault for s in attempts] == ["503", "503", "503", None]
        for k, gap in enumerate(gaps(attempts)):
            assert 0.5 * backoff * 2**k - EARLY_S <= gap <= 1.5 * backoff * 2**k + SLACK_S, (k, gap)
        # the default backoff (0.5 s) would wait at least 0.25 + 0.5 + 1.0 s in all
        assert sum(gaps(attempts)) < 1.75
    assert metadata(done, "llm_judged")["llm_retries"].value == 3 * FAULT_DOCS

    proxy.script("503", "503", "503")
    failed = judge(max_retries=2, backoff_s=backoff)
    assert not failed.success
    assert f"none of {FAULT_DOCS} requests reached the LLM endpoint" in step_errors(failed)
    assert "HTTP 503" in step_errors(failed)
    assert [len(a) for a in proxy.attempts().values()] == [3] * FAULT_DOCS


@pytest.mark.parametrize("fault", ["stall", "trickle"])
def test_timeout_s_bounds_the_whole_answer(faulty, fault):
    """A server that accepts the request and never answers (stall), or answers a byte at a time
    and never finishes (trickle), is given up on after timeout_s and the request retried: the
    server sees the second attempt timeout_s (+ the backoff) after the first, not the 5 s the
    proxy holds the first one for."""
    proxy, judge = faulty
    timeout = 0.5
    proxy.script(fault)
    done = judge(timeout_s=timeout, max_retries=1, backoff_s=0.05)
    assert done.success, step_errors(done)
    for attempts in proxy.attempts().values():
        assert [s.fault for s in attempts] == [fault, None]
        (gap,) = gaps(attempts)
        assert timeout - EARLY_S <= gap <= timeout + 0.075 + 2 * SLACK_S, gap
    assert metadata(done, "llm_judged")["llm_retries"].value == FAULT_DOCS
