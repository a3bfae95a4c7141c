"""The LLM answer parsers and quarantine reasons, the prompt hash and the cache key (pure code)."""

import pickle

import pytest

from refinery.llm.cache import RequestCache, request_key
from refinery.llm.client import ChatResult, UsageTotals, parse_completion
from refinery.llm.parse import Unparsable, parse_judgement, parse_pairs, parse_rewrite, unusable
from refinery.llm.prompts import JUDGE_DOCUMENT, SYNTHESIS_QA
from refinery.paths import Layout
from resources import LlmResource


def test_unusable_answers_get_their_reason():
    assert unusable(ChatResult(error="HTTP 500: boom"))[0] == "llm_http_error"
    assert unusable(ChatResult(text='{"score":', finish_reason="length", tokens_out=8))[0] == "llm_too_long"
    assert unusable(ChatResult(text="  \n", finish_reason="stop"))[0] == "llm_empty"
    assert unusable(ChatResult(text=None, finish_reason="stop"))[0] == "llm_empty"
    refused = unusable(ChatResult(text="I'm sorry, but I cannot help with that.", finish_reason="stop"))
    assert refused[0] == "llm_refused"
    assert unusable(ChatResult(text='{"score": 3}', finish_reason="stop")) is None


def test_pairs_from_json_lists_objects_and_fences():
    text = '```json\n[{"question": "Why?", "answer": "Because."}, {"q": "", "a": "x"}, 3]\n```'
    assert parse_pairs(text) == [{"question": "Why?", "answer": "Because."}]
    wrapped = 'Here you go: {"pairs": [{"instruction": "Do it", "output": "Done"}]}'
    assert parse_pairs(wrapped) == [{"question": "Do it", "answer": "Done"}]
    many = str([{"question": f"q{i}", "answer": "a"} for i in range(5)]).replace("'", '"')
    assert len(parse_pairs(many, max_pairs=2)) == 2
    for bad in ('[{"question": "Why?", "answer": "Be', "no json here", '[{"question": "", "answer": ""}]'):
        with pytest.raises(Unparsable):
            parse_pairs(bad)


def test_judgement_score_range_and_rationale():
    assert parse_judgement('{"score": 4, "rationale": "Clear."}') == (4.0, "Clear.")
    assert parse_judgement('{"Rating": "2.5", "reason": "ok"}') == (2.5, "ok")
    for bad in ('{"score": 9}', '{"score": "high"}', "[1, 2]", '{"score": true}'):
        with pytest.raises(Unparsable):
            parse_judgement(bad)


def test_rewrite_strips_preamble():
    assert parse_rewrite("Here is the rewritten text:\nThe town is old.") == "The town is old."
    with pytest.raises(Unparsable):
        parse_rewrite("Here is the rewritten text:")


def test_template_hash_follows_its_text_and_render_fills_only_named_fields():
    edited = JUDGE_DOCUMENT.with_text(None, "Rate this: {text}")
    assert edited.hash != JUDGE_DOCUMENT.hash and edited.name == JUDGE_DOCUMENT.name
    messages = JUDGE_DOCUMENT.render(text="a {b} c")
    assert '{"score": <0-5>' in messages[0]["content"] and messages[1]["content"].endswith("a {b} c")
    with pytest.raises(KeyError):
        SYNTHESIS_QA.render(text="x")  # {pairs} missing


def test_cache_key_covers_model_messages_and_params(tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    key = request_key("m", messages, {"temperature": 0})
    assert key == request_key("m", [dict(messages[0])], {"temperature": 0})
    assert key != request_key("m2", messages, {"temperature": 0})
    assert key != request_key("m", messages, {"temperature": 0.5})
    body = {
        "choices": [{"message": {"content": "yo"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3},
    }
    with RequestCache(tmp_path / "c.sqlite") as cache:
        cache.put(key, "m", {"messages": messages}, body)
    with RequestCache(tmp_path / "c.sqlite") as cache:  # persisted, read by a new connection
        assert parse_completion(cache.get(key)).text == "yo" and len(cache) == 1


def test_usage_totals_count_cached_tokens_apart():
    totals = UsageTotals()
    totals.add(ChatResult(text="a", finish_reason="stop", tokens_in=10, tokens_out=2, attempts=3))
    totals.add(ChatResult(text="a", finish_reason="stop", tokens_in=10, tokens_out=2, cached=True))
    assert (totals.tokens_in, totals.cached_tokens_in, totals.retries, totals.hit_rate) == (10, 10, 2, 0.5)


def test_resource_hands_a_plain_picklable_endpoint_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "secret")
    resource = LlmResource(base_url="http://127.0.0.1:8000/v1", model="m", api_key_env="MY_KEY")
    endpoint = resource.endpoint(Layout.at(tmp_path))
    travelled = pickle.loads(pickle.dumps(endpoint))
    assert travelled == endpoint and "secret" not in pickle.dumps(endpoint).decode("latin-1")
    assert travelled.api_key() == "secret" and travelled.cache_path.endswith("cache/llm/requests.sqlite")
    assert (
        LlmResource(base_url="http://x/v1", model="m", cache_path="off")
        .endpoint(Layout.at(tmp_path))
        .cache_path
        == ""
    )
    with pytest.raises(ValueError, match="no LLM endpoint configured"):
        LlmResource().endpoint(Layout.at(tmp_path))
