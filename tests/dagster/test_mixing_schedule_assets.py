"""The real mixing and scheduling assets under materialize(), on a small corpus made by the real
text chain: three topical sources, cross-source copies the dedup stages catch, and a near copy
below the dedup threshold that only the splits' own pass groups."""

import json
import random

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from assets.mixing import domain_weights, pretrain_mixture
from assets.schedule import dataset_splits, training_schedule
from refinery.dedup.minhash import MinHasher, jaccard
from refinery.paths import Layout
from refinery.sample import prose
from refinery.sample.target_sample import build_target_sample
from refinery.schedule.loader import ScheduleReader
from refinery.schedule.order import available_limit
from refinery.storage import Storage
from tests.conftest import write_source
from tests.dagster.conftest import materialize_text_chain, resources_for

MIXING = [domain_weights, dataset_splits, pretrain_mixture, training_schedule]
TOPICS = {
    "science": ["astronomy", "software"],
    "kitchen": ["cooking", "gardening"],
    "past": ["history", "travel"],
}
DOREMI = {
    "doremi_steps": 30,
    "doremi_reference_steps": 60,
    "doremi_d_model": 32,
    "doremi_n_layers": 1,
    "doremi_n_heads": 2,
    "doremi_seq_len": 48,
    "doremi_batch_per_domain": 4,
    "doremi_lr": 0.01,
}


def trimmed_copy(text: str) -> str:
    """The article without its first two paragraphs: Jaccard ≈ 0.7, under the dedup's 0.8. The start
    goes, not the end: the embedder reads only a document's first 256 tokens, so an end-trimmed copy
    embeds identically and no epsilon keeps it apart from the original."""
    return "\n\n".join(text.split("\n\n")[2:])


def build_corpus_inbox(layout: Layout) -> dict:
    rng = random.Random(42)
    docs = {
        s: [prose.article(rng, rng.choice(t), paragraphs=6) for _ in range(14 if s != "past" else 8)]
        for s, t in TOPICS.items()
    }
    near = trimmed_copy(docs["past"][0])
    extra = {
        "kitchen": [docs["science"][0], prose.near_duplicate(docs["science"][1], random.Random(2), edits=2)],
        "past": [near],
    }
    for source, texts in docs.items():
        records = [{"id": f"{source}-{i}", "text": t} for i, t in enumerate(texts + extra.get(source, []))]
        write_source(layout, source, {"docs.jsonl": "".join(json.dumps(r) + "\n" for r in records)})
    build_target_sample(layout.inbox_kind("target"), documents=30)
    return {"near": ("past/past-0", f"past/past-{len(docs['past'])}")}


def resources(layout) -> dict:
    return resources_for(layout)


def run(instance, layout, selection, config=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        selection, instance=instance, resources=resources(layout), run_config={"ops": config or {}}
    )


def metadata(result, asset):
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("mix") / "home")
    known = build_corpus_inbox(layout)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", list(TOPICS))
        # science first: the kitchen copies of it are the duplicates. Semantic dedup and the quality
        # classifier are as good as off (epsilon ~ 0, threshold 0): the near copy that splits must
        # keep together has to reach the corpus.
        quality_off = {
            "semantic_deduplicated": {"config": {"epsilon": 1e-6}},
            "quality_scored": {"config": {"threshold": 0.0}},
        }
        materialize_text_chain(instance, layout, list(TOPICS), {"ops": quality_off})
        config = {
            "domain_weights": {"config": DOREMI},
            "pretrain_mixture": {"config": {"token_budget": 12_000}},
            "training_schedule": {"config": {"docs_per_step": 4, "shard_docs": 7, "row_group_docs": 3}},
        }
        result = run(instance, layout, MIXING, config)
        yield layout, instance, result, known


def test_weights_favour_the_domain_like_the_target(corpus):
    layout, _, result, _ = corpus
    assert result.success
    meta = metadata(result, "domain_weights")
    table = pd.read_parquet(layout.storage / "domain_weights" / "domain_weights.parquet").set_index("domain")
    assert set(table.index) == set(TOPICS)
    assert (
        table["dsir"].idxmax() == "science" and table.loc["science", "dsir"] > table.loc["science", "natural"]
    )
    assert table.loc["science", "dsir_mean_log_weight"] > table.drop("science")["dsir_mean_log_weight"].max()
    for col in ("natural", "uniform", "dsir", "doremi", "weight"):
        assert abs(table[col].sum() - 1) < 1e-6
    assert np.allclose(table["weight"], table["doremi"])  # use = doremi by default
    trajectory = pd.read_parquet(
        layout.storage / "domain_weights_trajectory" / "domain_weights_trajectory.parquet"
    )
    assert len(trajectory) == 30 * 3 and set(trajectory["domain"]) == set(TOPICS)
    assert "data:image/png;base64," in meta["plot_weights"].value
    assert "data:image/png;base64," in meta["plot_doremi_trajectory"].value
    assert meta["dsir_target_documents"].value == 30


def test_splits_keep_clusters_together_and_pass_the_leakage_check(corpus):
    layout, _, result, known = corpus
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "no_leakage")
    assert check.passed and check.metadata["relations_crossing_splits"].value == 0
    splits = pd.read_parquet(layout.storage / "dataset_splits" / "dataset_splits.parquet")
    splits["key"] = splits["source"] + "/" + splits["id"]
    by_key = splits.set_index("key")
    a, b = known["near"]
    corpus_text = {}
    for s in TOPICS:
        t = pq.read_table(
            layout.storage / "pretrain_corpus" / f"{s}.parquet", columns=["id", "text"]
        ).to_pydict()
        corpus_text.update({f"{s}/{i}": x for i, x in zip(t["id"], t["text"], strict=True)})
    sigs = MinHasher(128, 5, 1).signatures([corpus_text[a], corpus_text[b]])
    assert 0.5 <= jaccard(sigs[0], sigs[1]) < 0.8  # kept by dedup, grouped by the splits
    assert (
        by_key.loc[a, "group"] == by_key.loc[b, "group"] and by_key.loc[a, "split"] == by_key.loc[b, "split"]
    )
    meta = metadata(result, "dataset_splits")
    assert meta["relations"].value["dedup_decisions"] == 2 and meta["relations"].value["near_duplicates"] >= 1
    # dedup decisions: the kitchen copies were rejected in favour of science documents
    storage = Storage(layout.storage)
    rejected = pd.concat(
        [storage.read(s, "kitchen", rejected=True) for s in ("exact_deduplicated", "fuzzy_deduplicated")]
    )
    assert sorted(rejected["duplicate_of"]) == ["science/science-0", "science/science-1"]
    assert set(splits["split"]) <= {"train", "validation", "test"} and len(splits) == sum(
        storage.row_count("pretrain_corpus", s) for s in TOPICS
    )


def test_mixture_follows_weights_within_the_budget(corpus):
    layout, instance, result, _ = corpus
    mixture = pd.read_parquet(layout.storage / "pretrain_mixture" / "pretrain_mixture.parquet")
    splits = pd.read_parquet(layout.storage / "dataset_splits" / "dataset_splits.parquet")
    train = set(
        zip(
            splits.loc[splits["split"] == "train", "source"],
            splits.loc[splits["split"] == "train", "id"],
            strict=True,
        )
    )
    assert set(zip(mixture["source"], mixture["id"], strict=True)) <= train  # never a held-out document
    longest = int(mixture["tokens"].max())
    assert abs(int(mixture["tokens"].sum()) - 12_000) <= 3 * longest
    meta = metadata(result, "pretrain_mixture")
    assert meta["tokens"].value == int(mixture["tokens"].sum())
    # A tiny domain pushed far beyond its size is repeated, and the run says so.
    again = run(
        instance,
        layout,
        [pretrain_mixture],
        {
            "pretrain_mixture": {
                "config": {
                    "token_budget": 40_000,
                    "manual_weights": {"past": 0.8, "science": 0.1, "kitchen": 0.1},
                }
            }
        },
    )
    meta = metadata(again, "pretrain_mixture")
    assert meta["max_epochs_seen"].value > 4 and "past" in meta["repetition_warnings"].value
    capped = run(
        instance,
        layout,
        [pretrain_mixture],
        {
            "pretrain_mixture": {
                "config": {
                    "token_budget": 40_000,
                    "max_epochs": 2.0,
                    "manual_weights": {"past": 0.8, "science": 0.1, "kitchen": 0.1},
                }
            }
        },
    )
    assert metadata(capped, "pretrain_mixture")["max_epochs_seen"].value <= 2.0 + 0.5


def test_schedule_shards_stream_in_manifest_order(corpus):
    layout, _, result, _ = corpus
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "shards_match_manifest")
    assert check.passed
    manifest = pd.read_parquet(layout.storage / "training_schedule" / "training_schedule.parquet")
    root = layout.storage / "training_schedule"
    for split, part in manifest.groupby("split"):
        got = list(ScheduleReader(root, split, columns=["position", "source", "id", "text"]))
        assert [(r["source"], r["id"]) for r in got] == list(zip(part["source"], part["id"], strict=True))
        assert [r["position"] for r in got] == list(range(len(part)))
    corpus_text = {}
    for s in TOPICS:
        t = pq.read_table(
            layout.storage / "pretrain_corpus" / f"{s}.parquet", columns=["id", "text"]
        ).to_pydict()
        corpus_text.update({(s, i): x for i, x in zip(t["id"], t["text"], strict=True)})
    assert all(r["text"] == corpus_text[(r["source"], r["id"])] for r in ScheduleReader(root, "train"))
    train = manifest[manifest["split"] == "train"]
    assert (train["step"] == train["position"] // 4).all() and train["shard"].max() == (len(train) - 1) // 7


def test_curriculum_uses_perplexity_when_the_corpus_has_it(corpus):
    layout, instance, _, _ = corpus
    storage = Storage(layout.storage)
    for source in TOPICS:  # the KenLM stage's real scores, carried through to the corpus
        column = pq.read_table(storage.path("pretrain_corpus", source), columns=["perplexity"]).column(0)
        assert column.null_count == 0 and pc.min(column).as_py() > 1
    config = {
        "pretrain_mixture": {"config": {"token_budget": 8_000}},
        "training_schedule": {
            "config": {"strategy": "curriculum", "pacing": "linear", "pacing_start": 0.3, "docs_per_step": 4}
        },
    }
    result = run(instance, layout, [pretrain_mixture, training_schedule], config)
    assert metadata(result, "training_schedule")["difficulty_measure"].value == "perplexity"
    manifest = pd.read_parquet(layout.storage / "training_schedule" / "training_schedule.parquet")
    train = manifest[manifest["split"] == "train"].sort_values("position")
    mixture = pd.read_parquet(layout.storage / "pretrain_mixture" / "pretrain_mixture.parquet")
    assert sorted(train["difficulty"]) == sorted(mixture["perplexity"])
    rank = train["difficulty"].rank(method="min").to_numpy() - 1
    assert (rank < available_limit(len(train), "linear", 0.3)).all()


def hand_packed(manifest: pd.DataFrame, n_tokens: dict, seq_tokens: int) -> list[tuple]:
    """(sequence, source, id, doc_start, length) of every piece, by walking the documents one by one."""
    pieces, cursor = [], 0
    for source, doc in zip(manifest["source"], manifest["id"], strict=True):
        n = n_tokens[(source, doc)]
        at = 0
        while at < n:
            sequence, offset = divmod(cursor + at, seq_tokens)
            take = min(n - at, seq_tokens - offset)
            pieces.append((sequence, source, doc, at, take))
            at += take
        cursor += n
    return pieces


def test_tokens_and_trace_through_dagster(corpus, capsys):
    from assets.tokens import tokenized_corpus, tokenizer, training_tokens
    from refinery_cli import commands as cli

    layout, instance, _, _ = corpus
    tok = run(instance, layout, [tokenizer], {"tokenizer": {"config": {"vocab_size": 800}}})
    assert tok.success and metadata(tok, "tokenizer")["vocab_size"].value == 800
    assert "| past |" in metadata(tok, "tokenizer")["bytes_per_token"].value  # held-out, per source
    for source in TOPICS:
        done = dg.materialize(
            [tokenized_corpus], partition_key=source, instance=instance, resources=resources(layout)
        )
        assert done.success and metadata(done, "tokenized_corpus")["tokens"].value > 0
    geometry = {"seq_len": 127, "micro_batch_size": 2, "data_parallel_size": 2, "shard_sequences": 4}
    packed = run(instance, layout, [training_tokens], {"training_tokens": {"config": geometry}})
    assert packed.success and next(iter(packed.get_asset_check_evaluations())).passed
    assert "| sequence |" in metadata(packed, "training_tokens")["trace_step_0"].value  # a sample, in the UI

    storage = Storage(layout.storage)
    n_tokens, rows = {}, {}
    for source in TOPICS:
        frame = storage.read("tokenized_corpus", source, columns=["id", "n_tokens", "file", "line"])
        for r in frame.itertuples():
            n_tokens[(source, r.id)] = r.n_tokens
            rows[(source, r.id)] = r
    manifest = pd.read_parquet(layout.storage / "training_schedule" / "training_schedule.parquet")
    train = manifest[manifest["split"] == "train"].sort_values("position")
    expected = [p for p in hand_packed(train, n_tokens, 128) if 4 <= p[0] < 8]  # step 1: sequences 4–7
    assert expected

    assert cli.main(["--home", str(layout.home), "trace", "--step", "1", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(g["sequence"], g["source"], g["id"], g["doc_start"], g["length"]) for g in got] == expected
    for g in got:
        origin = rows[(g["source"], g["id"])]
        assert g["raw_file"] == str(layout.inbox_source("text", g["source"]) / origin.file)
        assert g["line"] == origin.line and {"perplexity", "quality_score"} <= set(g["scores"])
        assert (g["rank"], g["micro_batch"]) == ((g["sequence"] - 4) // 2, 0)  # 2 ranks × 1 micro-batch of 2

    first = (train["source"].iloc[0], train["id"].iloc[0])
    steps = sorted({p[0] // 4 for p in hand_packed(train, n_tokens, 128) if (p[1], p[2]) == first})
    assert cli.main(["--home", str(layout.home), "trace", "--doc", "/".join(first), "--format", "json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["status"] == "trained"
    assert sorted({a["step"] for a in trained["appearances"] if a["split"] == "train"}) == steps

    # the kitchen copy of science-0 never trained: exact dedup removed it, and trace says so
    copy = "kitchen-14"
    assert cli.main(["--home", str(layout.home), "trace", "--doc", f"kitchen/{copy}"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"kitchen/{copy}: removed by exact_deduplicated:") and "science/science-0" in said

    # the same answers as SQL views
    sql = (
        "SELECT sequence, source, id, doc_start, length FROM trace_steps "
        "WHERE split = 'train' AND step = 1 ORDER BY sequence, \"offset\""
    )
    assert cli.main(["--home", str(layout.home), "sql", sql, "--format", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert [tuple(v.values()) for v in view] == expected
    sql = f"SELECT status, stage FROM trace_documents WHERE source = 'kitchen' AND id = '{copy}'"
    assert cli.main(["--home", str(layout.home), "sql", sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"status": "removed", "stage": "exact_deduplicated"}]
