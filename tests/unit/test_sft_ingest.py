"""SFT ingest: every dialect normalised to one schema; every malformed record quarantined with a reason."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.sft.normalize import Malformed, normalize, parse_hh_transcript
from refinery.sft.reader import SftIngestParams, SftReader


def read_all(folder, **params):
    reader = SftReader(folder, "s", SftIngestParams(**params))
    docs, quarantine = [], []
    for batch in reader.batches():
        docs += batch.documents
        quarantine += batch.quarantine
    return docs, quarantine


def jsonl(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_alpaca_with_input_and_dolly_with_context():
    rec = normalize({"instruction": "Summarize.", "input": "A long text.", "output": "Short.", "quality": 7})
    assert (rec.kind, rec.format, rec.prompt, rec.response, rec.quality) == (
        "instruction",
        "alpaca",
        "Summarize.\n\nA long text.",
        "Short.",
        7.0,
    )
    assert [m["role"] for m in rec.messages] == ["user", "assistant"] and rec.turns == 1
    dolly = normalize({"instruction": "Name it.", "context": "", "response": "Foo.", "system": "Be brief."})
    assert dolly.format == "dolly" and dolly.prompt == "Name it." and dolly.system == "Be brief."
    assert normalize({"prompt": "2+2?", "completion": "4."}).format == "prompt_completion"


def test_sharegpt_and_openai_conversations():
    sg = normalize(
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello."},
                {"from": "human", "value": "Why?"},
                {"from": "gpt", "value": "Because."},
            ]
        }
    )
    assert (sg.kind, sg.format, sg.prompt, sg.response, sg.turns) == (
        "conversation",
        "sharegpt",
        "Hi",
        "Because.",
        2,
    )
    oa = normalize(
        {
            "messages": [
                {"role": "system", "content": "Sys."},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"},
            ]
        }
    )
    assert oa.format == "openai" and oa.prompt == "a\nb" and oa.system == "Sys."


def test_preference_dialects_share_the_prompt_and_context():
    simple = normalize(
        {"prompt": "P", "chosen": "good", "rejected": "bad", "score_chosen": 9, "score_rejected": 3}
    )
    assert (simple.kind, simple.response, simple.rejected_response, simple.quality) == (
        "preference",
        "good",
        "bad",
        9.0,
    )
    assert [r["score"] for r in simple.responses] == [9.0, 3.0]
    lists = normalize(
        {
            "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "no"}],
        }
    )
    assert (lists.format, lists.prompt, lists.response, lists.rejected_response) == (
        "chosen_rejected_messages",
        "Q",
        "yes",
        "no",
    )
    hh = normalize(
        {
            "chosen": "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant: good",
            "rejected": "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2\n\nAssistant: bad",
        }
    )
    assert (hh.format, hh.prompt, hh.response, hh.rejected_response, hh.turns) == (
        "hh_transcript",
        "Q1",
        "good",
        "bad",
        2,
    )
    assert [t["role"] for t in parse_hh_transcript("Human: a\n\nAssistant: b")] == ["user", "assistant"]


def test_ranked_sorted_best_first_with_parallel_scores():
    rec = normalize({"instruction": "Rate.", "completions": ["low", "high", "mid"], "ratings": [1, 5, 3]})
    assert (rec.kind, rec.response, rec.rejected_response, rec.quality) == ("ranked", "high", "low", 5.0)
    assert [r["text"] for r in rec.responses] == ["high", "mid", "low"]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"title": "x"}, "unknown_format"),
        ({"instruction": "x"}, "missing_field"),
        ({"instruction": "x", "output": 3}, "field_not_string"),
        ({"messages": []}, "malformed_conversation"),
        ({"messages": [{"role": "user", "content": "x"}]}, "malformed_conversation"),  # ends with the user
        ({"messages": [{"role": "assistant", "content": "x"}]}, "malformed_conversation"),  # no user first
        ({"messages": [{"role": "alien", "content": "x"}]}, "unknown_role"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url"}]},
                    {"role": "assistant", "content": "x"},
                ]
            },
            "unsupported_content",
        ),
        ({"prompt": "p", "chosen": "c"}, "missing_field"),
        (
            {
                "chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "1"}],
                "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "2"}],
            },
            "malformed_preference",
        ),
        ({"prompt": "p", "responses": [{"text": "a", "score": 1}]}, "malformed_ranking"),
        (
            {"prompt": "p", "responses": [{"text": "a", "score": True}, {"text": "b", "score": 1}]},
            "malformed_ranking",
        ),
        (
            {"prompt": "p", "responses": [{"text": "a", "score": float("nan")}, {"text": "b", "score": 1}]},
            "malformed_ranking",
        ),
        ({"responses": [{"text": "a", "score": 1}, {"text": "b", "score": 2}]}, "missing_field"),
    ],
)
def test_malformed_records_name_their_reason(record, reason):
    with pytest.raises(Malformed) as err:
        normalize(record)
    assert err.value.reason == reason


def test_reader_formats_ids_meta_and_quarantine(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "a.json").write_text(
        json.dumps(
            [
                {"instruction": "One.", "output": "1.", "id": 1, "category": "math"},
                {"instruction": "Two.", "output": "2."},
                "not an object",
            ]
        )
    )
    with gzip.open(folder / "b.jsonl.gz", "wb") as fh:
        fh.write(
            jsonl({"prompt": "P", "chosen": "c", "rejected": "r"})
            + b'{"broken\n'
            + jsonl({"id": 1, "prompt": "Q", "completion": "A"})
        )
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
                    "chosen": None,
                },
            ]
        ),
        folder / "c.parquet",
    )
    (folder / "notes.txt").write_text("hello")
    (folder / "big.jsonl").write_bytes(jsonl({"instruction": "x" * 300, "output": "y"}))
    docs, quarantine = read_all(folder, max_document_chars=200)
    assert [(d["file"], d["line"], d["kind"]) for d in docs] == [
        ("a.json", 1, "instruction"),
        ("a.json", 2, "instruction"),
        ("b.jsonl.gz", 1, "preference"),
        ("c.parquet", 1, "conversation"),
    ]
    assert docs[0]["id"] == "1" and json.loads(docs[0]["meta"]) == {"category": "math"}
    assert docs[1]["id"].startswith("doc-")
    assert json.loads(docs[3]["messages"])[1] == {"role": "assistant", "content": "a"}  # null column ignored
    reasons = sorted((q["file"], q["reason"]) for q in quarantine)
    assert reasons == [
        ("a.json", "not_an_object"),
        ("b.jsonl.gz", "duplicate_id"),
        ("b.jsonl.gz", "malformed_json"),
        ("big.jsonl", "oversized"),
        ("notes.txt", "unsupported_file_type"),
    ]
    assert all(q["raw"] for q in quarantine)
    again, _ = read_all(folder, max_document_chars=200)
    assert [d["id"] for d in again] == [d["id"] for d in docs]  # derived ids are stable


def test_json_lines_in_a_json_file_and_broken_json(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "lines.json").write_bytes(
        jsonl({"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"})
    )
    (folder / "zbroken.json").write_text('[{"prompt": "a", ')
    docs, quarantine = read_all(folder)
    assert len(docs) == 2 and [q["reason"] for q in quarantine] == ["malformed_json"]
