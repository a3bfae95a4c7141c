"""Every option of the token assets (``tokenizer``, ``tokenized_corpus``, ``training_tokens``),
through Dagster's ``materialize``, on the token tests' small home (two pretrain_corpus partitions
and a training_schedule manifest, tests/unit/token_helpers.py).

Round one trains a tokenizer with every training option set, cuts long documents into pieces and
packs Megatron shards only; round two loads that tokenizer back (``mode: load``) and rejects what
is too long instead."""

from __future__ import annotations

import math
import shutil

import dagster as dg
import numpy as np
import pytest

from assets import tokenized_corpus, tokenizer, training_tokens
from refinery.paths import Layout
from tests.dagster.conftest import resources_for
from tests.unit.token_helpers import corpus_texts, write_corpus, write_manifest

TRAIN = {
    "vocab_size": 400,
    "min_frequency": 3,
    "special_tokens": ["<|endoftext|>", "<|pad|>", "<|sep|>"],
    "eos_token": "<|sep|>",
    "pad_token": None,
    "sample_documents": 15,
    "held_out_per_source": 3,
    "seed": 2,
}
SPLIT = {"max_document_tokens": 50}  # over_length: split (the default)
REJECT = {"max_document_tokens": 300, "over_length": "reject"}
PACK = {
    "seq_len": 64,
    "dtype": "int32",
    "micro_batch_size": 2,
    "data_parallel_size": 2,
    "grad_accumulation": 2,
    "shard_sequences": 5,
    "chunk_sequences": 3,
    "formats": ["megatron"],
    "read_docs": 7,
}
OPTIONS = {
    "tokenizer": [TRAIN, {"mode": "load", "path": "<round one's tokenizer.json>"}],
    "tokenized_corpus": [SPLIT, REJECT],
    "training_tokens": [PACK],
}


def metadata(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def run(instance, layout, asset, options, partition=None):
    result = dg.materialize(
        [asset],
        partition_key=partition,
        instance=instance,
        resources=resources_for(layout),
        run_config={"ops": {asset.key.to_user_string(): {"config": options}}},
    )
    assert result.success
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("tokens-options") / "home")
    texts = corpus_texts()
    storage = write_corpus(layout, texts)
    write_manifest(storage, texts)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", list(texts))
        yield layout, storage, instance, list(texts)


def test_train_split_and_pack(home):
    from tokenizers import Tokenizer

    layout, storage, instance, sources = home
    meta = metadata(run(instance, layout, tokenizer, TRAIN), "tokenizer")
    model = Tokenizer.from_file(meta["tokenizer"])
    assert model.get_vocab_size() == meta["vocab_size"] == 400
    assert [model.token_to_id(t) for t in TRAIN["special_tokens"]] == [0, 1, 2]
    assert (meta["eos_id"], meta["pad_id"]) == (2, 2)  # the EOS is <|sep|>; no pad token: EOS pads
    assert sum(meta["trained_on_documents"].values()) == 15
    assert "3 |" in meta["bytes_per_token"]  # three held-out documents per source
    for source in sources:
        run(instance, layout, tokenized_corpus, SPLIT, source)
        docs = storage.read("tokenized_corpus", source)
        content = docs["n_tokens"] - docs["pieces"]  # n_tokens counts each piece's EOS
        assert (docs["pieces"] == [math.ceil(n / 50) for n in content]).all()
        assert (docs["pieces"] > 1).any()
        # every piece ends with the EOS (<|sep|>, id 2), and the EOS is nowhere else
        assert [int((np.asarray(t) == 2).sum()) for t in docs["tokens"]] == docs["pieces"].tolist()
    meta = metadata(run(instance, layout, training_tokens, PACK), "training_tokens")
    assert (meta["seq_len"], meta["dtype"], meta["sequences_per_step"]) == (64, "int32", 8)
    shards = layout.storage / "training_tokens" / "shards" / "train"
    assert not (shards / "litdata").exists() and (shards / "megatron").is_dir()
    bins = sorted((shards / "megatron").glob("*.bin"))
    sequences = sum(f.stat().st_size for f in bins) // (65 * 4)  # seq_len + 1 int32 ids each
    assert len(bins) == math.ceil(sequences / 5) and meta["train_steps"] == math.ceil(sequences / 8)
    assert meta["parameters"]["read_docs"] == 7 and meta["parameters"]["chunk_sequences"] == 3


def test_load_and_reject(home, tmp_path):
    layout, storage, instance, sources = home
    trained = layout.storage / "tokenizer" / "tokenizer.json"
    if not trained.exists():  # this test alone: round one's tokenizer first
        run(instance, layout, tokenizer, TRAIN)
    copy = tmp_path / "mine.json"
    shutil.copy(trained, copy)
    meta = metadata(run(instance, layout, tokenizer, {"mode": "load", "path": str(copy)}), "tokenizer")
    assert meta["vocab_size"] == 400 and meta["eos_id"] == 0  # loaded: the default EOS, <|endoftext|>
    assert str(copy) in meta["origin"] or meta["parameters"]["path"] == str(copy)
    for source in sources:
        run(instance, layout, tokenized_corpus, REJECT, source)
        kept = storage.read("tokenized_corpus", source)
        rejected = storage.read("tokenized_corpus", source, rejected=True)
        assert (kept["n_tokens"] <= 300).all() and (kept["pieces"] == 1).all()
        if len(rejected):
            assert set(rejected["reason"]) == {"too_many_tokens"}
    assert sum(len(storage.read("tokenized_corpus", s, rejected=True)) for s in sources) > 0
