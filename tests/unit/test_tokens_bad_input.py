"""Bad input to the token assets: a vocabulary too large for the dtype and a tokenizer that does not
match tokenized_corpus are refused before any shard is written; a document that tokenizes to
nothing, or is too long, is rejected with its reason; a user's tokenizer is loaded, never fetched."""

import json

import pandas as pd
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from refinery.names import TOKENIZED_CORPUS
from refinery.paths import Layout
from refinery.tokens.publish import TrainingTokensParams, publish_training_tokens
from refinery.tokens.tokenizer import TokenizerError, TokenizerParams
from tests.unit.token_helpers import (
    corpus_texts,
    make_tokenizer,
    tokenize,
    write_corpus,
    write_manifest,
)


def word_tokenizer(path, words: int, strip: bool = False) -> str:
    """A word-level tokenizer.json with ``words`` entries (and the special tokens)."""
    vocab = {"<|endoftext|>": 0, "<|pad|>": 1, "[UNK]": 2} | {f"w{i}": i + 3 for i in range(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if strip:
        tok.normalizer = normalizers.Strip()
    tok.save(str(path))
    return str(path)


@pytest.fixture
def home(tmp_path):
    layout = Layout.at(tmp_path / "home")
    texts = corpus_texts()
    storage = write_corpus(layout, texts)
    write_manifest(storage, texts)
    return layout, storage, texts


def shards_root(storage):
    return storage.table_path("training_tokens").parent / "shards"


def test_vocabulary_too_large_for_the_dtype_is_refused_before_writing(home, tmp_path):
    layout, storage, texts = home
    make_tokenizer(storage, mode="load", path=word_tokenizer(tmp_path / "big.json", 70_000))
    tokenize(layout, storage, sorted(texts))
    with pytest.raises(TokenizerError, match="70003 tokens, too many for dtype uint16"):
        publish_training_tokens(storage, TrainingTokensParams(dtype="uint16"), {})
    assert not shards_root(storage).exists()
    publish_training_tokens(storage, TrainingTokensParams(seq_len=31), {})  # auto: int32
    assert json.loads((shards_root(storage) / "index.json").read_text())["dtype"] == "int32"


def test_tokenizer_that_does_not_match_the_tokens_is_refused_before_writing(home):
    layout, storage, texts = home
    make_tokenizer(storage)
    tokenize(layout, storage, sorted(texts))
    publish_training_tokens(storage, TrainingTokensParams(seq_len=31), {})
    before = (shards_root(storage) / "index.json").read_text()
    make_tokenizer(storage, vocab_size=700)  # a new tokenizer; tokenized_corpus is stale
    with pytest.raises(TokenizerError, match=r"made with another tokenizer.*re-materialize tokenized_corpus"):
        publish_training_tokens(storage, TrainingTokensParams(seq_len=31), {})
    assert (shards_root(storage) / "index.json").read_text() == before  # the old shards untouched


def test_empty_after_tokenization_and_too_long_are_rejected_with_reasons(home, tmp_path):
    layout, storage, texts = home
    texts["web"][5] = "   \n\t  "  # stripped by the tokenizer's normalizer: no token at all
    write_corpus(layout, texts)
    make_tokenizer(storage, mode="load", path=word_tokenizer(tmp_path / "w.json", 50, strip=True))
    outcomes = tokenize(layout, storage, sorted(texts), max_document_tokens=300, over_length="reject")
    rejected = pd.concat([storage.read(TOKENIZED_CORPUS, s, rejected=True) for s in sorted(texts)])
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    assert reasons["web-5"] == "empty_after_tokenization"
    long_ids = {
        f"{s}-{i}" for s, docs in texts.items() for i, t in enumerate(docs) if len(t.split()) > 300
    }  # word-level: one token per whitespace-separated word (punctuation apart), so at least these
    assert long_ids and long_ids <= {k for k, v in reasons.items() if v == "too_many_tokens"}
    assert all(o.checks and all(c.passed for c in o.checks) for o in outcomes.values())  # nothing lost
    published = publish_training_tokens(storage, TrainingTokensParams(seq_len=31), {})
    gone = published.metadata["documents_without_tokens"].value
    manifest = pd.read_parquet(storage.table_path("training_schedule"))
    too_long = sum(reasons.get(i) == "too_many_tokens" for i in manifest["id"])  # per scheduled copy
    assert gone == {"empty_after_tokenization": 1, "too_many_tokens": too_long}


def test_split_cuts_long_documents_into_pieces_each_with_an_eos(home):
    layout, storage, texts = home
    make_tokenizer(storage)
    tokenize(layout, storage, sorted(texts), max_document_tokens=64, over_length="split")
    frame = storage.read(TOKENIZED_CORPUS, "web")
    eos = 0
    for tokens, pieces in zip(frame["tokens"], frame["pieces"], strict=True):
        ends = [i for i, t in enumerate(tokens) if t == eos]
        assert len(ends) == pieces and ends[-1] == len(tokens) - 1
        assert max(b - a for a, b in zip([-1, *ends], ends, strict=False)) <= 65
    assert (frame["pieces"] > 1).any()


def test_a_missing_user_tokenizer_is_a_clear_error(home, tmp_path):
    _, storage, _ = home
    with pytest.raises(TokenizerError, match=r"folder must hold tokenizer\.json; nothing is downloaded"):
        make_tokenizer(storage, mode="load", path=str(tmp_path))
    with pytest.raises(ValueError, match=r"mode=.load. needs path"):
        TokenizerParams(mode="load")
